"""Parzen-window log-likelihood of the GAE (1 and 2 hidden layers) on real-valued MNIST.

The protocol of the GAN, GMMN and AAE papers (``pyro_vae.evaluation.parzen``): 10000
samples of the model (the decoder means ``E[x|z]``, ``z`` from the prior), a Gaussian
kernel density estimate whose bandwidth is chosen on the validation images from
``logspace(-1, 0, 10)``, and the mean log-likelihood of the 10000 grey-level MNIST
test images ± its standard error. Published: GAE 456.71 (1 layer) and 460.73 (2 layers),
VAE 296.77, GAN 225, GMMN+AE 282, AAE 340. Target: >= 470.

Each model is one run of the package's training loop on MNIST: 50000 grey-level
training images binarized anew at every batch (``binarize = "dynamic"``; the GAE's
exemplars are one fixed binarization of them), 10000 validation images for early
stopping; Bernoulli decoder, ``z_dim`` 40, ``[500] * L`` ReLU layers, Adam 1e-3, batch
100, the GAE with ``lambda1 = lambda2 = 0.05``. The Parzen evaluation uses the grey-level
(real-valued) validation and test images. ``--models vae`` adds the VAE for reference.

    python benchmarks/gae_parzen.py --max-minutes 120                 # the real run: hours
    python benchmarks/gae_parzen.py --epochs 1 --layers 1 --num-samples 500 --eval-points 200   # smoke test

Output under ``--out`` (default ``results/gae_parzen``): run directories, per-model
``samples.png``, ``summary.json`` and a Markdown table (also printed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_vae import plots
from pyro_vae.config import Config
from pyro_vae.data import load_dataset
from pyro_vae.evaluation import DEFAULT_SIGMAS, parzen_evaluate
from pyro_vae.train import train

PUBLISHED = {"GAE 1 layer": 456.71, "GAE 2 layers": 460.73, "VAE": 296.77, "GAN": 225, "GMMN+AE": 282, "AAE": 340}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--models", nargs="+", default=["gae"], choices=["gae", "vae"])
    p.add_argument("--hidden-size", type=int, default=500)
    p.add_argument("--z-dim", type=int, default=40)
    p.add_argument("--activation", default="relu")
    p.add_argument("--binarize", choices=["dynamic", "static"], default="dynamic")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget per run")
    p.add_argument("--gae", nargs="*", default=["lambda1=0.05", "lambda2=0.05"], metavar="KEY=VALUE")
    p.add_argument("--num-samples", type=int, default=10000, help="model samples in the KDE")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS))
    p.add_argument("--eval-points", type=int, default=None, help="use only the first N validation and test images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", type=Path, default=Path("results/gae_parzen"))
    return p.parse_args(argv)


def make_config(args, model: str, layers: int) -> Config:
    config = Config.from_dict({
        "seed": args.seed,
        "data": {"name": "mnist", "data_dir": args.data_dir, "binarize": args.binarize,
                 "batch_size": args.batch_size},
        "model": {"name": model, "z_dim": args.z_dim, "hidden": [args.hidden_size] * layers,
                  "activation": args.activation, "likelihood": "bernoulli"},
        "optim": {"name": "adam", "lr": args.lr},
        "budget": {"epochs": args.epochs, "patience": args.patience, "max_minutes": args.max_minutes},
        "eval": {"num_samples": 0, "plots": False},
    })
    if model == "gae" and args.gae:
        config = config.with_overrides([f"model.{a}" for a in args.gae])
    return config


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    args.out.mkdir(parents=True, exist_ok=True)
    grey = load_dataset("mnist", args.data_dir)  # real-valued splits for the KDE
    valid, test = grey.valid[: args.eval_points], grey.test[: args.eval_points]
    rows = []
    for layers in args.layers:
        for model in args.models:
            run_dir = args.out / f"{model}-L{layers}"
            if not args.resume and run_dir.exists():
                shutil.rmtree(run_dir)
            t0 = time.time()
            exp, state = train(make_config(args, model, layers), run_dir, progress=False)
            train_s = time.time() - t0
            pyro.set_rng_seed(args.seed)
            t0 = time.time()
            result = parzen_evaluate(exp.module, test, valid, num_samples=args.num_samples, sigmas=args.sigmas)
            pyro.set_rng_seed(args.seed)
            plots.image_grid(exp.module.sample(100), grey.image_shape, run_dir / "samples.png",
                             title=f"{model.upper()} {layers} layer(s)")
            row = {"model": model, "layers": layers, "parzen_ll": result.mean, "stderr": result.stderr,
                   "sigma": result.sigma, "validation": result.validation, "num_samples": result.num_samples,
                   "test_points": result.n, "epochs": state.epoch, "stopped": state.stopped,
                   "best_valid_elbo": state.best_valid, "train_s": train_s, "eval_s": time.time() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                        "rows": rows}, indent=2) + "\n")
    print(f"\nParzen-window log-likelihood on real-valued MNIST test ({rows[0]['test_points']} images, "
          f"{args.num_samples} samples; higher is better)\n")
    print("| model | hidden layers | Parzen LL | σ | published |")
    print("|---|---|---|---|---|")
    for r in rows:
        pub = PUBLISHED.get(f"GAE {r['layers']} layer" + ("s" if r["layers"] > 1 else "")) if r["model"] == "gae" \
            else PUBLISHED["VAE"]
        print(f"| {r['model'].upper()} | {r['layers']} | {r['parzen_ll']:.2f} ± {r['stderr']:.2f} | "
              f"{r['sigma']:.3f} | {pub if pub is not None else '-'} |")
    best = max((r["parzen_ll"] for r in rows if r["model"] == "gae"), default=None)
    if best is not None:
        print(f"\nbest GAE: {best:.2f} (target >= 470: {'reached' if best >= 470 else 'not reached'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
