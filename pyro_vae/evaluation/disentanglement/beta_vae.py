"""The β-VAE metric (Higgins et al. 2017, "β-VAE: learning basic visual concepts with a
constrained variational framework", Sec. 3), as disentanglement_lib computes it
(``evaluation/metrics/beta_vae.py``, Locatello et al. 2019) with its default settings.

One training point: draw a factor ``k`` uniformly, then ``batch_size`` pairs of factor
vectors that agree on factor ``k`` (the rest drawn independently); its feature is the
mean absolute difference of the pairs' codes and its label ``k``::

    z_diff = (1/B) Σ_b |z(x_b¹) − z(x_b²)|    (L,)

A linear classifier (scikit-learn's ``LogisticRegression``) learns ``k`` from ``z_diff``
on ``num_train`` points; the score is its accuracy on ``num_eval`` fresh points.
Chance is ``1/K``. A representation that dedicates one code to each factor shows ``k``
as the code with zero difference.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

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


def beta_vae_score(
    representation: Representation,
    data: object,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    seed: Seed = 0,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> dict[str, float]:
    """The β-VAE metric of ``representation`` on ground-truth ``data``.

    Args:
        representation: ``x (b, *event_shape) -> z (b, L)``, e.g. ``encoder_mean(model)``.
        data: ground-truth data (:class:`~pyro_vae.data.factors.FactorData`).
        batch_size: pairs averaged into one point (disentanglement_lib: 64).
        num_train, num_eval: points to fit and to score the classifier (10000, 5000).
        seed: an int or a numpy ``Generator``; the factors, observations and the
            classifier draw from it.
        chunk_size: observations per call of ``representation``.
        progress: show a progress bar of the ``2·batch_size·(num_train + num_eval)``
            observations encoded.

    Returns:
        ``{"train_accuracy", "eval_accuracy"}``.

    The classifier is disentanglement_lib's ``LogisticRegression(random_state=...)`` as it
    ran there: scikit-learn <= 0.21, whose default was liblinear, one-vs-rest, ``C = 1``.
    Today's default (lbfgs, multinomial, 100 iterations) stops short of convergence on
    these features and scores lower.
    """
    check_counts(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    generator = generator_of(seed)
    total = 2 * batch_size * (num_train + num_eval)
    with progress_bar(total, "β-VAE metric", progress) as bar:
        encoder = Encoder(representation, data, chunk_size, bar)
        x_train, y_train = pair_features(encoder, num_train, batch_size, generator)
        x_eval, y_eval = pair_features(encoder, num_eval, batch_size, generator)
    model = OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=sklearn_seed(generator)))
    model.fit(x_train, y_train)
    return {
        "train_accuracy": float(model.score(x_train, y_train)),
        "eval_accuracy": float(model.score(x_eval, y_eval)),
    }


def pair_features(
    encoder: Encoder, num_points: int, batch_size: int, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(z_diff (num_points, L), k (num_points,))``: the β-VAE metric's points.

    Each point's draws come in disentanglement_lib's order (``k``, the first batch, the
    second); the observations of several points are encoded together.
    """
    per_chunk = max(1, encoder.chunk_size // (2 * batch_size))
    features, labels = [], []
    for start in range(0, num_points, per_chunk):
        m = min(per_chunk, num_points - start)
        factors = []
        for _ in range(m):
            k = int(generator.integers(encoder.num_factors))
            first = encoder.data.sample_factors(batch_size, generator)
            second = encoder.data.sample_factors(batch_size, generator)
            second[:, k] = first[:, k]
            factors += [first, second]
            labels.append(k)
        z = encoder.of_factors(np.concatenate(factors), generator)
        z = z.reshape(m, 2, batch_size, -1)
        features.append(np.abs(z[:, 0] - z[:, 1]).mean(axis=1))
    return np.concatenate(features), np.asarray(labels, dtype=np.int64)
