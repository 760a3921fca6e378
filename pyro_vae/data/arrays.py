"""Arrays a user brings: one ``.npy`` array, or an ``.npz`` archive of named arrays.

Layouts (told apart by content, not by the file name):

* ``.npz`` with ``train`` and ``test`` (and optionally ``valid``), each optionally with
  ``train_labels`` / ``valid_labels`` / ``test_labels``: split as given; a missing
  ``valid`` is carved from ``train`` by :func:`~pyro_vae.data.splits.split_off_valid`
  (its last 10000 rows when it has more than 20000, else a tenth by a fixed permutation).
* ``.npz`` with ``x`` (and optionally labels ``y``), or a ``.npy`` holding one array:
  split by a fixed permutation into about 80/10/10 (valid and test ``max(1, n // 10)``
  rows each, train the rest; :func:`~pyro_vae.data.splits.three_way_sizes`).

Values (:func:`unit_scale`): floats (or other numbers) in [0, 1] are kept; uint8 grey
levels are divided by 255, except uint8 files whose values are all 0 or 1, which are
binary data and kept as they are; bool is 0/1. Anything else is refused.

Shapes (:func:`event_shape_of`): ``(n, D)`` gives events ``(D,)``, ``(n, H, W)`` gives
``(1, H, W)``, ``(n, C, H, W)`` is kept (channels first). Labels: integers ``(n,)``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from pyro_vae.data.errors import DataError, corrupt_file_error
from pyro_vae.data.paths import PathLike
from pyro_vae.data.provenance import with_file_sources
from pyro_vae.data.splits import (
    SPLITS,
    DataSplits,
    labels_tensor,
    permutation_split,
    split_off_valid,
    three_way_sizes,
    to_tensor,
)

_SPLIT_KEYS = frozenset(SPLITS) | {f"{s}_labels" for s in SPLITS}
_SINGLE_KEYS = frozenset({"x", "y"})
_FIX_RANGE = (
    "rescale the data to [0, 1] (e.g. divide by the largest possible value), or store "
    "grey levels 0..255 as uint8 (divided by 255 when loaded)"
)


def unit_scale(arrays: Mapping[str, np.ndarray], where: str) -> float:
    """The divisor that brings ``arrays`` (the data arrays of one source) into [0, 1].

    255 when they are uint8 grey levels (some value above 1), else 1: uint8 0/1 data
    are binary and kept, other numbers must already lie in [0, 1].

    Raises:
        DataError: a non-numeric array, or values outside [0, 1] (NaN included), naming
            ``where`` (the file) and the key, and the fix.
    """
    for key, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise DataError(
                f"{where}: array {key!r} has dtype {a.dtype}, not numbers: store the data "
                f"as floats in [0, 1] or uint8 grey levels 0..255"
            )
    grey = [k for k, a in arrays.items() if a.dtype == np.uint8 and a.size and a.max() > 1]
    if grey:
        others = {k: str(a.dtype) for k, a in arrays.items() if a.dtype != np.uint8}
        if others:
            raise DataError(
                f"{where}: arrays {grey} are uint8 grey levels 0..255 but {others} are not "
                "uint8: store every split with the same dtype"
            )
        return 255.0
    for key, a in arrays.items():
        if a.size and not bool(((a >= 0) & (a <= 1)).all()):  # False for NaN too
            raise DataError(
                f"{where}: array {key!r} ({a.dtype}) has {_value_range(a)}, outside [0, 1]. "
                f"Fix: {_FIX_RANGE}."
            )
    return 1.0


def _value_range(a: np.ndarray) -> str:
    """``"values from <min> to <max>"`` of ``a``, saying so when it holds NaN."""
    nan = np.isnan(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
    if nan.all():
        return "only NaN values"
    finite = a[~nan]
    text = f"values from {finite.min():.4g} to {finite.max():.4g}"
    return text + " and NaN" if nan.any() else text


def event_shape_of(shape: tuple[int, ...], where: str, key: str) -> tuple[int, ...]:
    """The event shape of data ``(n, ...)`` of ``shape``: ``(n, D)`` -> ``(D,)``,
    ``(n, H, W)`` -> ``(1, H, W)``, ``(n, C, H, W)`` -> ``(C, H, W)``."""
    if len(shape) not in (2, 3, 4) or 0 in shape[1:]:
        raise DataError(
            f"{where}: array {key!r} has shape {shape}; expected rows of vectors (n, D), "
            "of grey images (n, H, W) or of channels-first images (n, C, H, W)"
        )
    return (1, *shape[1:]) if len(shape) == 3 else tuple(shape[1:])


def check_labels(y: np.ndarray, rows: int, where: str, key: str) -> torch.Tensor:
    """Labels ``y`` as int64 ``(rows,)``, if they are integers of that shape."""
    if y.dtype.kind not in "iu" or y.shape != (rows,):
        raise DataError(
            f"{where}: labels {key!r} must be an integer array of shape ({rows},), one per "
            f"row of the data, got {y.dtype} {y.shape}"
        )
    return labels_tensor(y)


def _load(path: Path, name: str) -> dict[str, np.ndarray]:
    """The arrays in ``path``: ``{"": array}`` for a ``.npy``, the archive's for a ``.npz``."""
    if not path.is_file():
        raise DataError(
            f"cannot find the array file {path}. Fix: set path to an existing .npy or .npz "
            "file (see pyro_vae.data.arrays for the layouts)."
        )
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle a user's file
        if isinstance(loaded, np.ndarray):
            return {"": loaded}
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise corrupt_file_error(
            path, name, "a .npy or .npz file numpy can read (numbers only, no pickles)", str(err)
        ) from None


