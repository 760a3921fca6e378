"""A run directory on disk: the experiment, its checkpoint, its log.

::

    run_dir/config.toml     the experiment
    run_dir/data.json       what the data were read from: each file's path, sha256 and size
    run_dir/checkpoint.pt   the latest end-of-epoch state (written atomically)
    run_dir/log.csv         one row per epoch: every figure the algorithm reports
    run_dir/summary.json    the final figures
    run_dir/plots/*.png     what the model's capabilities allow to draw

A run resumes under the config it was started with; only ``[budget]``, ``[eval]`` and
``[run]`` may change (to train longer, evaluate differently, or move to another device),
and ``[data] data_dir`` (to read another copy of the same files: data.json's checksums
must match).

Run directories written by pyro-vae 0.1 (whose checkpoints carry no ``"release"``) load
and resume: their config and checkpoint are translated to this release's layout on
reading (:func:`migrate_checkpoint`). The one exception, reweighted wake-sleep's single
optimizer over both parameter roles, is refused by a sentence that says so.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

from pyro_vae import __version__, checkpoint
from pyro_vae.checkpoint import CheckpointError
from pyro_vae.config import Config
from pyro_vae.data import DataSplits, provenance
from pyro_vae.errors import ConfigError
from pyro_vae.loop import TrainState

#: Sections of the config a resumed run may change.
MUTABLE_SECTIONS = {"budget", "eval", "run"}
LEGACY_RELEASE = "0.1.0"


class RunDirectory:
    """The :class:`~pyro_vae.loop.RunStore` of a run directory: ``open`` checks (or writes)
    its config.toml, ``load`` reads its checkpoint onto ``device``, ``save`` writes the
    checkpoint and log.csv atomically."""

    def __init__(self, run_dir: str | Path, config: Config, device="cpu", allow_pickle: bool = False):
        self.path, self.config, self.device = Path(run_dir), config, device
        self.allow_pickle = allow_pickle  # see pyro_vae.checkpoint: off, files load as data only
        self.config_path, self.checkpoint_path = self.path / "config.toml", self.path / "checkpoint.pt"
        self.where = str(self.checkpoint_path)

    def open(self) -> None:
        """A new run writes config.toml; an existing one must hold the same experiment
        (but for :data:`MUTABLE_SECTIONS`, whose new values config.toml then records)."""
        self.check_writable()
        text = self.config.to_toml()
        if self.checkpoint_path.exists() and self.config_path.exists() and self.config_path.read_text() != text:
            saved = Config.from_toml(self.config_path, legacy=self.is_legacy())
            changed = _changed_sections(saved, self.config) - MUTABLE_SECTIONS
            if changed:
                raise ConfigError(
                    f"{self.path} holds a run of another experiment (its config.toml differs in "
                    f"{sorted(changed)}; only {sorted(MUTABLE_SECTIONS)} may change on resume): "
                    "give a new run directory, or delete that one to start afresh")
        checkpoint.write_text(self.config_path, text)

    def record_data(self, data: DataSplits) -> Path:
        """data.json: the files the data were read from, with their sha256 and size (or
        a checksum of in-memory arrays), so that the run names the copy it trained on.
        Rewritten at every (re)start: it says what the latest start read.

        Raises:
            ConfigError: a run being resumed read other data than its data.json records
                (``[data] data_dir`` may move to another copy, not to other data).
        """
        record, path = provenance.record(data), self.path / "data.json"
        if self.checkpoint_path.exists() and path.exists():
            _check_same_data(json.loads(path.read_text()), record, path)
        return checkpoint.write_text(path, json.dumps(record, indent=2) + "\n")

    def check_writable(self) -> None:
        """Create the directory and write a file in it, before any training: a run
        directory that is a file, lies under a file or may not be written would
        otherwise fail at the first checkpoint, with an epoch's work lost and a traceback."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(self._unwritable(e)) from None

    def _unwritable(self, e: OSError) -> str:
        path = self.path
        if path.exists() and not path.is_dir():
            return f"the run directory {path} is a file, not a folder: choose another run directory"
        above = next((p for p in path.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            return f"the run directory {path} lies under {above}, which is a file: choose another run directory"
        return (f"the run directory {path} cannot be written ({e.strerror}: {e.filename}): choose a run "
                "directory you may write to, or give yourself write permission there")

    def is_legacy(self) -> bool:
        """Whether the checkpoint was written by pyro-vae 0.1 (it names no release)."""
        return self.checkpoint_path.exists() and "release" not in self._read("cpu")

    def load(self, resume: bool = True) -> Optional[dict]:
        """The checkpoint on this store's device (None for a new run); ``resume=False``:
        only the parameters and the loop's state are needed."""
        if not self.checkpoint_path.exists():
            return None
        return migrate_checkpoint(self._read(self.device), self.checkpoint_path, self.config.inference.name,
                                  resume)

    def _read(self, device) -> dict:
        """The checkpoint as data, with the entries every release wrote checked."""
        ckpt = checkpoint.load(self.checkpoint_path, device, allow_pickle=self.allow_pickle)
        missing = [key for key in ("module", "state", "inference") if key not in ckpt]
        if missing or not isinstance(ckpt["module"], dict) or not isinstance(ckpt["state"], dict):
            raise CheckpointError(
                f"{self.checkpoint_path} is not a pyro-vae checkpoint (it lacks {missing or 'a module and a state'}): "
                f"delete it to train {self.path} afresh, or give another run directory")
        return ckpt

    def save(self, ckpt: dict, history: list[dict]) -> None:
        checkpoint.save({"release": __version__, **ckpt}, self.checkpoint_path)
        checkpoint.write_text(self.path / "log.csv", log_text(history))

    def kept(self, state: TrainState) -> str:
        if self.checkpoint_path.exists() and state.epoch_steps:
            return (f"a checkpoint of step {state.step} ({state.epoch_steps} steps into epoch {state.epoch + 1}) "
                    f"is kept at {self.checkpoint_path}")
        if self.checkpoint_path.exists():
            return f"the last good checkpoint (epoch {state.epoch}) is kept at {self.checkpoint_path}"
        return "no epoch had finished, so there is no checkpoint"


def _changed_sections(a: Config, b: Config) -> set[str]:
    """The sections that differ, but for ``[data] data_dir``: where the files are is not
    what they are (data.json's checksums say that, :func:`_check_same_data`)."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.get("data", {}).pop("data_dir", None)
    return {key for key in da if da[key] != db.get(key)}


def _check_same_data(saved: dict, now: dict, path: Path) -> None:
    """A ConfigError when the sources read now differ in content from those ``path`` records."""
    digests = lambda record: [s.get("sha256") for s in record.get("sources", [])]
    if digests(saved) == digests(now):
        return
    was = ", ".join(f"{s['label']} (sha256 {s['sha256'][:12]}…)" for s in saved.get("sources", []))
    is_ = ", ".join(f"{s['label']} (sha256 {s['sha256'][:12]}…)" for s in now.get("sources", []))
    raise ConfigError(f"{path.parent} was trained on other data than was read now: {path.name} records {was}; "
                      f"now read: {is_}. Point --data-dir at the copy it trained on, or give a new run directory")


# ----------------------------------------------------------------------------- the log


def log_text(history: list[dict]) -> str:
    """log.csv: one row per epoch, a column per figure (in the order they appeared)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    if "seconds" in columns:  # last, as it always was
        columns.append(columns.pop(columns.index("seconds")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def read_log(run_dir: str | Path) -> list[dict]:
    """The per-epoch rows of ``run_dir/log.csv`` with numbers parsed (missing → None)."""
    with open(Path(run_dir) / "log.csv") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    return checkpoint.write_text(Path(run_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")


# ----------------------------------------------------------------------------- release 0.1


def migrate_checkpoint(ckpt: dict, path: Path, algorithm: str, resume: bool = True) -> dict:
    """A checkpoint of this release's layout: as it is, or translated from pyro-vae 0.1's.

    0.1 kept the GAE's training cache in the module (``bank.*``) and its shared bandwidth
    at the top (``bandwidth.*``); each algorithm's optimizers under its own names; and the
    best validation ELBO as ``best_valid``. Here the cache belongs to the training
    objective, the bandwidth to the prior, optimizers are keyed by parameter role, and
    the loop keeps the best value of the monitored figure. ``resume=False``: only the
    parameters are needed (evaluation, sampling, plots), so an algorithm state that cannot
    be translated is no obstacle.
    """
    if "release" in ckpt:
        return ckpt
    module, bank = _legacy_module(ckpt["module"])
    state = dict(ckpt["state"])
    if state.get("best_module") is not None:
        state["best_module"] = _legacy_module(state["best_module"])[0]
    best = state.pop("best_valid", None)
    state["best_score"] = None if best is None or best == -math.inf else best
    inference = _legacy_inference(dict(ckpt["inference"]), bank, path, algorithm) if resume else None
    return {**ckpt, "module": module, "inference": inference, "state": state, "release": LEGACY_RELEASE}


def _legacy_module(state: dict) -> tuple[dict, dict]:
    """A 0.1 module state without the GAE's cache (returned apart) and with its shared
    bandwidth under the prior."""
    module = dict(state)
    bank = {k: module.pop(k) for k in list(module) if k.startswith("bank.")}
    for key in [k for k in module if k.startswith("bandwidth.")]:
        module[f"prior.{key}"] = module.pop(key)
    return module, bank


def _legacy_inference(state: dict, bank: dict, path: Path, algorithm: str) -> dict:
    if not state:  # an algorithm whose optimizers were still pending
        return state
    if algorithm in ("svi", "iwae", "vimco"):
        out = {"optimizers": {"all": state["optimizer"]}}
        if algorithm == "svi":
            out["objective"] = bank
        return out
    if algorithm == "wake_sleep":
        return {"optimizers": {"model": state["wake_optimizer"], "guide": state["sleep_optimizer"]}}
    if algorithm == "mcem":
        roles = {"model": state["m_optimizer"], **({"guide": state["guide_optimizer"]}
                                                  if "guide_optimizer" in state else {})}
        return {"optimizers": roles, **{k: state[k] for k in ("sampler", "chains", "visited")}}
    raise ConfigError(
        f"{path} was written by pyro-vae {LEGACY_RELEASE}, whose {algorithm!r} kept one optimizer over "
        f"the model's and the guide's parameters; pyro-vae {__version__} keeps one per parameter role, "
        "so this run cannot be resumed (evaluate, sample and plot still read its parameters): "
        "train it afresh in a new run directory")
