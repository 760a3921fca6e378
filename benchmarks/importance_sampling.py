"""Seconds per test image of the importance-sampled log p(x): the package's one sampler
against plain-PyTorch loops, with the FLOP rates and the machine's GEMM peak.

What is timed, on the same binarized-MNIST test images and the same k, in one process:

* **VAE** (784-500-500-50 tanh encoder and decoder, Bernoulli decoder, N_z = 50,
  untrained: freshly initialised under ``--seed``; the cost of the estimate does not
  depend on the weights):

  - ``package``: ``pyro_vae.evaluation.log_likelihood(vae, x, k)`` with the sampler's
    default sizes (10 images per batch, 500 particles per chunk; ``--batch`` /
    ``--chunk`` override them);
  - ``plain``: the loop written the obvious way: per batch of images the encoder once,
    then chunks of samples ``z = μ + σ ε``, the decoder, the Bernoulli log-likelihood
    ``−Σ binary_cross_entropy_with_logits``, ``log p(z) − log q(z|x)`` in closed form
    (``log q`` from ε: ``(z − μ)/σ = ε``) and a streaming log-sum-exp over chunks
    (``--plain-batch`` images x ``--plain-chunk`` samples, default 10 x 500, the
    package's sizes: the plain loop's time is flat within a few percent from 1000 to
    10000 samples x images per chunk, ``benchmarks/README.md``);
  - ``plain, x·l − softplus``: the same loop with the Bernoulli term written as the
    package's evaluation scores it (``x·l − Σ softplus(l)``, ``pyro_vae.traces.
    bernoulli_log_prob``), so that package / this is the cost of the package's
    machinery alone (Pyro traces, generic site scoring), the Bernoulli kernel aside.

* **GAE** (the same architecture; its prior the mixture of the encoder's posteriors over
  the first ``--exemplars`` binarized-MNIST training images, untrained):

  - ``package``: ``log_likelihood(gae, x, k)``, which scores the collapsed story (``y``
    summed out, ``z`` under the exact mixture over all n exemplars);
  - ``plain``: the VAE's plain loop with ``log p(z)`` the exact mixture
    ``log (1/n) Σ_j N(z; μ_j, σ_j²)`` written the obvious way: the exemplars encoded
    once, then ``torch.logsumexp`` of the quadratic-feature product ``[z², z] · w + c``
    (``torch.addmm``), ``--plain-mix-rows`` rows of z x n exemplars at a time.

After one untimed warm-up call of each side (on two images), each repeat times every
side back to back on the same images (the order reversed every other repeat), and one
large float32 ``torch.mm`` (``--peak-size``, default 4096) on the
same threads: the machine's GEMM peak is the best of those. Every call is seeded alike;
the sides' draws are not the same numbers, and their mean log p(x) (printed) agree
within Monte-Carlo error.

FLOPs (a multiply-add counts 2, ``2 m n k`` per matrix product; the same useful count for
every side, whatever it recomputes): per sample the decoder's three products,
``2 (50·500 + 500·500 + 500·784) = 1.334 MFLOP``; per image the encoder's four (body
784·500 and 500·500, heads 2 x 500·50), ``1.384 MFLOP``; for the GAE per sample also the
mixture's product, ``2 · 2 N_z · n`` (10 MFLOP at n = 50000), and once per call the n
exemplars' encoding. ``GFLOP/s`` = those FLOPs / time; ``exp``, ``softplus`` and the other
element-wise work are not counted, so a rate well below the GEMM peak says where the rest
of the time goes.

Reading the output: ``s/image`` is the median over repeats of (call time − set-up) /
images, the set-up being the GAE's exemplar encoding (entering ``gae.collapsed()``, or
the plain loop's own), timed on its own in every repeat; ``min 10k`` extrapolates to the
10000 test images, one set-up plus 10000 images; ``ratio`` is package / plain from the
medians, ``paired`` the median of the per-repeat ratios (each from back-to-back runs,
less exposed to the machine's drift). Target: ratio <= 1.1. On a machine other jobs
share, absolute times drift by tens of percent and two threads on busy cores wait for
each other: compare the ratios of one run, and run it again before concluding anything.
The load average at start and end is printed.

    python benchmarks/importance_sampling.py                         # 50 images, k = 5000, 2 threads
    python benchmarks/importance_sampling.py --models vae --repeats 7
    python benchmarks/importance_sampling.py --images 2 --samples 50 --exemplars 500 --repeats 1  # smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.data import load_dataset
from pyro_vae.evaluation import log_likelihood
from pyro_vae.models import GAE, VAE

Z_DIM, HIDDEN, X_DIM = 50, (500, 500), 784
_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- plain PyTorch


class PlainNets:
    """The package model's weights, run with plain torch ops (no Pyro, no package code)."""

    def __init__(self, vae: VAE):
        enc = vae.guide.encoder
        self.enc = [(m.weight, m.bias) for m in enc.body if isinstance(m, nn.Linear)]
        self.loc = (enc.head.loc.weight, enc.head.loc.bias)
        self.log_var = (enc.head.log_var.weight, enc.head.log_var.bias)
        self.dec = [(m.weight, m.bias) for m in vae.decoder.body if isinstance(m, nn.Linear)]
        self.out = (vae.decoder.head.weight, vae.decoder.head.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for w, b in self.enc:
            h = torch.tanh(F.linear(h, w, b))
        return F.linear(h, *self.loc), torch.exp(0.5 * F.linear(h, *self.log_var))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for w, b in self.dec:
            h = torch.tanh(F.linear(h, w, b))
        return F.linear(h, *self.out)


def bce_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x|z)``, ``(chunk, batch)``: minus the summed binary cross-entropy."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def softplus_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The same as ``x·l − Σ softplus(l)`` (the package's evaluation kernel)."""
    return torch.einsum("cbk,bk->cb", logits, x) - F.softplus(logits).sum(-1)


