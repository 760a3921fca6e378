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
        f"expected {expected}, found {found}. Delete it and download it again with "
        f"`pyro-vae fetch {dataset}` (or copy a good copy into place)."
    )
