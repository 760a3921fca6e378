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
(real-valued) validation and test images. ``--models vae`` adds the VAE for reference::

    pyro-vae experiment gae-parzen --max-minutes 120                 # the real run: hours
    pyro-vae experiment gae-parzen --epochs 1 --layers 1 --num-samples 500 --eval-points 200   # smoke test
    pyro-vae experiment gae-parzen --epochs 1 --layers 1 --n-train 500 --n-valid 100 --num-samples 100 \\
        --eval-points 50                                             # a few seconds
    pyro-vae experiment gae-parzen --from-runs results/gae_nll       # score gae-nll's trained runs

``--from-runs DIR`` scores the best parameters of the runs ``gae-nll`` trained (on the
fixed binarization of the same MNIST images) instead of training new ones.

Output under ``--out`` (default ``results/gae_parzen``): run directories with their
``result.json`` and ``samples.png``, ``summary.json`` and a Markdown table (also printed)
of every run found under ``--out``, with a reference row: the same protocol with 10000
MNIST training images as the "samples".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import pyro

from pyro_vae import plots
from pyro_vae.data import load_dataset
from pyro_vae.evaluation import DEFAULT_SIGMAS, parzen_evaluate, parzen_log_likelihood
from pyro_vae.experiments.common import seeded_subset
from pyro_vae.experiments.gae_runs import add_run_arguments, make_config, run_all, run_facts, save_result, train_run
from pyro_vae.train import load_run

NAME = "gae-parzen"

PUBLISHED = {"GAE 1 layer": 456.71, "GAE 2 layers": 460.73, "VAE": 296.77, "GAN": 225, "GMMN+AE": 282, "AAE": 340}
TARGET = 470.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, layers=[1, 2], models=["gae"], out="results/gae_parzen")
    p.add_argument("--binarize", choices=["dynamic", "static"], default="dynamic")
    p.add_argument("--from-runs", type=Path, help="score the runs gae-nll trained in this folder")
    p.add_argument("--num-samples", type=int, default=10000, help="model samples in the KDE")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS))
    p.add_argument("--eval-points", type=int, default=None,
                   help="use a seeded random N of the validation and of the test images")


def trained(args, model: str, layers: int, run_dir: Path):
    """The run's model and training facts: trained here, or read from ``--from-runs``."""
    if args.from_runs is None:
        exp, state, train_s = train_run(args, make_config(args, model, layers, "mnist", args.binarize), run_dir)
        return exp.module, run_facts(state, train_s)
    source = args.from_runs / f"{model}-L{layers}"
    exp, state = load_run(source)
    return exp.module, {**run_facts(state, None), "trained_in": str(source)}


def run_one(args, model: str, layers: int, grey) -> dict:
    run_dir = args.out / f"{model}-L{layers}"
    run_dir.mkdir(parents=True, exist_ok=True)
    module, facts = trained(args, model, layers, run_dir)
    valid = seeded_subset(grey.valid, args.eval_points, args.seed)
    test = seeded_subset(grey.test, args.eval_points, args.seed)
    pyro.set_rng_seed(args.seed)
    t0 = time.time()
    result = parzen_evaluate(module, test, valid, num_samples=args.num_samples, sigmas=args.sigmas)
    pyro.set_rng_seed(args.seed)
    plots.image_grid(module.sample(100).flatten(1), grey.image_shape, run_dir / "samples.png",
                     title=f"{model.upper()} {layers} layer(s)")
    row = {"model": model, "layers": layers, "parzen_ll": result.mean, "stderr": result.stderr,
           "sigma": result.sigma, "validation": result.validation, "num_samples": result.num_samples,
           "test_points": result.n, **facts, "eval_s": time.time() - t0}
    save_result(run_dir, row)
    return row


def data_reference(args, grey) -> dict:
    """The same protocol with 10000 MNIST *training* images in place of model samples:
    what a model that reproduced the data distribution exactly would score (Theis et
    al. 2016, Table 1: 243 for the "true distribution", 313 for 10000 k-means centres)."""
    valid = seeded_subset(grey.valid, args.eval_points, args.seed)
    test = seeded_subset(grey.test, args.eval_points, args.seed)
    images = seeded_subset(grey.train, args.num_samples, args.seed)
    result = parzen_log_likelihood(images.flatten(1), test.flatten(1), valid=valid.flatten(1), sigmas=args.sigmas)
    return {"parzen_ll": result.mean, "stderr": result.stderr, "sigma": result.sigma,
            "num_samples": result.num_samples, "test_points": result.n}


def print_table(rows: list[dict], reference: Optional[dict] = None) -> None:
    print("\nParzen-window log-likelihood on real-valued MNIST test images (higher is better)\n")
    print("| model | hidden layers | Parzen LL | σ | samples | test images | published |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pub = PUBLISHED.get(f"GAE {r['layers']} layer" + ("s" if r["layers"] > 1 else "")) if r["model"] == "gae" \
            else PUBLISHED["VAE"]
        print(f"| {r['model'].upper()} | {r['layers']} | {r['parzen_ll']:.2f} ± {r['stderr']:.2f} | "
              f"{r['sigma']:.3f} | {r['num_samples']} | {r['test_points']} | {pub if pub is not None else '-'} |")
    if reference is not None:
        r = reference
        print(f"| MNIST training images as the samples | - | {r['parzen_ll']:.2f} ± {r['stderr']:.2f} | "
              f"{r['sigma']:.3f} | {r['num_samples']} | {r['test_points']} | 243 (Theis et al.) |")
    best = max((r["parzen_ll"] for r in rows if r["model"] == "gae"), default=None)
    if best is not None:
        print(f"\nbest GAE: {best:.2f} (target >= {TARGET}: {'reached' if best >= TARGET else 'not reached'})")


def run(args: argparse.Namespace) -> list[dict]:
    grey = load_dataset("mnist", args.data_dir)  # real-valued splits for the KDE
    rows = run_all(args, lambda args, model, layers: run_one(args, model, layers, grey))
    print_table(rows, data_reference(args, grey))
    return rows
