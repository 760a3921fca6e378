"""The one exception type of the data subpackage, and builders for its common messages.

Every failure to find, read or validate a data file is raised as :class:`DataError`
with a message that names the file and says how to fix it, so that the CLI can print
the message alone instead of a traceback from gzip, scipy or numpy.
"""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A data set cannot be found, read, downloaded or used as asked."""


def corrupt_file_error(path: Path, dataset: str, expected: str, found: str) -> DataError:
    """The error for a file that exists but is damaged or is not the expected file."""
    return DataError(
        f"data file {path} (data set {dataset!r}) is corrupt or not the expected file: "
        f"expected {expected}, found {found}. {replace_hint(dataset)}"
    )


def replace_hint(dataset: str) -> str:
    """How to get a good copy of a file of ``dataset``: fetch it when ``pyro-vae fetch``
    can, else replace it by hand (user files, and sets without checksums on record)."""
    # Deferred import: the registry imports the readers, which import this module.
    from pyro_vae.data.registry import DATASETS

    spec = DATASETS.get(dataset)
    if spec is not None and spec.fetchable:
        return (
            f"Delete it and download it again with `pyro-vae fetch {dataset}` "
            "(or copy a good copy into place)."
        )
    if spec is not None and spec.missing_fix:
        return f"Replace it with a good copy: {spec.missing_fix}"
    return "Replace it with a good copy of the file."
