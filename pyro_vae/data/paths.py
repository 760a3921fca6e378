"""Where data files live: the candidate data directories and the search through them.

A data directory holds each data set under the same relative layout as the project's
shared copy (``binarized_mnist/…``, ``MNIST/raw/…``, ``frey_face/…``). Loading looks
through :func:`resolve_data_dir`'s candidates in order and uses the first directory
that holds *all* of a data set's files, so that one data set is never assembled from
files of two different copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from pyro_vae.data.errors import DataError

ENV_VAR = "PYRO_VAE_DATA_DIR"

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class DataFile:
    """One standard file of a data set.

    Attributes:
        relpath: POSIX path under a data directory, as in the shared layout.
        sha256: hex digest of the file's *decompressed* content (the raw bytes when the
            file is not gzipped), so one digest verifies a gzipped or a plain copy; None
            when no checksum is on record (then :func:`~pyro_vae.data.fetch` refuses it).
        url: default download address (the original source), None with no checksum.
    """

    relpath: str
    sha256: Optional[str] = None
    url: Optional[str] = None

    @property
    def variants(self) -> tuple[str, ...]:
        """Accepted relative paths: the layout name, and the name without ``.gz``."""
        if self.relpath.endswith(".gz"):
            return (self.relpath, self.relpath[: -len(".gz")])
        return (self.relpath,)


def _repo_data_dir() -> Path:
    """``<repo root>/../shared/data``; the repo root is the parent of the package dir."""
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data"


def _home_data_dir() -> Path:
    return Path.home() / ".pyro_vae" / "data"


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> list[Path]:
    """Candidate data directories, in search order, without duplicates.

    1. ``data_dir`` when given; 2. the directories in ``$PYRO_VAE_DATA_DIR``
    (``os.pathsep``-separated); 3. ``<repo root>/../shared/data``; 4. ``~/.pyro_vae/data``.
    Directories need not exist; the list says where to look, not what was found.
    """
    candidates: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        candidates.append(Path(data_dir).expanduser())
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            candidates.append(Path(entry.strip()).expanduser())
    candidates += [_repo_data_dir(), _home_data_dir()]
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def _find_in(directory: Path, file: DataFile) -> Optional[Path]:
    """The first existing variant of ``file`` under ``directory``, if any."""
    for rel in file.variants:
        path = directory / rel
        if path.is_file():
            return path
    return None


def locate_files(
    dataset: str,
    files: Sequence[DataFile],
    data_dir: Optional[PathLike] = None,
    fix: Optional[str] = None,
) -> list[Path]:
    """Paths of ``files`` in the first candidate directory that holds all of them.

    Args:
        fix: how to get the files, for the error message; default: ``pyro-vae fetch``.

    Raises:
        DataError: no candidate holds them all; the message lists every path looked at
            and the ways to fix it.
    """
    if not files:
        return []
    looked_at: list[str] = []
    folders: list[str] = []
    for directory in resolve_data_dir(data_dir):
        found = [_find_in(directory, f) for f in files]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
        for f, p in zip(files, found):
            looked_at += [f"  {directory / rel}" for rel in f.variants] if p is None else []
        folders += dict.fromkeys(str((directory / f.relpath).parent) for f in files)
    get = fix or f"download them with `pyro-vae fetch {dataset}`"
    raise DataError(
        f"cannot find the files of data set {dataset!r}. Paths looked at (not found):\n"
        + "\n".join(looked_at)
        + f"\nFolders looked in: {', '.join(folders)}."
        + f"\nFix: point --data-dir (data_dir=...) or the {ENV_VAR} environment variable "
        f"at a directory that holds {', '.join(f.relpath for f in files)}, or {get}."
    )
