"""Milliseconds per training step and per 10000 density evaluations: the package's MAF
against a plain-PyTorch MADE/MAF of the same architecture (and ``zuko``'s, where it is
installed).

The workload is the MAF paper's MNIST setting in the package's form: 784 dimensions,
``[data] transform = ["dequantize", "logit"]`` (λ = 1e-6), ``K`` autoregressive layers each
a MADE of one hidden layer of 1024 ReLU units (Pyro's ``AutoRegressiveNN``, orders
alternating), with or without batch normalisation, base N(0, I), batch 100, Adam 1e-3.

* **package**: the package's ``mle`` algorithm, built from a config by the registry
  (:class:`pyro_vae.inference.mle.MLE`): a training step is ``MLE.step`` (fresh
  dequantization noise, ``log p`` through Pyro's ``TransformedDistribution``, backward, the
  fused Adam the package builds); the density figure is ``MLE.evaluate`` on 10000 points
  (eval mode, chunks of 1000, the figures per point).
* **plain**: the same model written here in plain PyTorch: masked linear layers (mask
  times weight at every call, as Pyro's ``MaskedLinear``), the same clamps of the log
  scale, Pyro's batch-norm formulas, the logit's log-Jacobian, the same optimizer.
* **zuko** (``--zuko``, run from a separate venv where ``zuko`` is installed; never a
  package dependency): ``zuko.flows.MAF(784, transforms=K, hidden_features=[1024])``, no
  batch normalisation (zuko has none), the same dequantization and logit outside it.

Blocks alternate between the implementations (the order reversed every other repeat);
medians over ``--repeats`` are reported with the ratios to plain, in the process's CPU time
(with one thread the work itself, which a core shared with other jobs inflates far less than
the elapsed time) and in wall time. Target: package <= 1.1x plain.

    python benchmarks/flow_step_time.py                                      # K = 5, with and without BN
    /work/bench-venv/bin/python benchmarks/flow_step_time.py --zuko          # and zuko (a venv that has it)
    python benchmarks/flow_step_time.py --steps 2 --points 200 --repeats 1 --hidden 800 --flows 1   # smoke
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from common import add_data_dir, add_threads, load_average, machine, set_threads, spread
from pyro_vae.config import Config
from pyro_vae.data import load_dataset
from pyro_vae.inference.optim import make_optimizer
from pyro_vae.registry import build_inference, build_model

D, BATCH, LR, LAMBDA, CHUNK = 784, 100, 1e-3, 1e-6, 1000


def package_config(flows: int, hidden: int, batch_norm: bool) -> Config:
    return Config.from_dict({
        "data": {"name": "mnist", "binarize": "none", "transform": ["dequantize", "logit"], "logit_lambda": LAMBDA},
        "model": {"name": "maf", "num_flows": flows, "hidden": [hidden], "activation": "relu",
                  "batch_norm": batch_norm, "base": "normal"},
        "inference": {"name": "mle", "eval_chunk": CHUNK},
        "optim": {"name": "adam", "lr": LR},
    })


# ----------------------------------------------------------------------------- plain PyTorch


class MaskedLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.linear(x, self.mask * self.weight, self.bias)


class PlainMADE(nn.Module):
    """``x (B, D) -> (mean, log_scale)``, each ``(B, D)``, autoregressive in ``order``:
    Germain et al.'s degrees, one hidden layer."""

    def __init__(self, d: int, hidden: int, order: torch.Tensor):
        super().__init__()
        degree_in = torch.empty(d, dtype=torch.long)
        degree_in[order] = torch.arange(d)
        degree_h = torch.arange(hidden) % max(1, d - 1)
        self.hidden = MaskedLinear(d, hidden, (degree_h[:, None] >= degree_in[None, :]).float())
        out_mask = (degree_in[:, None] > degree_h[None, :]).float()
        self.out = MaskedLinear(hidden, 2 * d, out_mask.repeat(2, 1))
        self.d = d

    def forward(self, x):
        mean, log_scale = self.out(F.relu(self.hidden(x))).view(len(x), 2, self.d).unbind(1)
        return mean, log_scale


