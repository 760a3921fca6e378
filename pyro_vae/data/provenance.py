"""What a data set was read from: each file's path, size and sha256, or, for data that
come from no file (the embedded digits, torch datasets), a checksum of the arrays.

A loader fills :attr:`DataSplits.sources <pyro_vae.data.DataSplits.sources>`; a run
records them (``run_dir/data.json``) and ``pyro-vae train`` prints them, so that a run
says which copy of its data it trained on, and two runs that differ can be told apart by
their inputs. The digests are of the bytes as stored (what ``sha256sum`` prints), not the
decompressed content that :attr:`DataFile.sha256 <pyro_vae.data.DataFile>` verifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from pyro_vae.data.errors import DataError

_CHUNK = 1 << 20

#: Digests already computed in this process, by (resolved path, size, mtime_ns): a file
#: read twice (e.g. by ``build`` and again by an experiment) is hashed once.
_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class DataSource:
    """One input a data set was read from.

    Attributes:
        kind: ``"file"`` (``label`` is its absolute path) or ``"arrays"`` (data from no
            file; ``label`` says where they came from, e.g. ``sklearn.datasets.load_digits``).
        label: the path, or the arrays' origin.
        sha256: hex digest of the file's bytes as stored, or of the arrays' bytes (the
            float32 splits train, valid, test as read, then their labels, C order).
        size: bytes hashed.
    """

    kind: str
    label: str
    sha256: str
    size: int

    def line(self) -> str:
        """One line for a terminal: ``data file <path>  sha256 <hex>  <size> bytes``."""
        what = "data file" if self.kind == "file" else "data arrays"
        return f"{what} {self.label}  sha256 {self.sha256}  {self.size} bytes"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def file_source(path: Path) -> DataSource:
    """The record of the file at ``path`` (hashed once per process while it is unchanged)."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(chunk)
            _DIGESTS[key] = digest.hexdigest()
    except OSError as err:
        raise DataError(f"cannot read data file {path} to record its checksum: {err}") from None
    return DataSource("file", str(path), _DIGESTS[key], stat.st_size)


def array_source(label: str, arrays: Iterable[Optional[torch.Tensor]]) -> DataSource:
    """The record of in-memory ``arrays`` (None entries skipped) from ``label``."""
    digest, size = hashlib.sha256(), 0
    for a in arrays:
        if a is None:
            continue
        raw = np.ascontiguousarray(a.detach().cpu().numpy())
        digest.update(raw.tobytes())
        size += raw.nbytes
    return DataSource("arrays", label, digest.hexdigest(), size)


def with_file_sources(data, paths: Sequence[Path]):
    """``data`` (a :class:`~pyro_vae.data.DataSplits`) recording the files ``paths``."""
    return dataclasses.replace(data, sources=tuple(file_source(p) for p in paths))


def with_array_source(data, label: str):
    """``data`` recording a checksum of its own splits and labels, read from ``label``."""
    splits = ("train", "valid", "test")
    tensors = [data.split(s) for s in splits] + [data.labels(s) for s in splits]
    return dataclasses.replace(data, sources=(array_source(label, tensors),))


def record(data) -> dict:
    """What ``run_dir/data.json`` holds: the data set's name and its sources."""
    return {"dataset": data.name, "sources": [s.to_dict() for s in data.sources]}
