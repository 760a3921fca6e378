"""Checkpoints: written atomically, read back as data only.

Writing: a crash mid-write never leaves a broken file (:func:`atomic_write`), and a full
disk is named as such. Reading never executes code: :func:`load` uses
``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which rebuilds
tensors, numbers, strings and plain containers and refuses every other Python object.
A full unpickler would run whatever a crafted file asks for (an object's ``__reduce__``
may name any function, ``os.system`` included) the moment a shared run directory is
evaluated. So the package stores only such data (:func:`check_plain` enforces it at
every save: the random number generators' states go through :func:`rng_state`), and a
file holding anything else is refused by a sentence that names what it holds, unless
the caller opts in with ``allow_pickle=True`` (``--allow-pickle`` on the command line)
for a file from a source they trust.

Checkpoints of pyro-vae 0.1 and 0.2.0 stored NumPy's generator state as a NumPy array;
those three NumPy types (:data:`LEGACY_NUMPY`), and no others, are allowed when reading,
so those run directories still load.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message names the file."""


# ----------------------------------------------------------------------------- writing


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so ``path`` is always either the old or the new file.

    Raises:
        CheckpointError: the file system refused the write (no space left, a file size
            limit, no permission); ``path`` is then as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {_reason(e)}; the previous file (if any) is "
                              "unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _reason(e: OSError) -> str:
    return f"{e.strerror or e} (errno {e.errno}): free space or permissions, or choose another directory"


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (plain data only, see :func:`check_plain`) to ``path`` atomically.

    The bytes are made in memory first: torch's zip writer reports a failed file write as
    an internal assertion, whereas a plain ``write`` raises the file system's own error
    (no space left, file too large).
    """
    check_plain(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


_PLAIN = (str, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


def check_plain(value: Any, where: str = "state") -> None:
    """A :class:`TypeError` naming the first entry of ``value`` that the safe loader
    would refuse: anything but tensors, numbers, strings, None and dicts, lists and
    tuples of them. A programming error, caught at saving rather than at loading."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            check_plain(key, f"{where} key {key!r}")
            check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):  # type(): np.float64 is a float
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint "
                        "cannot hold (it loads as data only): store tensors, numbers, strings and plain "
                        "containers")


def rng_state() -> dict:
    """Pyro's random number generators' states (torch, Python, NumPy) as plain data:
    :func:`pyro.util.get_rng_state` with NumPy's key array as a tensor."""
    state = pyro.util.get_rng_state()
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {**state, "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                               float(cached))}


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (or :func:`pyro.util.get_rng_state`, as 0.1 and 0.2.0 stored it)."""
    name, keys, *rest = state["numpy"]
    keys = keys.numpy().astype(np.uint32) if isinstance(keys, torch.Tensor) else keys
    pyro.util.set_rng_state({**state, "numpy": (name, keys, *rest)})


# ----------------------------------------------------------------------------- reading


def load_parameters(module: torch.nn.Module, parameters: dict, where: str) -> None:
    """``module.load_state_dict(parameters)``, or a :class:`CheckpointError` naming
    ``where`` the parameters came from when they belong to another architecture."""
    try:
        module.load_state_dict(parameters)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(
            f"{where} holds the parameters of another model than this config builds ({detail[:300]}): "
            "the run directory's config.toml is missing or was changed; give a new run directory, "
            "or delete the checkpoint to start afresh") from None

#: What reading 0.1's and 0.2.0's NumPy generator state needs, and nothing more: an
#: ndarray of uint32 rebuilt by NumPy's own reconstructor.
LEGACY_NUMPY = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy < 2
    from numpy.core.multiarray import _reconstruct
LEGACY_NUMPY.append(_reconstruct)

ALLOW_PICKLE_HINT = ("if you trust its source, load it with --allow-pickle (Python: allow_pickle=True), "
                     "which runs what it carries")


def load(path: str | Path, map_location: Any = "cpu", allow_pickle: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path``, its tensors on ``map_location`` (a device).

    Args:
        allow_pickle: read with Python's full unpickler, which executes any code the file
            carries: only for a file from a source you trust (see the module's docstring).

    Raises:
        CheckpointError: there is no such file, it is damaged, it is not a dict, or it
            holds Python objects other than plain data (and ``allow_pickle`` is off).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train first (pyro-vae train --run-dir {path.parent})")
    try:
        if allow_pickle:
            state = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(LEGACY_NUMPY):
                state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except Exception as e:
        raise _damaged(path, e) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a pyro-vae checkpoint: "
                              "delete it (or give another directory) to start afresh")
    return state


def _refusal(path: Path, error: Exception) -> CheckpointError:
    """The one sentence for a file the safe loader refuses: what it holds, why it is not
    loaded, and the opt-in."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # reads opcodes, runs nothing
    except Exception:
        unsafe = []
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in LEGACY_NUMPY}
    unsafe = [g for g in unsafe if g not in allowed]
    if not unsafe:  # refused for another reason: the bytes are not a checkpoint
        return _damaged(path, error)
    return CheckpointError(f"{path} holds Python objects that are not plain data ({', '.join(unsafe)}), and "
                           "loading them would execute code the file carries, so it is not loaded; "
                           + ALLOW_PICKLE_HINT)


def _damaged(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {_first_line(error)}); "
                           "it is damaged: delete it to start the run afresh")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
