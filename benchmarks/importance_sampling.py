"""Seconds per test image of the importance-sampled log p(x): the package's one sampler
against plain PyTorch loops, with the FLOP rates and the machine's GEMM peak.

What is timed, on the same binarized-MNIST test images, the same k, in one process:

* **VAE** (784-500-500-50 tanh encoder and decoder, Bernoulli decoder, N_z = 50, untrained:
  freshly initialised under ``--seed``; the cost of the estimate does not depend on the
  weights): ``pyro_vae.evaluation.log_likelihood(vae, x, k)`` with the sampler's default
  batch and chunk sizes (``--batch`` / ``--chunk`` override them), against a plain loop
  written the obvious way: per batch of images the encoder once, then chunks of samples
  ``z = μ + σ ε``, the decoder, the Bernoulli log-likelihood through
  ``binary_cross_entropy_with_logits``, ``log p(z) − log q(z|x)`` in closed form and a
  streaming log-sum-exp over chunks (``--plain-batch`` images x ``--plain-chunk`` samples
  per chunk; defaults below).
* **GAE** (the same architecture, its prior the mixture of the encoder's posteriors over
  ``--exemplars`` binarized-MNIST training images, untrained):
  ``log_likelihood(gae, x, k)``, which scores the collapsed story (``y`` summed out, ``z``
  under the exact mixture over all n exemplars), against a plain loop: the exemplars
  encoded once, then per chunk the VAE's terms plus the exact mixture
  ``log (1/n) Σ_j N(z; μ_j, σ_j²)`` as the quadratic-feature matrix product
  ``[z², z] · w + c`` (rows x n) and ``torch.logsumexp``, ``--plain-mix-rows`` rows of z
  at a time.

Each repeat times the package and the plain loop back to back on the same images (the
order alternating between repeats), and one large float32 ``torch.mm`` (``--peak-size``,
default 4096) on the same threads: the machine's GEMM peak is the best of those. Both
sides are seeded alike before each call (their draws are not the same numbers: the
package's estimate and the plain one agree within Monte-Carlo error, printed as a check).

FLOPs (multiply-adds count 2, ``2 m n k`` per matrix product; the same useful count for
both sides, whatever each recomputes): per sample the decoder's three products,
``2 (50·500 + 500·500 + 500·784) = 1.334 MFLOP``; per image the encoder's four (body
784·500 and 500·500, heads 2 x 500·50), ``1.384 MFLOP``; for the GAE per sample also the
mixture's product, ``2 · 2 N_z · n`` (10 MFLOP at n = 50000), and once per call the
exemplars' encoding, n encoder passes. GFLOP/s = those FLOPs / seconds; the mixture's
``exp`` and the other element-wise work are not counted, so a rate well below the GEMM
peak says where the time goes.

Reading the table: ``s/image`` is the median over repeats of (call time − the per-call
set-up) / images, the set-up being the GAE's exemplar encoding (timed on its own each
repeat; zero for the VAE); ``min 10k`` extrapolates to the 10000 test images, one set-up
plus 10000 images; ``ratio`` is package / plain from the medians, ``paired`` the median
of the per-repeat ratios (each from two back-to-back runs, so less exposed to the
machine's drift). Target: ratio <= 1.1. On a machine other jobs share, absolute times
drift by tens of percent and two threads on busy cores wait for each other: compare the
ratios of one run, and run it again before concluding anything. The load average at
start and end is printed.

    python benchmarks/importance_sampling.py                         # 50 images, k = 5000, 2 threads
    python benchmarks/importance_sampling.py --models vae --repeats 7
    python benchmarks/importance_sampling.py --images 2 --samples 50 --exemplars 500 --repeats 1  # smoke, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
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


@torch.no_grad()
def plain_log_likelihood(nets: PlainNets, x: torch.Tensor, k: int, batch: int, chunk: int,
                         log_prior: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
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
            logits = nets.logits(z)
            log_px = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
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


def gemm_peak(size: int) -> float:
    """GFLOP/s of one ``size``³ float32 matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a[:64], b)  # warm the library
    start = time.perf_counter()
    torch.mm(a, b)
    return 2 * size**3 / (time.perf_counter() - start) / 1e9


def timed(fn: Callable[[], torch.Tensor], seed: int) -> tuple[float, torch.Tensor]:
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


