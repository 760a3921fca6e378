"""What the reproductions share: learning curves recorded through the package's training
loop, the options every experiment takes, and the figures' and tables' file helpers.

A **curve** (:func:`run_curve`) is one :func:`pyro_vae.train.train` run in a run
directory of its own, with a :class:`CurveRecorder` among its callbacks: the recorder
evaluates the model at log-spaced counts of training samples (:func:`checkpoints`), inside
epochs, and stops the run on the curve's sample or time budget
(:meth:`~pyro_vae.loop.Loop.request_stop`). Its rows live in the recorder's state, which
the loop checkpoints with every epoch, so an interrupted curve resumes where its last
epoch ended and gives the rows an uninterrupted one gives; a finished curve is read
back as it is. The curve trains on ``[data] train_size`` points (a fixed random subset,
:func:`pyro_vae.data.subset_indices` with salt 0) without validation (``valid_size = 0``,
``[budget] monitor = "none"``: the latest parameters are the curve's).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from pyro_vae.checkpoint import atomic_write
from pyro_vae.config import Config
from pyro_vae.data import subset_indices
from pyro_vae.errors import ConfigError
from pyro_vae.loop import Callback, Loop, TrainingDiverged
from pyro_vae.runs import RunDirectory
from pyro_vae.train import train

#: ``(module, inference, x_train_eval, x_test_eval) -> {name: float}``: a curve's figures.
Evaluator = Callable[[nn.Module, object, torch.Tensor, torch.Tensor], dict]


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


class CurveRecorder(Callback):
    """Evaluates at log-spaced sample counts and stops on the curve's budgets.

    After each training step: at the next mark of :func:`checkpoints` (or when a budget
    ends the curve) it scores the model with ``evaluate`` on the fixed evaluation
    subsets and keeps a row; past ``max_samples`` training samples it stops the run for
    ``"samples"`` (final: a rerun reads the curve back), past ``max_seconds`` of this
    call's wall time for ``"time"`` (a rerun trains on for another time budget).

    Its state (rows, marks left, training seconds, and the settings the rows were made
    under) is checkpointed with every epoch; resuming under other settings is refused.

    ``train_seconds`` is the loop's time in training epochs (its steps, minibatches and
    hooks) less the curve's evaluations: building the experiment and the checkpoints are
    not counted. A row's figure is provisional until its epoch ends (the epoch's start is
    known then, from the loop's ``seconds``).
    """

    def __init__(self, evaluate: Evaluator, labels: dict, max_samples: int, max_seconds: float,
                 num_points: int = 10, eval_points: int = 1000, settings: Optional[dict] = None,
                 log: Callable[[str], None] = print):
        self.evaluate, self.labels, self.log = evaluate, dict(labels), log
        self.max_samples, self.max_seconds = max_samples, max_seconds
        self.num_points, self.eval_points = num_points, eval_points
        self.settings = {"max_samples": max_samples, "num_points": num_points, "eval_points": eval_points,
                         **(settings or {})}
        self.rows: list[dict] = []
        self.marks: Optional[list[int]] = None  # set at the first step (the batch size is the loop's)
        self.stopped = ""
        self.train_seconds = 0.0  # of the finished epochs
        self.steps = 0  # the last step this call saw
        self.started = time.perf_counter()  # this call's clock: the time budget counts from here
        self._eval: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        # This epoch's rows (row, when evaluated, evaluation seconds before it), its
        # evaluation seconds so far, the previous epoch's end, the last step's end.
        self._epoch_rows: list[tuple[dict, float, float]] = []
        self._epoch_eval = 0.0
        self._epoch_start: Optional[float] = None
        self._in_epoch, self._last_step = False, self.started

    # ------------------------------------------------------------------ the loop's hooks

    def on_step_end(self, loop: Loop, figures: dict[str, float]) -> None:
        now = self._last_step = time.perf_counter()
        self._in_epoch, self.steps = True, loop.state.step
        if self.marks is None:
            self.marks = checkpoints(loop.batch_size, self.max_samples, self.num_points)
        samples = self.samples(loop)
        at_mark = bool(self.marks) and samples >= self.marks[0]
        if at_mark:
            self.marks.pop(0)
        done = not self.marks or samples >= self.max_samples
        over_time = now - self.started >= self.max_seconds
        if at_mark or done or over_time:
            self.record(loop, "budget: time" if over_time and not done else "")
        if done or over_time:
            self.stopped = "samples" if done else "time"
            loop.request_stop(self.stopped)

    def on_epoch_end(self, loop: Loop, row: dict) -> None:
        """The epoch's training seconds are the loop's less the evaluations; its rows get
        their exact figure (the epoch began ``row["seconds"]`` ago)."""
        end = time.perf_counter()
        start = end - row["seconds"]
        for r, when, evaluated in self._epoch_rows:
            r["train_seconds"] = round(self.train_seconds + when - start - evaluated, 3)
        self.train_seconds += row["seconds"] - self._epoch_eval
        self._epoch_rows, self._epoch_eval, self._epoch_start, self._in_epoch = [], 0.0, end, False

    def _seconds_at(self, when: float) -> float:
        """Training seconds at ``when`` within an unfinished epoch (its start taken as the
        previous epoch's end, or in the first epoch of a call as the call's start)."""
        start = self._epoch_start if self._epoch_start is not None else self.started
        return self.train_seconds + when - start - self._epoch_eval

    def state_dict(self) -> dict:
        # epoch_eval: an epoch a signal stopped resumes with its evaluations' seconds.
        return {"settings": self.settings, "rows": self.rows, "marks": self.marks, "stopped": self.stopped,
                "train_seconds": self.train_seconds, "epoch_eval": self._epoch_eval}

    def load_state_dict(self, state: dict) -> None:
        if state["settings"] != self.settings:
            differ = {k: (state["settings"].get(k), v) for k, v in self.settings.items()
                      if state["settings"].get(k) != v}
            what = ", ".join(f"{k} {old} there, {new} now" for k, (old, new) in differ.items())
            raise ConfigError(f"the curve {_label(self.labels)} was recorded under other settings ({what}): "
                              "use the same settings to continue it, or another --out to start afresh")
        self.rows, self.marks = [dict(r) for r in state["rows"]], state["marks"]
        self.stopped, self.train_seconds = state["stopped"], state["train_seconds"]
        self._epoch_eval = state.get("epoch_eval", 0.0)

    # ------------------------------------------------------------------ evaluation

    @staticmethod
    def samples(loop: Loop) -> int:
        """Training samples evaluated so far: every step takes a whole batch (or, on a
        training set smaller than a batch, all of it)."""
        return loop.state.step * min(loop.batch_size, len(loop.data.train))

    def eval_sets(self, loop: Loop) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed random subsets of ``eval_points`` points of the training set used (salt
        1: drawn from the ``train_size`` subset) and of the test set (salt 2). Random, not
        the first rows: binarized MNIST's test file is not shuffled (its first 1000 rows
        have 17% ink against 13% for the whole set, and a VAE's bound on them is ~200
        nats lower at the start of training)."""
        if self._eval is None:
            train, test = loop.data.train, loop.data.test
            self._eval = (train[subset_indices(len(train), self.eval_points, 1).to(train.device)],
                          test[subset_indices(len(test), self.eval_points, 2).to(test.device)])
        return self._eval

    def record(self, loop: Loop, reason: str = "") -> None:
        t0 = time.perf_counter()
        x_train, x_test = self.eval_sets(loop)
        loop.module.eval()
        figures = self.evaluate(loop.module, loop.inference, x_train, x_test)
        loop.module.train()
        seconds = time.perf_counter() - t0
        row = {**self.labels, "samples": self.samples(loop), "steps": loop.state.step,
               "train_seconds": round(self._seconds_at(t0), 3), "eval_seconds": round(seconds, 3), **figures}
        self.rows.append(row)
        self._epoch_rows.append((row, t0, self._epoch_eval))
        self._epoch_eval += seconds
        shown = " ".join(f"{k}={v:.2f}" for k, v in figures.items() if isinstance(v, float))
        self.log(f"  {_label(self.labels)} samples={row['samples']} {shown}{' (' + reason + ')' if reason else ''}")

    def curve(self, steps: int) -> Curve:
        seconds = self._seconds_at(self._last_step) if self._in_epoch else self.train_seconds  # (diverged)
        return Curve(self.labels, self.rows, self.stopped, steps, seconds)


