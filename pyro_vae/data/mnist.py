"""MNIST (LeCun et al.) from the four IDX files, in torchvision's ``MNIST/raw`` layout.

Grey levels 0..255 are divided by 255 into [0, 1]. The 60000 training images are split
into the first 50000 (train) and the last 10000 (valid), the usual VAE protocol; the
10000 ``t10k`` images are the test split. Labels kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pyro_vae.data.errors import corrupt_file_error
from pyro_vae.data.paths import DataFile
from pyro_vae.data.readers import read_idx
from pyro_vae.data.splits import DataSplits, labels_tensor, to_tensor

NAME = "mnist"
IMAGE_SHAPE = (28, 28)
NUM_TRAIN = 50000  # of the 60000 training images; the rest are the validation split
_SOURCE = "https://ossci-datasets.s3.amazonaws.com/mnist/{}.gz"
_SHA256 = {  # of the decompressed files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FILES = tuple(
    DataFile(f"MNIST/raw/{stem}.gz", sha, _SOURCE.format(stem)) for stem, sha in _SHA256.items()
)
_ROWS = {"train": 60000, "t10k": 10000}


def read_pair(images_path: Path, labels_path: Path, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(rows, 28, 28)`` uint8 and labels ``(rows,)`` uint8 from two IDX files."""
    images = read_idx(images_path, NAME, ndim=3)
    labels = read_idx(labels_path, NAME, ndim=1)
    if images.shape != (rows,) + IMAGE_SHAPE:
        raise corrupt_file_error(
            images_path, NAME, f"images of shape {(rows,) + IMAGE_SHAPE}", f"{images.shape}"
        )
    if labels.shape != (rows,):
        raise corrupt_file_error(
            labels_path, NAME, f"{rows} labels, one per image of {images_path.name}",
            f"{labels.shape[0]} labels",
        )
    if labels.max() > 9:
        raise corrupt_file_error(labels_path, NAME, "labels 0..9", f"a label {labels.max()}")
    return images, labels


def read(paths: Sequence[Path]) -> DataSplits:
    """The splits from the four files ``paths`` (in :data:`FILES` order)."""
    train_images, train_labels, test_images, test_labels = paths
    x, y = read_pair(train_images, train_labels, _ROWS["train"])
    x_test, y_test = read_pair(test_images, test_labels, _ROWS["t10k"])
    x_all, y_all = to_tensor(x, 255.0), labels_tensor(y)
    return DataSplits(
        name=NAME, image_shape=IMAGE_SHAPE,
        train=x_all[:NUM_TRAIN], valid=x_all[NUM_TRAIN:], test=to_tensor(x_test, 255.0),
        train_labels=y_all[:NUM_TRAIN], valid_labels=y_all[NUM_TRAIN:],
        test_labels=labels_tensor(y_test),
    )