class PlainMAF(nn.Module):
    """``log p(y)`` of dequantized pixels ``y (B, D)`` in (0, 1): the logit, ``K`` MADE
    layers ``u = exp(clamp(log σ)) ⊙ u + μ`` (Pyro's parameterization), Pyro's batch norm,
    N(0, I)."""

    def __init__(self, d: int, flows: int, hidden: int, batch_norm: bool):
        super().__init__()
        orders = [torch.arange(d) if k % 2 == 0 else torch.arange(d - 1, -1, -1) for k in range(flows)]
        self.mades = nn.ModuleList(PlainMADE(d, hidden, o) for o in orders)
        self.batch_norm = batch_norm
        if batch_norm:
            self.gamma = nn.Parameter(torch.ones(flows, d))
            self.beta = nn.Parameter(torch.zeros(flows, d))
            self.register_buffer("moving_mean", torch.zeros(flows, d))
            self.register_buffer("moving_var", torch.ones(flows, d))

    def log_prob(self, y):
        s = LAMBDA + (1 - 2 * LAMBDA) * y
        u = torch.log(s) - torch.log1p(-s)
        log_det = (math.log(1 - 2 * LAMBDA) - torch.log(s) - torch.log1p(-s)).sum(-1)
        for k, made in enumerate(self.mades):
            mean, log_scale = made(u)
            log_scale = log_scale.clamp(-5.0, 3.0)
            u = torch.exp(log_scale) * u + mean
            log_det = log_det + log_scale.sum(-1)
            if self.batch_norm:
                u, ld = self._batch_norm(k, u)
                log_det = log_det + ld
        return log_det - 0.5 * (u.pow(2).sum(-1) + u.size(-1) * math.log(2 * math.pi))

    def _batch_norm(self, k, u):
        if self.training:
            mean, var = u.mean(0), u.var(0)
            with torch.no_grad():
                self.moving_mean[k].mul_(0.9).add_(0.1 * mean)
                self.moving_var[k].mul_(0.9).add_(0.1 * var)
        else:
            mean, var = self.moving_mean[k], self.moving_var[k]
        gamma = F.relu(self.gamma[k]) + 1e-6
        out = (u - mean) * gamma / torch.sqrt(var + 1e-5) + self.beta[k]
        return out, (gamma.log() - 0.5 * torch.log(var + 1e-5)).sum(-1)


def dequantize(x, generator=None):
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (torch.round(x * 255) + noise) / 256


class Plain:
    """A training step and a density evaluation of a flow ``log_prob(y)`` in plain PyTorch."""

    def __init__(self, flow: nn.Module, num_data: int):
        self.flow, self.num_data = flow, num_data
        self.optimizer = make_optimizer("adam", flow.parameters(), LR)

    def step(self, x):
        self.flow.train()
        log_p = self.flow.log_prob(dequantize(x.flatten(1)))
        loss = -(self.num_data / len(x)) * log_p.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return log_p.detach().mean().item()

    @torch.no_grad()
    def evaluate(self, x):
        self.flow.eval()
        g = torch.Generator().manual_seed(0)
        total = 0.0
        for start in range(0, len(x), CHUNK):
            total += float(self.flow.log_prob(dequantize(x[start:start + CHUNK].flatten(1), g)).double().sum())
        return total / len(x)


class ZukoFlow(nn.Module):
    """``zuko.flows.MAF`` behind the same logit: ``log p(y)`` of dequantized pixels."""

    def __init__(self, d: int, flows: int, hidden: int):
        super().__init__()
        import zuko

        self.maf = zuko.flows.MAF(d, transforms=flows, hidden_features=[hidden])

    def log_prob(self, y):
        s = LAMBDA + (1 - 2 * LAMBDA) * y
        u = torch.log(s) - torch.log1p(-s)
        log_det = (math.log(1 - 2 * LAMBDA) - torch.log(s) - torch.log1p(-s)).sum(-1)
        return self.maf().log_prob(u) + log_det


# ----------------------------------------------------------------------------- timing


class Package:
    """The package's ``mle`` on its MAF: ``step`` and ``evaluate`` as the training loop calls them."""

    def __init__(self, flows, hidden, batch_norm, data):
        config = package_config(flows, hidden, batch_norm)
        self.inference = build_inference(config, build_model(config, data))
        self.num_data = len(data.train)

    def step(self, x):
        index = torch.arange(len(x))
        return self.inference.step(x, index, self.num_data)["log_likelihood"]

    def evaluate(self, x):
        return self.inference.evaluate(x)["log_likelihood"]


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(start: tuple[float, float], count: float) -> tuple[float, float]:
    """(wall ms, CPU ms) per ``count`` since ``start``."""
    wall, cpu = _clocks()
    return 1e3 * (wall - start[0]) / count, 1e3 * (cpu - start[1]) / count


