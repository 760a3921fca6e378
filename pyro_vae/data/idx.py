"""IDX image/label files in torchvision's raw layout: MNIST, Fashion-MNIST, KMNIST, or any
folder holding the four files.

The four files (each gzipped or not) are ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``:
uint8 images ``(n, H, W)`` (the sizes read from the headers) and their uint8 labels.
Grey levels are divided by 255 into [0, 1]; each image becomes a ``(1, H, W)`` event.
The ``t10k`` images are the test split; valid is carved from the training file by
:func:`~pyro_vae.data.splits.split_off_valid`: its last 10000 rows when it has more
than 20000 (MNIST's 50000/10000), else ``max(1, n // 10)`` rows by a fixed permutation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from pyro_vae.data.errors import DataError, corrupt_file_error
from pyro_vae.data.paths import DataFile, PathLike
from pyro_vae.data.provenance import with_file_sources
from pyro_vae.data.readers import read_idx
from pyro_vae.data.splits import DataSplits, labels_tensor, split_off_valid, to_tensor

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: Rows of the training and t10k files of MNIST, Fashion-MNIST and KMNIST.
STANDARD_ROWS = (60000, 10000)
STANDARD_IMAGE = (28, 28)


def layout_files(
    folder: str, sha256: Optional[Mapping[str, str]] = None, url: Optional[str] = None
) -> tuple[DataFile, ...]:
    """The four files under ``folder`` (e.g. ``"MNIST/raw"``), in :data:`STEMS` order;
    ``sha256`` per stem and ``url`` (a format string taking the stem) when on record."""
    return tuple(
        DataFile(
            f"{folder}/{stem}.gz",
            sha256[stem] if sha256 else None,
            url.format(stem) if url else None,
        )
        for stem in STEMS
    )


def torchvision_fix(class_name: str, folder: str) -> str:
    """How to get the raw files of torchvision's ``class_name`` (no checksums on record)."""
    return (
        f"place torchvision's downloaded raw files ({', '.join(STEMS)}, each .gz or not) "
        f"in <data dir>/{folder}/, e.g. run `torchvision.datasets.{class_name}(root, "
        f"download=True)` on a machine with internet and copy root/{folder}/ there "
        "(`pyro-vae fetch` has no checksums for these files)"
    )


def read_pair(
    images_path: Path,
    labels_path: Path,
    dataset: str,
    rows: Optional[int] = None,
    image_size: Optional[tuple[int, int]] = None,
    max_label: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, H, W)`` uint8 and labels ``(n,)`` uint8 from two IDX files.

    ``rows``, ``image_size`` and ``max_label``, when given, are required exactly (the
    named data sets); the label count must always equal the image count.
    """
    images = read_idx(images_path, dataset, ndim=3)
    labels = read_idx(labels_path, dataset, ndim=1)
    if (rows is not None and images.shape[0] != rows) or (
        image_size is not None and images.shape[1:] != image_size
    ):
        expected = (rows if rows is not None else "n",) + (image_size or ("H", "W"))
        raise corrupt_file_error(
            images_path, dataset, f"images of shape {expected}".replace("'", ""), f"{images.shape}"
        )
    if labels.shape != images.shape[:1]:
        raise corrupt_file_error(
            labels_path, dataset, f"{images.shape[0]} labels, one per image of {images_path.name}",
            f"{labels.shape[0]} labels",
        )
    if max_label is not None and labels.size and labels.max() > max_label:
        raise corrupt_file_error(
            labels_path, dataset, f"labels 0..{max_label}", f"a label {labels.max()}"
        )
    return images, labels


def read_splits(
    paths: Sequence[Path],
    name: str,
    rows: Optional[tuple[int, int]] = None,
    image_size: Optional[tuple[int, int]] = None,
    max_label: Optional[int] = None,
) -> DataSplits:
    """The splits from the four files ``paths`` (in :data:`STEMS` order), event ``(1, H, W)``.

    ``rows`` = (training rows, test rows), ``image_size`` and ``max_label`` as in
    :func:`read_pair`; the test images must have the training images' size.
    """
    train_images, train_labels, test_images, test_labels = paths
    rows = rows or (None, None)
    x, y = read_pair(train_images, train_labels, name, rows[0], image_size, max_label)
    size = tuple(x.shape[1:])
    x_test, y_test = read_pair(test_images, test_labels, name, rows[1], size, max_label)
    event = (1, *size)
    train, train_y, valid, valid_y = split_off_valid(
        to_tensor(x, 255.0, event), labels_tensor(y), name
    )
    return DataSplits(
        name=name, event_shape=event, train=train, valid=valid,
        test=to_tensor(x_test, 255.0, event),
        train_labels=train_y, valid_labels=valid_y, test_labels=labels_tensor(y_test),
    )


def find_in_folder(folder: Path) -> list[Path]:
    """The four files in ``folder`` (each ``.gz`` first, then the plain name).

    Raises:
        DataError: a file is missing; the message names the folder and the fix.
    """
    found, missing = [], []
    for stem in STEMS:
        path = next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)
        found.append(path)
        if path is None:
            missing.append(stem)
    if missing:
        raise DataError(
            f"cannot find the IDX files {', '.join(missing)} (each .gz or not) in the folder "
            f"{folder}{'' if folder.is_dir() else ' (no such folder)'}. Fix: set path to a "
            f"folder holding the four files {', '.join(STEMS)}, "
            "e.g. torchvision's <root>/FashionMNIST/raw/: place torchvision's downloaded raw/ "
            "files there (e.g. run `torchvision.datasets.FashionMNIST(root, download=True)` "
            "on a machine with internet)."
        )
    return found


def idx_folders(directory: Path) -> list[Path]:
    """The folders at most two levels below ``directory`` (``directory`` itself included)
    that hold the four IDX files, e.g. ``<dir>/FashionMNIST/raw``; what a data directory
    offers when it lacks the files asked for."""
    candidates = [directory, *sorted(directory.glob("*")), *sorted(directory.glob("*/*"))]
    return [
        folder for folder in candidates
        if folder.is_dir() and all(
            (folder / f"{stem}.gz").is_file() or (folder / stem).is_file() for stem in STEMS
        )
    ]


def source_name(folder: Path) -> str:
    """``"idx:<folder name>"``, naming torchvision's ``<Class>/raw`` by its class folder."""
    label = folder.parent.name if folder.name == "raw" and folder.parent.name else folder.name
    return f"idx:{label or folder}"


def read_folder(folder: PathLike) -> DataSplits:
    """The splits of any folder holding the four IDX files (sizes from their headers).

    Raises:
        DataError: a missing, corrupt or inconsistent file (message names it and the fix).
    """
    folder = Path(folder).expanduser()
    paths = find_in_folder(folder)
    return with_file_sources(read_splits(paths, source_name(folder)), paths)
