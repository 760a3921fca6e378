"""Frey Face (Roweis): 1965 grey-level images of 28x20 of Brendan Frey's face.

One MATLAB file, variable ``ff`` of shape (560, 1965), one image per column. Grey
levels are divided by 255 into [0, 1] (continuous data, for a Gaussian decoder), events
``(1, 28, 20)``; the images are split by a fixed permutation into 1565 train / 200
valid / 200 test. No labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pyro_vae.data.errors import corrupt_file_error
from pyro_vae.data.paths import DataFile
from pyro_vae.data.readers import read_mat_array
from pyro_vae.data.splits import DataSplits, permutation_split, to_tensor

NAME = "frey_face"
EVENT_SHAPE = (1, 28, 20)
NUM_IMAGES = 1965
SIZES = (1565, 200, 200)
SPLIT_SEED = 0
FILES = (
    DataFile(
        "frey_face/frey_rawface.mat",
        "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
        "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
    ),
)


def read(paths: Sequence[Path]) -> DataSplits:
    """The splits from the one file ``paths[0]``."""
    (path,) = paths
    ff = read_mat_array(path, NAME, "ff")
    expected = (EVENT_SHAPE[1] * EVENT_SHAPE[2], NUM_IMAGES)
    if ff.shape != expected:
        raise corrupt_file_error(
            path, NAME, f"variable 'ff' of shape {expected} (one 28x20 image per column)",
            f"shape {ff.shape}",
        )
    # Column j is image j, stored row-major as 28 rows of 20: ff.T.reshape(-1, 28, 20).
    return permutation_split(
        NAME, to_tensor(ff.T, 255.0, EVENT_SHAPE), None, SIZES, EVENT_SHAPE, SPLIT_SEED
    )