def run_pair(name: str, package: Callable, plain: Callable, setups: Optional[tuple[Callable, Callable]],
             args, flops_per_image: float, flops_per_call: float, peaks: list[float]) -> dict:
    """Interleaved repeats of package and plain; medians and paired ratios."""
    images = args.images
    times = {"package": [], "plain": []}
    setup_times = {"package": [], "plain": []}
    estimates = {}
    for r in range(args.repeats):
        peaks.append(gemm_peak(args.peak_size))
        order = ("package", "plain") if r % 2 == 0 else ("plain", "package")
        for side in order:
            fn = package if side == "package" else plain
            seconds, out = timed(fn, args.seed + r)
            times[side].append(seconds)
            estimates.setdefault(side, []).append(out.mean().item())
            if setups is not None:
                setup = setups[0] if side == "package" else setups[1]
                setup_times[side].append(timed(setup, args.seed)[0])
        ratio = (times["package"][-1] - (setup_times["package"][-1] if setups else 0)) / (
            times["plain"][-1] - (setup_times["plain"][-1] if setups else 0))
        print(f"  {name} repeat {r + 1}/{args.repeats}: package {times['package'][-1]:.2f} s, "
              f"plain {times['plain'][-1]:.2f} s, ratio {ratio:.3f}", flush=True)
    row = {"model": name}
    for side in ("package", "plain"):
        setup = statistics.median(setup_times[side]) if setups else 0.0
        per_image = [(t - (s if setups else 0.0)) / images
                     for t, s in zip(times[side], setup_times[side] or [0.0] * len(times[side]))]
        row[side] = {
            "s_per_image": statistics.median(per_image),
            "setup_s": setup,
            "minutes_10k": (setup + 10000 * statistics.median(per_image)) / 60,
            "gflops": flops_per_image / statistics.median(per_image) / 1e9,
            "estimate": statistics.mean(estimates[side]),
            "per_image": per_image,
        }
    row["ratio"] = row["package"]["s_per_image"] / row["plain"]["s_per_image"]
    row["paired"] = statistics.median(a / b for a, b in zip(row["package"]["per_image"], row["plain"]["per_image"]))
    return row


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
    parser.add_argument("--batch", type=int, default=None, help="package batch_size (default: the sampler's)")
    parser.add_argument("--chunk", type=int, default=None, help="package chunk_size (default: the sampler's)")
    parser.add_argument("--plain-batch", type=int, default=10, help="plain loop: images per batch (default 10)")
    parser.add_argument("--plain-chunk", type=int, default=200, help="plain loop: samples per chunk (default 200)")
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
    load_avg = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average at start {load_avg}", flush=True)
    print(f"{len(x)} binarized-MNIST test images, k = {k}, package sizes {kwargs or 'default'}, "
          f"plain batch {args.plain_batch} x chunk {args.plain_chunk}", flush=True)

    peaks: list[float] = []
    rows = []
    enc_f, dec_f = encoder_flops(), decoder_flops()
    if "vae" in args.models:
        vae = build_vae(args.seed)
        nets = PlainNets(vae)
        rows.append(run_pair(
            "VAE",
            lambda: log_likelihood(vae, x, k, **kwargs).per_point,
            lambda: plain_log_likelihood(nets, x, k, args.plain_batch, args.plain_chunk),
            None, args, enc_f + k * dec_f, 0.0, peaks))
    if "gae" in args.models:
        gae = build_gae(exemplars, args.seed)
        nets = PlainNets(gae)
        n = len(exemplars)
        holder = {}

        def plain_setup():
            holder["mix"] = PlainMixture(nets, exemplars, args.plain_mix_rows)

        def plain_gae():
            plain_setup()
            return plain_log_likelihood(nets, x, k, args.plain_batch, args.plain_chunk, holder["mix"])

        def package_setup():
            with gae.collapsed():
                pass

        print(f"GAE: {n} exemplars, plain mixture blocks of {args.plain_mix_rows} x {n}", flush=True)
        rows.append(run_pair(
            "GAE",
            lambda: log_likelihood(gae, x, k, **kwargs).per_point,
            plain_gae,
            (package_setup, plain_setup), args, enc_f + k * (dec_f + 2 * 2 * Z_DIM * n), n * enc_f, peaks))

    peak = max(peaks)
    load_avg = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nGEMM peak (best {args.peak_size}^3 float32 torch.mm of {len(peaks)}, {args.threads} threads): "
          f"{peak:.1f} GFLOP/s; load average at end {load_avg}")
    print(f"k = {k}, {len(x)} images, {args.repeats} repeats, medians\n")
    print("| model | side | s/image | set-up s | min 10k | GFLOP/s | % of peak | mean log p(x) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for side in ("package", "plain"):
            r = row[side]
            print(f"| {row['model']} | {side} | {r['s_per_image']:.4f} | {r['setup_s']:.2f} | {r['minutes_10k']:.2f} | "
                  f"{r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f} | {r['estimate']:.2f} |")
    print()
    for row in rows:
        print(f"{row['model']} ratio package/plain: {row['ratio']:.3f} (paired median {row['paired']:.3f}; "
              f"target <= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
