"""Binarization of grey-level data by Bernoulli sampling (never by thresholding).

A pixel of grey level ``p`` in [0, 1] becomes 1 with probability ``p``: each binarized
image is a *sample*, as in the dynamically / statically binarized MNIST of the VAE
literature, not ``p > 0.5``. Data that are already binary are left unchanged by it.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

import torch

from pyro_vae.data import rng
from pyro_vae.data.errors import DataError
from pyro_vae.data.splits import SPLITS, DataSplits

BINARIZE_MODES: tuple[Optional[str], ...] = (None, "static", "dynamic")


def check_binarize_mode(mode: Optional[str]) -> Optional[str]:
    """``mode`` if allowed (``"none"`` is read as None, for configs and the CLI)."""
    if mode is None or (isinstance(mode, str) and mode.lower() == "none"):
        return None
    if mode in BINARIZE_MODES:
        return mode
    raise DataError(
        f"unknown binarize mode {mode!r}: choose one of None (keep the values), "
        '"static" (sample every split once) or "dynamic" (resample the training data '
        "every batch)"
    )


def check_seed(seed: int) -> int:
    """``seed`` as an int, if it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def bernoulli_sample(x: torch.Tensor, seed: int, split: str) -> torch.Tensor:
    """One Bernoulli sample of ``x (n, *event_shape)`` (values in [0, 1]), drawn for ``(seed, split)``.

    Each split has its own stream, so e.g. the binarized test set is the same in the
    ``"static"`` and ``"dynamic"`` modes for a given seed. The draws do not depend on
    the event shape (see :func:`rng.uniforms`): ``(n, 1, 28, 28)`` data get the sample
    of the same data flattened to ``(n, 784)``, reshaped.
    """
    return rng.bernoulli(x, rng.derived_generator(seed, rng.STATIC_BINARIZE, SPLITS.index(split)))


def binarize_splits(data: DataSplits, mode: Optional[str], seed: int = 0) -> DataSplits:
    """``data`` binarized as ``mode`` says (see :data:`BINARIZE_MODES`), recorded in ``binarize``.

    ``"static"`` samples every split once; ``"dynamic"`` samples valid and test once and
    keeps train grey, for the train loader to resample per batch.
    """
    mode = check_binarize_mode(mode)
    seed = check_seed(seed)
    if mode is None:
        return data
    sampled = {
        split: bernoulli_sample(data.split(split), seed, split)
        for split in SPLITS
        if not (mode == "dynamic" and split == "train")
    }
    return dataclasses.replace(data, binarize=mode, **sampled)
