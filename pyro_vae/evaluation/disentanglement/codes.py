"""What the disentanglement metrics share: the representation they score, the codes of
sampled ground-truth points, seeding, checks of their settings, and the progress bar.

A *representation* maps a batch of observations to codes: ``x (b, *event_shape) ->
z (b, L)``, ``L >= 1``, e.g. a model's posterior means ``μ_φ(x)`` (:func:`encoder_mean`).
The metrics call it under ``torch.no_grad()`` on chunks of ``chunk_size`` observations
built on the CPU; a representation that lives elsewhere moves them (as
:func:`encoder_mean` does), and its codes come back to the CPU as float64 numpy.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_vae.data.factors import FactorData, check_factor_data

Representation = Callable[[torch.Tensor], Union[torch.Tensor, np.ndarray]]
Seed = Union[int, np.random.Generator]

#: Observations per call of the representation: big enough to keep a GPU busy, small
#: enough for a CPU (64x64 images: 16 MB a chunk as float32).
CHUNK_SIZE = 1024


def encoder_mean(module: torch.nn.Module) -> Representation:
    """The representation ``x -> μ_φ(x)`` of a model with an encoder (``module.encode``:
    the VAE's, the GAE's), ``x`` moved to the module's device first.

    Raises:
        TypeError: the module has no ``encode`` method.
    """
    if not callable(getattr(module, "encode", None)):
        raise TypeError(
            f"{type(module).__name__} has no encoder (no encode(x) method giving posterior "
            "means): disentanglement metrics score a model's codes, so they need one"
        )
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")

    def representation(x: torch.Tensor) -> torch.Tensor:
        return module.encode(x.to(device))

    return representation


def generator_of(seed: Seed) -> np.random.Generator:
    """A numpy ``Generator``: ``seed`` itself, or PCG64 seeded with the int ``seed``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def sklearn_seed(generator: np.random.Generator) -> int:
    """A ``random_state`` for a scikit-learn model, drawn from ``generator``."""
    return int(generator.integers(2**31 - 1))


def check_counts(minimum: int = 1, **counts: int) -> None:
    """Raise unless every count is an int of at least ``minimum``, naming it."""
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")


@contextlib.contextmanager
def progress_bar(total: int, desc: str, progress: bool) -> Iterator[tqdm]:
    """A tqdm bar counting the observations encoded (silent unless ``progress``)."""
    bar = tqdm(total=total, desc=desc, unit="obs", disable=not progress, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class Encoder:
    """Codes of observations, in chunks, checked and counted.

    Args:
        representation: ``x (b, *event_shape) -> z (b, L)``.
        data: the ground-truth data (checked to have factors).
        chunk_size: observations per call of ``representation``.
        bar: the progress bar to advance by the observations encoded.
    """

    def __init__(
        self, representation: Representation, data: object, chunk_size: int = CHUNK_SIZE,
        bar: Optional[tqdm] = None,
    ):
        if not callable(representation):
            raise TypeError(
                f"representation must be a callable x -> codes (b, L), e.g. "
                f"encoder_mean(model), got {type(representation).__name__}"
            )
        check_counts(chunk_size=chunk_size)
        self.data: FactorData = check_factor_data(data)
        self.representation = representation
        self.chunk_size = int(chunk_size)
        self.bar = bar

    @property
    def num_factors(self) -> int:
        return len(self.data.factor_sizes)

    def encode(self, x: torch.Tensor) -> np.ndarray:
        """Codes of ``x (b, *event_shape)``, float64 ``(b, L)``."""
        with torch.no_grad():
            z = self.representation(x)
        z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        check_codes(z, len(x))
        if self.bar is not None:
            self.bar.update(len(x))
        return z.astype(np.float64, copy=False)

    def of_factors(self, factors: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        """Codes of observations of ``factors (n, K)``, float64 ``(n, L)``, drawn and
        encoded ``chunk_size`` rows at a time. (Data without observation noise give the
        same codes for every chunk size.)"""
        parts = [
            self.encode(self.data.observations(factors[i : i + self.chunk_size], generator))
            for i in range(0, len(factors), self.chunk_size)
        ]
        return np.concatenate(parts)

    def sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(codes (n, L), factors (n, K))`` of ``n`` points drawn from the data."""
        factors = self.data.sample_factors(n, generator)
        return self.of_factors(factors, generator), factors


def check_codes(z: np.ndarray, batch: int) -> None:
    """Raise unless ``z`` is a finite ``(batch, L)`` array of numbers with ``L >= 1``."""
    if z.ndim != 2 or z.shape[0] != batch:
        raise ValueError(
            f"the representation must map a batch of {batch} observations to codes of shape "
            f"({batch}, L), got shape {z.shape}: for a model, pass encoder_mean(model)"
        )
    if z.shape[1] == 0:
        raise ValueError(
            f"the representation gives codes of size 0 (shape {z.shape}): a latent of size 0 has "
            "no dimension to score; give the model at least one latent dimension (z_dim >= 1)"
        )
    if z.dtype.kind not in "biuf" or not np.isfinite(z).all():
        raise ValueError(
            f"the representation gave codes that are not finite numbers ({z.dtype}, "
            f"{int(np.size(z) - np.isfinite(z).sum()) if z.dtype.kind == 'f' else 'non-numeric'} "
            "bad values): check the model for NaN parameters"
        )
