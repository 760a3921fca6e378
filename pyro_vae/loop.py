"""The training loop, for any inference algorithm and any objective.

Epochs of ``inference.step`` on minibatches; the log keeps every figure the algorithm
reports (``train_<name>``, the epoch's mean, and ``valid_<name>`` from
``inference.evaluate`` on the validation split); ``[budget] monitor`` and its direction
choose the figure early stopping and the best parameters follow; callbacks see every
step and every epoch (the paper-figure curves record through them) and may stop the run;
a :class:`RunStore` makes the state of every finished epoch a checkpoint, written
atomically, from which a run resumes exactly; a signal (Ctrl-C, SIGTERM) makes one of the
step it stopped at, so an interrupted epoch resumes where it stopped, not from its start.
The loop knows nothing of models or algorithms beyond
:class:`~pyro_vae.inference.base.Inference`, and nothing of ``torch.distributed`` beyond
its one seam, :class:`~pyro_vae.distributed.Replicas`.

Early stopping with ``[budget] lr_decays``: a plateau first restarts training from the
best parameters at a lower learning rate (a step decay as in IWAE's experiments, Burda
et al. 2016, here triggered by the monitored figure rather than at fixed epochs).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vae import distributed
from pyro_vae.checkpoint import load_parameters, rng_state, set_rng_state
from pyro_vae.data import DataSplits

#: The reasons a run stops that a later call with a larger budget trains on from.
RESUMABLE = ("budget", "time", "early_stopping")


class TrainingDiverged(RuntimeError):
    """The objective or the parameters became NaN/inf; the last good checkpoint is kept."""


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT: Ctrl-C; SIGTERM: ``kill``, a scheduler) stopped the run at a step
    boundary. A KeyboardInterrupt, so that code which stops on Ctrl-C stops on it too.

    ``where``: what was stopped, where and what was kept; the message adds how to resume
    (``resume``), which the CLI replaces by the command to run.
    """

    def __init__(self, where: str, signum: int, resume: str = "train again in the same run directory to resume"):
        super().__init__(f"{where}: {resume}")
        self.where, self.signum = where, signum


class StopOnSignals:
    """While entered (in the main thread): the first SIGINT or SIGTERM is only recorded
    (:attr:`received`), for the loop to stop at the next step boundary, and the previous
    handlers come back at once, so a second signal acts as it would without the loop
    (Ctrl-C twice interrupts at once). A signal the process ignores stays ignored; on
    exit the previous handlers are restored (the loop also runs in notebooks)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: dict = {}

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _record(self, signum, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous = {}


@contextlib.contextmanager
def flushing_denormals():
    """While entered, the CPU reads and writes denormal floats (float32 magnitudes below
    1.2e-38) as zero; on exit the previous mode comes back.

    Why: Adam's moment estimates of a parameter whose gradient has vanished (a dead ReLU
    unit's weights, say) decay geometrically into that range, and x86 arithmetic on
    denormals is many times slower. NICE on MNIST had 12 of its 38 million moments there
    after six epochs; its training step then cost 2.5 times a flushed one, and its epochs
    took 217-285 s against 73-107 s flushed (``benchmarks/denormal_step_time.py``). No
    figure moves by more than those magnitudes. The mode is per thread and inherited by threads
    created later; torch's intra-op workers followed it in our measurements.
    """
    was = flushes_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


def flushes_denormals() -> bool:
    """Whether this thread flushes denormals: a denormal constant reads back as zero."""
    return torch.full((1,), 1e-40, dtype=torch.float32).item() == 0.0  # cpu-ok: a probe of the CPU's mode


class Callback:
    """Sees the loop at every step and every epoch; :meth:`Loop.request_stop` ends the run.

    Subclass it and override what you need. A callback with state returns it from
    :meth:`state_dict`: the checkpoint keeps it, so a resumed run's callbacks continue
    where the interrupted run's were.
    """

    def on_step_end(self, loop: "Loop", figures: dict[str, float]) -> None:
        """After each training step, with the step's figures."""

    def on_epoch_end(self, loop: "Loop", row: dict) -> None:
        """After each epoch's validation, with its log row and the parameters that epoch
        trained (a plateau's restart from the best parameters comes after)."""

    def state_dict(self) -> Optional[dict]:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TrainState:
    """Everything of the loop's that changes during training and must survive an interruption."""

    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    best_score: Optional[float] = None
    best_module: Optional[dict] = None
    bad_epochs: int = 0
    lr_decays: int = 0
    stopped: Optional[str] = None
    #: An epoch a signal stopped: its steps taken, its figures' weighted sums and its
    #: seconds so far (zero otherwise).
    epoch_steps: int = 0
    epoch_sums: dict = field(default_factory=dict)
    epoch_seconds: float = 0.0


