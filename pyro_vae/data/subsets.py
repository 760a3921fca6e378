"""Fixed random subsets of the splits, by count (``train_size``, ``valid_size``, ``test_size``).

A subset is the same in every run: its rows depend only on the split's length, the
count and the split (never on the training seed), by :func:`subset_indices`, the rule
of the paper-figure experiments (so their subsets are reproduced exactly).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

import torch

from pyro_vae.data.errors import DataError
from pyro_vae.data.splits import SPLITS, DataSplits

#: The ``salt`` of :func:`subset_indices` for each split.
SUBSET_SALT = {"train": 0, "valid": 1, "test": 2}


def subset_indices(n: int, k: Optional[int], salt: int) -> torch.Tensor:
    """Sorted int64 indices ``(min(k, n),)`` of a fixed random subset of ``range(n)``.

    ``k`` None or ``k >= n``: all of ``range(n)``. Otherwise the first ``k`` of a
    ``torch.randperm(n)`` seeded with ``1000 + salt``, sorted; salt 0 for train, 1 for
    valid, 2 for test (:data:`SUBSET_SALT`). Does not touch the global RNG.
    """
    if k is None or k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(1000 + salt)
    return torch.randperm(n, generator=g)[:k].sort().values


def check_sizes(**sizes: Optional[int]) -> dict[str, Optional[int]]:
    """``{"train": train_size, ...}`` from keyword arguments ``train_size=...``, each None
    or a non-negative int (checked before any file is read)."""
    checked = {}
    for key, k in sizes.items():
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0):
            raise DataError(
                f"{key} must be a non-negative integer (0: an empty split) or None (the "
                f"whole split), got {k!r}"
            )
        checked[key.removesuffix("_size")] = None if k is None else int(k)
    return checked


def take_subsets(
    data: DataSplits,
    train_size: Optional[int] = None,
    valid_size: Optional[int] = None,
    test_size: Optional[int] = None,
) -> DataSplits:
    """``data`` with each split cut to a fixed random subset of that many rows (None: whole).

    Labels are cut in step. A count larger than its split is refused (no silent clamp);
    a count equal to it keeps the whole split.

    Raises:
        DataError: a count that is not a non-negative int, or larger than its split.
    """
    sizes = check_sizes(train_size=train_size, valid_size=valid_size, test_size=test_size)
    replaced = {}
    for split in SPLITS:
        k, x, y = sizes[split], data.split(split), data.labels(split)
        if k is None:
            continue
        if k > x.shape[0]:
            raise DataError(
                f"{split}_size = {k}, but the {split} split of {data.name!r} has only "
                f"{x.shape[0]} rows: choose at most {x.shape[0]}, or leave {split}_size unset "
                "for the whole split"
            )
        index = subset_indices(x.shape[0], k, SUBSET_SALT[split])
        replaced[split] = x[index.to(x.device)]
        if y is not None:
            replaced[f"{split}_labels"] = y[index.to(y.device)]
    return dataclasses.replace(data, **replaced) if replaced else data
