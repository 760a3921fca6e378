"""The known data sets, the sources of data a user brings, and :func:`load_dataset`, the
one entry point for loading either."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

from pyro_vae.data import arrays, binarized_mnist, digits, dsprites, frey_face, idx, mnist, torch_datasets
from pyro_vae.data.binarize import binarize_splits, check_binarize_mode, check_seed
from pyro_vae.data.errors import DataError
from pyro_vae.data.paths import DataFile, PathLike, locate_files
from pyro_vae.data.splits import DataSplits
from pyro_vae.data.subsets import check_sizes, take_subsets


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one named data set.

    Attributes:
        name: the data set's name.
        description: one line for help texts.
        event_shape: the shape of one data point, e.g. ``(1, 28, 28)``.
        files: the standard files (empty when the data are embedded).
        read: ``paths (one per file, in files order) -> DataSplits`` with the values as
            in the files (no binarization).
        has_labels: whether the splits carry class labels.
        missing_fix: how to get the files when they are missing, for the error message;
            None: download them with ``pyro-vae fetch`` (checksums on record).
    """

    name: str
    description: str
    event_shape: tuple[int, ...]
    files: tuple[DataFile, ...]
    read: Callable[[Sequence[Path]], DataSplits]
    has_labels: bool
    missing_fix: Optional[str] = None

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image (every named set holds ``(C, H, W)`` images)."""
        return self.event_shape[-2], self.event_shape[-1]

    @property
    def x_dim(self) -> int:
        """Number of values in one data point."""
        return math.prod(self.event_shape)

    @property
    def fetchable(self) -> bool:
        """Whether ``pyro-vae fetch`` can download the files (all have a checksum)."""
        return bool(self.files) and all(f.sha256 for f in self.files)


def _spec(module, description: str, has_labels: bool) -> DatasetSpec:
    return DatasetSpec(
        module.NAME, description, module.EVENT_SHAPE, module.FILES, module.read, has_labels
    )


def _torchvision_idx_spec(name: str, class_name: str, description: str) -> DatasetSpec:
    """A set in MNIST's IDX layout under ``<class_name>/raw``, with no checksums on record."""
    folder = f"{class_name}/raw"
    return DatasetSpec(
        name, description, mnist.EVENT_SHAPE, idx.layout_files(folder),
        functools.partial(mnist.read_named, name=name), True, idx.torchvision_fix(class_name, folder),
    )


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spec(digits, "scikit-learn 8x8 digits, grey levels (embedded, no files)", True),
            _spec(binarized_mnist, "MNIST, fixed binarization of Larochelle & Murray", False),
            _spec(mnist, "MNIST 28x28, grey levels", True),
            _spec(frey_face, "Frey Face 28x20, grey levels", False),
            _torchvision_idx_spec(
                "fashion_mnist", "FashionMNIST", "Fashion-MNIST 28x28, grey levels (IDX files)"
            ),
            _torchvision_idx_spec(
                "kmnist", "KMNIST", "Kuzushiji-MNIST 28x28, grey levels (IDX files)"
            ),
            _spec(dsprites, "dSprites 64x64 binary, rendered here (no files), 12000 of its images", True),
            DatasetSpec(
                dsprites.ORIGINAL_NAME, "dSprites, DeepMind's .npz, the same 12000 images",
                dsprites.EVENT_SHAPE, dsprites.ORIGINAL_FILES, dsprites.read_original, True,
                dsprites.ORIGINAL_FIX,
            ),
        )
    }
)

#: Data a user brings: ``name`` for :func:`load_dataset`, and what it reads.
SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "idx": "path = a folder holding the four MNIST-layout IDX files",
        "array": "path = a .npy or .npz file",
        "torchvision": "dataset = a class of torchvision.datasets, path = its root folder",
    }
)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_spec(name: str) -> DatasetSpec:
    """The spec of data set ``name`` (case and ``-``/``_`` insensitive)."""
    key = _key(name) if isinstance(name, str) else name
    if key not in DATASETS:
        raise DataError(
            f"unknown data set {name!r}: choose one of {list(DATASETS)}, or a source of your "
            "own data: " + "; ".join(f"{k!r} ({v})" for k, v in SOURCES.items())
        )
    return DATASETS[key]


def _read_source(key: str, path: Optional[PathLike], dataset: Optional[str]) -> DataSplits:
    """The splits of source ``key`` (one of :data:`SOURCES`)."""
    if path is None or str(path) == "":
        raise DataError(f'name = "{key}" needs path: {SOURCES[key]}')
    if key != "torchvision" and dataset is not None:
        raise DataError(f'dataset = {dataset!r} is only for name = "torchvision"')
    if key == "idx":
        return idx.read_folder(path)
    if key == "array":
        return arrays.read_array_file(path)
    return torch_datasets.load_torchvision(dataset, path)


