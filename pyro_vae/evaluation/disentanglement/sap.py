"""SAP, the separated attribute predictability score (Kumar, Sattigeri & Balakrishnan
2018, "Variational inference of disentangled latent concepts from unlabeled
observations", Sec. 3), as disentanglement_lib computes it
(``evaluation/metrics/sap_score.py``, Locatello et al. 2019) with its default settings:
``num_train = 10000``, ``num_test = 5000``, factors treated as discrete.

A score matrix ``S (L, K)``: ``S_jk`` is how well code ``j`` alone predicts factor
``k``, the test accuracy of a linear SVM on that one code (scikit-learn's
``LinearSVC(C=0.01, class_weight="balanced")``; for continuous factors, the squared
correlation ``Cov(z_j, v_k)² / (Var z_j Var v_k)`` on the train points). SAP is the
mean over factors of the gap between the two best codes:

    SAP = (1/K) Σ_k (S_(1)k − S_(2)k)

A one-code linear classifier separates few ordered classes well, so even the factors
themselves score well below 1 on factors of many classes; and it is not invariant to
rescaling a code (the SVM's penalty ``C`` acts on the weight).
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

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


def sap_score(
    representation: Representation,
    data: object,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    continuous_factors: bool = False,
    seed: Seed = 0,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> dict[str, float]:
    """SAP of ``representation`` on ground-truth ``data``.

    Args:
        representation: ``x (b, *event_shape) -> z (b, L)``, e.g. ``encoder_mean(model)``.
        data: ground-truth data (:class:`~pyro_vae.data.factors.FactorData`).
        num_train, num_test: points to fit each SVM and to test it (10000, 5000).
        continuous_factors: score by squared correlation instead of classification.
        seed: an int or a numpy ``Generator``.
        chunk_size, progress: see :func:`~pyro_vae.evaluation.disentanglement.beta_vae_score`.

    Returns:
        ``{"sap_score"}``.
    """
    check_counts(num_train=num_train, num_test=num_test)
    generator = generator_of(seed)
    with progress_bar(num_train + num_test, "SAP", progress) as bar:
        encoder = Encoder(representation, data, chunk_size, bar)
        codes, factors = encoder.sample(num_train, generator)
        codes_test, factors_test = encoder.sample(num_test, generator)
    scores = score_matrix(codes, factors, codes_test, factors_test, continuous_factors, generator)
    return {"sap_score": top_two_gap(scores)}


def score_matrix(
    codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
    continuous: bool, generator: np.random.Generator,
) -> np.ndarray:
    """``S (L, K)`` of the module docstring from train ``codes (n, L)``, ``factors (n, K)``
    and test ``codes_test``, ``factors_test``."""
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            z, v = codes[:, j], factors[:, k]
            if continuous:
                cov = np.cov(z, v, ddof=1)
                scores[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
                continue
            svm = LinearSVC(C=0.01, class_weight="balanced", random_state=sklearn_seed(generator))
            svm.fit(z[:, None], v)
            scores[j, k] = np.mean(svm.predict(codes_test[:, j, None]) == factors_test[:, k])
    return scores


def top_two_gap(scores: np.ndarray) -> float:
    """Mean over the columns of ``scores (L, K)`` of the best minus the second best
    entry (the second taken as 0 with one row)."""
    top = -np.sort(-scores, axis=0)
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    return float(np.mean(top[0] - second))
