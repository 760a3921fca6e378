"""How often must the GAE rebuild its neighbour lists? Quality of the prior estimate against the period.

The ``"knn"`` estimator is unbiased whatever the neighbour lists hold; good lists only lower
its variance. Lists are rebuilt from the cache every ``[model] refresh_every`` training steps
(default: every 2 epochs); the cache, the lists and their rebuild are the GAE's training
objective's (``exp.inference.objective``, an ``ExemplarELBO``). The rebuild is a good part of what the GAE
adds to a step once amortized (``gae_step_time.py``), so this script trains one GAE per
rebuild period, in lockstep on the very same minibatches from the same initialisation, and
after every epoch reports for each, on a fixed random set of training points:

* ``mass``: the exact responsibility mass ``Σ_{j∈N_i} r_ij`` the lists hold (1 = the lists
  hold every component that explains ``z ~ q(z|x_i)``);
* ``err``: the mean absolute error of the estimator's ``log P̂_i(z)`` against the exact
  leave-one-out ``log P_{−i}(z)`` over all ``n`` (``ExemplarELBO.prior_estimate_error``,
  which leaves the cache as it was, so that training goes on undisturbed);
* ``elbo``: the epoch's mean training objective per point (``inference.step``'s ``"elbo"``);
* the seconds spent in list rebuilds.

    python benchmarks/gae_refresh.py                        # periods 1, 2, 4 epochs; 8 epochs; ~8 min
    python benchmarks/gae_refresh.py --periods 1 4 --epochs 4 --layers 2
    python benchmarks/gae_refresh.py --periods 1 2 --epochs 1 --n-train 300 --hidden-size 50 --points 20  # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from common import add_gae_model, add_threads, cached_datasets, gae_config, set_threads, settings, write_json
from pyro_vae.train import build


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--periods", type=float, nargs="+", default=[1, 2, 4], help="rebuild periods, in epochs")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--layers", type=int, default=1)
    add_gae_model(p)
    p.add_argument("--points", type=int, default=500, help="training points the quality is measured on")
    p.add_argument("--gae", nargs="*", default=["bandwidth=shared"], metavar="KEY=VALUE",
                   help="[model] entries of every GAE")
    add_threads(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/gae_refresh"))
    return p.parse_args(argv)


def timed_rebuilds(objective) -> list:
    """Wrap the objective's list rebuild so that its calls' seconds are recorded; returns the record."""
    record, rebuild = [], objective.rebuild_neighbours

    def timed(*a, **k):
        t = time.perf_counter()
        rebuild(*a, **k)
        record.append(time.perf_counter() - t)

    objective.rebuild_neighbours = timed
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    exps, rebuilds = {}, {}
    with cached_datasets():  # one copy of the data for every period's GAE
        for period in args.periods:
            pyro.set_rng_seed(args.seed)  # the same initialisation for every period
            exp = build(gae_config(args, args.layers, name="gae", **settings(args.gae)))
            data, b = exp.data.train, args.batch_size
            n, steps_per_epoch = len(data), -(-len(data) // b)
            objective = exp.inference.objective  # the GAE's training state: cache, lists, rebuilds
            objective.refresh_every = max(1, round(period * steps_per_epoch))
            exps[period], rebuilds[period] = exp, timed_rebuilds(objective)
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
            quality = exp.inference.objective.prior_estimate_error(points, num_draws=2)  # the cache stays as it was
            row = {"epoch": epoch, "period": p, "elbo": elbo[p], "mass": quality.get("neighbour_mass"),
                   "err": quality["mean_abs_error"], "max_err": quality["max_abs_error"],
                   "rebuilds": len(rebuilds[p]), "rebuild_s": sum(rebuilds[p])}
            rows.append(row)
            print(f"epoch {epoch} period {p:g}: elbo {row['elbo']:.2f}  mass {row['mass']:.4f}  "
                  f"err {row['err']:.4f} (max {row['max_err']:.3f})  "
                  f"rebuilds {row['rebuilds']} ({row['rebuild_s']:.1f} s)", flush=True)
    write_json(args.out / "rows.json", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
