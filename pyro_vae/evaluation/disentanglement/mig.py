"""The mutual information gap (Chen, Li, Grosse & Duvenaud 2018, "Isolating sources of
disentanglement in VAEs", Sec. 4.1), as disentanglement_lib computes it
(``evaluation/metrics/mig.py``, Locatello et al. 2019) with its default settings:
``num_train = 10000`` points, each code discretized by a 20-bin histogram of its values.

For each factor ``v_k``, the gap between the two codes that share the most information
with it, over its entropy, averaged over the factors:

    MIG = (1/K) Σ_k [I(z_(1); v_k) − I(z_(2); v_k)] / H(v_k)

with the plug-in estimates of the discrete mutual information and entropy (scikit-learn's
``mutual_info_score``, nats). With a single code, ``I(z_(2); v_k)`` is taken as 0.
Note: a factor of more classes than bins (dSprites' 32 positions, 40 orientations) loses
information in the 20 bins, so even the factors themselves score below 1 on it.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mutual_info_score

from pyro_vae.evaluation.disentanglement.codes import (
    CHUNK_SIZE,
    Encoder,
    Representation,
    Seed,
    check_counts,
    generator_of,
    progress_bar,
)


def mig_score(
    representation: Representation,
    data: object,
    *,
    num_train: int = 10000,
    num_bins: int = 20,
    seed: Seed = 0,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> dict[str, float]:
    """The MIG of ``representation`` on ground-truth ``data``.

    Args:
        representation: ``x (b, *event_shape) -> z (b, L)``, e.g. ``encoder_mean(model)``.
        data: ground-truth data (:class:`~pyro_vae.data.factors.FactorData`).
        num_train: points drawn (10000).
        num_bins: histogram bins per code (20).
        seed: an int or a numpy ``Generator``.
        chunk_size, progress: see :func:`~pyro_vae.evaluation.disentanglement.beta_vae_score`.

    Returns:
        ``{"mig"}``.
    """
    check_counts(num_train=num_train)
    check_counts(minimum=2, num_bins=num_bins)
    generator = generator_of(seed)
    with progress_bar(num_train, "MIG", progress) as bar:
        encoder = Encoder(representation, data, chunk_size, bar)
        codes, factors = encoder.sample(num_train, generator)
    empty = [encoder.data.factor_names[k] for k in np.flatnonzero(factor_entropy(factors) == 0)]
    if empty:
        raise ValueError(
            f"factors {empty} took a single value in the {num_train} points drawn, so their "
            "entropy is 0: raise num_train"
        )
    return {"mig": mig_of_codes(codes, factors, num_bins)}


def mig_of_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """The MIG of ``codes (n, L)`` and factor classes ``factors (n, K)`` (the module
    docstring's formula; every factor must take at least two values)."""
    info = mutual_information(histogram_discretize(codes, num_bins), factors)  # (L, K)
    top = -np.sort(-info, axis=0)  # descending per factor
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    return float(np.mean((top[0] - second) / factor_entropy(factors)))


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """The plug-in entropy of each column of ``factors (n, K)`` in nats, ``(K,)``."""
    return np.array([mutual_info_score(f, f) for f in factors.T])


def histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each column of ``codes (n, L)`` as its bin ``1..num_bins`` among ``num_bins``
    equal-width bins spanning its range (``np.histogram``'s edges), int64 ``(n, L)``."""
    out = np.empty(codes.shape, dtype=np.int64)
    for j, column in enumerate(codes.T):
        edges = np.histogram(column, num_bins)[1]
        out[:, j] = np.digitize(column, edges[:-1])
    return out


def mutual_information(binned: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``I(z_j; v_k)`` in nats for discrete codes ``binned (n, L)`` and ``factors (n, K)``,
    ``(L, K)``."""
    return np.array([[mutual_info_score(f, z) for f in factors.T] for z in binned.T])