def _read_objects(obj: Any) -> DataSplits:
    """The splits of a ``Dataset``, or of a ``(train, test)`` / ``(train, valid, test)`` tuple."""
    if torch_datasets.is_torch_dataset(obj):
        return torch_datasets.from_torch_datasets(obj)
    if (
        isinstance(obj, (tuple, list))
        and len(obj) in (2, 3)
        and all(torch_datasets.is_torch_dataset(d) for d in obj)
    ):
        train, test, valid = torch_datasets.datasets_from_sequence(obj)
        return torch_datasets.from_torch_datasets(train, test, valid)
    raise DataError(
        f"load_dataset takes a data set name (str), a torch.utils.data.Dataset, or a tuple "
        f"(train, test) / (train, valid, test) of them; got {type(obj).__name__}. Other "
        "map-style datasets: pyro_vae.data.from_torch_datasets"
    )


def read_source(
    name: Any,
    data_dir: Optional[PathLike] = None,
    path: Optional[PathLike] = None,
    dataset: Optional[str] = None,
) -> DataSplits:
    """The splits of ``name`` as stored (no binarization, no subsets); see :func:`load_dataset`."""
    if not isinstance(name, str):
        if path is not None or dataset is not None:
            raise DataError("path and dataset are for data set names, not for dataset objects")
        return _read_objects(name)
    if _key(name) in SOURCES:
        return _read_source(_key(name), path, dataset)
    spec = get_spec(name)
    if path is not None or dataset is not None:
        raise DataError(
            f"path / dataset are only for the sources {list(SOURCES)}, not for the named set "
            f"{spec.name!r} (use data_dir to say where its files are)"
        )
    return spec.read(locate_files(spec.name, spec.files, data_dir, spec.missing_fix))


def load_dataset(
    name: Any,
    data_dir: Optional[PathLike] = None,
    binarize: Optional[str] = None,
    seed: int = 0,
    *,
    path: Optional[PathLike] = None,
    dataset: Optional[str] = None,
    train_size: Optional[int] = None,
    valid_size: Optional[int] = None,
    test_size: Optional[int] = None,
) -> DataSplits:
    """Load a data set as train/valid/test splits of float32 ``(n, *event_shape)`` in [0, 1].

    Args:
        name: a named set of :data:`DATASETS` (``"digits"``, ``"binarized_mnist"``,
            ``"mnist"``, ``"frey_face"``, ``"fashion_mnist"``, ``"kmnist"``; case and
            ``-``/``_`` insensitive); a source of :data:`SOURCES`: ``"idx"`` (``path`` =
            a folder of the four MNIST-layout IDX files), ``"array"`` (``path`` = a
            ``.npy``/``.npz`` file), ``"torchvision"`` (``dataset`` = a class name of
            ``torchvision.datasets``, ``path`` = its root); or, from Python, a
            ``torch.utils.data.Dataset`` (split about 80/10/10) or a tuple ``(train,
            test)`` / ``(train, valid, test)`` of them (see :func:`from_torch_datasets`).
        data_dir: for the named sets, a directory to search first; then
            ``$PYRO_VAE_DATA_DIR``, ``<repo>/../shared/data`` and ``~/.pyro_vae/data``
            (:func:`resolve_data_dir`).
        binarize: None (values as in the files), ``"static"`` (every split replaced once
            by a Bernoulli *sample* of its grey levels, not a threshold) or
            ``"dynamic"`` (valid/test sampled once, train kept grey for the loader to
            resample every batch: pass ``dynamic_binarize=True`` to the train loader).
        seed: seeds the binarization samples (not the train/valid/test split, nor the
            subsets, which are fixed per data set).
        path: the file or folder of a source (see ``name``).
        dataset: the torchvision class name for ``name = "torchvision"``.
        train_size, valid_size, test_size: keep a fixed random subset of that many rows
            of the split (:func:`subset_indices`, the same in every run; labels kept in
            step; 0: an empty split; None: the whole split; more rows than the split
            has: refused). Taken after binarization, so a subset's rows equal the same
            rows of the whole binarized split.

    Raises:
        DataError: unknown name or binarize mode, bad sizes, missing or corrupt files,
            data that are not in [0, 1] or ill-shaped; the message says how to fix it.
    """
    # Checked before reading any file, so a bad config fails at once.
    mode, seed = check_binarize_mode(binarize), check_seed(seed)
    check_sizes(train_size=train_size, valid_size=valid_size, test_size=test_size)
    data = read_source(name, data_dir, path, dataset)
    data = binarize_splits(data, mode, seed)
    return take_subsets(data, train_size, valid_size, test_size)
