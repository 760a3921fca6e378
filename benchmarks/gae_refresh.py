"""How often must the GAE rebuild its neighbour lists? Quality of the prior estimate against the period.

The ``"knn"`` estimator is unbiased whatever the neighbour lists hold; good lists only lower
its variance. Lists are rebuilt from the cache every ``exemplar_refresh`` training calls
(default: every 2 epochs). The rebuild is a good part of what the GAE
adds to a step once amortized (``gae_step_time.py``), so this script trains one GAE per
rebuild period, in lockstep on the very same minibatches from the same initialisation, and
after every epoch reports for each, on a fixed random set of training points:

* ``mass``: the exact responsibility mass ``Σ_{j∈N_i} r_ij`` the lists hold (1 = the lists
  hold every component that explains ``z ~ q(z|x_i)``);
* ``err``: the mean absolute error of the estimator's ``log P̂_i(z)`` against the exact
  leave-one-out ``log P_{−i}(z)`` over all ``n`` (``GAE.prior_estimate_error``; the cache
  is put back as it was afterwards, so that training goes on undisturbed);
* ``elbo``: the epoch's mean training objective per point (``inference.step``'s ``"elbo"``);
* the seconds spent in list rebuilds.

    python benchmarks/gae_refresh.py                        # periods 1, 2, 4 epochs; 8 epochs; ~8 min
    python benchmarks/gae_refresh.py --periods 1 4 --epochs 4 --layers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from gae_step_time import config, extra_settings
from pyro_vae.train import build


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--periods", type=float, nargs="+", default=[1, 2, 4], help="rebuild periods, in epochs")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden-size", type=int, default=500)
    p.add_argument("--z-dim", type=int, default=40)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--points", type=int, default=500, help="training points the quality is measured on")
    p.add_argument("--gae", nargs="*", default=["exemplar_bandwidth=shared"], metavar="KEY=VALUE",
                   help="[model] entries of every GAE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=Path("results/gae_refresh"))
    return p.parse_args(argv)


def timed_rebuilds(module) -> list:
    """Wrap the bank's rebuild so that its calls' seconds are recorded; returns the record."""
    record, rebuild = [], module.bank.rebuild_neighbours

    def timed(*a, **k):
        t = time.perf_counter()
        rebuild(*a, **k)
        record.append(time.perf_counter() - t)

    module.bank.rebuild_neighbours = timed
    return record


def quality_keeping_cache(module, points: torch.Tensor) -> dict:
    """``prior_estimate_error`` without its side effect on training: it re-encodes all ``n``
    exemplars into the cache (for the exact prior); the stale cache training had is put back.
    (Nothing takes it for fresh: the encoder changes at the next step.)"""
    bank = module.bank
    loc, scale = bank.loc.clone(), bank.scale.clone()
    quality = module.prior_estimate_error(points, num_draws=2)
    bank.write(torch.arange(bank.num), loc, scale)
    return quality


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    args.out.mkdir(parents=True, exist_ok=True)
    exps, rebuilds = {}, {}
    for period in args.periods:
        pyro.set_rng_seed(args.seed)  # the same initialisation for every period
        exp = build(config(args, args.layers, name="gae", **extra_settings(args.gae)))
        data, b = exp.data.train, args.batch_size
        n, steps_per_epoch = len(data), -(-len(data) // b)
        exp.module.refresh_every = max(1, round(period * steps_per_epoch))
        exps[period], rebuilds[period] = exp, timed_rebuilds(exp.module)
    gen = torch.Generator().manual_seed(args.seed)
    points = torch.randperm(n, generator=gen)[: args.points]
    rows = []
    print(f"n {n}, {steps_per_epoch} steps per epoch, periods (epochs) {args.periods}", flush=True)
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        elbo = {p: 0.0 for p in exps}
        for s in range(steps_per_epoch):
            idx = perm[s * b : (s + 1) * b]
            for p, exp in exps.items():
                elbo[p] += exp.inference.step(data[idx], idx, n)["elbo"] / steps_per_epoch
        for p, exp in exps.items():
            torch.manual_seed(args.seed + epoch)  # the same z draws and tail samples for every period
            quality = quality_keeping_cache(exp.module, points)
            row = {"epoch": epoch, "period": p, "elbo": elbo[p], "mass": quality.get("neighbour_mass"),
                   "err": quality["mean_abs_error"], "max_err": quality["max_abs_error"],
                   "rebuilds": len(rebuilds[p]), "rebuild_s": sum(rebuilds[p])}
            rows.append(row)
            print(f"epoch {epoch} period {p:g}: elbo {row['elbo']:.2f}  mass {row['mass']:.4f}  "
                  f"err {row['err']:.4f} (max {row['max_err']:.3f})  "
                  f"rebuilds {row['rebuilds']} ({row['rebuild_s']:.1f} s)", flush=True)
    (args.out / "rows.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
