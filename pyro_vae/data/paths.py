"""Where data files live: the candidate data directories and the search through them.

A data directory holds each data set under the same relative layout as the project's
shared copy (``binarized_mnist/…``, ``MNIST/raw/…``, ``frey_face/…``). A directory the
user names (``--data-dir``, ``[data] data_dir``, ``data_dir=``, ``$PYRO_VAE_DATA_DIR``) is
the only place looked: when it lacks the files the load fails and says where a copy
was found instead, rather than training on another copy without a word. Only with no
directory named are the fallbacks searched (``../shared/data`` beside the repository,
then ``~/.pyro_vae/data``). A data set is read from the first directory that holds
*all* of its files, so that it is never assembled from files of two different copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

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


def explicit_data_dirs(data_dir: Optional[PathLike] = None) -> tuple[list[Path], str]:
    """The directories a user named, and how they were named (for messages).

    ``data_dir`` when given (``--data-dir``, ``[data] data_dir``, ``data_dir=``); else the
    ``os.pathsep``-separated directories of ``$PYRO_VAE_DATA_DIR``; else none. ``data_dir``
    wins over the variable: the narrower setting is the one the user meant for this run.
    """
    if data_dir is not None and str(data_dir) != "":
        return [Path(data_dir).expanduser()], "named by --data-dir, [data] data_dir or data_dir="
    entries = [e.strip() for e in os.environ.get(ENV_VAR, "").split(os.pathsep) if e.strip()]
    return _unique(Path(e).expanduser() for e in entries), f"named by ${ENV_VAR}"


def fallback_data_dirs() -> list[Path]:
    """Where data are looked for when no directory is named: ``<repo root>/../shared/data``,
    then ``~/.pyro_vae/data`` (where ``pyro-vae fetch`` puts them by default)."""
    return _unique([_repo_data_dir(), _home_data_dir()])


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> list[Path]:
    """The data directories searched, in order, without duplicates.

    A named directory is authoritative: ``data_dir`` alone when given, else the
    directories of ``$PYRO_VAE_DATA_DIR`` when it is set (:func:`explicit_data_dirs`), so a
    run never reads a copy other than the one the user pointed at. Only with neither are
    the :func:`fallback_data_dirs` searched. Directories need not exist; the list says
    where to look, not what was found.
    """
    return explicit_data_dirs(data_dir)[0] or fallback_data_dirs()


def _unique(paths) -> list[Path]:
    unique: list[Path] = []
    for path in paths:
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


def find_all(directory: Path, files: Sequence[DataFile]) -> Optional[list[Path]]:
    """The paths of all ``files`` under ``directory``, or None when one is missing."""
    found = [_find_in(directory, f) for f in files]
    return None if any(p is None for p in found) else found  # type: ignore[return-value]


def locate_files(
    dataset: str,
    files: Sequence[DataFile],
    data_dir: Optional[PathLike] = None,
    fix: Optional[str] = None,
    hint: Optional[Callable[[Path], Optional[str]]] = None,
) -> list[Path]:
    """Paths of ``files`` in the first searched directory that holds all of them
    (:func:`resolve_data_dir`: a named directory alone, else the fallbacks).

    Args:
        fix: how to get the files, for the error message; default: ``pyro-vae fetch``.
        hint: for a named directory that lacks the files, what else it holds (e.g. the
            files of another data set), as a sentence for the message; None: nothing.

    Raises:
        DataError: no searched directory holds them all; the message lists every path
            looked at and the ways to fix it, and, when a named directory was searched
            in vain, a complete copy in a fallback directory if there is one.
    """
    if not files:
        return []
    named, how = explicit_data_dirs(data_dir)
    for directory in named or fallback_data_dirs():
        found = find_all(directory, files)
        if found is not None:
            return found
    if named:
        raise _missing_in_named(dataset, files, named, how, fix, hint)
    raise _missing(dataset, files, fallback_data_dirs(), fix)


def _looked_at(files: Sequence[DataFile], directories: Sequence[Path]) -> tuple[str, str]:
    """The lines of the paths looked at (not found), and the folders looked in."""
    paths: list[str] = []
    folders: list[str] = []
    for directory in directories:
        paths += [f"  {directory / rel}" for f in files if _find_in(directory, f) is None for rel in f.variants]
        folders += dict.fromkeys(str((directory / f.relpath).parent) for f in files)
    return "\n".join(paths), ", ".join(dict.fromkeys(folders))


def _missing(dataset: str, files: Sequence[DataFile], directories: Sequence[Path], fix: Optional[str]) -> DataError:
    """No directory named, and no fallback holds the files."""
    paths, folders = _looked_at(files, directories)
    get = fix or f"download them with `pyro-vae fetch {dataset}`"
    return DataError(
        f"cannot find the files of data set {dataset!r}. Paths looked at (not found):\n{paths}"
        f"\nFolders looked in: {folders}."
        f"\nFix: point --data-dir (data_dir=...) or the {ENV_VAR} environment variable "
        f"at a directory that holds {', '.join(f.relpath for f in files)}, or {get}."
    )


def _missing_in_named(
    dataset: str, files: Sequence[DataFile], named: Sequence[Path], how: str, fix: Optional[str],
    hint: Optional[Callable[[Path], Optional[str]]],
) -> DataError:
    """A named directory lacks the files: say which, what it holds instead, and where a
    fallback copy is (never read silently: the user named another place)."""
    paths, folders = _looked_at(files, named)
    lines = [
        f"cannot find the files of data set {dataset!r} in {_directories(named)}, {how}: a named data "
        f"directory is the only place looked. Paths looked at (not found):\n{paths}",
        f"Folders looked in: {folders}.",
    ]
    lines += [h for h in (hint(d) if hint else None for d in named if d.is_dir()) if h]
    copy = next((d for d in fallback_data_dirs() if d not in named and find_all(d, files)), None)
    if copy is not None:
        lines.append(
            f"A complete copy of {dataset!r} is in {copy}, which the default search would use: to train "
            f"on it, point --data-dir (data_dir=...) or ${ENV_VAR} at {copy}, or name no data directory "
            f"at all (no --data-dir, [data] data_dir or ${ENV_VAR})."
        )
    target = named[0]
    either = " (each .gz or not)" if any(f.relpath.endswith(".gz") for f in files) else ""
    get = fix or f"download them with `pyro-vae fetch {dataset} --data-dir {target}`"
    lines.append(f"Fix: place {', '.join(f.relpath for f in files)}{either} under {target}, or {get}.")
    return DataError("\n".join(lines))


def _directories(named: Sequence[Path]) -> str:
    """``"the data directory <d>"`` (or directories), saying which do not exist."""
    parts = [f"{d}{'' if d.is_dir() else ' (which does not exist)'}" for d in named]
    return f"the data director{'y' if len(parts) == 1 else 'ies'} {', '.join(parts)}"
