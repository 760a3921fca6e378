"""Download the standard files of the data sets, verified by sha256, atomically.

Each file is checked against the sha256 of its *decompressed* content (the raw bytes
when it is not gzipped), so one checksum verifies the gzipped copy of a mirror and the
uncompressed original alike. A download goes to a temporary file next to its target,
is verified, and only then renamed into place with ``os.replace``: an interrupted or
corrupt download never leaves a partial file under the real name, and never replaces
an existing file.

Note: ``pyro_vae.data.fetch`` is re-exported as the *function* by the package, so
``import pyro_vae.data.fetch as m`` yields the function; use
``from pyro_vae.data.fetch import fetch_file`` (or ``sys.modules``) to reach the module.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

from pyro_vae.data.errors import DataError
from pyro_vae.data.paths import DataFile, PathLike
from pyro_vae.data.readers import GZIP_MAGIC
from pyro_vae.data.registry import DATASETS, get_spec

_CHUNK = 1 << 20
Progress = Optional[Callable[[str], None]]


def content_sha256(path: Path) -> Optional[str]:
    """sha256 of the decompressed content of ``path``; None if unreadable or bad gzip."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def source_url(file: DataFile, mirror: Optional[str]) -> str:
    """``mirror + file.relpath`` with a mirror, else the file's original address."""
    return mirror.rstrip("/") + "/" + file.relpath if mirror else file.url


def _verified_copy(data_dir: Path, file: DataFile) -> Optional[Path]:
    for rel in file.variants:
        path = data_dir / rel
        if path.is_file() and content_sha256(path) == file.sha256:
            return path
    return None


def _download(url: str, destination: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            with open(destination, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = getattr(err, "reason", None) or err
        raise DataError(
            f"cannot download {url}: {reason}. Check the network connection and retry, "
            "or use another mirror."
        ) from None


def _stored_name(file: DataFile, downloaded: Path) -> str:
    """The layout name, without ``.gz`` when the download is not gzipped (e.g. originals)."""
    with open(downloaded, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    if file.relpath.endswith(".gz") and not gzipped:
        return file.relpath[: -len(".gz")]
    return file.relpath


def fetch_file(
    file: DataFile, data_dir: Path, mirror: Optional[str] = None, timeout: float = 60,
    progress: Progress = None,
) -> Path:
    """Download ``file`` into ``data_dir`` unless a verified copy is there; its path.

    Raises:
        DataError: network error, or a download whose checksum does not match (the
            temporary file is deleted, existing files are left untouched).
    """
    if not file.sha256 or not file.url:  # nothing to verify a download against
        raise DataError(
            f"{file.relpath} has no checksum or address on record and cannot be downloaded: "
            "place a copy there by hand"
        )
    existing = _verified_copy(data_dir, file)
    if existing is not None:
        if progress:
            progress(f"{existing} is present and verified")
        return existing
    url = source_url(file, mirror)
    target_dir = (data_dir / file.relpath).parent
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        prefix = f".{Path(file.relpath).name}."  # hidden, and never a name the loader reads
        fd, name = tempfile.mkstemp(dir=target_dir, prefix=prefix, suffix=".part")
    except OSError as err:
        raise DataError(
            f"cannot write to {target_dir}: {err}. Choose another data directory."
        ) from None
    os.close(fd)
    partial = Path(name)
    try:
        if progress:
            progress(f"downloading {url}")
        _download(url, partial, timeout)
        actual = content_sha256(partial)
        if actual != file.sha256:
            raise DataError(
                f"checksum mismatch for {url}: expected sha256 {file.sha256} (of the "
                f"decompressed content), got {actual or 'an unreadable gzip stream'}. The "
                "download is corrupt or not the expected file and was discarded: retry, "
                "or use another mirror."
            )
        target = data_dir / _stored_name(file, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _remove_corrupt_variants(data_dir, file, keep=target)
    if progress:
        progress(f"saved {target}")
    return target


def _remove_corrupt_variants(data_dir: Path, file: DataFile, keep: Path) -> None:
    """Delete other-named copies that fail the checksum: loading would find them first."""
    for rel in file.variants:
        path = data_dir / rel
        if path != keep and path.is_file() and content_sha256(path) != file.sha256:
            path.unlink()


def fetch(
    names: Optional[Sequence[str]],
    data_dir: PathLike,
    mirror: Optional[str] = None,
    timeout: float = 60,
    progress: Progress = None,
) -> list[Path]:
    """Download the files of data sets ``names`` (all when None) into ``data_dir``.

    The files go under the shared layout (``binarized_mnist/…``, ``MNIST/raw/…``,
    ``frey_face/…``); ``digits`` needs none. Files already present and verified are
    not downloaded again. Sets with no checksums on record (``fashion_mnist``,
    ``kmnist``) are never downloaded: their files are placed by hand.

    Args:
        names: data set names (see :data:`DATASETS`), or None for all that can be
            downloaded.
        data_dir: the data directory to fill (created if missing).
        mirror: base URL; each file is then fetched from ``mirror + <relative path>``
            (the ``.gz`` names of the layout) instead of its original address.
        timeout: seconds to wait on the network per request.
        progress: called with a one-line message per step (e.g. ``print`` in a CLI).

    Returns:
        The paths of all the files of those data sets, in order.

    Raises:
        DataError: unknown name, a set with no checksums, network error, or checksum
            mismatch.
    """
    if names is None:
        specs = [spec for spec in DATASETS.values() if spec.fetchable or not spec.files]
    else:
        specs = [get_spec(n) for n in names]
    for spec in specs:  # every name checked before the first download
        if spec.files and not spec.fetchable:
            raise DataError(
                f"data set {spec.name!r} cannot be downloaded by pyro-vae: no checksums for "
                f"its files are on record. Fix: {spec.missing_fix}."
            )
    directory = Path(data_dir).expanduser()
    files = list(dict.fromkeys(f for spec in specs for f in spec.files))
    return [fetch_file(f, directory, mirror, timeout, progress) for f in files]
