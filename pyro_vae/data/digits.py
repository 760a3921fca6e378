"""scikit-learn's 8x8 digits (1797 images, grey levels 0..16), embedded: no files needed.

The default data set for quick runs and tests. Grey levels are divided by 16 into
[0, 1], events ``(1, 8, 8)``; the rows are split by a fixed permutation into 1297
train / 250 valid / 250 test, labels kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pyro_vae.data.paths import DataFile
from pyro_vae.data.provenance import with_array_source
from pyro_vae.data.splits import DataSplits, labels_tensor, permutation_split, to_tensor

NAME = "digits"
EVENT_SHAPE = (1, 8, 8)
FILES: tuple[DataFile, ...] = ()
SIZES = (1297, 250, 250)
SPLIT_SEED = 0


def read(paths: Sequence[Path] = ()) -> DataSplits:
    """The digits splits (``paths`` is unused: the data ship with scikit-learn), recording
    a checksum of the arrays as their source (there is no file to name)."""
    from sklearn.datasets import load_digits  # deferred: importing sklearn takes ~1 s

    bunch = load_digits()
    data = permutation_split(
        NAME, to_tensor(bunch.images, 16.0, EVENT_SHAPE), labels_tensor(bunch.target), SIZES,
        EVENT_SHAPE, SPLIT_SEED,
    )
    return with_array_source(data, "sklearn.datasets.load_digits")
