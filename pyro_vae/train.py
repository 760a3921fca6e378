"""The training loop: epochs of minibatch steps, logging, checkpoints, resume, early stop.

It knows nothing of the model: it builds the model and the inference algorithm from the
config and calls ``inference.step`` on each minibatch. A run lives in a directory::

    run_dir/config.toml     the experiment
    run_dir/checkpoint.pt   the latest end-of-epoch state (written atomically)
    run_dir/log.csv         one row per epoch: train and validation ELBO, time
    run_dir/summary.json    final figures (test ELBO, test log-likelihood)
    run_dir/plots/*.png     samples, reconstructions, manifold, latent scatter, curves

Running ``train`` again on the same directory resumes from the checkpoint and ends
exactly where an uninterrupted run would. Early stopping watches the validation ELBO;
with ``[budget] lr_decays`` a plateau first restarts training from the best parameters at
a lower learning rate: a step decay as in IWAE's experiments (Burda et al. 2016), here
triggered by the validation ELBO rather than at fixed epochs.

Launched by ``torchrun`` with several processes, the same loop trains data-parallel
(see :mod:`pyro_vae.distributed`): each process takes its slice of every global batch,
gradients are all-reduced before each optimizer step, the logged ELBOs are global means,
validation is sharded and its figure shared, every decision (early stopping, divergence,
the time budget) is taken on identical numbers by every rank, and only rank 0 writes
the run directory. The checkpoint holds global state only, so a run resumes under any
number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vae import checkpoint, distributed
from pyro_vae.config import BudgetConfig, Config, ConfigError
from pyro_vae.data import DataSplits, check_likelihood, load_dataset
from pyro_vae.inference import Inference, build_inference
from pyro_vae.models import build_model

LOG_FIELDS = ["epoch", "step", "samples_seen", "train_elbo", "valid_elbo", "seconds"]


class TrainingDiverged(RuntimeError):
    """The objective or the parameters became NaN/inf; the last good checkpoint is kept."""


@dataclass
class Experiment:
    """What a config builds: the data, the model (with its guide), the inference."""

    config: Config
    data: DataSplits
    module: nn.Module
    inference: Inference


def build(config: Config) -> Experiment:
    """Data, model and inference for ``config``, with every bad entry refused up front."""
    d = config.data
    binarize = None if d.binarize == "none" else d.binarize
    if d.batch_size < 1:
        raise ConfigError(f"[data] batch_size must be >= 1, got {d.batch_size}")
    _check_budget(config.budget)
    data = load_dataset(d.name, d.data_dir, binarize=binarize, seed=config.seed)
    pyro.set_rng_seed(config.seed)
    # The JIT ELBOs read parameters from Pyro's global param store by name: entries left
    # there by an earlier model of the same names would shadow this one's.
    pyro.clear_param_store()
    module = build_model(config, data)
    check_likelihood(data, config.model.likelihood)
    return Experiment(config, data, module, build_inference(config, module))


def _check_budget(budget: BudgetConfig) -> None:
    if budget.lr_decays < 0:
        raise ConfigError(f"[budget] lr_decays must be >= 0, got {budget.lr_decays}")
    if not 0.0 < budget.lr_decay_factor < 1.0:
        raise ConfigError(f"[budget] lr_decay_factor must lie in (0, 1), got {budget.lr_decay_factor}")
    if budget.lr_decays and budget.patience is None:
        raise ConfigError("[budget] lr_decays acts when patience runs out: set [budget] patience too")


@dataclass
class TrainState:
    """Everything that changes during training and must survive an interruption."""

    epoch: int = 0
    step: int = 0
    history: list = None
    best_valid: float = -math.inf
    best_module: Optional[dict] = None
    bad_epochs: int = 0
    lr_decays: int = 0
    stopped: Optional[str] = None

    def __post_init__(self):
        self.history = self.history or []


def train(config: Config, run_dir: str | Path, progress: bool = True) -> tuple[Experiment, TrainState]:
    """Train ``config`` in ``run_dir``, resuming from its checkpoint if there is one.

    Under ``torchrun`` with several processes every rank calls this with the same
    arguments; they train one model data-parallel and rank 0 alone writes ``run_dir``.
    """
    run_dir = Path(run_dir)
    parallel = distributed.init()
    exp = build(config)
    if parallel:
        _check_shardable(exp)
    state = _resume_or_start(exp, run_dir)
    sync = None
    if parallel:
        distributed.broadcast_module(exp.module)  # equal already (same seed/checkpoint): made sure
        sync = distributed.GradientSync()
    start = time.perf_counter()
    steps = len(_loader(exp, 0))
    try:
        with tqdm(total=config.budget.epochs * steps, initial=state.step,
                  disable=not progress or not distributed.is_main(), dynamic_ncols=True, unit="step") as bar:
            while state.stopped is None:
                bar.set_description(f"epoch {state.epoch + 1}/{config.budget.epochs}")
                if parallel:
                    pyro.set_rng_seed(distributed.noise_seed(config.seed, state.epoch))
                _train_epoch(exp, state, run_dir, bar, sync)
                _end_epoch(exp, state, start, parallel)
                # On every rank: a module's state_dict may gather state (the GAE's
                # deferred gradients), a collective every rank must join.
                module_state = exp.module.state_dict()
                if distributed.is_main():
                    _save(exp, state, run_dir, module_state)
                bar.set_postfix(train_elbo=f"{state.history[-1]['train_elbo']:.2f}",
                                valid_elbo=f"{state.history[-1]['valid_elbo'] or math.nan:.2f}")
    except distributed.WorkerFailure as e:
        raise distributed.WorkerFailure(f"{e}; {_kept(state, run_dir)}: resume with the same "
                                        "command (any number of processes)") from e
    finally:
        if sync is not None:
            sync.remove()
    if state.best_module is not None:
        exp.module.load_state_dict(state.best_module)
    return exp, state


def _check_shardable(exp: Experiment) -> None:
    """Every rank must get rows of every global batch (validation slices may be empty)."""
    w, n, b = distributed.world_size(), len(exp.data.train), exp.config.data.batch_size
    if min(n, b) < w:
        raise ConfigError(f"[data] batch_size = {b} on {n} training points cannot give each of "
                          f"{w} processes a row of every batch: use a batch of at least {w}")


def _resume_or_start(exp: Experiment, run_dir: Path) -> TrainState:
    """The checkpoint's state applied to ``exp``, or a fresh state. Under several
    processes rank 0 alone reads (or refuses) the run directory and shares the result."""
    if distributed.is_active():
        try:
            found = ("ok", _read_checkpoint(exp, run_dir)) if distributed.is_main() else None
        except Exception as e:  # shared, so that every rank stops with the same error
            found = ("error", e)
        found = distributed.broadcast_object(found)
        if found[0] == "error":
            raise found[1]
        ckpt = found[1]
    else:
        ckpt = _read_checkpoint(exp, run_dir)
    if ckpt is None:
        return TrainState(stopped="budget" if exp.config.budget.epochs <= 0 else None)
    exp.module.load_state_dict(ckpt["module"])
    exp.inference.load_state_dict(ckpt["inference"])
    pyro.util.set_rng_state(ckpt["rng"])
    state = TrainState(**ckpt["state"])
    state.stopped = _still_stopped(state, exp.config.budget)
    if state.stopped is None and _out_of_patience(state, exp.config.budget):
        _on_plateau(exp, state)  # stopped early: stays so, or decays its learning rate
    return state


def _still_stopped(state: TrainState, budget: BudgetConfig) -> Optional[str]:
    """Why a resumed run stays stopped under this invocation's ``[budget]`` epochs (None:
    it trains on, unless its patience has run out: :func:`_on_plateau` decides that). The
    time budget counts from each invocation's start, so a run stopped by it continues; one
    stopped early continues under a larger patience or ``lr_decays``."""
    if state.epoch >= budget.epochs:
        return state.stopped or "budget"
    return None


def _out_of_patience(state: TrainState, budget: BudgetConfig) -> bool:
    return budget.patience is not None and state.bad_epochs >= budget.patience


def _on_plateau(exp: Experiment, state: TrainState) -> None:
    """Patience has run out: decay the learning rate if ``[budget] lr_decays`` allows
    (from the best validation parameters, the optimizers' moments kept), else stop."""
    budget = exp.config.budget
    if state.lr_decays >= budget.lr_decays or state.best_module is None:
        state.stopped = "early_stopping"
        return
    exp.module.load_state_dict(state.best_module)
    _scale_learning_rates(exp.inference, budget.lr_decay_factor)
    state.lr_decays += 1
    state.bad_epochs = 0


def _scale_learning_rates(inference: Inference, factor: float) -> None:
    """Every learning rate of ``inference`` times ``factor``, through its state dict: the
    checkpoint's round trip holds every optimizer, also those that wake-sleep and MCEM
    build only at their first batch (a resumed run's are still pending then)."""
    state = inference.state_dict()
    for opt in _optimizer_states(state):
        for group in opt["param_groups"]:
            group["lr"] *= factor
    inference.load_state_dict(state)


def _optimizer_states(state) -> list[dict]:
    if not isinstance(state, dict):
        return []
    if "param_groups" in state:
        return [state]
    return [opt for value in state.values() for opt in _optimizer_states(value)]


def _read_checkpoint(exp: Experiment, run_dir: Path) -> Optional[dict]:
    """``run_dir``'s checkpoint, or None for a new run (whose config.toml is written).

    A run resumes under the config it was started with; only ``[budget]`` and ``[eval]``
    may change (to train longer, or evaluate differently), and config.toml then records
    the new values.
    """
    cfg_path, ckpt_path = run_dir / "config.toml", run_dir / "checkpoint.pt"
    text = exp.config.to_toml()
    if ckpt_path.exists():
        if cfg_path.exists() and cfg_path.read_text() != text:
            changed = _changed_sections(Config.from_toml(cfg_path), exp.config)
            if changed - {"budget", "eval"}:
                raise ConfigError(
                    f"{run_dir} holds a run of another experiment (its config.toml differs in "
                    f"{sorted(changed - {'budget', 'eval'})}; only [budget] and [eval] may change on resume): "
                    "give a new run directory, or delete that one to start afresh")
            checkpoint.write_text(cfg_path, text)
        return checkpoint.load(ckpt_path)
    checkpoint.write_text(cfg_path, text)
    return None


def _changed_sections(a: Config, b: Config) -> set[str]:
    da, db = a.to_dict(), b.to_dict()
    return {key for key in da if da[key] != db.get(key)}


def _loader(exp: Experiment, epoch: int):
    """This process's shard of the epoch's global batches (all of each batch when alone)."""
    cfg, data = exp.config, exp.data
    return data.loader("train", cfg.data.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                       drop_last=len(data.train) >= cfg.data.batch_size,
                       dynamic_binarize=data.binarize == "dynamic",
                       rank=distributed.rank(), world_size=distributed.world_size())


def _train_epoch(exp: Experiment, state: TrainState, run_dir: Path, bar: tqdm,
                 sync: Optional[distributed.GradientSync] = None) -> None:
    cfg, loader = exp.config, _loader(exp, state.epoch)
    if hasattr(exp.inference, "start_epoch"):  # e.g. SVI's warm-up schedule
        exp.inference.start_epoch(state.epoch)
    num_data, total, shown, started = len(exp.data.train), 0.0, 0.0, time.perf_counter()
    # Every global batch has this many rows (drop_last, or one batch of all the data);
    # this rank's shard weighs len(x) / batch in the gradient and ELBO sums over ranks.
    batch = min(cfg.data.batch_size, num_data)
    for i, (x, index) in enumerate(loader, 1):
        weight = len(x) / batch
        try:
            with sync.step(weight) if sync is not None else contextlib.nullcontext():
                elbo = exp.inference.step(x, index, num_data)["elbo"]
        except distributed.NonFiniteGradients as e:
            raise _diverged(state, run_dir, f"the gradient is NaN/inf at step {state.step + 1}") from e
        if not math.isfinite(elbo):
            raise _diverged(state, run_dir, f"the training ELBO is {elbo} at step {state.step + 1}")
        total += elbo * weight  # weight = 1 in one process
        shown += elbo  # the bar shows rank 0's running mean (the log, the global one)
        state.step += 1
        bar.update()
        bar.set_postfix(elbo=f"{shown / i:.2f}", refresh=False)
    state.history.append({
        "epoch": state.epoch + 1, "step": state.step, "samples_seen": state.step * cfg.data.batch_size,
        # Under several processes, this rank's share of the global mean until _end_epoch sums them.
        "train_elbo": total / max(len(loader), 1), "valid_elbo": None,
        "seconds": time.perf_counter() - started,
    })
    if not all(torch.isfinite(p).all() for p in exp.module.parameters()):
        raise _diverged(state, run_dir, f"a parameter became NaN/inf in epoch {state.epoch + 1}")


def _kept(state: TrainState, run_dir: Path) -> str:
    return (f"the last good checkpoint (epoch {state.epoch}) is kept at {run_dir / 'checkpoint.pt'}"
            if (run_dir / "checkpoint.pt").exists() else "no epoch had finished, so there is no checkpoint")


def _diverged(state: TrainState, run_dir: Path, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what}; {_kept(state, run_dir)}. Lower [optim] lr, "
                            "or use [inference] elbo = \"meanfield\" (lower-variance gradients)")


