"""Binarized MNIST with the fixed binarization of Larochelle & Murray (2011).

Three files, split exactly as shipped: 50000 train / 10000 valid / 10000 test rows of
784 values in {0, 1}, each row read as a ``(1, 28, 28)`` image (row-major). No labels: the rows are shuffled relative to MNIST, so they
cannot be paired with MNIST's labels by index.

Two formats are read, detected by content: the MATLAB v5 ``.mat`` files (variable
``X``) that circulate under the ``.amat`` name, and Larochelle's original text
``.amat`` (one row of whitespace-separated 0/1 per line); each gzipped or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pyro_vae.data.errors import corrupt_file_error
from pyro_vae.data.paths import DataFile
from pyro_vae.data.readers import (
    looks_like_text,
    mat_array_from_bytes,
    read_content,
    read_text_matrix,
)
from pyro_vae.data.splits import SPLITS, DataSplits, to_tensor

NAME = "binarized_mnist"
EVENT_SHAPE = (1, 28, 28)
ROWS = {"train": 50000, "valid": 10000, "test": 10000}
_SOURCE = (
    "https://raw.githubusercontent.com/mingzhang-yin/ARM-gradient/"
    "bac893cfcec486bbd00b755b12cf8402053b0e84/binarized_mnist_{}.amat"
)
_SHA256 = {
    "train": "79a0312c7389d855cfc97e3812de3998417c5829d8a51543b56a90a91252ae7e",
    "valid": "7436afc856959075c7787025bb8a4ba2b520b9230ee39667c66aa7dd2819dd68",
    "test": "5bc30222e1e7896cbccd1e1db6b28540cc1230f4d2d5473841a5f6cc54be8d38",
}
FILES = tuple(
    DataFile(f"binarized_mnist/binarized_mnist_{s}.amat.gz", _SHA256[s], _SOURCE.format(s))
    for s in SPLITS
)


def _is_binary(matrix: np.ndarray) -> bool:
    if np.issubdtype(matrix.dtype, np.unsignedinteger):  # a min/max pass is enough
        return bool(matrix.max() <= 1)
    return bool(((matrix == 0) | (matrix == 1)).all())


def read_matrix(path: Path, rows: int) -> np.ndarray:
    """The ``(rows, 784)`` 0/1 matrix in ``path`` (MAT or text, gzipped or not)."""
    content = read_content(path, NAME)
    if looks_like_text(content):
        matrix = read_text_matrix(content, path, NAME)
    else:
        matrix = mat_array_from_bytes(content, path, NAME, "X")
    expected = (rows, EVENT_SHAPE[1] * EVENT_SHAPE[2])
    if matrix.shape != expected:
        raise corrupt_file_error(path, NAME, f"a {expected} matrix", f"shape {matrix.shape}")
    if not _is_binary(matrix):
        raise corrupt_file_error(
            path, NAME, "values in {0, 1}", f"values from {matrix.min()} to {matrix.max()}"
        )
    return matrix


def read(paths: Sequence[Path]) -> DataSplits:
    """The splits from the train, valid and test files ``paths`` (in :data:`FILES` order)."""
    x = {
        split: to_tensor(read_matrix(p, ROWS[split]), 1.0, EVENT_SHAPE)
        for split, p in zip(SPLITS, paths)
    }
    return DataSplits(name=NAME, event_shape=EVENT_SHAPE, **x)