def _splits_layout(arrays: dict[str, np.ndarray], where: str) -> str:
    """``"splits"`` (train/[valid]/test), ``"single"`` (x/[y] or a .npy) or a DataError."""
    keys = set(arrays)
    if keys == {""}:
        return "single"
    if "x" in keys and keys <= _SINGLE_KEYS:
        return "single"
    if {"train", "test"} <= keys and keys <= _SPLIT_KEYS:
        return "splits"
    raise DataError(
        f"{where}: an .npz must hold either 'train', 'test' and optionally 'valid' (each "
        "optionally with 'train_labels', 'valid_labels', 'test_labels'), or 'x' and "
        f"optionally labels 'y'; found the arrays {sorted(keys)}"
    )


def _single(arrays: dict[str, np.ndarray], path: Path, name: str) -> DataSplits:
    key = "x" if "x" in arrays else ""
    x, where = arrays[key], str(path)
    event = event_shape_of(x.shape, where, key or "the array")
    scale = unit_scale({key or "the array": x}, where)
    y = check_labels(arrays["y"], x.shape[0], where, "y") if "y" in arrays else None
    sizes = three_way_sizes(x.shape[0], where)
    return permutation_split(name, to_tensor(x, scale, event), y, sizes, event, 0)


def _given_splits(arrays: dict[str, np.ndarray], path: Path, name: str) -> DataSplits:
    where = str(path)
    data = {s: arrays[s] for s in SPLITS if s in arrays}
    events = {s: event_shape_of(a.shape, where, s) for s, a in data.items()}
    if len(set(events.values())) > 1:
        raise DataError(f"{where}: the splits' data points differ in shape: {events}")
    labelled = {s for s in data if f"{s}_labels" in arrays}
    if labelled and labelled != set(data):
        raise DataError(
            f"{where}: labels for {sorted(labelled)} but not for {sorted(set(data) - labelled)}: "
            "give labels for every split, or for none"
        )
    event, scale = events["train"], unit_scale(data, where)
    x = {s: to_tensor(a, scale, event) for s, a in data.items()}
    y = {
        s: check_labels(arrays[f"{s}_labels"], a.shape[0], where, f"{s}_labels")
        for s, a in data.items()
        if s in labelled
    }
    if "valid" not in x:
        x["train"], y["train"], x["valid"], y["valid"] = split_off_valid(
            x["train"], y.get("train"), where
        )
    return DataSplits(
        name=name, event_shape=event, train=x["train"], valid=x["valid"], test=x["test"],
        train_labels=y.get("train"), valid_labels=y.get("valid"), test_labels=y.get("test"),
    )


def read_array_file(path: PathLike) -> DataSplits:
    """The splits of a ``.npy`` / ``.npz`` file (layouts, values and shapes as in the
    module docstring); named ``"array:<file stem>"``.

    Raises:
        DataError: a missing or unreadable file, an unknown layout, values outside
            [0, 1], ill-shaped data or labels; the message names the file and the fix.
    """
    path = Path(path).expanduser()
    name = f"array:{path.stem}"
    arrays = _load(path, name)
    read = _single if _splits_layout(arrays, str(path)) == "single" else _given_splits
    return with_file_sources(read(arrays, path, name), [path])