def time_steps(impl, batches) -> tuple[float, float]:
    """(wall, CPU) ms per training step."""
    start = _clocks()
    for x in batches:
        value = impl.step(x)
    out = _elapsed(start, len(batches))
    if not math.isfinite(value):
        raise FloatingPointError(f"{type(impl).__name__}: a non-finite log-likelihood")
    return out


def time_density(impl, points) -> tuple[float, float]:
    """(wall, CPU) ms per 10000 density evaluations."""
    start = _clocks()
    value = impl.evaluate(points)
    out = _elapsed(start, len(points) / 10000)
    if not math.isfinite(value):
        raise FloatingPointError(f"{type(impl).__name__}: a non-finite log-likelihood")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", type=int, default=5, help="autoregressive layers K (default 5: MAF(5))")
    p.add_argument("--hidden", type=int, default=1024, help="each MADE's hidden units (default 1024, the paper's)")
    p.add_argument("--batch-norm", choices=["both", "on", "off"], default="both",
                   help="variants with and without batch normalisation (zuko joins the 'off' one; default both)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per block (default 30)")
    p.add_argument("--points", type=int, default=10000, help="points scored per density block (default 10000)")
    p.add_argument("--repeats", type=int, default=3, help="blocks per implementation; medians (default 3)")
    p.add_argument("--zuko", action="store_true", help="also time zuko's MAF (needs zuko importable)")
    add_threads(p)
    add_data_dir(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)

    data = load_dataset("mnist", args.data_dir, train_size=max(args.steps, 5) * BATCH, valid_size=100,
                        test_size=args.points)
    batches = list(data.train.split(BATCH))[:args.steps]
    print(f"flow step time: {machine()}; threads {args.threads}")
    print(f"MNIST 784-d, dequantize + logit (λ = {LAMBDA}), MAF({args.flows}) of MADE 784-{args.hidden}-1568 relu, "
          f"batch {BATCH}, Adam {LR}; {len(batches)} steps / {args.points} points per block, {args.repeats} repeats; "
          f"load average {load_average()}", flush=True)
    variants = {"both": [True, False], "on": [True], "off": [False]}[args.batch_norm]
    rows = []
    for bn in variants:
        impls = {"package": Package(args.flows, args.hidden, bn, data),
                 "plain": Plain(PlainMAF(D, args.flows, args.hidden, bn), len(data.train))}
        if args.zuko and not bn:
            impls["zuko"] = Plain(ZukoFlow(D, args.flows, args.hidden), len(data.train))
        for impl in impls.values():  # warm-up: allocator, caches, Pyro's first-step validation
            time_steps(impl, batches[:2])
            time_density(impl, data.test[:CHUNK])
        times = {n: {"step": [], "density": []} for n in impls}
        for repeat in range(args.repeats):
            for name in (list(impls) if repeat % 2 == 0 else list(impls)[::-1]):
                times[name]["step"].append(time_steps(impls[name], batches))
                times[name]["density"].append(time_density(impls[name], data.test))
        # medians of (wall, CPU) per kind
        med = {n: {k: tuple(statistics.median(t[i] for t in v) for i in (0, 1)) for k, v in times[n].items()}
               for n in impls}
        rows.append((bn, med))
        for n in impls:
            print(f"  batch_norm={str(bn).lower():<5} {n:<8} step {med[n]['step'][1]:8.2f} CPU ms "
                  f"({med[n]['step'][0]:.2f} wall) [CPU {spread([t[1] for t in times[n]['step']])}]  "
                  f"10000 densities {med[n]['density'][1]:8.1f} CPU ms ({med[n]['density'][0]:.1f} wall)", flush=True)
    print(f"load average at end: {load_average()}")
    print()
    print("| batch norm | implementation | CPU ms / training step | x plain | wall ms | x plain | "
          "CPU ms / 10000 densities | x plain | wall ms | x plain |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bn, med in rows:
        ref = med["plain"]
        for n, m in med.items():
            cells = [f"{m[k][i]:.1f} | {m[k][i] / ref[k][i]:.3f}" for k in ("step", "density") for i in (1, 0)]
            print(f"| {'yes' if bn else 'no'} | {n} | " + " | ".join(cells) + " |")
    print()
    print("CPU ms: the process's CPU time (one thread: the work itself, robust to waiting for a shared core); "
          "wall ms: elapsed time. Target: package <= 1.1 x plain.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
