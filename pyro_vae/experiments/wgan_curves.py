"""The WGAN paper's claim: the critic's Wasserstein estimate tracks sample quality
(Arjovsky et al. 2017, figures 3 and 4: the estimate against generator iterations, with
samples along the way).

One run of ``[inference] name = "wgan_gp"`` (or ``--algorithm wgan``) on grey-level MNIST
with the VAE's decoder as the generator (``[model] name = "vae"``: z_dim 64, an MLP of
``--hidden`` ReLU layers; its mean image is the generated x) and an MLP critic. Every
critic step's estimate is recorded with the run's training time (:class:`StepRecorder`,
checkpointed with the run); at every epoch's end, that is at every checkpoint, a grid of
64 samples of fixed noise is saved, and the classifier-feature Fréchet distance of
``--score-samples`` samples (:mod:`pyro_vae.evaluation.classifier_scores`) is recorded
when ``--score-samples`` > 0. Interrupted or stopped by ``--max-minutes``, the same
command carries the run on.

    pyro-vae experiment wgan-curves --max-minutes 60 --epochs 200          # a long run, resumable
    pyro-vae experiment wgan-curves --epochs 2 --n-train 2000 --score-samples 0   # a few seconds

Output under ``--out`` (default ``results/wgan_curves``): the run directory ``run/``,
``grids/epoch_<k>.png``, ``curve.png`` (the estimate against minutes, a smoothed line, the
Fréchet distance on a second axis, the grids below it), ``steps.csv`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from pyro_vae import plots
from pyro_vae.config import Config
from pyro_vae.experiments.common import save_figure, set_threads, write_csv, write_json
from pyro_vae.loop import Callback
from pyro_vae.train import train

NAME = "wgan-curves"


class StepRecorder(Callback):
    """Every step's figures with the run's training seconds (summed over resumed calls),
    and at every epoch's end ``on_epoch(loop, row)``'s extra figures; all kept in the
    checkpoint so that a resumed run's record continues. ``describe(entry)``, when given,
    is the epoch's line, printed as the epoch ends (flushed: a long run's log shows it
    then, not when the call ends)."""

    def __init__(self, keys: tuple[str, ...] = ("wasserstein",), on_epoch=None, every: int = 1,
                 describe: Optional[Callable[[dict], str]] = None):
        self.keys, self.on_epoch, self.every, self.describe = keys, on_epoch, every, describe
        self.steps: list[dict] = []
        self.epochs: list[dict] = []
        self.seconds = 0.0
        self._last: Optional[float] = None

    def on_step_end(self, loop, figures: dict) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.seconds += now - self._last
        self._last = now
        if loop.state.step % self.every == 0:
            self.steps.append({"step": loop.state.step, "seconds": self.seconds,
                               **{k: figures[k] for k in self.keys if k in figures}})

    def on_epoch_end(self, loop, row: dict) -> None:
        started = time.perf_counter()
        extra = self.on_epoch(loop, row) if self.on_epoch is not None else {}
        self.epochs.append({"epoch": row["epoch"], "step": row["step"], "seconds": self.seconds, **extra})
        if self.describe is not None:
            print(self.describe(self.epochs[-1]), flush=True)
        self._last = None if self._last is None else self._last + (time.perf_counter() - started)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.epochs, self.seconds = list(state["steps"]), list(state["epochs"]), float(state["seconds"])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results/wgan_curves"))
    p.add_argument("--algorithm", choices=["wgan_gp", "wgan"], default="wgan_gp")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this (the same command resumes)")
    p.add_argument("--n-train", type=int, default=None, help="a fixed random subset of training images")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512], help="the generator's (decoder's) layers")
    p.add_argument("--critic-hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--z-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--score-samples", type=int, default=1000,
                   help="samples scored by the classifier's Fréchet distance at every epoch (0: none)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")


def make_config(args) -> Config:
    return Config().with_overrides([
        f"seed={args.seed}", "data.name=mnist", "data.binarize=none", f"data.batch_size={args.batch_size}",
        *([f"data.train_size={args.n_train}"] if args.n_train else []),
        *([f'data.data_dir="{args.data_dir}"'] if args.data_dir else []),
        f"model.z_dim={args.z_dim}", f"model.hidden={list(args.hidden)}", "model.activation=relu",
        f"inference.name={args.algorithm}", f"inference.critic_hidden={list(args.critic_hidden)}",
        f"budget.epochs={args.epochs}", *([f"budget.max_minutes={args.max_minutes}"] if args.max_minutes else []),
        "eval.num_samples=0", "eval.plots=false"])


def run(args) -> dict:
    set_threads(args.threads)
    out = Path(args.out)
    (out / "grids").mkdir(parents=True, exist_ok=True)
    scores = None
    if args.score_samples:
        from pyro_vae.evaluation.classifier_scores import mnist_scores

        scores = mnist_scores()
    fixed = torch.Generator().manual_seed(1234)

    def at_checkpoint(loop, row) -> dict:
        gen = loop.module
        with torch.no_grad():
            eps = torch.randn(64, gen.z_dim, generator=fixed.manual_seed(1234))
            plots.image_grid(gen.decoder.mean(eps.to(next(gen.parameters()).device)).cpu().flatten(1),
                             (28, 28), out / "grids" / f"epoch_{row['epoch']:04d}.png",
                             title=f"epoch {row['epoch']}, step {row['step']}")
        extra = {"valid_wasserstein": row.get("valid_wasserstein")}
        if scores is not None:
            s = scores.score_model(gen, args.score_samples)
            extra.update(frechet=s.frechet, inception=s.inception)
        return extra

    recorder = StepRecorder(("wasserstein", "gradient_penalty"), at_checkpoint, describe=_epoch_line)
    train(make_config(args), out / "run", progress=not args.no_progress, callbacks=[recorder])
    write_csv(recorder.steps, out / "steps.csv")
    summary = {"algorithm": args.algorithm, "epochs": recorder.epochs, "steps": len(recorder.steps),
               "minutes": recorder.seconds / 60,
               "classifier": None if scores is None else {"sha256": scores.checksum, "accuracy": scores.accuracy}}
    write_json(summary, out / "summary.json")
    plot_curve(recorder, out / "curve.png", out / "grids")
    print(f"{len(recorder.epochs)} epochs, {recorder.seconds / 60:.2f} min in all (every epoch: {out / 'summary.json'})")
    return summary


def _epoch_line(e: dict) -> str:
    return (f"epoch {e['epoch']:4d}  step {e['step']:7d}  {e['seconds'] / 60:7.2f} min  "
            f"W valid {_or_nan(e.get('valid_wasserstein')):8.4f}  Fréchet {_or_nan(e.get('frechet')):8.3f}")


def _or_nan(value: Optional[float]) -> float:
    return float("nan") if value is None else value


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    return np.convolve(values, np.ones(width) / width, mode="valid")


def plot_curve(recorder: StepRecorder, path: Path, grids: Path) -> Path:
    """The estimate against minutes (raw and smoothed), the Fréchet distance at the
    checkpoints, and up to 6 checkpoints' grids below."""
    import matplotlib.pyplot as plt

    shots = sorted(grids.glob("epoch_*.png"))
    shots = [shots[int(i)] for i in np.linspace(0, len(shots) - 1, min(6, len(shots)))] if shots else []
    fig = plt.figure(figsize=(12, 7))
    ax = fig.add_subplot(2, 1, 1)
    t = np.array([s["seconds"] / 60 for s in recorder.steps])
    w = np.array([s["wasserstein"] for s in recorder.steps])
    if len(w):
        ax.plot(t, w, lw=0.3, alpha=0.4, color="C0")
        width = max(1, len(w) // 100)
        ax.plot(t[width - 1:] if width > 1 and len(w) >= width else t, _smooth(w, width), color="C0",
                label="critic's Wasserstein estimate (train batches)")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("W estimate")
    marks = [e for e in recorder.epochs if e.get("frechet") is not None]
    if marks:
        ax2 = ax.twinx()
        ax2.plot([e["seconds"] / 60 for e in marks], [e["frechet"] for e in marks], "o-", color="C3",
                 label="classifier Fréchet distance")
        ax2.set_ylabel("Fréchet distance", color="C3")
    ax.legend(loc="upper right", fontsize=8)
    for i, shot in enumerate(shots):
        sub = fig.add_subplot(2, len(shots), len(shots) + i + 1)
        sub.imshow(plt.imread(shot))
        sub.set_axis_off()
        sub.set_title(shot.stem, fontsize=8)
    return save_figure(fig, path)


__all__ = ["NAME", "StepRecorder", "add_arguments", "make_config", "plot_curve", "run"]
