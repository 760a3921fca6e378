"""What ``gae_nll.py`` and ``gae_parzen.py`` share: the runs' settings and bookkeeping.

Both train the GAE and the VAE the same way (``[500] * L`` layers, ``z_dim`` 40, ReLU,
Bernoulli decoder, Adam 1e-3, batch 100, early stopping on the validation ELBO; the GAE
with ``lambda1 = lambda2 = 0.05`` and its default "knn" estimator; options change the
widths, activation (e.g. ``glu``: VampPrior's gated layers) and a KL warm-up), one run directory
``<model>-L<layers>`` per (model, depth) under ``--out``. Each run writes its
``result.json``; the table is built from every ``result.json`` under ``--out``, so that
several invocations (e.g. the VAE and the GAE in two processes) fill one table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config
from pyro_vae.train import train


def add_run_arguments(p: argparse.ArgumentParser, layers: list[int], models: list[str], out: str) -> None:
    p.add_argument("--layers", type=int, nargs="+", default=layers)
    p.add_argument("--models", nargs="+", default=models, choices=["vae", "gae"])
    p.add_argument("--hidden-size", type=int, default=500)
    p.add_argument("--z-dim", type=int, default=40)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="KL warm-up: the latent terms' weight rises linearly to 1 over this many epochs")
    p.add_argument("--epochs", type=int, default=1000, help="epoch budget per run")
    p.add_argument("--patience", type=int, default=50, help="early stopping on the validation ELBO")
    p.add_argument("--lr-decays", type=int, default=0,
                   help="on a plateau, restart from the best parameters at lr / 10, this many times")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget per run")
    p.add_argument("--gae", nargs="*", default=["lambda1=0.05", "lambda2=0.05"], metavar="KEY=VALUE",
                   help="[model] entries of the GAE runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the runs in --out instead of starting afresh")
    p.add_argument("--out", type=Path, default=Path(out))


def make_config(args, model: str, layers: int, data: str, binarize: str) -> Config:
    config = Config.from_dict({
        "seed": args.seed,
        "data": {"name": data, "data_dir": args.data_dir, "binarize": binarize, "batch_size": args.batch_size},
        "model": {"name": model, "z_dim": args.z_dim, "hidden": [args.hidden_size] * layers,
                  "activation": args.activation, "likelihood": "bernoulli"},
        "inference": {"warmup_epochs": args.warmup_epochs},
        "optim": {"name": "adam", "lr": args.lr},
        "budget": {"epochs": args.epochs, "patience": args.patience, "max_minutes": args.max_minutes,
                   "lr_decays": args.lr_decays},
        "eval": {"num_samples": 0, "plots": False},
    })
    if model == "gae" and args.gae:
        config = config.with_overrides([f"model.{a}" for a in args.gae])
    return config


def train_run(args, config: Config, run_dir: Path):
    """Train (or, with ``--resume``, continue) one run; ``(exp, state, seconds)``."""
    if not args.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.time()
    exp, state = train(config, run_dir, progress=False)
    return exp, state, time.time() - t0


def run_facts(state, train_s: Optional[float]) -> dict:
    return {"epochs": state.epoch, "stopped": state.stopped, "best_valid_elbo": state.best_valid,
            "train_s": train_s}


def random_subset(data: torch.Tensor, num: Optional[int], seed: int) -> torch.Tensor:
    """``num`` rows drawn without replacement (seeded; all of ``data`` when ``num`` is
    None), in that random order. Never the first rows: MNIST's files are not shuffled
    (the first 2000 binarized test images carry 7% less ink than the whole set, and a
    far lower NLL), and so that any prefix of a chunked evaluation is a random sample."""
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data[keep[:num]]


def paired(diff: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of per-image differences between two models scored on
    the same images: the paired comparison, far tighter than either model's own error."""
    return diff.mean().item(), diff.std().item() / math.sqrt(len(diff))


def save_result(run_dir: Path, row: dict) -> None:
    checkpoint.write_text(run_dir / "result.json", json.dumps(row, indent=2) + "\n")


def collect(out: Path, args) -> list[dict]:
    """Every run's ``result.json`` under ``out`` (sorted by depth, then model), and
    ``summary.json`` written with them."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-L*/result.json"))]
    rows.sort(key=lambda r: (r["layers"], r["model"]))
    checkpoint.write_text(out / "summary.json", json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2) + "\n")
    return rows


def run_all(args, run_one: Callable[[argparse.Namespace, str, int], dict]) -> list[dict]:
    """``run_one(args, model, layers)`` for every depth and model asked for (each row
    printed as it comes), then :func:`collect`."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    args.out.mkdir(parents=True, exist_ok=True)
    for layers in args.layers:
        for model in args.models:
            print(json.dumps(run_one(args, model, layers)), flush=True)
    return collect(args.out, args)
