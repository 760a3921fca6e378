"""Time per training step of the GAE against the VAE's, in the same run.

Every model is built from a package config (``pyro_vae.train.build``) that differs from
the VAE's only in ``[model]`` entries, and steps through ``inference.step`` on the very
same minibatches of static binarized MNIST (batch 100, Adam 1e-3), round-robin, so that
machine load hits all alike. Models:

* ``vae``: the VAE, ``elbo = "auto"`` (its own objective: estimator B computed directly);
* ``vae-<elbo>``: the VAE with another ``[inference] elbo`` (``--vae-elbos``), e.g.
  ``meanfield``, the default before 0.2: an extra column of ratios against it;
* ``gae``: the GAE with its default scalable estimator (``estimator = "knn"``:
  neighbour lists plus a uniform tail sample over a cache of all n encoder statistics;
  see ``pyro_vae.models.gae``), ``elbo = "auto"`` (its training objective
  ``ExemplarELBO``);
* ``gae-shared``: the same with ``bandwidth = "shared"`` (components
  ``N(μ_j, diag s²)``, one learned bandwidth per dimension);
* ``naive-<m>``: plain enumeration over ``m`` random exemplars encoded afresh with
  gradients each step (``estimator = "random"``, ``tail = m``);
* ``exact``: enumeration over all n = 50000 exemplars encoded afresh with gradients
  (``"exact"``, the definition), timed over a few steps only.

Reported: the median milliseconds per step after ``--warmup`` steps, the ratio to the
VAE's median, and for both GAEs also the *amortized* ratio, which adds their neighbour-list
rebuild (the median of three, timed separately) spread over the steps between two rebuilds
(``ExemplarELBO.rebuild_period``: ``[model] refresh_every``, by default two epochs). The
GAE's training state (cache, lists, rebuild) is its training objective's,
``exp.inference.objective``. The GAE's first step (filling the cache and the first lists)
is reported apart.

    python benchmarks/gae_step_time.py                       # 1 and 2 hidden layers, ~10 min
    python benchmarks/gae_step_time.py --steps 20 --layers 1 --exact-steps 1   # quick look
    python benchmarks/gae_step_time.py --exact-steps 0 --threads 1 --naive-exemplars --vae-elbos meanfield
    python benchmarks/gae_step_time.py --layers 1 --steps 2 --warmup 1 --naive-exemplars 50 --exact-steps 1 \\
        --n-train 500 --hidden-size 50                       # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from common import add_gae_model, add_threads, cached_datasets, gae_config, load_average, median_ms, seconds, \
    set_threads, settings, write_json
from pyro_vae.train import build


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2], help="hidden layers of encoder and decoder")
    add_gae_model(p)
    p.add_argument("--steps", type=int, default=100, help="timed steps per model (after warm-up)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--naive-exemplars", type=int, nargs="*", default=[1000])
    p.add_argument("--exact-steps", type=int, default=3, help="steps of the all-n exact estimator (0: skip)")
    p.add_argument("--gae", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra [model] entries for the GAE, e.g. neighbours=64")
    p.add_argument("--vae-elbos", nargs="*", default=[], metavar="ELBO",
                   help="also time the VAE with these [inference] elbo values (ratios against each)")
    add_threads(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/gae_step_time"))
    return p.parse_args(argv)


def run_depth(args, layers: int) -> dict:
    gae_extra = settings(args.gae)
    specs = {"vae": {"name": "vae"}, "gae": {"name": "gae", **gae_extra},
             "gae-shared": {"name": "gae", **gae_extra, "bandwidth": "shared"}}
    for m in args.naive_exemplars:
        specs[f"naive-{m}"] = {"name": "gae", "estimator": "random", "tail": m}
    exps = {name: build(gae_config(args, layers, **spec)) for name, spec in specs.items()}
    for elbo in args.vae_elbos:
        exps[f"vae-{elbo}"] = build(gae_config(args, layers, name="vae").with_overrides([f"inference.elbo={elbo}"]))
    data = exps["vae"].data.train
    n, b = len(data), args.batch_size
    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(n, generator=gen)
    batches = [perm[(s * b) % n : (s * b) % n + b] for s in range(args.warmup + args.steps + 1)]

    first = {}
    for name, exp in exps.items():  # first step: validation on, caches filled
        t = time.perf_counter()
        exp.inference.step(data[batches[0]], batches[0], n)
        first[name] = time.perf_counter() - t
    times = {name: [] for name in exps}
    for s, idx in enumerate(batches[1:]):
        order = list(exps) if s % 2 == 0 else list(reversed(exps))
        for name in order:
            t = time.perf_counter()
            exps[name].inference.step(data[idx], idx, n)
            if s >= args.warmup:
                times[name].append(time.perf_counter() - t)
    medians = {name: median_ms(v) for name, v in times.items()}

    # The GAE's training state is its objective's (the cache, the lists, their rebuild).
    objectives = {name: exps[name].inference.objective for name in ("gae", "gae-shared")}
    rebuild = {name: statistics.median(seconds(objective.rebuild_neighbours) for _ in range(3))
               for name, objective in objectives.items()}
    period = {name: objective.rebuild_period(b) for name, objective in objectives.items()}  # 0: never after the first
    amortized = {name: medians[name] + (1000 * s / period[name] if period[name] else 0.0)
                 for name, s in rebuild.items()}
    row = {
        "layers": layers, "n": n, "batch": b,
        "ms_per_step": medians,
        "ratio_to_vae": {name: medians[name] / medians["vae"] for name in medians},
        "gae_first_step_s": first["gae"],
        "rebuild_s": rebuild,
        "rebuild_every_steps": period,
        "amortized_ms": amortized,
        "amortized_ratio": {name: ms / medians["vae"] for name, ms in amortized.items()},
        "amortized_ratio_to": {f"vae-{e}": {name: ms / medians[f"vae-{e}"] for name, ms in amortized.items()}
                               for e in args.vae_elbos},
    }
    if args.exact_steps:
        del exps, objectives
        exact = build(gae_config(args, layers, name="gae", estimator="exact"))
        vae = build(gae_config(args, layers, name="vae"))
        vae.inference.step(data[batches[0]], batches[0], n)
        ex_t, vae_t = [], []
        for idx in batches[1 : 1 + args.exact_steps]:
            t = time.perf_counter()
            exact.inference.step(data[idx], idx, n)
            ex_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            vae.inference.step(data[idx], idx, n)
            vae_t.append(time.perf_counter() - t)
        row["ms_per_step"]["exact"] = median_ms(ex_t)
        row["ratio_to_vae"]["exact"] = statistics.median(ex_t) / statistics.median(vae_t)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    pyro.set_rng_seed(args.seed)
    print(f"threads {args.threads}, load average at start {load_average()}", flush=True)
    rows = []
    with cached_datasets():  # every model on the one copy of the data
        for layers in args.layers:
            row = run_depth(args, layers)
            rows.append(row)
            print(json.dumps(row, indent=1), flush=True)
    names = list(rows[0]["ms_per_step"])
    print(f"\nload average at end {load_average()}\n")
    amortized = list(rows[0]["amortized_ms"])
    print("| hidden layers | " + " | ".join(f"{n} ms (x VAE)" for n in names)
          + "".join(f" | {n} amortized (x VAE)" for n in amortized) + " |")
    print("|---" * (len(names) + len(amortized) + 1) + "|")
    for r in rows:
        cells = [f"{r['ms_per_step'][n]:.1f} (x{r['ratio_to_vae'][n]:.2f})" for n in names]
        cells += [f"{r['amortized_ms'][n]:.1f} (x{r['amortized_ratio'][n]:.2f})" for n in amortized]
        print(f"| {r['layers']} | " + " | ".join(cells) + " |")
    for r in rows:
        for ref, ratios in r["amortized_ratio_to"].items():
            print(f"{r['layers']} layer(s), amortized against {ref}: "
                  + ", ".join(f"{n} x{v:.2f}" for n, v in ratios.items()))
    write_json(args.out / "summary.json", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
