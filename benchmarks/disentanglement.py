"""Disentangling dSprites: plain VAE, β-VAE (β = 4, 16), DIP-VAE-I and -II, several seeds,
every metric with its spread across seeds (issue 20).

The protocol of disentanglement_lib (Locatello et al. 2019) on the rendered dSprites
(``[data] name = "dsprites"``: 10000 training images): a 10-dim latent, its conv encoder and
decoder (4 conv layers 32-32-64-64 of kernel 4 and stride 2, a 256-unit dense layer, ReLU),
a Bernoulli decoder, Adam 1e-4, batch 64; the methods:

=============  ==========================================================
``vae``        the ELBO
``beta4``      β-VAE, β = 4 (``[inference] kl_weight = 4``)
``beta16``     β-VAE, β = 16
``dip1``       DIP-VAE-I, λ_od = 10, λ_d = 10 λ_od
``dip2``       DIP-VAE-II, λ_od = 10, λ_d = λ_od
=============  ==========================================================

Every (method, seed) is a run directory ``<method>-s<seed>`` under ``--out``, trained by
``pyro_vae.train.train``, which resumes from its checkpoint: a rerun with more
``--epochs`` (or after ``--max-minutes`` ran out) trains on where the last one stopped, so
a long benchmark carries across sessions. Then each run is scored
(``pyro_vae.disentanglement_report.write_disentanglement``: ``disentanglement.json``, the
table, traversals and KL per dimension in the run directory; a score of the same epoch,
size and metrics is read back, not recomputed) and the table of means ± standard
deviations across seeds is printed and written to ``--out/summary.json`` with the steps
and training minutes of every run.

    python benchmarks/disentanglement.py --epochs 1920 --seeds 0 1 2               # ~300k steps a run: days on a CPU
    python benchmarks/disentanglement.py --methods vae beta4 --seeds 0 --epochs 2 --max-minutes 4   # a look, ~10 min
    python benchmarks/disentanglement.py --size full                                # disentanglement_lib's metric settings
    python benchmarks/disentanglement.py --throughput --size full                   # seconds per metric, 10000 points

``--throughput`` instead times every metric on a representation that costs next to
nothing (a fixed random projection of the pixels to 10 codes) at ``--size`` with
``num_train = --points``: the seconds of the metric itself, rendering the images included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import add_threads, set_threads, write_json

METHODS = {
    "vae": [],
    "beta4": ["inference.kl_weight=4.0"],
    "beta16": ["inference.kl_weight=16.0"],
    "dip1": ["inference.regulariser=dip_vae_i", "inference.dip_lambda_od=10.0", "inference.dip_factor=10.0"],
    "dip2": ["inference.regulariser=dip_vae_ii", "inference.dip_lambda_od=10.0", "inference.dip_factor=1.0"],
}
#: disentanglement_lib's architecture and optimiser for dSprites.
PROTOCOL = ["data.name=dsprites", "data.binarize=none", "data.batch_size=64", "model.z_dim=10",
            "model.network=conv", "model.hidden=[256]", "model.activation=relu", "model.likelihood=bernoulli",
            "optim.name=adam", "optim.lr=1e-4", "budget.monitor=none", "eval.num_samples=0", "eval.plots=false"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (156 steps each on the 10000 images)")
    p.add_argument("--max-minutes", type=float, help="per run and call: stop after the epoch that passes it "
                                                      "(a rerun resumes)")
    p.add_argument("--train-size", type=int, help="a fixed subset of the training images (smoke runs)")
    p.add_argument("--size", choices=["quick", "full"], default="quick", help="the metrics' settings "
                   "(pyro_vae.disentanglement_report: quick uses a 10-tree DCI)")
    p.add_argument("--only", nargs="+", help="these metrics only (beta_vae factor_vae mig dci sap)")
    p.add_argument("--dci-trees", type=int, help="DCI's boosted trees per factor")
    p.add_argument("--throughput", action="store_true", help="time the metrics instead (see the docstring)")
    p.add_argument("--points", type=int, default=10000, help="--throughput: num_train of every metric")
    p.add_argument("--out", type=Path, default=Path("results/disentanglement"))
    add_threads(p)
    return p.parse_args(argv)


def run_config(args, method: str, seed: int):
    from pyro_vae.config import Config

    extra = [f"data.train_size={args.train_size}"] if args.train_size else []
    budget = [f"budget.epochs={args.epochs}", f"budget.max_minutes={args.max_minutes or 'none'}"]
    return Config().with_overrides(PROTOCOL + METHODS[method] + extra + budget + [f"seed={seed}"])


def train_and_score(args, method: str, seed: int) -> dict:
    """Train (or resume) one run and score it; its row."""
    from pyro_vae.disentanglement_report import write_disentanglement
    from pyro_vae.evaluation.disentanglement import METRICS
    from pyro_vae.train import train

    run_dir = args.out / f"{method}-s{seed}"
    exp, state = train(run_config(args, method, seed), run_dir, progress=False)
    metrics = args.only or list(METRICS)
    saved = run_dir / "disentanglement.json"
    record = json.loads(saved.read_text()) if saved.exists() else {}
    same = (record.get("epoch"), record.get("size"), record.get("dci_trees"), sorted(record.get("scores", {})))
    if same != (state.epoch, args.size, args.dci_trees, sorted(metrics)):
        record = write_disentanglement(exp, state, run_dir, metrics, size=args.size, seed=seed,
                                       dci_trees=args.dci_trees)
    minutes = sum(row["seconds"] for row in state.history) / 60
    row = {"method": method, "seed": seed, "epochs": state.epoch, "steps": state.step,
           "train_minutes": round(minutes, 2), "final_train_elbo": state.history[-1].get("train_elbo"),
           "scores": record["scores"], "metric_seconds": record["seconds"]}
    print(f"{method} seed {seed}: {state.step} steps, {minutes:.1f} min; "
          + ", ".join(f"{m}={headline(record['scores'], m):.3f}" for m in record["scores"]), flush=True)
    return row


def headline(scores: dict, metric: str) -> float:
    from pyro_vae.disentanglement_report import HEADLINE

    return scores[metric][HEADLINE[metric]]


def spread(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` (sample sd; none for one value)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: list[dict]) -> str:
    """Means ± sds across seeds, by method: the headline of every metric, DCI's
    completeness and informativeness, steps and training minutes."""
    metrics = sorted({m for r in rows for m in r["scores"]})
    extra = [("dci", "completeness"), ("dci", "informativeness_test")] if "dci" in metrics else []
    head = ["method", "seeds", "steps", "train min"] + metrics + [f"{m} {k}" for m, k in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        cells = [method, str(len(mine)), spread([r["steps"] for r in mine], 0),
                 spread([r["train_minutes"] for r in mine], 1)]
        cells += [spread([headline(r["scores"], m) for r in mine]) for m in metrics]
        cells += [spread([r["scores"][m][k] for r in mine]) for m, k in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput(args) -> dict:
    """Seconds per metric at ``--size`` with ``num_train = --points`` on a free representation."""
    import torch

    from pyro_vae.data.dsprites import DSprites
    from pyro_vae.disentanglement_report import settings_for
    from pyro_vae.evaluation.disentanglement import METRICS

    data = DSprites()
    projection = torch.randn(64 * 64, 10, generator=torch.Generator().manual_seed(0)) / 64

    def representation(x: torch.Tensor) -> torch.Tensor:  # one small matmul: the metric's own cost shows
        return x.reshape(len(x), -1) @ projection

    settings = settings_for(args.size, args.dci_trees)
    seconds = {}
    for m in args.only or list(METRICS):
        s = dict(settings[m], num_train=args.points)
        started = time.perf_counter()
        METRICS[m](representation, data, seed=0, **s)
        seconds[m] = round(time.perf_counter() - started, 2)
        print(f"{m}: {seconds[m]:.1f} s ({args.size}, num_train {args.points})", flush=True)
    return seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.throughput:
        write_json(args.out / "throughput.json", {"size": args.size, "points": args.points,
                                                  "seconds": throughput(args)})
        return 0
    started = time.perf_counter()
    rows = [train_and_score(args, method, seed) for method in args.methods for seed in args.seeds]
    print(table(rows))
    write_json(args.out / "summary.json", {"rows": rows, "size": args.size, "dci_trees": args.dci_trees,
                                           "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
