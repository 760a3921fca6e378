"""Data sets as train/valid/test splits of data points in their event shape, and their
minibatch loaders.

    >>> from pyro_vae.data import load_dataset, check_likelihood
    >>> data = load_dataset("digits", binarize="dynamic")
    >>> data.event_shape, data.x_dim
    ((1, 8, 8), 64)
    >>> check_likelihood(data, "bernoulli")
    >>> for x, index in data.loader("train", 100, shuffle=True, epoch=0, dynamic_binarize=True):
    ...     pass  # x: (b, 1, 8, 8) float32 in {0, 1}; index: (b,) positions in the train split

Named sets (:data:`DATASETS`) are looked up in :func:`resolve_data_dir`'s directories
(a directory the user names is the only place looked);
:func:`fetch` downloads those with checksums on record. Data a user brings
(:data:`SOURCES`): an IDX folder (``load_dataset("idx", path=...)``), a ``.npy``/``.npz``
file (``"array"``), a torchvision class (``"torchvision"``, ``dataset=...``), or torch
datasets (:func:`from_torch_datasets`). ``train_size``/``valid_size``/``test_size`` keep
fixed random subsets (:func:`subset_indices`). Every failure is a :class:`DataError`
whose message names the file and the fix. ``DataSplits.sources`` records what was read
(:class:`DataSource`: each file's path, sha256 and size).
"""

from pyro_vae.data.binarize import BINARIZE_MODES
from pyro_vae.data.checks import check_likelihood
from pyro_vae.data.errors import DataError
from pyro_vae.data.fetch import fetch
from pyro_vae.data.paths import DataFile, resolve_data_dir
from pyro_vae.data.provenance import DataSource
from pyro_vae.data.registry import DATASETS, SOURCES, DatasetSpec, get_spec, load_dataset
from pyro_vae.data.splits import SPLITS, BatchLoader, DataSplits
from pyro_vae.data.subsets import subset_indices
from pyro_vae.data.torch_datasets import from_torch_datasets

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "SOURCES",
    "SPLITS",
    "BatchLoader",
    "DataError",
    "DataFile",
    "DataSource",
    "DataSplits",
    "DatasetSpec",
    "check_likelihood",
    "fetch",
    "from_torch_datasets",
    "get_spec",
    "load_dataset",
    "resolve_data_dir",
    "subset_indices",
]
