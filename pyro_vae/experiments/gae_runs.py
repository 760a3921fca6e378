"""What the ``gae-nll`` and ``gae-parzen`` experiments share: the runs' settings and bookkeeping.

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
import shutil
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config, migrate_legacy

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
                   help="[model] entries of the GAE runs, e.g. bandwidth=shared (0.1's exemplar_* names "
                        "are understood too)")
    p.add_argument("--n-train", type=int,
                   help="train on a fixed random subset of N training images (the GAE's exemplars; "
                        "[data] train_size: a quick run)")
    p.add_argument("--n-valid", type=int,
                   help="early-stop on a fixed random subset of N validation images ([data] valid_size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the runs in --out instead of starting afresh")
    p.add_argument("--out", type=Path, default=Path(out))


def make_config(args, model: str, layers: int, data: str, binarize: str) -> Config:
    config = Config.from_dict({
        "seed": args.seed,
        "data": {"name": data, "data_dir": args.data_dir, "binarize": binarize, "batch_size": args.batch_size,
                 "train_size": args.n_train, "valid_size": args.n_valid},
        "model": {"name": model, "z_dim": args.z_dim, "hidden": [args.hidden_size] * layers,
                  "activation": args.activation, "likelihood": "bernoulli"},
        "inference": {"warmup_epochs": args.warmup_epochs},
        "optim": {"name": "adam", "lr": args.lr},
        "budget": {"epochs": args.epochs, "patience": args.patience, "max_minutes": args.max_minutes,
                   "lr_decays": args.lr_decays},
        "eval": {"num_samples": 0, "plots": False},
    })
    if model == "gae" and args.gae:
        config = config.with_overrides([f"model.{a}" for a in model_entries(args.gae)])
    return config


def model_entries(items: list[str]) -> list[str]:
    """``KEY=VALUE`` entries of ``[model]``, pyro-vae 0.1's GAE names (``exemplar_bandwidth``,
    ...) under this release's (``bandwidth``, ...)."""
    out = []
    for item in items:
        key, _, value = item.partition("=")
        (new,) = migrate_legacy({"model": {key.strip(): None}})["model"]
        out.append(f"{new}={value}")
    return out


def train_run(args, config: Config, run_dir: Path):
    """Train (or, with ``--resume``, continue) one run; ``(exp, state, seconds)``, the
    seconds of all its epochs (validation included) over every call, not only this one's:
    a run carried on by ``--resume`` reports its whole training time."""
    if not args.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    exp, state = train(config, run_dir, progress=False)
    return exp, state, sum(row["seconds"] for row in state.history)


def unscored(run_dir: Path, state, train_s: Optional[float]) -> Optional[dict]:
    """The row of a run that ``--max-minutes`` stopped, instead of its test score: its
    parameters are still training, and a score at k = 5000 costs hours (``--resume``
    carries the run on, and scores it once it stops on its epochs or its patience). None
    for a run that stopped for good."""
    if state.stopped != "time":
        return None
    return {"run": str(run_dir), "unscored": "stopped by --max-minutes; --resume carries it on",
            **run_facts(state, train_s)}


def run_facts(state, train_s: Optional[float]) -> dict:
    return {"epochs": state.epoch, "stopped": state.stopped, "best_valid_elbo": state.best_score,
            "train_s": train_s}


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
