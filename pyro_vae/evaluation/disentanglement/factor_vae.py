"""The FactorVAE metric (Kim & Mnih 2018, "Disentangling by factorising", Sec. 4), as
disentanglement_lib computes it (``evaluation/metrics/factor_vae.py``, Locatello et al.
2019) with its default settings.

1. Each code's variance ``s_j²`` over ``num_variance_estimate`` random points; codes
   with ``s_j < prune_threshold`` (0.05, the study's ``prune_dims.threshold``: a bound
   on the standard deviation, i.e. variance < 0.0025) count as collapsed and are
   left out.
2. One vote: draw a factor ``k``, then ``batch_size`` points that share its value (the
   rest drawn independently); the vote goes to the code of least normalized variance,
   ``d = argmin_j Var_batch(z_j) / s_j²`` over the active codes: ``V[k, d] += 1``.
3. The classifier is the majority vote: code ``d`` predicts ``argmax_k V_train[k, d]``;
   the score is the fraction of ``num_eval`` fresh votes it gets right,
   ``Σ_d V_eval[argmax_k V_train[k, d], d] / Σ V_eval``.

Differences from disentanglement_lib: a vote here goes to the code's own column (theirs
indexes columns by position among the active codes, which relabels the columns and
leaves every accuracy unchanged), and ``num_active_dims`` counts the active codes
(theirs reports all codes).
"""

from __future__ import annotations

import numpy as np

from pyro_vae.evaluation.disentanglement.codes import (
    CHUNK_SIZE,
    Encoder,
    Representation,
    Seed,
    check_counts,
    generator_of,
    progress_bar,
)


def factor_vae_score(
    representation: Representation,
    data: object,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    seed: Seed = 0,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> dict[str, float]:
    """The FactorVAE metric of ``representation`` on ground-truth ``data``.

    Args:
        representation: ``x (b, *event_shape) -> z (b, L)``, e.g. ``encoder_mean(model)``.
        data: ground-truth data (:class:`~pyro_vae.data.factors.FactorData`).
        batch_size: points sharing one factor per vote (64; at least 2).
        num_train, num_eval: votes to fit and to score the majority vote (10000, 5000).
        num_variance_estimate: points for each code's global variance (10000).
        prune_threshold: codes whose global standard deviation is below it are left out.
        seed: an int or a numpy ``Generator``.
        chunk_size: observations per call of ``representation``.
        progress: show a progress bar of the observations encoded.

    Returns:
        ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``; accuracies 0 when
        every code is collapsed.
    """
    check_counts(num_train=num_train, num_eval=num_eval)
    check_counts(minimum=2, batch_size=batch_size, num_variance_estimate=num_variance_estimate)
    generator = generator_of(seed)
    total = num_variance_estimate + batch_size * (num_train + num_eval)
    with progress_bar(total, "FactorVAE metric", progress) as bar:
        encoder = Encoder(representation, data, chunk_size, bar)
        codes, _ = encoder.sample(num_variance_estimate, generator)
        scale = codes.var(axis=0, ddof=1)
        active = np.flatnonzero(np.sqrt(scale) >= prune_threshold)
        if active.size == 0:
            return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
        train = votes(encoder, num_train, batch_size, generator, scale, active)
        evaluation = votes(encoder, num_eval, batch_size, generator, scale, active)
    classifier = train.argmax(axis=0)  # (L,): each code's majority factor
    return {
        "train_accuracy": majority_accuracy(train, classifier),
        "eval_accuracy": majority_accuracy(evaluation, classifier),
        "num_active_dims": int(active.size),
    }


def votes(
    encoder: Encoder, num_votes: int, batch_size: int, generator: np.random.Generator,
    scale: np.ndarray, active: np.ndarray,
) -> np.ndarray:
    """The vote counts ``V (K, L)`` of ``num_votes`` batches (step 2 of the module
    docstring); ``scale (L,)`` the global variances, ``active`` the codes that may win."""
    counts = np.zeros((encoder.num_factors, scale.size), dtype=np.int64)
    per_chunk = max(1, encoder.chunk_size // batch_size)
    for start in range(0, num_votes, per_chunk):
        m = min(per_chunk, num_votes - start)
        ks, factors = np.empty(m, dtype=np.int64), []
        for i in range(m):
            ks[i] = generator.integers(encoder.num_factors)
            f = encoder.data.sample_factors(batch_size, generator)
            f[:, ks[i]] = f[0, ks[i]]
            factors.append(f)
        z = encoder.of_factors(np.concatenate(factors), generator).reshape(m, batch_size, -1)
        local = z.var(axis=1, ddof=1)  # (m, L)
        winners = active[np.argmin(local[:, active] / scale[active], axis=1)]
        np.add.at(counts, (ks, winners), 1)
    return counts


def majority_accuracy(counts: np.ndarray, classifier: np.ndarray) -> float:
    """``Σ_d V[classifier[d], d] / Σ V``: the votes the majority-vote classifier gets right."""
    total = counts.sum()
    return float(counts[classifier, np.arange(counts.shape[1])].sum() / total) if total else 0.0
