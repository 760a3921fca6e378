"""Data sets as train/valid/test splits of flattened images, and their minibatch loaders.

    >>> from pyro_vae.data import load_dataset, check_likelihood
    >>> data = load_dataset("digits", binarize="dynamic")
    >>> check_likelihood(data, "bernoulli")
    >>> for x, index in data.loader("train", 100, shuffle=True, epoch=0, dynamic_binarize=True):
    ...     pass  # x: (b, 64) float32 in {0, 1}; index: (b,) positions in the train split

Files are looked up in :func:`resolve_data_dir`'s directories; :func:`fetch` downloads
them. Every failure is a :class:`DataError` whose message names the file and the fix.
"""

from pyro_vae.data.binarize import BINARIZE_MODES
from pyro_vae.data.checks import check_likelihood
from pyro_vae.data.errors import DataError
from pyro_vae.data.fetch import fetch
from pyro_vae.data.paths import DataFile, resolve_data_dir
from pyro_vae.data.registry import DATASETS, DatasetSpec, load_dataset
from pyro_vae.data.splits import SPLITS, BatchLoader, DataSplits

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "SPLITS",
    "BatchLoader",
    "DataError",
    "DataFile",
    "DataSplits",
    "DatasetSpec",
    "check_likelihood",
    "fetch",
    "load_dataset",
    "resolve_data_dir",
]
