"""Where the tests find the shared real data sets (``../shared/data`` beside the repo,
or ``PYRO_VAE_DATA_DIR``); None when a file of some downloadable data set is missing.

Only the sets ``pyro-vae fetch`` can download count (``fashion_mnist`` and ``kmnist``
have no checksums and are not in the shared copy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro_vae.data import DATASETS, resolve_data_dir


def find_shared_dir() -> Path | None:
    """The first candidate data directory holding every downloadable data set's files."""
    needed = [f for spec in DATASETS.values() if spec.fetchable for f in spec.files]
    for directory in resolve_data_dir():
        if all((directory / f.relpath).is_file() for f in needed):
            return directory
    return None


SHARED = find_shared_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared data directory not found")
