"""The WGAN-GP paper's MNIST overfitting experiment (Gulrajani et al. 2017, section 5.3,
"Meaningful loss curves and detecting overfitting"): trained on a random subset of 1000
MNIST images, the critic's negative loss on those training images and on held-out
validation images drift apart as the critic overfits. The paper reports that with
weight clipping and with the gradient penalty both curves diverge, and that with the
penalty the critic overfits faster than the generator, so that the training curve
rises while the validation curve falls.

Two runs of the package's loop on the same 1000 grey-level training images (``[data]
train_size``, a fixed random subset): ``wgan_gp`` (λ = 10, Adam 1e-4, β = (0, 0.9)) and
``wgan`` (clipping 0.01, RMSProp 5e-5), both with the VAE's decoder as generator and an
MLP critic, n_critic = 5. At every epoch's end (every checkpoint) the critic scores the
1000 training images, ``--n-valid`` validation images and the same 1000 generated images
of fixed noise; the negative critic loss on a set is ``mean f(real) − mean f(fake)``
(the Wasserstein estimate, the penalty left out so the two sets compare). Both runs
resume from their run directories.

    pyro-vae experiment wgan-overfit --epochs 2000 --max-minutes 30     # a long run, resumable
    pyro-vae experiment wgan-overfit --epochs 3 --hidden 64 --critic-hidden 64   # seconds

Output under ``--out`` (default ``results/wgan_overfit``): ``runs/<algorithm>/``,
``curves.csv``, ``overfit.png`` (one panel per algorithm: train and validation curves
against generator iterations) and ``summary.json`` (first and last values, and the gap).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_vae.config import Config
from pyro_vae.experiments.common import save_figure, set_threads, write_csv, write_json
from pyro_vae.experiments.wgan_curves import StepRecorder
from pyro_vae.train import train

NAME = "wgan-overfit"
ALGORITHMS = ("wgan_gp", "wgan")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results/wgan_overfit"))
    p.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    p.add_argument("--epochs", type=int, default=500, help="epochs of the 1000 images (15 critic steps each at batch 64)")
    p.add_argument("--max-minutes", type=float, default=None, help="per run; the same command resumes")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-valid", type=int, default=1000)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--critic-hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")


def make_config(args, algorithm: str) -> Config:
    return Config().with_overrides([
        f"seed={args.seed}", "data.name=mnist", "data.binarize=none", f"data.batch_size={args.batch_size}",
        f"data.train_size={args.n_train}", f"data.valid_size={args.n_valid}",
        *([f'data.data_dir="{args.data_dir}"'] if args.data_dir else []),
        "model.z_dim=64", f"model.hidden={list(args.hidden)}", "model.activation=relu",
        f"inference.name={algorithm}", f"inference.critic_hidden={list(args.critic_hidden)}",
        f"budget.epochs={args.epochs}", *([f"budget.max_minutes={args.max_minutes}"] if args.max_minutes else []),
        "eval.num_samples=0", "eval.plots=false"])


@torch.no_grad()
def negative_critic_losses(loop, fake_noise: torch.Tensor) -> dict:
    """``mean f(real) − mean f(fake)`` on the training and the validation images, one fixed fake set."""
    inference, data = loop.inference, loop.data
    fake = inference.critic(inference.generate(fake_noise.to(data.train.device))).mean()
    return {"generator_steps": inference.critic_steps // inference.n_critic,
            "train": float(inference.critic(data.train).mean() - fake),
            "valid": float(inference.critic(data.valid).mean() - fake)}


def run(args) -> dict:
    set_threads(args.threads)
    out = Path(args.out)
    rows, summary = [], {}
    for algorithm in args.algorithms:
        noise = torch.randn(args.n_train, 64, generator=torch.Generator().manual_seed(99))
        recorder = StepRecorder(("wasserstein",), lambda loop, row: negative_critic_losses(loop, noise))
        train(make_config(args, algorithm), out / "runs" / algorithm, progress=not args.no_progress,
              callbacks=[recorder])
        curve = [{"algorithm": algorithm, **e} for e in recorder.epochs]
        rows += curve
        first, last = curve[0], curve[-1]
        summary[algorithm] = {"epochs": last["epoch"], "generator_steps": last["generator_steps"],
                              "first": {k: first[k] for k in ("train", "valid")},
                              "last": {k: last[k] for k in ("train", "valid")},
                              "gap_last": last["train"] - last["valid"], "minutes": last["seconds"] / 60}
        print(f"{algorithm:8s} epochs {last['epoch']:5d}  generator steps {last['generator_steps']:6d}  "
              f"-critic loss train {first['train']:.4f} -> {last['train']:.4f}   "
              f"valid {first['valid']:.4f} -> {last['valid']:.4f}   gap {last['train'] - last['valid']:.4f}")
    write_csv(rows, out / "curves.csv")
    write_json(summary, out / "summary.json")
    plot(rows, out / "overfit.png")
    return summary


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    fig, axes = plt.subplots(1, len(algorithms), figsize=(5 * len(algorithms), 3.5), squeeze=False)
    for ax, name in zip(axes[0], algorithms):
        mine = [r for r in rows if r["algorithm"] == name]
        steps = [r["generator_steps"] for r in mine]
        ax.plot(steps, [r["train"] for r in mine], label="training images (1000)")
        ax.plot(steps, [r["valid"] for r in mine], label="validation images")
        ax.set_title({"wgan_gp": "gradient penalty", "wgan": "weight clipping"}[name])
        ax.set_xlabel("generator iterations")
        ax.set_ylabel("negative critic loss")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


__all__ = ["NAME", "add_arguments", "make_config", "negative_critic_losses", "plot", "run"]
