"""Data with known generative factors: what the disentanglement metrics sample from.

A *ground-truth data set* (disentanglement_lib's ``GroundTruthData``, Locatello et al.
2019) has ``K`` discrete factors of variation, factor ``k`` taking the classes
``0 .. factor_sizes[k] - 1``, and draws observations given factors:

    >>> data = DSprites()                                  # pyro_vae.data.dsprites
    >>> g = np.random.default_rng(0)
    >>> f = data.sample_factors(64, g)                     # int64 (64, K)
    >>> x = data.observations(f, g)                        # float32 (64, *event_shape)

Any object with the attributes of :class:`FactorData` qualifies (a protocol, checked by
:func:`check_factor_data`); :class:`FactorGrid` is a base class whose factors are drawn
uniformly and independently from the full grid, as in every data set of
disentanglement_lib.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from pyro_vae.data.errors import DataError

_EXAMPLE = "e.g. pyro_vae.data.dsprites.DSprites()"


@runtime_checkable
class FactorData(Protocol):
    """A data set that samples factors and observations given factors.

    Attributes:
        factor_names: ``K`` names, one per factor.
        factor_sizes: ``K`` numbers of classes, each at least 2.
        event_shape: the shape of one observation, e.g. ``(1, 64, 64)``.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    event_shape: tuple[int, ...]

    def sample_factors(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """``n`` draws of the factors' classes, int64 ``(n, K)``."""

    def observations(self, factors: np.ndarray, generator: np.random.Generator) -> torch.Tensor:
        """Observations of ``factors (n, K)``, float32 ``(n, *event_shape)`` on the CPU
        (disentanglement_lib's ``sample_observations_from_factors``)."""


def check_factor_data(data: object) -> FactorData:
    """``data`` if it is a ground-truth data set with factors of at least 2 classes.

    Raises:
        DataError: ``data`` lacks factors (e.g. a :class:`~pyro_vae.data.DataSplits` of
            images without known factors), or a factor has fewer than 2 classes.
    """
    if not isinstance(data, FactorData):
        name = getattr(data, "name", None) or type(data).__name__
        missing = [
            a for a in ("factor_names", "factor_sizes", "event_shape", "sample_factors", "observations")
            if not hasattr(data, a)
        ]
        raise DataError(
            f"data set {name!r} has no known generative factors (it lacks {', '.join(missing)}): "
            "disentanglement metrics need ground-truth data that samples factors and "
            f"observations given factors ({_EXAMPLE}; see pyro_vae.data.factors.FactorData)"
        )
    sizes = tuple(data.factor_sizes)
    if not sizes or len(sizes) != len(tuple(data.factor_names)):
        raise DataError(
            f"ground-truth data: factor_names {tuple(data.factor_names)} and factor_sizes {sizes} "
            "must be non-empty and of the same length"
        )
    flat = [n for n, s in zip(data.factor_names, sizes) if s < 2]
    if flat:
        raise DataError(
            f"ground-truth data: factors {flat} have fewer than 2 classes, so they carry no "
            "information to score (their entropy is 0): leave them out of factor_sizes"
        )
    return data


class FactorGrid:
    """Ground-truth data on the full grid of its factors, drawn uniformly.

    Subclasses set :attr:`factor_names`, :attr:`factor_sizes`, :attr:`event_shape` and
    implement :meth:`observations`. Each factor is drawn independently and uniformly,
    ``f_k ~ U{0, .., size_k - 1}``, so that every grid point is equally likely.
    """

    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    event_shape: tuple[int, ...] = ()

    @property
    def num_factors(self) -> int:
        """``K``, the number of factors."""
        return len(self.factor_sizes)

    @property
    def num_points(self) -> int:
        """The number of grid points, ``prod(factor_sizes)``."""
        return math.prod(self.factor_sizes)

    def sample_factors(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """``n`` uniform draws of the grid, int64 ``(n, K)`` (one generator call)."""
        return uniform_factors(self.factor_sizes, n, generator)

    def observations(self, factors: np.ndarray, generator: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """``(factors (n, K), observations (n, *event_shape))``."""
        factors = self.sample_factors(n, generator)
        return factors, self.observations(factors, generator)


def uniform_factors(sizes: Sequence[int], n: int, generator: np.random.Generator) -> np.ndarray:
    """``n`` independent uniform draws of classes ``0 .. sizes[k] - 1``, int64 ``(n, K)``."""
    high = np.asarray(sizes, dtype=np.int64)
    return generator.integers(0, high, size=(int(n), high.size), dtype=np.int64)


def check_classes(factors: np.ndarray, sizes: Sequence[int], names: Sequence[str]) -> np.ndarray:
    """``factors`` as int64 ``(n, K)`` after checking every class lies in ``0 .. size - 1``.

    Raises:
        DataError: wrong shape, non-integers, or a class out of range (naming the factor).
    """
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != len(sizes) or (f.size and f.dtype.kind not in "iu"):
        raise DataError(
            f"factors must be an integer array of shape (n, {len(sizes)}) (one column per factor: "
            f"{', '.join(names)}), got {f.dtype} {f.shape}"
        )
    f = f.astype(np.int64, copy=False)
    for k, (size, name) in enumerate(zip(sizes, names)):
        column = f[:, k]
        if column.size and (column.min() < 0 or column.max() >= size):
            raise DataError(
                f"factor {name!r} has classes 0..{size - 1}, got values in "
                f"[{column.min()}, {column.max()}]"
            )
    return f
