"""The known data sets and :func:`load_dataset`, the one entry point for loading them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Sequence

from pyro_vae.data import binarized_mnist, digits, frey_face, mnist
from pyro_vae.data.binarize import binarize_splits, check_binarize_mode, check_seed
from pyro_vae.data.errors import DataError
from pyro_vae.data.paths import DataFile, PathLike, locate_files
from pyro_vae.data.splits import DataSplits


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one data set.

    Attributes:
        name: the data set's name.
        description: one line for help texts.
        image_shape: ``(H, W)`` of one image.
        files: the standard files (empty when the data are embedded).
        read: ``paths (one per file, in files order) -> DataSplits`` with the values as
            in the files (no binarization).
        has_labels: whether the splits carry class labels.
    """

    name: str
    description: str
    image_shape: tuple[int, int]
    files: tuple[DataFile, ...]
    read: Callable[[Sequence[Path]], DataSplits]
    has_labels: bool


def _spec(module, description: str, has_labels: bool) -> DatasetSpec:
    return DatasetSpec(
        module.NAME, description, module.IMAGE_SHAPE, module.FILES, module.read, has_labels
    )


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spec(digits, "scikit-learn 8x8 digits, grey levels (embedded, no files)", True),
            _spec(binarized_mnist, "MNIST, fixed binarization of Larochelle & Murray", False),
            _spec(mnist, "MNIST 28x28, grey levels", True),
            _spec(frey_face, "Frey Face 28x20, grey levels", False),
        )
    }
)


def get_spec(name: str) -> DatasetSpec:
    """The spec of data set ``name`` (case and ``-``/``_`` insensitive)."""
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {list(DATASETS)}")
    return DATASETS[key]


def load_dataset(
    name: str,
    data_dir: Optional[PathLike] = None,
    binarize: Optional[str] = None,
    seed: int = 0,
) -> DataSplits:
    """Load data set ``name`` as train/valid/test splits of flattened float32 images.

    Args:
        name: one of :data:`DATASETS` (``"digits"``, ``"binarized_mnist"``, ``"mnist"``,
            ``"frey_face"``).
        data_dir: a directory to search first; then ``$PYRO_VAE_DATA_DIR``,
            ``<repo>/../shared/data`` and ``~/.pyro_vae/data`` (:func:`resolve_data_dir`).
        binarize: None (values as in the files), ``"static"`` (every split replaced once
            by a Bernoulli *sample* of its grey levels, not a threshold) or
            ``"dynamic"`` (valid/test sampled once, train kept grey for the loader to
            resample every batch: pass ``dynamic_binarize=True`` to the train loader).
        seed: seeds the binarization samples (not the train/valid/test split, which is
            fixed per data set).

    Raises:
        DataError: unknown name or binarize mode, missing or corrupt files.
    """
    mode, seed = check_binarize_mode(binarize), check_seed(seed)  # before reading files
    spec = get_spec(name)
    data = spec.read(locate_files(spec.name, spec.files, data_dir))
    return binarize_splits(data, mode, seed)