def curve_config(config: Config, max_samples: int) -> Config:
    """``config`` as a curve trains it: no validation split and no monitored figure (the
    curve's evaluations are its own), no early stopping or epoch time limit, and an
    epoch budget that cannot end the curve first (at least one step an epoch)."""
    epochs = max(1, math.ceil(max_samples / config.data.batch_size))
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, valid_size=0),
        budget=dataclasses.replace(config.budget, epochs=epochs, patience=None, max_minutes=None, lr_decays=0,
                                   monitor="none"),
        eval=dataclasses.replace(config.eval, num_samples=0, plots=False),
    )


def run_curve(
    config: Config,
    evaluate: Evaluator,
    labels: dict,
    max_samples: int,
    max_seconds: float,
    run_dir: str | Path,
    num_points: int = 10,
    eval_points: int = 1000,
    settings: Optional[dict] = None,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> Curve:
    """Train ``config`` in ``run_dir`` and evaluate at log-spaced sample counts.

    Args:
        config: the experiment (data, its ``train_size``, model, inference, optimizer,
            batch size); :func:`curve_config` sets what a curve needs.
        evaluate: ``(module, inference, x_train_eval, x_test_eval) -> {name: float}``.
        labels: columns that identify the curve in the CSV (algorithm, N_z, ...).
        max_samples: stop after this many training samples (steps × batch size).
        max_seconds: stop at the first step past this wall time of this call (building
            the experiment, training and evaluation together; the final evaluation
            comes on top); whichever budget ends the run, its last state is evaluated.
        run_dir: the curve's run directory (config, checkpoint, log).
        num_points: evaluation points (log-spaced in samples).
        eval_points: the curves' train and test figures are over fixed random subsets
            of this many points of the training set used and of the test set.
        settings: what else the rows depend on (the evaluator's settings): a resumed
            curve must have been recorded under the same.
        resume: continue the curve in ``run_dir`` (False: start it afresh).

    A curve whose training diverges ends there (``stopped = "diverged"``), with the
    rows recorded before.
    """
    run_dir = Path(run_dir)
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    recorder = CurveRecorder(evaluate, labels, max_samples, max_seconds, num_points, eval_points, settings, log)
    try:
        _, state = train(curve_config(config, max_samples), run_dir, progress=False, callbacks=[recorder])
        steps = state.step
    except TrainingDiverged as e:
        recorder.stopped, steps = "diverged", recorder.steps
        log(f"  {_label(labels)} diverged after step {steps}: {e}")
    return recorder.curve(steps)


def _label(labels: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


# ----------------------------------------------------------------------------- options


def add_curve_run_options(p: argparse.ArgumentParser) -> None:
    """The options every paper-figure command shares: resume, seed, threads, data folder."""
    p.add_argument("--resume", action="store_true",
                   help="continue the curves under OUT/runs (finished ones are read back) instead of "
                        "starting them afresh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy machine)")
    p.add_argument("--data-dir", help="where the data files are (default: the package's search path)")


def int_list(text: str) -> list[int]:
    """``"3,20"`` -> ``[3, 20]`` (an option's comma-separated integers)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def str_list(text: str) -> list[str]:
    """``"mnist,frey_face"`` -> ``["mnist", "frey_face"]``."""
    return [v.strip() for v in text.split(",") if v.strip()]


def set_threads(threads: Optional[int]) -> None:
    """Torch's intra-op threads. On a busy 2-core machine one thread is several times
    faster for these small networks than a contended pool (measured: a 200-row HMC
    gradient took 0.8 ms on one thread, 3.6-21 ms on two)."""
    if threads:
        torch.set_num_threads(threads)


def saved_config(run_dir: Path) -> Config:
    """The config a run directory was started with (one written by pyro-vae 0.1 too)."""
    legacy = RunDirectory(run_dir, Config()).is_legacy()
    return Config.from_toml(run_dir / "config.toml", legacy=legacy)


def seeded_subset(data: torch.Tensor, num: Optional[int], seed: int) -> torch.Tensor:
    """``num`` rows drawn without replacement (seeded; all of ``data`` when ``num`` is
    None), in that random order. Never the first rows: MNIST's files are not shuffled
    (the first 2000 binarized test images carry 7% less ink than the whole set, and a
    far lower NLL), and so that any prefix of a chunked evaluation is a random sample."""
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data[keep[:num].to(data.device)]


def paired(diff: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of per-image differences between two models scored on
    the same images: the paired comparison, far tighter than either model's own error."""
    return diff.mean().item(), diff.std().item() / math.sqrt(len(diff))


# ----------------------------------------------------------------------------- figures and files


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
    """All rows (the union of their keys as columns) to ``path``, atomically: a run killed
    while it writes leaves the previous file."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    text = io.StringIO()
    w = csv.DictWriter(text, columns)
    w.writeheader()
    w.writerows(rows)
    return atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def write_json(obj, path: Path) -> Path:
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
