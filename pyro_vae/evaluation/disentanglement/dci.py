"""DCI: disentanglement, completeness and informativeness (Eastwood & Williams 2018,
"A framework for the quantitative evaluation of disentangled representations"), as
disentanglement_lib computes it (``evaluation/metrics/dci.py``, Locatello et al. 2019)
with its default settings: ``num_train = 10000``, ``num_test = 5000``, and one
scikit-learn ``GradientBoostingClassifier`` (default settings) per factor.

The classifier of factor ``k`` predicts its class from all codes; its feature
importances are column ``k`` of the importance matrix ``R (L, K)``. With
``P_ik = R_ik / Σ_k' R_ik'`` (code ``i``'s importance spread over the factors) and
``Q_ik = R_ik / Σ_i' R_i'k`` (factor ``k``'s spread over the codes)::

    D = Σ_i ρ_i (1 − H_K(P_i·)),   ρ_i = Σ_k R_ik / Σ R      (disentanglement)
    C = Σ_k ω_k (1 − H_L(Q_·k)),   ω_k = Σ_i R_ik / Σ R      (completeness)

``H_b`` the entropy in base ``b`` (so each term lies in [0, 1]); informativeness is the
classifiers' mean accuracy on the train and the test points. As disentanglement_lib
does, 1e-11 is added to ``R`` inside the entropies.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from pyro_vae.evaluation.disentanglement.codes import (
    CHUNK_SIZE,
    Encoder,
    Representation,
    Seed,
    check_counts,
    generator_of,
    progress_bar,
    sklearn_seed,
)

#: ``random_state -> classifier`` with ``fit``, ``predict``, ``feature_importances_``.
Classifier = Callable[[int], object]


def gradient_boosting(random_state: int) -> GradientBoostingClassifier:
    """disentanglement_lib's classifier: scikit-learn's defaults (100 trees of depth 3)."""
    return GradientBoostingClassifier(random_state=random_state)


def dci_score(
    representation: Representation,
    data: object,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    classifier: Optional[Classifier] = None,
    seed: Seed = 0,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> dict[str, float]:
    """DCI of ``representation`` on ground-truth ``data``.

    Args:
        representation: ``x (b, *event_shape) -> z (b, L)``, e.g. ``encoder_mean(model)``.
        data: ground-truth data (:class:`~pyro_vae.data.factors.FactorData`).
        num_train, num_test: points to fit the classifiers and to test them (10000, 5000).
        classifier: ``random_state -> model``; default :func:`gradient_boosting`. A
            smaller one (fewer trees) trades fidelity to the published numbers for time:
            the default fits ``100 · Σ_k size_k`` trees (11,300 on dSprites).
        seed: an int or a numpy ``Generator``.
        chunk_size, progress: see :func:`~pyro_vae.evaluation.disentanglement.beta_vae_score`.

    Returns:
        ``{"disentanglement", "completeness", "informativeness_train",
        "informativeness_test"}``.
    """
    check_counts(num_train=num_train, num_test=num_test)
    generator = generator_of(seed)
    with progress_bar(num_train + num_test, "DCI", progress) as bar:
        encoder = Encoder(representation, data, chunk_size, bar)
        codes, factors = encoder.sample(num_train, generator)
        codes_test, factors_test = encoder.sample(num_test, generator)
    return dci_of_codes(codes, factors, codes_test, factors_test, classifier, generator)


def dci_of_codes(
    codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
    classifier: Optional[Classifier], generator: np.random.Generator,
) -> dict[str, float]:
    """:func:`dci_score`'s dictionary from train ``codes (n, L)``, ``factors (n, K)`` and
    test ``codes_test``, ``factors_test``: one classifier per factor, each seeded from
    ``generator``."""
    make = classifier or gradient_boosting
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = [], []
    for k in range(factors.shape[1]):
        model = make(sklearn_seed(generator))
        model.fit(codes, factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes) == factors[:, k]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
    d, c = dci_from_importance(importance)
    return {
        "disentanglement": d,
        "completeness": c,
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
    }


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """``(D, C)`` of an importance matrix ``R (L, K)`` (the module docstring's formulas;
    uniform weights when ``R`` is all zeros)."""
    r = np.asarray(importance, dtype=np.float64)
    weights = r if r.sum() > 0 else np.ones_like(r)
    per_code = 1.0 - _entropy(r + 1e-11, axis=1)  # (L,), base K
    per_factor = 1.0 - _entropy(r + 1e-11, axis=0)  # (K,), base L
    d = np.sum(per_code * weights.sum(axis=1) / weights.sum())
    c = np.sum(per_factor * weights.sum(axis=0) / weights.sum())
    return float(d), float(c)


def _entropy(m: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of ``m`` normalized along ``axis``, in base ``m.shape[axis]`` (0 when that
    is 1: a single outcome carries no uncertainty)."""
    n = m.shape[axis]
    if n == 1:
        return np.zeros(m.shape[1 - axis])
    p = m / m.sum(axis=axis, keepdims=True)
    return -(p * np.log(p)).sum(axis=axis) / np.log(n)
