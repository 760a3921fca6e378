"""Frey Face with a Gaussian decoder: the test lower bound for N_z = 2 and N_z = 20.

The continuous-data experiment of Kingma & Welling (2014), section 5 and figure 2:
1965 grey-level 28x20 faces scaled to [0, 1] (1565 train / 200 valid / 200 test, the
package's fixed split), a decoder p(x|z) = N(sigmoid(mu(z)), diag sigma(z)^2) (the
package floors sigma at 1e-3), one hidden layer of 200 tanh units in encoder and
decoder, batch 100, and Adam at lr 1e-3. The paper used Adagrad with a global step size
from {0.01, 0.02, 0.1} (``--optimizer adagrad --lr 0.01``); here Adam gets much further
in the same time: after 20 s of training (N_z = 20, about 110 epochs) its test ELBO was
about 1150 nats against 935 for Adagrad at 0.01, and 717, 586 and 386 at Adagrad's 0.02,
0.05 and 0.1.

For each N_z it trains one run (early stopping on the validation ELBO, a wall-time
budget per run) and reports the test ELBO, a lower bound on log p(x) in nats per face
(a density of continuous data: positive, and not comparable with the binary-data
figures), as the mean over the test faces of a ``--eval-elbo-samples``-sample
Monte-Carlo ELBO; with ``--eval-samples K`` > 0, also the importance-sampled
log-likelihood with K samples. The decoder's ``min_scale`` bounds how sharp a pixel's
density can get, so that the likelihood of the (partly saturated) faces stays finite.

Output under ``--out`` (default ``results/frey_face``): ``nz<N>/run`` (the package run
directory), ``nz<N>/curve.csv``, ``nz<N>/curve.png``, ``nz<N>/samples.png`` (and
``manifold.png`` for N_z = 2), ``summary.json``; the summary table is printed.

    pyro-vae experiment frey-face                                    # both N_z, minutes
    pyro-vae experiment frey-face --z-dims 2 --max-minutes 0.2 --eval-elbo-samples 10
    pyro-vae experiment frey-face --z-dims 2 --epochs 2 --eval-elbo-samples 2 --no-progress   # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import pyro
import torch

from pyro_vae import plots
from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import elbo_per_point, log_likelihood
from pyro_vae.experiments.common import saved_config
from pyro_vae.report import manifold
from pyro_vae.train import train

NAME = "frey-face"

CURVE_FIELDS = ["epoch", "step", "samples_seen", "train_elbo", "valid_elbo", "seconds", "elapsed_seconds"]


def make_config(args, z_dim: int) -> Config:
    return Config.from_dict({
        "seed": args.seed,
        "data": {"name": "frey_face", "data_dir": args.data_dir, "binarize": "none", "batch_size": args.batch_size},
        "model": {"name": "vae", "z_dim": z_dim, "hidden": args.hidden, "activation": "tanh",
                  "likelihood": "gaussian"},
        "inference": {"name": "svi", "elbo": args.elbo, "num_particles": 1},
        "optim": {"name": args.optimizer, "lr": args.lr if args.lr is not None else
                  {"adagrad": 0.01, "adam": 1e-3}[args.optimizer]},
        "budget": {"epochs": args.epochs, "patience": args.patience, "max_minutes": args.max_minutes},
        "eval": {"num_samples": 0, "plots": False},
    })


def write_curve(history: list[dict], out: Path, title: str) -> tuple[Path, Path]:
    elapsed, rows = 0.0, []
    for row in history:
        elapsed += row["seconds"]
        rows.append({**{k: row.get(k) for k in CURVE_FIELDS[:-1]}, "elapsed_seconds": round(elapsed, 3)})
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return out / "curve.csv", plots.elbo_curves(history, out / "curve.png", title=title)


def run_one(args, z_dim: int) -> dict:
    out = args.out / f"nz{z_dim}"
    run_dir = out / "run"
    if (run_dir / "checkpoint.pt").exists() and not args.resume:
        raise ConfigError(f"{run_dir} holds a run already: pass --resume to continue (or re-evaluate) it, "
                          "or give another --out")
    if args.resume and (run_dir / "config.toml").exists():
        config = saved_config(run_dir)
    else:
        config = make_config(args, z_dim)
    out.mkdir(parents=True, exist_ok=True)
    print(f"N_z = {z_dim}: {config.optim.name} lr={config.optim.lr}, hidden={config.model.hidden}, "
          f"elbo={config.inference.elbo}; budget {config.budget.epochs} epochs, "
          f"{config.budget.max_minutes} minutes, patience {config.budget.patience}", flush=True)
    started = time.perf_counter()
    exp, state = train(config, run_dir, progress=not args.no_progress)  # best validation parameters
    train_wall = time.perf_counter() - started
    write_curve(state.history, out, f"Frey Face, N_z = {z_dim}")
    vae, test, shape = exp.module, exp.data.test, exp.data.image_shape
    pyro.set_rng_seed(config.seed)
    with torch.no_grad():
        plots.image_grid(vae.sample(100).flatten(1), shape, out / "samples.png", title=f"samples, N_z = {z_dim}")
        if z_dim == 2:
            manifold(vae, shape, out / "manifold.png", n=10, device=exp.device, title="learned manifold")
    started = time.perf_counter()
    per_point = elbo_per_point(vae.model, vae.guide, test, num_samples=args.eval_elbo_samples)
    row = {
        "z_dim": z_dim, "test_elbo": per_point.mean().item(),
        "test_elbo_stderr": (per_point.std() / len(per_point) ** 0.5).item(),
        "train_elbo": elbo_per_point(vae.model, vae.guide, exp.data.train,
                                     num_samples=args.eval_elbo_samples).mean().item(),
        "best_valid_elbo": state.best_score, "epochs": state.epoch, "steps": state.step,
        "samples_seen": state.step * config.data.batch_size, "stopped": state.stopped,
    }
    if args.eval_samples > 0:
        ll = log_likelihood(vae, test, num_samples=args.eval_samples)
        row.update(test_log_likelihood=ll.mean, test_log_likelihood_stderr=ll.stderr,
                   eval_samples=args.eval_samples)
    row.update(train_loop_seconds=sum(r["seconds"] for r in state.history),
               train_wall_seconds_this_call=train_wall, eval_wall_seconds=time.perf_counter() - started,
               out=str(out), config=config.to_dict())
    return row


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--out", type=Path, default=Path("results/frey_face"), help="output folder")
    p.add_argument("--z-dims", type=int, nargs="+", default=[2, 20], help="latent sizes, one run each")
    p.add_argument("--max-minutes", type=float, default=15.0, help="training wall-time budget per run")
    p.add_argument("--epochs", type=int, default=20000, help="epoch budget per run (16 steps an epoch)")
    p.add_argument("--patience", type=int, default=500,
                   help="stop after this many epochs without a better validation ELBO")
    p.add_argument("--optimizer", choices=["adam", "adagrad"], default="adam")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 for Adam, 0.01 for Adagrad)")
    p.add_argument("--hidden", type=int, nargs="+", default=[200])
    p.add_argument("--elbo", default="jit_meanfield", help="[inference] elbo")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eval-elbo-samples", type=int, default=1000,
                   help="Monte-Carlo samples per face of the reported test ELBO")
    p.add_argument("--eval-samples", type=int, default=0,
                   help="importance samples per face for a test log-likelihood (0: skip)")
    p.add_argument("--resume", action="store_true",
                   help="continue the runs under OUT from their checkpoints with the settings they were "
                        "started with (runs ended by their epochs or early stopping are only evaluated again; "
                        "those stopped by the time budget train on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (the networks are small: one thread is fastest)")
    p.add_argument("--data-dir", help="folder holding frey_face/frey_rawface.mat")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = [run_one(args, z) for z in args.z_dims]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print("| N_z | test ELBO (nats/face) | train ELBO | epochs | samples seen | stopped | train s | eval s |"
          + (" test log p(x) |" if args.eval_samples > 0 else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.eval_samples > 0 else ""))
    for r in rows:
        line = (f"| {r['z_dim']} | {r['test_elbo']:.1f} ± {r['test_elbo_stderr']:.1f} | {r['train_elbo']:.1f} | "
                f"{r['epochs']} | {r['samples_seen']:.2e} | {r['stopped']} | {r['train_loop_seconds']:.0f} | "
                f"{r['eval_wall_seconds']:.0f} |")
        if args.eval_samples > 0:
            line += f" {r['test_log_likelihood']:.1f} ± {r['test_log_likelihood_stderr']:.1f} |"
        print(line)
    print(f"(summary: {args.out / 'summary.json'})")
    return rows
