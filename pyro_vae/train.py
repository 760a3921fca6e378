"""From a config to a trained run: build the experiment, train it in a run directory.

:func:`build` turns a :class:`~pyro_vae.config.Config` into an :class:`Experiment` (the
data, the model module, the inference algorithm, the device), refusing every bad entry
up front; :func:`train` runs :class:`~pyro_vae.loop.Loop` on it in a run directory
(:mod:`pyro_vae.runs`), resuming from the directory's checkpoint if there is one, and
ending exactly where an uninterrupted run would; :func:`load_run` reads a trained run back.

Launched by ``torchrun`` with several processes, the same call trains data-parallel (see
:mod:`pyro_vae.distributed`): each process takes its slice of every global batch,
gradients are all-reduced before each optimizer step, the logged figures are global
means, every decision (early stopping, divergence, the time budget) is taken on
identical numbers by every rank, and only rank 0 writes the run directory. The
checkpoint holds global state only, so a run resumes under any number of processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pyro
import torch
from torch import nn

from pyro_vae import distributed
from pyro_vae.checkpoint import CheckpointError, load_parameters
from pyro_vae.capabilities import Capabilities, capabilities_of
from pyro_vae.config import BudgetConfig, Config
from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.loop import Callback, Loop, TrainingDiverged, TrainState
from pyro_vae.registry import ALGORITHMS, FAMILIES, build_inference, build_model, check_compatible, check_data
from pyro_vae.runs import RunDirectory, read_log, write_summary

__all__ = ["Experiment", "TrainState", "TrainingDiverged", "build", "load_run", "make_inference", "read_log",
           "resolve_device", "train", "write_summary"]


@dataclass
class Experiment:
    """What a config builds: the data, the model (with its guide), the inference, the device."""

    config: Config
    data: DataSplits
    module: nn.Module
    inference: object
    device: torch.device

    @property
    def capabilities(self) -> Capabilities:
        return capabilities_of(self.module)


def resolve_device(name: str) -> torch.device:
    """``[run] device``: ``"auto"`` is a GPU when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"[run] device = {name!r} is not a device: use \"auto\", \"cpu\" or \"cuda\"") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"[run] device = {name!r}, but torch sees no GPU on this machine: "
                          "use device = \"cpu\" (or \"auto\")")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"[run] device = {name!r}: the package runs on \"cpu\" or \"cuda\"")
    return device


def build(config: Config, device: Optional[str] = None) -> Experiment:
    """Data, model and inference for ``config`` on its ``[run] device`` (or ``device``),
    with every bad entry refused up front."""
    d = config.data
    if d.batch_size < 1:
        raise ConfigError(f"[data] batch_size must be >= 1, got {d.batch_size}")
    _check_budget(config.budget)
    at = resolve_device(device or config.run.device)
    family = FAMILIES[config.model.name]
    check_compatible(family.capabilities, config.inference.name, f"[model] name = {config.model.name!r}")
    data = _on(load_dataset(d.name, d.data_dir, binarize=None if d.binarize == "none" else d.binarize,
                            seed=config.seed, path=d.path, dataset=d.dataset, train_size=d.train_size,
                            valid_size=d.valid_size, test_size=d.test_size), at)
    pyro.set_rng_seed(config.seed)
    # The JIT ELBOs read parameters from Pyro's global param store by name: entries left
    # there by an earlier model of the same names would shadow this one's.
    pyro.clear_param_store()
    module = build_model(config, data).to(at)
    check_data(config, data)
    inference = build_inference(config, module)
    config = _with_default_monitor(config, inference)
    _check_monitor(config.budget, inference, data)
    return Experiment(config, data, module, inference, at)


def _on(data: DataSplits, device: torch.device) -> DataSplits:
    """The splits on ``device`` (batches are then gathered where the model runs)."""
    if data.train.device == device:
        return data
    moved = {s: getattr(data, s).to(device) for s in ("train", "valid", "test")}
    return dataclasses.replace(data, **moved)


def _check_budget(budget: BudgetConfig) -> None:
    """Refuse a budget that would train nothing or stop at once: ``epochs = 0`` used to
    write the summary of an untrained model and no checkpoint, which evaluate and plot
    then failed on."""
    if budget.epochs < 1:
        raise ConfigError(f"[budget] epochs must be >= 1, got {budget.epochs}")
    if budget.patience is not None and budget.patience < 0:
        raise ConfigError(f"[budget] patience must be >= 0 epochs (or unset: no early stopping), "
                          f"got {budget.patience}")
    if budget.max_minutes is not None and not budget.max_minutes >= 0:
        raise ConfigError(f"[budget] max_minutes must be >= 0 (or unset: no time limit), got {budget.max_minutes}")
    if budget.lr_decays < 0:
        raise ConfigError(f"[budget] lr_decays must be >= 0, got {budget.lr_decays}")
    if not 0.0 < budget.lr_decay_factor < 1.0:
        raise ConfigError(f"[budget] lr_decay_factor must lie in (0, 1), got {budget.lr_decay_factor}")
    if budget.lr_decays and budget.patience is None:
        raise ConfigError("[budget] lr_decays acts when patience runs out: set [budget] patience too")
    if budget.monitor_mode not in ("max", "min"):
        raise ConfigError(f"[budget] monitor_mode must be \"max\" or \"min\", got {budget.monitor_mode!r}")


