"""What the paper-figure experiments share: a training run that records a learning curve
against the number of training samples evaluated, under a sample and a time budget.

The curve loop is its own small loop rather than :func:`pyro_vae.train.train`: the
figures evaluate at log-spaced sample counts inside epochs, on a training set that may
be a prefix of the data set's, with evaluation functions of their own (ELBO, HMC
marginal likelihood). It builds the data, model and inference with
:func:`pyro_vae.train.build`, so a curve runs exactly what the config declares.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from pyro_vae.config import Config
from pyro_vae.data.splits import BatchLoader
from pyro_vae.train import Experiment, build

Evaluator = Callable[[Experiment, torch.Tensor, torch.Tensor], dict]


@dataclass
class Curve:
    """One algorithm's learning curve: a row per evaluation point."""

    labels: dict
    rows: list[dict] = field(default_factory=list)
    stopped: str = ""
    steps: int = 0
    train_seconds: float = 0.0


def checkpoints(batch_size: int, max_samples: int, num_points: int) -> list[int]:
    """About ``num_points`` log-spaced sample counts in ``[batch_size, max_samples]``,
    each a multiple of ``batch_size``."""
    if max_samples < batch_size:
        return [batch_size]
    grid = np.geomspace(batch_size, max_samples, max(num_points, 2))
    return sorted({int(math.ceil(g / batch_size)) * batch_size for g in grid})


def run_curve(
    config: Config,
    evaluate: Evaluator,
    labels: dict,
    max_samples: int,
    max_seconds: float,
    num_points: int = 10,
    n_train: Optional[int] = None,
    eval_points: int = 1000,
    log: Callable[[str], None] = print,
) -> Curve:
    """Train ``config`` and evaluate at log-spaced sample counts.

    Args:
        config: the experiment (data, model, inference, optimizer, batch size).
        evaluate: ``(experiment, x_train_eval, x_test_eval) -> {name: float}``.
        labels: columns that identify the curve in the CSV (algorithm, N_z, ...).
        max_samples: stop after this many training samples (steps × batch size).
        max_seconds: stop at the first step past this wall time (training and evaluation
            together; the final evaluation comes on top); whichever budget ends the run,
            its last state is evaluated.
        num_points: evaluation points (log-spaced in samples).
        n_train: train on ``n_train`` training points (None: all), a fixed random subset.
        eval_points: the curves' train and test figures are over fixed random subsets
            of this many points of the training set used and of the test set. Random,
            not the first rows: binarized MNIST's test file is not shuffled (its first
            1000 rows have 17% ink against 13% for the whole set, and a VAE's bound on
            them is ~200 nats lower at the start of training).
    """
    exp = build(config)
    train = exp.data.train if n_train is None else exp.data.train[random_subset(len(exp.data.train), n_train, 0)]
    x_train_eval = train[random_subset(len(train), eval_points, 1)]
    x_test_eval = exp.data.test[random_subset(len(exp.data.test), eval_points, 2)]
    bs = config.data.batch_size
    marks = checkpoints(bs, max_samples, num_points)
    curve = Curve(dict(labels))
    start, samples, epoch, train_time = time.perf_counter(), 0, 0, 0.0
    dynamic = exp.data.binarize == "dynamic"

    def record(reason: str = "") -> None:
        t0 = time.perf_counter()
        exp.module.eval()
        figures = evaluate(exp, x_train_eval, x_test_eval)
        exp.module.train()
        row = {**labels, "samples": samples, "steps": curve.steps, "train_seconds": round(train_time, 3),
               "eval_seconds": round(time.perf_counter() - t0, 3), **figures}
        curve.rows.append(row)
        shown = " ".join(f"{k}={v:.2f}" for k, v in figures.items() if isinstance(v, float))
        log(f"  {_label(labels)} samples={samples} {shown}{' (' + reason + ')' if reason else ''}")

    while True:
        loader = BatchLoader(train, bs, shuffle=True, seed=config.seed, epoch=epoch,
                             drop_last=len(train) >= bs, dynamic_binarize=dynamic)
        for x, index in loader:
            t0 = time.perf_counter()
            out = exp.inference.step(x, index, len(train))
            train_time += time.perf_counter() - t0
            curve.steps += 1
            samples += len(x)
            if not math.isfinite(out["elbo"]):
                curve.stopped = "diverged"
                log(f"  {_label(labels)} diverged at step {curve.steps}")
                curve.train_seconds = train_time
                return curve
            at_mark = samples >= marks[0]
            if at_mark:
                marks.pop(0)
            done = not marks or samples >= max_samples
            over_time = time.perf_counter() - start >= max_seconds
            if at_mark or done or over_time:
                record("budget: time" if over_time and not done else "")
            if done or over_time:
                curve.stopped = "samples" if done else "time"
                curve.train_seconds = train_time
                return curve
        epoch += 1


def random_subset(n: int, k: Optional[int], salt: int) -> torch.Tensor:
    """The sorted indices of a fixed random subset of ``min(k, n)`` of ``range(n)``
    (the same for every run: the figures compare algorithms on the same points)."""
    if k is None or k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(1000 + salt)
    return torch.randperm(n, generator=g)[:k].sort().values


def _label(labels: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


def focus_ylim(ax, rows: list[dict], keys: Sequence[str], tail: float = 0.01) -> None:
    """Limit ``ax``'s y-axis to the values of the rows past ``tail`` of the largest sample
    count (the first steps of Adagrad can be thousands of nats below where the curves
    end, flattening everything the figure is about), with a margin."""
    last = max(r["samples"] for r in rows)
    values = [r[k] for r in rows if r["samples"] >= tail * last for k in keys
              if r.get(k) is not None and math.isfinite(r[k])]
    if values:
        lo, hi = min(values), max(values)
        pad = 0.08 * (hi - lo) or 1.0
        ax.set_ylim(lo - pad, hi + pad)


def finish_panel(ax, title: str, ylabel: str, legend: bool, fontsize: int = 9) -> None:
    """A curve panel as the AEVB paper draws it: log x axis of training samples seen."""
    ax.set_xscale("log")
    ax.set_title(title, fontsize=fontsize)
    ax.set_xlabel("# training samples evaluated", fontsize=fontsize - 1)
    ax.set_ylabel(ylabel, fontsize=fontsize - 1)
    ax.tick_params(labelsize=fontsize - 2)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_csv(rows: list[dict], path: Path) -> Path:
    """All rows (the union of their keys as columns) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    return path


def write_json(obj: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return path


def read_csv(path: Path) -> list[dict]:
    """Rows of a results CSV with numbers parsed."""
    def parse(v: str):
        try:
            return float(v) if v != "" else None
        except ValueError:
            return v
    with open(path) as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def set_threads(threads: Optional[int]) -> None:
    """Torch's intra-op threads. On a busy 2-core machine one thread is several times
    faster for these small networks than a contended pool (measured: a 200-row HMC
    gradient took 0.8 ms on one thread, 3.6-21 ms on two)."""
    if threads:
        torch.set_num_threads(threads)
