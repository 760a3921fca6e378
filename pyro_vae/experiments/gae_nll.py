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

``elbo = "auto"``: the VAE trains with the analytic-KL ELBO (estimator B), the GAE
with its exemplar ELBO (its data index summed out over each estimator's pool). The best
validation parameters are then scored by importance sampling with ``--eval-samples``
samples per test image (``pyro_vae.evaluation.log_likelihood``; for the GAE its own
estimator with the *exact* mixture prior over all 50000 training components). The GAE's evaluation costs
``points x samples x 50000`` Gaussian log-densities: with 1000 samples about an hour per
model for all 10000 test images on one busy core; ``--eval-points N`` scores a seeded
random N of them (the target is only claimed on all 10000). The evaluation is saved
100 images at a time (``checkpointed_log_likelihood``) under the run directory, so
``--resume`` continues an interrupted one (``eval_s`` sums every call's chunks; ``null`` when
some chunk was saved before chunks kept their time).

It also reports the GAE's training-estimator diagnostics at the end (mean ``|log P̂ − log P|``
of the prior estimate, and the responsibility mass its neighbour lists hold: the training
objective's ``ExemplarELBO.prior_estimate_error``)::

    pyro-vae experiment gae-nll --max-minutes 120                        # the real run: many hours
    pyro-vae experiment gae-nll --epochs 1 --layers 1 --eval-samples 10 --eval-points 50   # smoke test
    pyro-vae experiment gae-nll --epochs 1 --layers 1 --n-train 500 --n-valid 100 --eval-samples 2 \\
        --eval-points 10 --diagnostic-points 20                         # a few seconds
    pyro-vae experiment gae-nll --max-minutes 120 --resume               # continue after an interruption
    pyro-vae experiment gae-nll --resume --lr-decays 2                  # train stopped runs on at lr / 10, / 100
    pyro-vae experiment gae-nll --models vae & pyro-vae experiment gae-nll --models gae   # two cores

Output under ``--out`` (default ``results/gae_nll``): ``<model>-L<depth>/`` run
directories with their ``result.json``, ``summary.json`` and a Markdown table (also
printed) of every run found under ``--out``. A run that ``--max-minutes`` stops is not
scored (its row says so): ``--resume`` carries it on, and it is scored once it stops on
its epochs or its patience.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_vae import checkpoint
from pyro_vae.evaluation import checkpointed_log_likelihood, evaluation_seconds
from pyro_vae.experiments.common import paired, seeded_subset
from pyro_vae.experiments.gae_runs import (add_run_arguments, make_config, run_all, run_facts, save_result,
                                           train_run, unscored)

NAME = "gae-nll"

PAPER = {"vae": {1: -107.18, 2: -96.94, 3: -97.62, 4: -102.97}, "gae": {1: -97.66, 2: -96.91, 3: -95.76, 4: -94.66}}
TARGET, TEST_SIZE = 85.5, 10000


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, layers=[1, 2, 3, 4], models=["vae", "gae"], out="results/gae_nll")
    p.add_argument("--eval-samples", type=int, default=1000, help="importance samples per test image")
    p.add_argument("--eval-points", type=int, default=None, help="score a seeded random N of the test images")
    p.add_argument("--diagnostic-points", type=int, default=500,
                   help="training points of the GAE's estimator diagnostics")


def run_one(args, model: str, layers: int) -> dict:
    run_dir = args.out / f"{model}-L{layers}"
    exp, state, train_s = train_run(args, make_config(args, model, layers, "binarized_mnist", "none"), run_dir)
    if (stopped := unscored(run_dir, state, train_s)) is not None:
        return stopped
    test = seeded_subset(exp.data.test, args.eval_points, args.seed)
    progress = run_dir / f"test_ll-{len(test)}points-k{args.eval_samples}-epoch{state.epoch}"
    ll = checkpointed_log_likelihood(exp.module, test, progress, num_samples=args.eval_samples, seed=args.seed,
                                     progress=True)
    checkpoint.save({"per_point": ll.per_point}, run_dir / "test_ll.pt")  # for the paired GAE - VAE difference
    row = {"model": model, "layers": layers, "test_nll": -ll.mean, "stderr": ll.stderr,
           "eval_samples": args.eval_samples, "test_points": len(test), "eval_seed": args.seed,
           **run_facts(state, train_s),
           "eval_s": evaluation_seconds(progress), "paper_ll": PAPER[model].get(layers)}
    if model == "gae":
        idx = torch.randperm(exp.module.num_exemplars)[: args.diagnostic_points]
        row["estimator"] = exp.inference.objective.prior_estimate_error(idx, num_draws=2)
    save_result(run_dir, row)
    return row


def paired_difference(v: dict, g: dict, vae_dir: Path, gae_dir: Path) -> str:
    """GAE − VAE test NLL; ``± the paired standard error`` when both runs saved their
    per-image estimates on the same images (same subset and seed)."""
    diff = f"{g['test_nll'] - v['test_nll']:+.2f}"
    files = vae_dir / "test_ll.pt", gae_dir / "test_ll.pt"
    same = all(v.get(k) == g.get(k) for k in ("test_points", "eval_samples", "eval_seed"))
    if not (same and all(f.exists() for f in files)):
        return diff
    vae_ll, gae_ll = (checkpoint.load(f)["per_point"] for f in files)
    _, stderr = paired(vae_ll - gae_ll)  # log p_VAE − log p_GAE = NLL_GAE − NLL_VAE
    return f"{diff} ± {stderr:.2f} (paired)"


def print_table(rows: list[dict], out: Path) -> None:
    by = {(r["model"], r["layers"]): r for r in rows}
    print("\nTest NLL (nats, lower is better; k importance samples per image, n test images)\n")
    print("| hidden layers | VAE | GAE | GAE - VAE | paper VAE / GAE (log-lik.) |")
    print("|---|---|---|---|---|")
    for layers in sorted({r["layers"] for r in rows}):
        v, g = by.get(("vae", layers)), by.get(("gae", layers))
        cell = lambda r: (f"{r['test_nll']:.2f} ± {r['stderr']:.2f} (k={r['eval_samples']}, n={r['test_points']}, "
                          f"{r['epochs']} ep.)" if r else "-")
        diff = paired_difference(v, g, out / f"vae-L{layers}", out / f"gae-L{layers}") if v and g else "-"
        print(f"| {layers} | {cell(v)} | {cell(g)} | {diff} | {PAPER['vae'].get(layers)} / {PAPER['gae'].get(layers)} |")
    gae_rows = [r for r in rows if r["model"] == "gae"]
    if gae_rows:
        best = min(gae_rows, key=lambda r: r["test_nll"])
        verdict = ("only a subset was evaluated" if best["test_points"] < TEST_SIZE
                   else "reached" if best["test_nll"] <= TARGET else "not reached")
        print(f"\nbest GAE: {best['test_nll']:.2f} nats (target <= {TARGET}: {verdict})")
        for r in gae_rows:
            print(f"GAE L={r['layers']} estimator diagnostics: {r['estimator']}")


def run(args: argparse.Namespace) -> list[dict]:
    rows = run_all(args, run_one)
    print_table(rows, args.out)
    return rows
