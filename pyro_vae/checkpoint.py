"""Checkpoints written atomically: a crash mid-write never leaves a broken file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so ``path`` is always either the old or the new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(state: dict[str, Any], path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


def load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, its tensors on ``map_location`` (a device)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train first (pyro-vae train --run-dir {path.parent})")
    try:
        # Our checkpoints hold RNG states and plain Python containers besides tensors.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                              "it is damaged: delete it to start the run afresh") from None
