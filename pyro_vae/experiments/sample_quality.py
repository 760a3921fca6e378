"""One table for MNIST of every model that samples: the classifier-feature Fréchet
distance and inception-like score (:mod:`pyro_vae.evaluation.classifier_scores`, the
classifier's test accuracy and checksum beside them), the Parzen-window log-likelihood
(:mod:`pyro_vae.evaluation.parzen`: the GAN paper's protocol, the bandwidth chosen on
validation images) and the log-likelihood where the model has one (exact for a flow,
the importance-sampled bound for a latent-variable model trained by likelihood; none for
a GAN's decoder, whose guide was never trained, nor for the PixelGAN autoencoder, whose
``log p(x|z)`` is exact but ``log p(x)`` is not computed).

It scores trained run directories (``pyro-vae train``, or the other experiments' runs)::

    pyro-vae experiment sample-quality --runs vae=runs/vae wgan_gp=results/wgan_curves/run \\
        pixelgan=results/pixelgan_clustering/run                           # 10000 samples each
    pyro-vae experiment sample-quality --runs vae=runs/vae --num-samples 500 --eval-points 500   # quick

Samples are what each model's ``sample(n)`` gives (decoder means ``E[x|z]`` for the VAE,
the GAE and a decoder trained as a GAN; binary pixel samples for the PixelGAN
autoencoder; flow samples mapped back to data space), scored as images in [0, 1] against
the grey-level MNIST test images. A reference row scores ``--num-samples`` MNIST training
images the same way.

Output under ``--out`` (default ``results/sample_quality``): ``table.md`` (also printed)
and ``table.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import torch

from pyro_vae.data import load_dataset
from pyro_vae.evaluation import log_likelihood, parzen_log_likelihood
from pyro_vae.evaluation.classifier_scores import QUICK_RECIPE, RECIPE, mnist_scores
from pyro_vae.experiments.common import seeded_subset, set_threads, write_json
from pyro_vae.registry import ALGORITHMS
from pyro_vae.train import load_run

NAME = "sample-quality"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=DIR", help="trained run directories to score")
    p.add_argument("--out", type=Path, default=Path("results/sample_quality"))
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--eval-points", type=int, default=None, help="test (and validation) images for Parzen and "
                                                                   "the log-likelihood (default: all 10000)")
    p.add_argument("--is-samples", type=int, default=1000, help="importance samples per test image for the bound")
    p.add_argument("--ll-points", type=int, default=1000,
                   help="a seeded random N of the test images the log-likelihood is estimated on")
    p.add_argument("--cache-dir", default=None, help="where the classifier is cached")
    p.add_argument("--quick-classifier", action="store_true",
                   help="a classifier of 1 epoch on 2000 images (a smoke test; its scores compare with nothing)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ (or set PYRO_VAE_DATA_DIR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)


def draw(module, n: int, batch: int = 1000) -> torch.Tensor:
    return torch.cat([module.sample(min(batch, n - s)).detach().cpu().flatten(1) for s in range(0, n, batch)])


def model_log_likelihood(exp, points: int, k: int) -> tuple[float | None, str]:
    """The test log-likelihood the model has (nats per image) and what it is, on a seeded
    random ``points`` of the test images (MNIST's first rows are not a fair sample)."""
    caps, test = exp.capabilities, seeded_subset(exp.data.test, points, 1)
    if caps.exact_log_prob:
        return exp.inference.evaluate(test)["log_likelihood"], "exact"
    if caps.has_guide and ALGORITHMS[exp.config.inference.name].scores_likelihood:
        return log_likelihood(exp.module, test, num_samples=k).mean, f"IS bound, k={k}"
    return None, "-"


def run(args) -> dict:
    set_threads(args.threads)
    mnist = load_dataset("mnist", args.data_dir)
    scores = mnist_scores(mnist, args.cache_dir, recipe=QUICK_RECIPE if args.quick_classifier else RECIPE)
    test = seeded_subset(mnist.test, args.eval_points, 1).flatten(1)
    valid = seeded_subset(mnist.valid, args.eval_points, 2).flatten(1)
    rows = []

    def add(name: str, samples: torch.Tensor, ll=None, ll_kind="-", seconds=0.0):
        s = scores.score(samples)
        pz = parzen_log_likelihood(samples, test, valid=valid)
        rows.append({"model": name, "frechet": s.frechet, "inception": s.inception, "parzen": pz.mean,
                     "parzen_stderr": pz.stderr, "parzen_sigma": pz.sigma, "log_likelihood": ll,
                     "log_likelihood_kind": ll_kind, "num_samples": len(samples), "sample_seconds": seconds})
        print(_line(rows[-1]))

    add("MNIST training images (reference)", seeded_subset(mnist.train, args.num_samples, 3).flatten(1))
    for item in args.runs:
        name, _, directory = item.partition("=")
        exp, _ = load_run(directory or name, device="cpu")
        pyro.set_rng_seed(args.seed)
        started = time.perf_counter()
        samples = draw(exp.module, args.num_samples)
        seconds = time.perf_counter() - started
        ll, kind = model_log_likelihood(exp, args.ll_points, args.is_samples)
        add(f"{name} ({exp.config.model.name}, {exp.config.inference.name})", samples, ll, kind, seconds)
    table = _markdown(rows, scores)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table)
    write_json({"rows": rows, "classifier": {"sha256": scores.checksum, "test_accuracy": scores.accuracy}},
               args.out / "table.json")
    print(table)
    return {"rows": rows}


def _line(r: dict) -> str:
    ll = "-" if r["log_likelihood"] is None else f"{r['log_likelihood']:.2f}"
    return (f"{r['model']:50s} Fréchet {r['frechet']:9.3f}  inception {r['inception']:6.3f}  "
            f"Parzen {r['parzen']:8.2f} ± {r['parzen_stderr']:.2f}  log-lik {ll} ({r['log_likelihood_kind']})")


def _markdown(rows: list[dict], scores) -> str:
    head = (f"classifier: test accuracy {scores.accuracy * 100:.2f}%, weights sha256 {scores.checksum}\n\n"
            "| model | Fréchet (classifier) ↓ | inception-like ↑ | Parzen (nats) ↑ | log-likelihood (nats) | samples |\n"
            "|---|---|---|---|---|---|\n")
    lines = [f"| {r['model']} | {r['frechet']:.3f} | {r['inception']:.3f} | {r['parzen']:.2f} ± "
             f"{r['parzen_stderr']:.2f} (σ={r['parzen_sigma']:.3g}) | "
             f"{'-' if r['log_likelihood'] is None else format(r['log_likelihood'], '.2f')} "
             f"({r['log_likelihood_kind']}) | {r['num_samples']} |" for r in rows]
    return head + "\n".join(lines) + "\n"


__all__ = ["NAME", "add_arguments", "draw", "model_log_likelihood", "run"]