def _with_default_monitor(config: Config, inference) -> Config:
    """``[budget] monitor`` left at its default (``valid_elbo``) follows the algorithm's own
    figure where it logs no ELBO (``mle``: ``valid_log_likelihood``)."""
    own = getattr(inference, "monitor", None)
    if config.budget.monitor != BudgetConfig.monitor or own is None or "elbo" in inference.valid_figures:
        return config
    return dataclasses.replace(config, budget=dataclasses.replace(config.budget, monitor=own))


def _check_monitor(budget: BudgetConfig, inference, data: DataSplits) -> None:
    columns = [f"train_{f}" for f in inference.figures] + [f"valid_{f}" for f in inference.valid_figures]
    if budget.monitor not in columns + ["none"]:
        raise ConfigError(f"[budget] monitor = {budget.monitor!r} is not a figure this algorithm logs: "
                          f"choose one of {columns}")
    if budget.patience is not None and budget.monitor.startswith("valid_") and not len(data.valid):
        raise ConfigError(f"[budget] patience follows monitor = {budget.monitor!r}, but the validation split is "
                          "empty: give validation data, or monitor a training figure (e.g. \"train_elbo\")")


def train(config: Config, run_dir: str | Path, progress: bool = True, callbacks: Sequence[Callback] = (),
          echo: Optional[Callable[[str], None]] = None, allow_pickle: bool = False) -> tuple[Experiment, TrainState]:
    """Train ``config`` in ``run_dir``, resuming from its checkpoint if there is one.

    The files the data were read from, with their checksums, go to ``run_dir/data.json``
    and, one line each, to ``echo`` (e.g. ``print``; rank 0 alone) before training starts.
    ``allow_pickle``: read the checkpoint with the full unpickler, which executes any code
    it carries (only for a run directory from a source you trust; see :mod:`pyro_vae.checkpoint`).

    Under ``torchrun`` with several processes every rank calls this with the same
    arguments; they train one model data-parallel and rank 0 alone writes ``run_dir``.
    """
    replicas = distributed.Replicas()
    exp = build(config)
    config = exp.config  # with the defaults build resolved ([budget] monitor)
    replicas.check_batches(len(exp.data.train), config.data.batch_size)
    store = RunDirectory(run_dir, config, exp.device, allow_pickle)
    replicas.on_main(store.open)
    replicas.on_main(lambda: _record_data(store, exp.data, echo))
    loop = Loop(exp.module, exp.inference, exp.data, config.data.batch_size, config.budget, seed=config.seed,
                store=store, callbacks=callbacks, progress=progress, replicas=replicas, device=exp.device)
    return exp, loop.run()


def _record_data(store: RunDirectory, data: DataSplits, echo: Optional[Callable[[str], None]]) -> None:
    store.record_data(data)
    for source in data.sources if echo else ():
        echo(source.line())


def load_run(run_dir: str | Path, device: str = "auto", allow_pickle: bool = False) -> tuple[Experiment, TrainState]:
    """A trained run: its experiment on ``device`` (default: a GPU if there is one, else
    the CPU, wherever it was trained) with the best (else the latest) parameters loaded.

    The checkpoint loads as data only; ``allow_pickle=True`` reads it with the full
    unpickler, which executes any code it carries: only for a run from a source you trust.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.toml"
    if not cfg_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.toml): "
                          f"train one with `pyro-vae train --run-dir {run_dir}`")
    probe = RunDirectory(run_dir, Config(), allow_pickle=allow_pickle)
    exp = build(Config.from_toml(cfg_path, legacy=probe.is_legacy()), device=device)
    store = RunDirectory(run_dir, exp.config, exp.device, allow_pickle)
    if not store.checkpoint_path.exists():
        raise CheckpointError(f"no checkpoint at {store.checkpoint_path}: train first "
                              f"(pyro-vae train --run-dir {run_dir})")
    loaded = store.load(resume=False)
    state = TrainState(**loaded["state"])
    load_parameters(exp.module, state.best_module or loaded["module"], store.where)
    return exp, state


def make_inference(module: nn.Module, name: str = "svi", **settings):
    """The algorithm ``name`` on ``module``, configured by keywords: the fields of its
    ``[inference]`` dataclass (``num_particles``, ``hmc_steps``, ...) and of ``[optim]``
    (``optimizer`` for its ``name``, ``lr``).

    ``make_inference(vae, "wake_sleep", optimizer="adagrad", lr=0.02)`` is what
    ``[inference] name = "wake_sleep"`` with ``[optim] name = "adagrad"`` builds. A
    module of a package family gets that family's defaults for its own settings.
    """
    if name not in ALGORITHMS:
        raise ConfigError(f"[inference] name = {name!r} is unknown: choose one of {sorted(ALGORITHMS)}")
    fields = {f.name for f in dataclasses.fields(ALGORITHMS[name].config)} - {"name"}
    # an algorithm with its own optimizer settings (the GANs') keeps them in [inference]
    optim = {key: settings.pop(alias) for alias, key in (("optimizer", "name"), ("lr", "lr"))
             if alias in settings and alias not in fields}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ConfigError(f"make_inference: unknown setting(s) {unknown} for {name!r}; known: "
                          f"{sorted(fields | {'optimizer', 'lr'})}")
    family = next((n for n, f in FAMILIES.items() if type(module) is f.model_class), None)
    model = {"name": family} if family else {}
    config = Config.from_dict({"model": model, "inference": {"name": name, **settings}, "optim": optim})
    return build_inference(config, module)