def _end_epoch(exp: Experiment, state: TrainState, start: float, parallel: bool = False) -> None:
    """Validation, early stopping and the budget, at the end of an epoch.

    Under several processes each rank evaluates its slice of the validation set, and
    the train and validation ELBOs (global means) and rank 0's clock are summed and
    shared in one collective: every rank then takes the same decisions.
    """
    budget, row = exp.config.budget, state.history[-1]
    state.epoch += 1
    valid_set = exp.data.valid
    if parallel:
        lo, hi = distributed.shard_range(len(valid_set))
        if hi > lo:
            share = exp.inference.evaluate(valid_set[lo:hi]) * (hi - lo) / len(valid_set)
        else:
            share = 0.0
            if len(valid_set):  # fewer rows than processes: evaluate one anyway, unweighted,
                exp.inference.evaluate(valid_set[:1])  # for the same side effects (the GAE's cache)
        main, elapsed = distributed.is_main(), time.perf_counter() - start
        row["train_elbo"], valid, elapsed, row["seconds"] = distributed.sum_and_share(
            [row["train_elbo"], share, elapsed if main else 0.0, row["seconds"] if main else 0.0])
    elif len(valid_set):
        valid = exp.inference.evaluate(valid_set)
    if len(valid_set):
        row["valid_elbo"] = valid
        if valid > state.best_valid:
            state.best_valid, state.bad_epochs = valid, 0
            state.best_module = copy.deepcopy(exp.module.state_dict())
        else:
            state.bad_epochs += 1
        if _out_of_patience(state, budget):
            _on_plateau(exp, state)
    if state.epoch >= budget.epochs:
        state.stopped = state.stopped or "budget"
    if not parallel:
        elapsed = time.perf_counter() - start
    if budget.max_minutes is not None and elapsed / 60 >= budget.max_minutes:
        state.stopped = state.stopped or "time"


def _save(exp: Experiment, state: TrainState, run_dir: Path, module_state: dict) -> None:
    checkpoint.save({
        "module": module_state,
        "inference": exp.inference.state_dict(),
        "rng": pyro.util.get_rng_state(),
        "state": vars(state),
    }, run_dir / "checkpoint.pt")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOG_FIELDS)
    writer.writeheader()
    writer.writerows(state.history)
    checkpoint.write_text(run_dir / "log.csv", buf.getvalue())


def read_log(run_dir: str | Path) -> list[dict]:
    """The per-epoch rows of ``run_dir/log.csv`` with numbers parsed (missing → None)."""
    with open(Path(run_dir) / "log.csv") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    return checkpoint.write_text(Path(run_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")


def load_run(run_dir: str | Path) -> tuple[Experiment, TrainState]:
    """A trained run: its experiment with the best (else the latest) parameters loaded."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.toml"
    if not cfg_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.toml): "
                          f"train one with `pyro-vae train --run-dir {run_dir}`")
    exp = build(Config.from_toml(cfg_path))
    ckpt = checkpoint.load(run_dir / "checkpoint.pt")
    state = TrainState(**ckpt["state"])
    exp.module.load_state_dict(state.best_module or ckpt["module"])
    return exp, state
