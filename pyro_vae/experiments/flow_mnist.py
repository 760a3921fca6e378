"""NICE and the MAF family on MNIST by exact maximum likelihood, next to the papers' figures.

MNIST grey levels (50000 train, 10000 validation, 10000 test), trained with ``[inference]
name = "mle"``, the parameters of the best validation log-likelihood kept
(``[budget] patience``), each model in its own run directory under ``--out`` so that long
runs carry across sessions (``--resume``; a run stopped by ``--max-minutes`` trains on for
another budget when resumed). The test figure is the log-likelihood per image in the space
each paper reports it, and bits per dimension of the 8-bit pixels, which compare across
both:

* ``nice`` -- Dinh, Krueger & Bengio (2014): dequantized pixels in [0, 1]
  (``transform = ["dequantize"]``), 4 additive couplings of 5 x 1000 ReLU layers, diagonal
  scaling, standard logistic prior. The paper: **1980.50** nats test log-likelihood,
  consistent with the 4.36 bits/dim leaderboards list for it (8 − 1980.50 / (784 ln 2) = 4.356).
* ``made``, ``made-mog``, ``maf5``, ``maf10``, ``maf-mog5`` -- Papamakarios, Pavlakou & Murray
  (2017), in logit space (``transform = ["dequantize", "logit"]``, λ = 1e-6): MADE,
  MADE MoG (10 components), MAF(5), MAF(10) and MAF MoG(5), batch normalisation in the
  flows, ReLU MADEs. Their table 2 (unconditional MNIST, nats): the search tools confirm
  **MADE MoG -1038.5** (the paper's benchmark entry); the other rows, quoted from the
  paper as we read it and *not* confirmed here, are MADE -1380.8, MAF(5) -1300.5,
  MAF(10) -1313.1, MAF MoG(5) -1100.3. The authors' code (``gpapamak/maf``) trains MNIST
  MADEs of **two** hidden layers of 1024 (the default here, ``--hidden``), Adam at 1e-3 for
  MADE and MADE MoG and 1e-4 for the flows, batch 100, patience 30, and a weight decay of
  1e-6 that the package's ``[optim]`` does not have.

Every model trains at one learning rate, as the papers' texts state; ``--lr-decays N``
(a ``[budget]`` entry, so a resumed run may take it) restarts from the best parameters at
lr / 10 whenever ``--patience`` runs out, N times. NICE passed the paper's figure that way:
43 epochs at 1e-3, then resumed with ``--patience 3 --lr-decays 2`` (``benchmarks/README.md``).

Each run's ``result.json`` holds its figures; ``summary.json`` and the printed table are
built from all of them, so several invocations fill one table.

    pyro-vae experiment flow-mnist --models nice maf5 --max-minutes 120      # long runs, resumable
    pyro-vae experiment flow-mnist --resume                                  # carry on in another session
    pyro-vae experiment flow-mnist --models nice made --epochs 1 --n-train 200 --n-valid 100 --n-test 100 --hidden 800  # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config
from pyro_vae.train import train

NAME = "flow-mnist"

#: model -> ([model] entries, [data] transform, the paper's test log-likelihood or None, confirmed by us)
MODELS = {
    "nice": ({"name": "nice", "couplings": 4, "hidden": [1000] * 5, "coupling": "additive", "scaling": True,
              "prior": "logistic"}, ["dequantize"], 1980.50, True),
    "made": ({"name": "maf", "num_flows": 1, "batch_norm": False}, ["dequantize", "logit"], -1380.8, False),
    "made-mog": ({"name": "maf", "num_flows": 0, "base": "made_mog", "batch_norm": False},
                 ["dequantize", "logit"], -1038.5, True),
    "maf5": ({"name": "maf", "num_flows": 5}, ["dequantize", "logit"], -1300.5, False),
    "maf10": ({"name": "maf", "num_flows": 10}, ["dequantize", "logit"], -1313.1, False),
    "maf-mog5": ({"name": "maf", "num_flows": 5, "base": "made_mog"}, ["dequantize", "logit"], -1100.3, False),
}
#: The authors' learning rates: a single MADE at 1e-3, the flows at 1e-4 (NICE: 1e-3).
LEARNING_RATES = {"nice": 1e-3, "made": 1e-3, "made-mog": 1e-3}
FLOW_LR = 1e-4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--out", type=Path, default=Path("results/flow_mnist"))
    p.add_argument("--resume", action="store_true", help="continue the runs in --out instead of starting afresh")
    p.add_argument("--epochs", type=int, default=1000, help="epoch budget per run")
    p.add_argument("--patience", type=int, default=30, help="early stopping on the validation log-likelihood")
    p.add_argument("--lr-decays", type=int, default=0,
                   help="on a plateau (--patience), restart from the best parameters at lr / 10, this many times")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget per run (and per resume)")
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024],
                   help="each MADE's hidden widths (the MAF models; NICE keeps 5 x 1000)")
    p.add_argument("--components", type=int, default=10, help="Gaussians per conditional of MADE MoG")
    p.add_argument("--lr", type=float, help="one learning rate for every model (default: the authors')")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--n-train", type=int, help="a fixed random subset of N training images (a quick run)")
    p.add_argument("--n-valid", type=int, help="a fixed random subset of N validation images")
    p.add_argument("--n-test", type=int, help="a fixed random subset of N test images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)


def make_config(args, model: str) -> Config:
    entries, transform, _, _ = MODELS[model]
    entries = dict(entries)
    if entries["name"] == "maf":
        entries.update(hidden=list(args.hidden), components=args.components)
    lr = args.lr or LEARNING_RATES.get(model, FLOW_LR)
    return Config.from_dict({
        "seed": args.seed,
        "data": {"name": "mnist", "data_dir": args.data_dir, "binarize": "none", "transform": transform,
                 "logit_lambda": 1e-6, "batch_size": args.batch_size, "train_size": args.n_train,
                 "valid_size": args.n_valid, "test_size": args.n_test},
        "model": entries,
        "inference": {"name": "mle"},
        "optim": {"name": "adam", "lr": lr},
        "budget": {"epochs": args.epochs, "patience": args.patience, "lr_decays": args.lr_decays,
                   "max_minutes": args.max_minutes},
        "eval": {"num_samples": 0, "plots": False},
    })


def run_model(args, model: str) -> dict:
    """Train (or resume) one model's run and score its test split; its ``result.json`` row."""
    run_dir = args.out / model
    if not args.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.time()
    exp, state = train(make_config(args, model), run_dir, progress=False)  # the best validation parameters
    test = exp.inference.evaluate(exp.data.test)
    _, _, paper, confirmed = MODELS[model]
    row = {"model": model, "test_log_likelihood": test["log_likelihood"], "test_bits_per_dim": test["bits_per_dim"],
           "best_valid_log_likelihood": state.best_score, "epochs": state.epoch, "stopped": state.stopped,
           "lr_decays": state.lr_decays,
           "test_points": len(exp.data.test), "train_points": len(exp.data.train),
           "paper": paper, "paper_confirmed": confirmed, "seconds_this_call": round(time.time() - started, 1),
           "config": exp.config.to_dict()}
    checkpoint.write_text(run_dir / "result.json", json.dumps(row, indent=2) + "\n")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | epochs (stopped) | test log-likelihood (nats) | bits/dim | paper | train images |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.2f}" + ("" if r["paper_confirmed"] else " (unconfirmed)")
        n = r.get("lr_decays", 0)  # rows written before the column had none
        decays = f", {n} lr decay{'s' * (n > 1)}" if n else ""
        lines.append(f"| {r['model']} | {r['epochs']} ({r['stopped']}{decays}) | {r['test_log_likelihood']:.2f} | "
                     f"{r['test_bits_per_dim']:.3f} | {paper} | {r['train_points']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        row = run_model(args, model)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    rows = [json.loads(p.read_text()) for p in sorted(args.out.glob("*/result.json"))]
    rows.sort(key=lambda r: list(MODELS).index(r["model"]))
    summary = {"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}
    checkpoint.write_text(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(table(rows))
    print("NICE in dequantized [0, 1] pixel space, the MAF family in logit space (λ = 1e-6): the papers' spaces; "
          "bits/dim compare across both. Papers' numbers marked unconfirmed were not verified by this package.")
    if any(r["train_points"] < 50000 or not math.isfinite(r["test_log_likelihood"]) for r in rows):
        print("note: some runs used a subset of the data or are unfinished: not comparable with the papers yet")
    return summary