@torch.no_grad()
def plain_log_likelihood(nets: PlainNets, x: torch.Tensor, k: int, batch: int, chunk: int,
                         log_prior: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                         log_lik: Callable = bce_log_likelihood) -> torch.Tensor:
    """``(n,)`` log p(x) ≈ logmeanexp_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)]: the
    obvious loop. ``log_prior(z (rows, D)) -> (rows,)``; default the standard normal."""
    x = x.flatten(1)
    out = []
    for xb in x.split(batch):
        mu, sigma = nets.encode(xb)
        log_sigma = sigma.log().sum(-1)
        total = None
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            eps = torch.randn(c, *mu.shape)
            z = mu + sigma * eps  # (c, b, D)
            log_px = log_lik(nets.logits(z), xb)
            if log_prior is None:
                log_pz = -0.5 * (z * z).sum(-1) - 0.5 * Z_DIM * _LOG_2PI
            else:
                log_pz = log_prior(z.reshape(-1, Z_DIM)).view(z.shape[:-1])
            log_qz = -0.5 * (eps * eps).sum(-1) - log_sigma - 0.5 * Z_DIM * _LOG_2PI
            part = torch.logsumexp(log_px + log_pz - log_qz, 0)
            total = part if total is None else torch.logaddexp(total, part)
        out.append(total - math.log(k))
    return torch.cat(out)


class PlainMixture:
    """The GAE's exact prior in plain PyTorch: the exemplars encoded once, then
    ``log (1/n) Σ_j N(z; μ_j, σ_j²)`` as ``logsumexp([z², z] · w + c)``, ``rows`` z at a time."""

    def __init__(self, nets: PlainNets, exemplars: torch.Tensor, rows: int):
        with torch.no_grad():
            parts = [nets.encode(xe) for xe in exemplars.flatten(1).split(1000)]
            mu, sigma = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            prec = sigma.pow(-2)
            self.w = torch.cat([-0.5 * prec, mu * prec], -1)  # (n, 2D)
            self.c = -0.5 * ((mu * mu * prec).sum(-1) + 2 * sigma.log().sum(-1) + Z_DIM * _LOG_2PI) - math.log(len(mu))
        self.rows = rows

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        q = torch.cat([z * z, z], -1)
        return torch.cat([torch.logsumexp(torch.addmm(self.c, qb, self.w.T), 1) for qb in q.split(self.rows)])


