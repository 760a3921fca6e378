"""MNIST (LeCun et al.) from the four IDX files, in torchvision's ``MNIST/raw`` layout.

Grey levels 0..255 are divided by 255 into [0, 1], events ``(1, 28, 28)``. The 60000
training images are split into the first 50000 (train) and the last 10000 (valid), the
usual VAE protocol; the 10000 ``t10k`` images are the test split. Labels kept.

Fashion-MNIST and KMNIST ship in the same layout (``FashionMNIST/raw``, ``KMNIST/raw``)
and are read by the same code (:mod:`pyro_vae.data.idx`), split the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pyro_vae.data import idx
from pyro_vae.data.splits import DataSplits

NAME = "mnist"
EVENT_SHAPE = (1, 28, 28)
NUM_TRAIN = 50000  # of the 60000 training images; the rest are the validation split
_SOURCE = "https://ossci-datasets.s3.amazonaws.com/mnist/{}.gz"
_SHA256 = {  # of the decompressed files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FILES = idx.layout_files("MNIST/raw", _SHA256, _SOURCE)


def read_named(paths: Sequence[Path], name: str) -> DataSplits:
    """The splits of a 28x28, 60000 + 10000 image, labels 0..9 IDX set (MNIST's shape)."""
    return idx.read_splits(paths, name, idx.STANDARD_ROWS, idx.STANDARD_IMAGE, max_label=9)


def read(paths: Sequence[Path]) -> DataSplits:
    """The splits from the four files ``paths`` (in :data:`FILES` order)."""
    return read_named(paths, NAME)