class RunStore(Protocol):
    """Where the loop keeps its checkpoints and log (a run directory)."""

    #: Where the checkpoint is, for messages.
    where: str

    def load(self) -> Optional[dict]: ...

    def save(self, checkpoint: dict, history: list[dict]) -> None: ...

    def kept(self, state: TrainState) -> str: ...


@dataclass
class BudgetConfig:
    """The ``[budget]`` section: how long the loop trains and which figure it follows."""

    epochs: int = 100
    #: Stop after this many epochs without a better ``monitor`` (None: never).
    patience: Optional[int] = None
    #: Stop after the first epoch that ends past this wall time (None: no limit).
    max_minutes: Optional[float] = None
    #: Learning-rate decay on a plateau: when ``patience`` runs out, restart from the best
    #: parameters with every learning rate times ``lr_decay_factor``, up to this many
    #: times; the plateau after the last decay stops the run.
    lr_decays: int = 0
    lr_decay_factor: float = 0.1
    #: The logged figure (a log.csv column) that early stopping and the best parameters
    #: follow, and whether higher ("max") or lower ("min") is better; "none": neither
    #: (the run ends with its latest parameters).
    monitor: str = "valid_elbo"
    monitor_mode: str = "max"


class Loop:
    """Train ``inference`` (bound to ``module``) on ``data``.

    Args:
        module: the model module (its parameters are checked, saved and restored).
        inference: an :class:`~pyro_vae.inference.base.Inference` on ``module``.
        data: the splits; the loop steps on ``train`` and validates on ``valid``.
        batch_size: the global minibatch size.
        budget: a :class:`BudgetConfig` (the ``[budget]`` section): epochs, patience, time,
            learning-rate decays and the monitored figure.
        seed: with the epoch, fixes the order of the batches (and their dynamic binarization).
        store: where checkpoints and the log go (None: nowhere, nothing resumes).
        callbacks: :class:`Callback` objects.
        progress: show a progress bar.
        replicas: the data-parallel seam (default: one for this process).
        device: where batches are moved before each step (None: where they are).
    """

    def __init__(self, module: nn.Module, inference, data: DataSplits, batch_size: int, budget: BudgetConfig,
                 seed: int = 0, store: Optional[RunStore] = None, callbacks: Sequence[Callback] = (),
                 progress: bool = True,
                 replicas: Optional[distributed.Replicas] = None, device: Optional[torch.device] = None):
        self.module, self.inference, self.data = module, inference, data
        self.batch_size, self.budget, self.seed = batch_size, budget, seed
        self.store, self.callbacks, self.progress = store, list(callbacks), progress
        self.replicas = replicas or distributed.Replicas()
        self.device = device
        self.state = TrainState()
        self._stop: Optional[str] = None
        self._signals = StopOnSignals()

    # ------------------------------------------------------------------ running

    def run(self) -> TrainState:
        """Train until the budget, early stopping or a callback ends the run; the module
        ends with the best parameters (by the monitored figure), else the latest.

        Raises:
            Interrupted: a SIGINT or SIGTERM came (in a single process): the run stopped
                at the next step boundary; a resumed run goes on from its last checkpoint.
        """
        self._signals = StopOnSignals()
        # Under several processes the ranks must stop at the same step: torchrun's SIGTERM ends them.
        with self._signals if self.replicas.world_size == 1 else contextlib.nullcontext(), flushing_denormals():
            return self._run()

    def _run(self) -> TrainState:
        self.state = self._resume_or_start()
        self.replicas.start(self.module)
        start, steps = time.perf_counter(), len(self.loader(0))
        try:
            with tqdm(total=self.budget.epochs * steps, initial=self.state.step, dynamic_ncols=True, unit="step",
                      disable=not self.progress or not self.replicas.is_main) as bar:
                while self.state.stopped is None:
                    bar.set_description(f"epoch {self.state.epoch + 1}/{self.budget.epochs}")
                    self.replicas.seed_epoch(self.seed, self.state.epoch)
                    shares = self._train_epoch(bar)
                    if self.state.epoch_steps:  # set only when a signal stopped the epoch
                        self._save()  # the step it stopped at
                    self._stop_if_signalled(f"in epoch {self.state.epoch + 1}")
                    self._end_epoch(shares, start)
                    self._save()
                    self._stop_if_signalled(f"at the end of epoch {self.state.epoch}")
                    last = self.state.history[-1]
                    bar.set_postfix({k: f"{v:.2f}" for k, v in last.items() if k.startswith(("train_", "valid_"))})
        except distributed.WorkerFailure as e:
            raise distributed.WorkerFailure(f"{e}; {self._kept()}: resume with the same command "
                                            "(any number of processes)") from e
        finally:
            self.replicas.close()
        if self.state.best_module is not None:
            self.module.load_state_dict(self.state.best_module)
        return self.state

    def request_stop(self, reason: str) -> None:
        """End the run after the current step (a callback's budget, say), for ``reason``."""
        self._stop = reason

    def loader(self, epoch: int):
        """This process's shard of the epoch's global batches (all of each batch when alone)."""
        n = len(self.data.train)
        return self.data.loader("train", self.batch_size, shuffle=True, seed=self.seed, epoch=epoch,
                                drop_last=n >= self.batch_size, dynamic_binarize=self.data.binarize == "dynamic",
                                rank=self.replicas.rank, world_size=self.replicas.world_size)

    # ------------------------------------------------------------------ an epoch

    def _start_epoch(self):
        """The epoch's batches, figure sums, steps and start time: a fresh epoch's, or what
        is left of one a signal stopped (the same batches: the loader's order depends on the
        seed and the epoch only; the inference's epoch start came back with the checkpoint)."""
        state = self.state
        if state.epoch_steps == 0:
            self.inference.start_epoch(state.epoch)
        loader = itertools.islice(self.loader(state.epoch), state.epoch_steps, None)
        # The stopped steps' sums are of whole batches: under several processes, rank 0's share.
        sums = state.epoch_sums if self.replicas.is_main else dict.fromkeys(state.epoch_sums, 0.0)
        started, steps = time.perf_counter() - state.epoch_seconds, state.epoch_steps
        state.epoch_steps, state.epoch_sums, state.epoch_seconds = 0, {}, 0.0
        return loader, sums, steps, started

    def _train_epoch(self, bar: tqdm) -> dict:
        state, num_data = self.state, len(self.data.train)
        loader, sums, steps, started = self._start_epoch()
        # Every global batch has this many rows (drop_last, or one batch of all the data);
        # this rank's shard weighs len(x) / batch in the gradient and the epoch's means.
        batch = min(self.batch_size, num_data)
        for x, index in loader:
            if self.device is not None:
                x, index = x.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)
            weight = len(x) / batch
            try:
                with self.replicas.step(weight):
                    figures = self.inference.step(x, index, num_data)
            except distributed.NonFiniteGradients as e:
                raise self._diverged(f"the gradient is NaN/inf at step {state.step + 1}") from e
            for name, value in figures.items():
                if not math.isfinite(value):
                    raise self._diverged(f"the training {_title(name)} is {value} at step {state.step + 1}")
                sums[name] = sums.get(name, 0.0) + value * weight
            state.step, steps = state.step + 1, steps + 1
            bar.update()
            bar.set_postfix({k: f"{v / steps:.2f}" for k, v in sums.items()}, refresh=False)
            for callback in self.callbacks:
                callback.on_step_end(self, figures)
            if self._stop is not None or self._signals.received is not None:
                break
        if self._signals.received is not None and self.replicas.world_size == 1:
            state.epoch_steps, state.epoch_sums = steps, sums
            state.epoch_seconds = time.perf_counter() - started
        if not all(torch.isfinite(p).all() for p in self.module.parameters()):
            raise self._diverged(f"a parameter became NaN/inf in epoch {state.epoch + 1}")
        # Under several processes, this rank's share of the global means until _end_epoch sums them.
        return {"train": {k: v / max(steps, 1) for k, v in sums.items()}, "seconds": time.perf_counter() - started}

    def _end_epoch(self, shares: dict, start: float) -> None:
        """Validation, the monitored figure, early stopping and the budget, identically on
        every rank."""
        state, budget = self.state, self.budget
        state.epoch += 1
        valid = self.replicas.evaluate(self.inference.evaluate, self.data.valid,
                                       tuple(self.inference.valid_figures))
        train, elapsed, seconds = self.replicas.share_epoch(shares["train"], time.perf_counter() - start,
                                                            shares["seconds"])
        row = {"epoch": state.epoch, "step": state.step, "samples_seen": state.step * self.batch_size,
               **{f"train_{k}": v for k, v in train.items()}, **{f"valid_{k}": v for k, v in valid.items()},
               "seconds": seconds}
        state.history.append(row)
        plateau = self._follow_monitor(row)
        # Callbacks see the parameters this epoch trained: a plateau's restart from the
        # best parameters comes after them, else a callback scoring the module would log
        # the best epoch's figures under this epoch's number.
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        if plateau:
            self._on_plateau()
        if state.epoch >= budget.epochs:
            state.stopped = state.stopped or "budget"
        if budget.max_minutes is not None and elapsed / 60 >= budget.max_minutes:
            state.stopped = state.stopped or "time"
        if self._stop is not None:
            state.stopped = state.stopped or self._stop

    def _follow_monitor(self, row: dict) -> bool:
        """Keep the best parameters by ``[budget] monitor`` and count the epochs without
        a better value; whether patience has run out. A monitored validation figure is
        only there when there is validation data."""
        state, budget = self.state, self.budget
        score = None if budget.monitor == "none" else row.get(budget.monitor)
        if score is None:
            return False
        better = state.best_score is None or (score > state.best_score if budget.monitor_mode == "max"
                                              else score < state.best_score)
        if better:
            state.best_score, state.bad_epochs = score, 0
            state.best_module = copy.deepcopy(self.module.state_dict())
        else:
            state.bad_epochs += 1
        return self._out_of_patience()

    def _out_of_patience(self) -> bool:
        return self.budget.patience is not None and self.state.bad_epochs >= self.budget.patience

    def _on_plateau(self) -> None:
        """Patience has run out: decay the learning rate if ``[budget] lr_decays`` allows
        (from the best parameters, the optimizers' moments kept), else stop."""
        state, budget = self.state, self.budget
        if state.lr_decays >= budget.lr_decays or state.best_module is None:
            state.stopped = "early_stopping"
            return
        self.module.load_state_dict(state.best_module)
        scale_learning_rates(self.inference, budget.lr_decay_factor)
        state.lr_decays += 1
        state.bad_epochs = 0

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> dict:
        """The loop's state as a checkpoint. On every rank: a state dict may gather state
        (the GAE objective's deferred gradients), a collective every rank must join."""
        return {
            "module": self.module.state_dict(),
            "inference": self.inference.state_dict(),
            "rng": rng_state(),
            "state": vars(self.state),
            "callbacks": [callback.state_dict() for callback in self.callbacks],
        }

    def _save(self) -> None:
        ckpt = self.checkpoint()
        if self.store is not None and self.replicas.is_main:
            self.store.save(ckpt, self.state.history)

    def _resume_or_start(self) -> TrainState:
        """The store's checkpoint applied, or a fresh state. Under several processes rank 0
        alone reads (or refuses) the run directory and shares the result."""
        ckpt = None if self.store is None else self.replicas.on_main(self.store.load)
        if ckpt is None:
            return TrainState(stopped="budget" if self.budget.epochs <= 0 else None)
        load_parameters(self.module, ckpt["module"], self.store.where)
        if ckpt["state"].get("epoch_steps"):
            # Stopped inside an epoch: its start (schedules, the GAE's cache refresh) is
            # redone, then overwritten by the state the steps since left.
            self.inference.start_epoch(ckpt["state"]["epoch"])
        self.inference.load_state_dict(ckpt["inference"])
        set_rng_state(ckpt["rng"])
        for callback, saved in zip(self.callbacks, ckpt.get("callbacks", [])):
            if saved is not None:
                callback.load_state_dict(saved)
        self.state = state = TrainState(**ckpt["state"])
        state.stopped = self._still_stopped()
        if state.stopped is None and self._out_of_patience():
            self._on_plateau()  # stopped early: stays so, or decays its learning rate
        return state

    def _still_stopped(self) -> Optional[str]:
        """Why a resumed run stays stopped under this call's budget (None: it trains on,
        unless its patience has run out). The time budget counts from each call's start,
        so a run stopped by it continues; one stopped early continues under a larger
        patience or ``lr_decays``; a callback's stop is final."""
        state = self.state
        if state.epoch >= self.budget.epochs:
            return state.stopped or "budget"
        return None if state.stopped in RESUMABLE + (None,) else state.stopped

    def _stop_if_signalled(self, when: str) -> None:
        """Raise :class:`Interrupted` if a signal came: the checkpoint on disk is of the
        step it stopped at (in a single process; under several, the last finished epoch's),
        from which the run resumes exactly."""
        signum = self._signals.received
        if signum is not None:
            raise Interrupted(f"stopped by {signal.Signals(signum).name} after step {self.state.step} ({when} "
                              f"of {self.budget.epochs}); {self._kept()}", signum)

    def _kept(self) -> str:
        return self.store.kept(self.state) if self.store is not None else "nothing was saved (no run directory)"

    def _diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(f"training diverged: {what}; {self._kept()}. Lower [optim] lr, "
                                "or use [inference] elbo = \"meanfield\" (lower-variance gradients)")


def scale_learning_rates(inference, factor: float) -> None:
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


def _title(name: str) -> str:
    return "ELBO" if name == "elbo" else repr(name)