# ----------------------------------------------------------------------------- timing


@dataclass
class Side:
    """One way of computing the estimate: ``run()`` the whole call, ``setup()`` its
    per-call set-up timed on its own (subtracted; None: none)."""

    name: str
    run: Callable[[], torch.Tensor]
    setup: Optional[Callable[[], None]] = None
    times: list = field(default_factory=list)
    setups: list = field(default_factory=list)
    estimates: list = field(default_factory=list)


def gemm_peak(size: int) -> float:
    """GFLOP/s of one ``size``³ float32 matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a[:64], b)  # warm the library
    start = time.perf_counter()
    torch.mm(a, b)
    return 2 * size**3 / (time.perf_counter() - start) / 1e9


def timed(fn: Callable, seed: int) -> tuple[float, object]:
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def load(args) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("binarized_mnist", args.data_dir)
    return data.test[: args.images], data.train[: args.exemplars]


def build_vae(seed: int) -> VAE:
    pyro.set_rng_seed(seed)
    return VAE((1, 28, 28), z_dim=Z_DIM, hidden=HIDDEN, activation="tanh").eval()


def build_gae(exemplars: torch.Tensor, seed: int) -> GAE:
    pyro.set_rng_seed(seed)
    return GAE(exemplars, z_dim=Z_DIM, hidden=HIDDEN, activation="tanh").eval()


def encoder_flops() -> float:
    dims = (X_DIM,) + HIDDEN
    return 2 * (sum(a * b for a, b in zip(dims, dims[1:])) + 2 * HIDDEN[-1] * Z_DIM)


def decoder_flops() -> float:
    dims = (Z_DIM,) + HIDDEN + (X_DIM,)
    return 2 * sum(a * b for a, b in zip(dims, dims[1:]))


def run_sides(model: str, sides: list[Side], args, flops_per_image: float, peaks: list[float],
              warm: Callable[[Side], object]) -> list[dict]:
    """Interleaved repeats of every side; per-image medians and paired ratios to
    ``sides[0]`` (the package). ``warm(side)`` runs each side once, untimed, first (on a
    couple of images: first-call costs, allocator and library set-up, are not per image)."""
    for side in sides:
        warm(side)
    for r in range(args.repeats):
        peaks.append(gemm_peak(args.peak_size))
        for side in (sides if r % 2 == 0 else sides[::-1]):
            seconds, out = timed(side.run, args.seed + r)
            side.times.append(seconds)
            side.estimates.append(out.mean().item())
            side.setups.append(timed(side.setup, args.seed)[0] if side.setup else 0.0)
        print(f"  {model} repeat {r + 1}/{args.repeats}: "
              + ", ".join(f"{s.name} {s.times[-1]:.2f} s" for s in sides), flush=True)
    rows = []
    package = None
    for side in sides:
        per_image = [(t - s) / args.images for t, s in zip(side.times, side.setups)]
        setup = statistics.median(side.setups)
        row = {"model": model, "side": side.name, "per_image": per_image,
               "s_per_image": statistics.median(per_image), "setup_s": setup,
               "estimate": statistics.mean(side.estimates)}
        row["minutes_10k"] = (setup + 10000 * row["s_per_image"]) / 60
        row["gflops"] = flops_per_image / row["s_per_image"] / 1e9
        if package is None:
            package = row
        else:
            row["ratio"] = package["s_per_image"] / row["s_per_image"]
            row["paired"] = statistics.median(a / b for a, b in zip(package["per_image"], per_image))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50, help="test images scored per call (default 50)")
    parser.add_argument("--samples", "-k", type=int, default=5000, help="importance samples per image (default 5000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per model (default 3)")
    parser.add_argument("--exemplars", type=int, default=50000,
                        help="GAE exemplars, the first n training images (default 50000)")
    parser.add_argument("--models", nargs="+", default=["vae", "gae"], choices=["vae", "gae"])
    parser.add_argument("--batch", type=int, default=None, help="package batch_size (default: the sampler's, 10)")
    parser.add_argument("--chunk", type=int, default=None, help="package chunk_size (default: the sampler's, 500)")
    parser.add_argument("--plain-batch", type=int, default=10, help="plain loops: images per batch (default 10)")
    parser.add_argument("--plain-chunk", type=int, default=500, help="plain loops: samples per chunk (default 500)")
    parser.add_argument("--plain-mix-rows", type=int, default=100,
                        help="plain GAE: rows of z per mixture block, rows x n log-densities (default 100)")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the GEMM-peak matrices (default 4096)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    x, exemplars = load(args)
    k = args.samples
    kwargs = {key: v for key, v in (("batch_size", args.batch), ("chunk_size", args.chunk)) if v is not None}
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average at start {load_start}", flush=True)
    print(f"{len(x)} binarized-MNIST test images, k = {k}, package sizes {kwargs or 'default'}, "
          f"plain batch {args.plain_batch} x chunk {args.plain_chunk}", flush=True)

    peaks: list[float] = []
    rows = []
    enc_f, dec_f = encoder_flops(), decoder_flops()
    pb, pc = args.plain_batch, args.plain_chunk
    if "vae" in args.models:
        vae = build_vae(args.seed)
        nets = PlainNets(vae)
        vae_sides = {
            "package": lambda xs: log_likelihood(vae, xs, k, **kwargs).per_point,
            "plain": lambda xs: plain_log_likelihood(nets, xs, k, pb, pc),
            "plain, x·l − softplus": lambda xs: plain_log_likelihood(nets, xs, k, pb, pc,
                                                                     log_lik=softplus_log_likelihood),
        }
        rows += run_sides("VAE", [Side(name, lambda f=f: f(x)) for name, f in vae_sides.items()],
                          args, enc_f + k * dec_f, peaks, lambda side: vae_sides[side.name](x[:2]))
    if "gae" in args.models:
        gae = build_gae(exemplars, args.seed)
        nets = PlainNets(gae)
        n = len(exemplars)
        mixture = {}

        def plain_setup():
            mixture["prior"] = PlainMixture(nets, exemplars, args.plain_mix_rows)

        def plain_gae():
            plain_setup()
            return plain_log_likelihood(nets, x, k, pb, pc, mixture["prior"])

        def package_setup():
            with gae.collapsed():
                pass

        print(f"GAE: {n} exemplars, plain mixture blocks of {args.plain_mix_rows} x {n}", flush=True)
        def gae_warm(side: Side):
            if side.name == "package":
                return log_likelihood(gae, x[:2], min(k, 500), **kwargs)
            plain_setup()
            return plain_log_likelihood(nets, x[:2], min(k, 500), pb, pc, mixture["prior"])

        rows += run_sides("GAE", [
            Side("package", lambda: log_likelihood(gae, x, k, **kwargs).per_point, package_setup),
            Side("plain", plain_gae, plain_setup),
        ], args, enc_f + k * (dec_f + 2 * 2 * Z_DIM * n), peaks, gae_warm)

    peak = max(peaks)
    load_end = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nGEMM peak (best {args.peak_size}^3 float32 torch.mm of {len(peaks)}, {args.threads} threads): "
          f"{peak:.1f} GFLOP/s; load average at start {load_start}, at end {load_end}")
    print(f"k = {k}, {len(x)} images, {args.repeats} repeats, medians\n")
    print("| model | side | s/image | set-up s | min 10k | GFLOP/s | % of peak | mean log p(x) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['side']} | {r['s_per_image']:.4f} | {r['setup_s']:.2f} | {r['minutes_10k']:.2f} | "
              f"{r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f} | {r['estimate']:.2f} |")
    print()
    for r in rows:
        if "ratio" in r:
            target = "; target <= 1.1" if r["side"] == "plain" else ""
            print(f"{r['model']} ratio package / {r['side']}: {r['ratio']:.3f} "
                  f"(paired median {r['paired']:.3f}{target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
