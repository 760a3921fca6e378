"""The known data sets, the sources of data a user brings, and :func:`load_dataset`, the
one entry point for loading either."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

from pyro_vae.data import arrays, binarized_mnist, digits, dsprites, frey_face, idx, mnist, toy2d, torch_datasets, uci
from pyro_vae.data.binarize import binarize_splits, check_binarize_mode, check_seed
from pyro_vae.data.errors import DataError
from pyro_vae.data.paths import DataFile, PathLike, find_all, locate_files
from pyro_vae.data.provenance import with_array_source, with_file_sources
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
        """``(H, W)`` of one image, for the sets of ``(C, H, W)`` images (not the 2-D toy sets)."""
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


def _toy_2d_specs() -> tuple[DatasetSpec, ...]:
    """The 2-D toy sets of density models, generated locally (:mod:`pyro_vae.data.toy2d`)."""
    about = {"moons": "two moons", "circles": "two circles", "ring": "a ring of 8 Gaussians"}
    return tuple(DatasetSpec(name, f"2-D toy data: {text}, generated (no files)", toy2d.EVENT_SHAPE, (),
                             toy2d.reader(name), True) for name, text in about.items())


def _uci_specs() -> tuple[DatasetSpec, ...]:
    """The MAF paper's tabular sets (:mod:`pyro_vae.data.uci`), under ``maf/``, no checksums on record."""
    return tuple(DatasetSpec(name, text, (d,), uci.files(name), uci.reader(name), False, uci.missing_fix(name))
                 for name, (text, d, *_rest) in uci.SETS.items())


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
            *_toy_2d_specs(),
            _spec(dsprites, "dSprites 64x64 binary, rendered here (no files), 12000 of its images", True),
            DatasetSpec(
                dsprites.ORIGINAL_NAME, "dSprites, DeepMind's .npz, the same 12000 images",
                dsprites.EVENT_SHAPE, dsprites.ORIGINAL_FILES, dsprites.read_original, True,
                dsprites.ORIGINAL_FIX,
            ),
            *_uci_specs(),
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


#: The source recorded for data sets passed as torch datasets from Python.
_IN_MEMORY = "torch datasets (in memory)"


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
        return with_array_source(torch_datasets.from_torch_datasets(obj), _IN_MEMORY)
    if (
        isinstance(obj, (tuple, list))
        and len(obj) in (2, 3)
        and all(torch_datasets.is_torch_dataset(d) for d in obj)
    ):
        train, test, valid = torch_datasets.datasets_from_sequence(obj)
        return with_array_source(torch_datasets.from_torch_datasets(train, test, valid), _IN_MEMORY)
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
    if not spec.files and data_dir not in (None, "") and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"the data directory {data_dir} (named by --data-dir, [data] data_dir or data_dir=) does not "
                        f"exist, and {spec.name!r} is built in and reads no files: drop the data directory, or name "
                        "the one that holds the data set you meant")
    paths = locate_files(spec.name, spec.files, data_dir, spec.missing_fix, _offered_instead(spec))
    data = spec.read(paths)
    return with_file_sources(data, paths) if paths else data


def _offered_instead(spec: DatasetSpec) -> Callable[[Path], Optional[str]]:
    """For a named data directory lacking ``spec``'s files: a sentence on the other data
    it holds (named sets, IDX folders) and the setting that trains on them, or None.

    A directory holding Fashion-MNIST under ``FashionMNIST/raw/`` when MNIST was asked for
    is a wrong name more often than a missing download; the message says so.
    """

    def offered(directory: Path) -> Optional[str]:
        named = {s.name: s for s in DATASETS.values() if s.files and s is not spec and find_all(directory, s.files)}
        known = {(directory / s.files[0].relpath).parent for s in named.values()}
        folders = [f for f in idx.idx_folders(directory) if f not in known]
        offers = [f'the files of {n!r} ({Path(s.files[0].relpath).parent}/): name = "{n}"' for n, s in named.items()]
        offers += [f'IDX files in {f}: name = "idx" with path = "{f}"' for f in folders]
        if not offers:
            return None
        return f"{directory} holds other data: " + "; ".join(offers) + ". Set [data] name (and path) to train on them."

    return offered


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
    """Load a data set as train/valid/test splits of float32 ``(n, *event_shape)`` in [0, 1]
    (but for the continuous sets of density models: the 2-D toy sets and the MAF paper's
    standardised UCI sets, :mod:`pyro_vae.data.uci`).

    The splits' :attr:`~DataSplits.sources` record what was read: every file with its
    sha256 and size (or a checksum of the arrays, for the embedded digits and torch
    datasets).

    Args:
        name: a named set of :data:`DATASETS` (``"digits"``, ``"binarized_mnist"``,
            ``"mnist"``, ``"frey_face"``, ``"fashion_mnist"``, ``"kmnist"``; case and
            ``-``/``_`` insensitive); a source of :data:`SOURCES`: ``"idx"`` (``path`` =
            a folder of the four MNIST-layout IDX files), ``"array"`` (``path`` = a
            ``.npy``/``.npz`` file), ``"torchvision"`` (``dataset`` = a class name of
            ``torchvision.datasets``, ``path`` = its root); or, from Python, a
            ``torch.utils.data.Dataset`` (split about 80/10/10) or a tuple ``(train,
            test)`` / ``(train, valid, test)`` of them (see :func:`from_torch_datasets`).
        data_dir: for the named sets, the directory that holds their files, and the
            only place looked when given (else ``$PYRO_VAE_DATA_DIR``'s directories,
            the only ones looked when set; with neither, ``<repo>/../shared/data`` then
            ``~/.pyro_vae/data``: :func:`resolve_data_dir`).
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
        DataError: unknown name or binarize mode, bad sizes, missing or corrupt files
            (a named ``data_dir`` lacking them included: the message says where a copy
            was found instead, if one was), data that are not in [0, 1] or ill-shaped;
            the message says how to fix it.
    """
    # Checked before reading any file, so a bad config fails at once.
    mode, seed = check_binarize_mode(binarize), check_seed(seed)
    check_sizes(train_size=train_size, valid_size=valid_size, test_size=test_size)
    data = read_source(name, data_dir, path, dataset)
    data = binarize_splits(data, mode, seed)
    return take_subsets(data, train_size, valid_size, test_size)
