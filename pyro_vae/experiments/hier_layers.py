"""What each latent layer learns: the VLAE against the stacked two-level VAE on MNIST.

Zhao, Song & Ermon (2017) claim that the VLAE's layers each carry a distinct factor (on
MNIST with three 2-D layers: top digit identity, middle width and slant, bottom stroke
width), while in a Markov hierarchy ``z_2 → z_1 → x`` the upper layer goes unused (its KL
near 0). Measured here, on the same data, epochs and optimizer:

* ``vlae``: ``[model] name = "vlae"``, ``z_dims = [2, 2, 2]``, conv rungs (64 and 128
  channels, then 1024 units: the paper's MNIST code), warm-up ``1 − exp(−t/15000)``;
* ``hvae``: ``name = "hvae"``, 2-D levels ``z_2`` and ``z_1``, hidden ``[500, 500]``.

Each run reports per layer: the KL (nats per test point), the active units (Burda et
al.'s criterion) and the accuracy of a linear probe from the layer's posterior means to
the digit label (fitted on ``--probe-train`` training points, scored on the test set); it
draws the traversal grid per layer (``layers_traversal.png``: that layer varied over its
prior's quantiles, the others at one draw), the KL bars and the per-layer scatter.

    pyro-vae experiment vlae-layers --max-minutes 60            # one long run per model
    pyro-vae experiment vlae-layers --max-minutes 60 --resume   # carry the runs on
    pyro-vae experiment vlae-layers --epochs 1 --n-train 1000 --probe-train 500 --test-points 500   # smoke

Output under ``--out`` (default ``results/vlae_layers``): ``<model>/`` run directories
with ``result.json`` and ``plots/``, and the table printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config
from pyro_vae.evaluation.layers import active_units, layer_kl, linear_probe, posterior_means
from pyro_vae.experiments.common import seeded_subset
from pyro_vae.experiments.gae_runs import train_run
from pyro_vae.layer_report import write_layer_plots

MODELS = {
    "vlae": {"name": "vlae", "z_dims": [2, 2, 2], "hidden": [64, 128, 1024], "depths": [1, 1, 1],
             "network": "conv", "activation": "relu", "warmup_steps": 15000},
    "hvae": {"name": "hvae", "z_dim": 2, "z1_dim": 2, "hidden": [500, 500], "activation": "relu"},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget per run")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, help="a fixed random subset of N training images")
    p.add_argument("--n-valid", type=int, help="validate on a fixed random subset of N validation images")
    p.add_argument("--test-points", type=int, default=2000,
                   help="a seeded random N of the test images the figures are measured on")
    p.add_argument("--probe-train", type=int, default=5000, help="training images the linear probe is fitted on")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the runs in --out instead of starting afresh")
    p.add_argument("--out", type=Path, default=Path("results/vlae_layers"))


def make_config(args, model: str) -> Config:
    return Config.from_dict({
        "seed": args.seed,
        "data": {"name": "mnist", "data_dir": args.data_dir, "binarize": "dynamic", "batch_size": args.batch_size,
                 "train_size": args.n_train, "valid_size": args.n_valid},
        "model": {**MODELS[model], "likelihood": "bernoulli"},
        "optim": {"name": "adam", "lr": args.lr},
        "budget": {"epochs": args.epochs, "patience": 1000, "max_minutes": args.max_minutes},
        "eval": {"num_samples": 0, "plots": False},
    })


def run_one(args, model: str) -> dict:
    run_dir = args.out / model
    exp, state, train_s = train_run(args, make_config(args, model), run_dir)
    data, module = exp.data, exp.module
    keep = seeded_subset(torch.arange(len(data.test)), args.test_points, args.seed)  # not the first rows
    test, test_labels = data.test[keep], data.test_labels[keep]
    rows = seeded_subset(torch.arange(len(data.train)), args.probe_train, args.seed)
    train_x, train_labels = data.train[rows], data.train_labels[rows]
    t0 = time.time()
    means, train_means = posterior_means(module, test), posterior_means(module, train_x)
    kl, active = layer_kl(module, test, num_samples=10), active_units(module, test, means=means)
    probe = {name: linear_probe(train_means[name], train_labels, means[name], test_labels) for name in means}
    write_layer_plots(exp, run_dir / "plots", num_points=args.test_points)
    row = {"model": model, "epochs": state.epoch, "steps": state.step, "best_valid_elbo": state.best_score,
           "train_s": train_s, "eval_s": time.time() - t0, "kl": kl, "active_units": active,
           "sizes": module.layer_sizes, "probe_accuracy": probe, "test_points": len(test)}
    checkpoint.write_text(run_dir / "result.json", json.dumps(row, indent=2) + "\n")
    return row


def print_table(rows: list[dict]) -> None:
    print("\nPer layer, top first: KL (nats/point) | active units | linear-probe accuracy on the digit label\n")
    print("| model | epochs | valid ELBO | layer | KL | active | probe acc. |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for i, name in enumerate(r["kl"]):
            head = f"| {r['model']} | {r['epochs']} | {r['best_valid_elbo']:.2f} " if i == 0 else "| | | "
            print(f"{head}| {name} | {r['kl'][name]:.2f} | {r['active_units'][name]}/{r['sizes'][name]} | "
                  f"{r['probe_accuracy'][name]:.3f} |")


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        rows.append(run_one(args, model))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    return rows
