"""Test NLL of the GAE and the VAE on static binarized MNIST, 1 to 4 hidden layers.

The GAE paper's Table (Kim, Kim & Hwang 2018) reports, for 1/2/3/4 hidden layers,
VAE -107.18/-96.94/-97.62/-102.97 and GAE -97.66/-96.91/-95.76/-94.66 (log-likelihoods).
Targets here: GAE <= 85.5 nats (VampPrior reports 85.57 on this binarization) and the
GAE better than the VAE at every depth.

For each depth L and each model, one run of the package's training loop
(``pyro_vae.train.train``) on the fixed binarization of Larochelle & Murray
(``binarized_mnist``: its 50000 training images are the GAE's exemplars, its 10000
validation images drive early stopping and its 10000 test images are scored). The two
configs differ only in ``[model] name`` (and the GAE's own entries):

    [data]   name = "binarized_mnist"; binarize = "none"; batch_size = 100
    [model]  z_dim = 40; hidden = [500] * L; activation = "relu"
    [optim]  adam, lr 1e-3;   [budget] epochs, patience, max_minutes per run
    GAE:     name = "gae"; lambda1 = lambda2 = 0.05 (the default estimator "knn")

``elbo = "auto"``: the VAE trains with the analytic-KL ELBO, the GAE with
``TraceEnum_ELBO`` (its data index is enumerated). The best validation parameters are
then scored by importance sampling with ``--eval-samples`` samples per test image
(``pyro_vae.evaluation.log_likelihood``; for the GAE its own estimator with the *exact*
mixture prior over all 50000 training components). The GAE's evaluation costs
``points x samples x 50000`` Gaussian log-densities: with 1000 samples about an hour per
model for all 10000 test images on one busy core; ``--eval-points`` scores the first N.

It also reports the GAE's training-estimator diagnostics at the end (mean |log P̂ − log P|
of the prior estimate, and the responsibility mass its neighbour lists hold).

    python benchmarks/gae_nll.py --max-minutes 120                        # the real run: many hours
    python benchmarks/gae_nll.py --epochs 1 --layers 1 --eval-samples 10 --eval-points 50   # smoke test
    python benchmarks/gae_nll.py --max-minutes 120 --resume               # continue after an interruption

Output under ``--out`` (default ``results/gae_nll``): ``<model>-L<depth>/`` run
directories, ``summary.json`` and a Markdown table (also printed).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_vae.config import Config
from pyro_vae.evaluation import log_likelihood
from pyro_vae.train import train

PAPER = {"vae": {1: -107.18, 2: -96.94, 3: -97.62, 4: -102.97}, "gae": {1: -97.66, 2: -96.91, 3: -95.76, 4: -94.66}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--models", nargs="+", default=["vae", "gae"], choices=["vae", "gae"])
    p.add_argument("--hidden-size", type=int, default=500)
    p.add_argument("--z-dim", type=int, default=40)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=1000, help="epoch budget per run")
    p.add_argument("--patience", type=int, default=50, help="early stopping on the validation ELBO")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget per run")
    p.add_argument("--gae", nargs="*", default=["lambda1=0.05", "lambda2=0.05"], metavar="KEY=VALUE",
                   help="[model] entries of the GAE runs (TOML values)")
    p.add_argument("--eval-samples", type=int, default=1000, help="importance samples per test image")
    p.add_argument("--eval-points", type=int, default=None, help="score only the first N test images")
    p.add_argument("--diagnostic-points", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the runs in --out instead of starting afresh")
    p.add_argument("--out", type=Path, default=Path("results/gae_nll"))
    return p.parse_args(argv)


def make_config(args, model: str, layers: int) -> Config:
    entries = {"name": model, "z_dim": args.z_dim, "hidden": [args.hidden_size] * layers,
               "activation": args.activation, "likelihood": "bernoulli"}
    config = Config.from_dict({
        "seed": args.seed,
        "data": {"name": "binarized_mnist", "data_dir": args.data_dir, "binarize": "none",
                 "batch_size": args.batch_size},
        "model": entries,
        "optim": {"name": "adam", "lr": args.lr},
        "budget": {"epochs": args.epochs, "patience": args.patience, "max_minutes": args.max_minutes},
        "eval": {"num_samples": 0, "plots": False},
    })
    if model == "gae" and args.gae:
        config = config.with_overrides([f"model.{a}" for a in args.gae])
    return config


def run_one(args, model: str, layers: int) -> dict:
    run_dir = args.out / f"{model}-L{layers}"
    if not args.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    config = make_config(args, model, layers)
    t0 = time.time()
    exp, state = train(config, run_dir, progress=False)
    train_s = time.time() - t0
    test = exp.data.test[: args.eval_points]
    pyro.set_rng_seed(args.seed)
    t0 = time.time()
    ll = log_likelihood(exp.module, test, num_samples=args.eval_samples)
    eval_s = time.time() - t0
    row = {
        "model": model, "layers": layers, "test_nll": -ll.mean, "stderr": ll.stderr,
        "eval_samples": args.eval_samples, "test_points": len(test),
        "epochs": state.epoch, "stopped": state.stopped, "best_valid_elbo": state.best_valid,
        "train_s": train_s, "eval_s": eval_s, "paper_ll": PAPER[model].get(layers),
    }
    if model == "gae":
        idx = torch.randperm(exp.module.num_exemplars)[: args.diagnostic_points]
        row["estimator"] = exp.module.prior_estimate_error(idx, num_draws=2)
    (run_dir / "result.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for layers in args.layers:
        for model in args.models:
            row = run_one(args, model, layers)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                        "rows": rows}, indent=2) + "\n")
    by = {(r["model"], r["layers"]): r for r in rows}
    print(f"\nTest NLL (nats, k={args.eval_samples}, {rows[0]['test_points']} test images; lower is better)\n")
    print("| hidden layers | VAE | GAE | GAE - VAE | paper VAE / GAE (log-lik.) |")
    print("|---|---|---|---|---|")
    for layers in args.layers:
        v, g = by.get(("vae", layers)), by.get(("gae", layers))
        cell = lambda r: f"{r['test_nll']:.2f} ± {r['stderr']:.2f}" if r else "-"
        diff = f"{g['test_nll'] - v['test_nll']:+.2f}" if v and g else "-"
        print(f"| {layers} | {cell(v)} | {cell(g)} | {diff} | {PAPER['vae'][layers]} / {PAPER['gae'][layers]} |")
    gae_rows = [r for r in rows if r["model"] == "gae"]
    if gae_rows:
        best = min(r["test_nll"] for r in gae_rows)
        print(f"\nbest GAE: {best:.2f} nats (target <= 85.5: {'reached' if best <= 85.5 else 'not reached'})")
        for r in gae_rows:
            print(f"GAE L={r['layers']} estimator diagnostics: {r['estimator']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
