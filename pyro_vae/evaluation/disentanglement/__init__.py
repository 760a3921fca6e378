"""Disentanglement metrics of any representation (e.g. a model's encoder means) on any
ground-truth data with known factors (:mod:`pyro_vae.data.factors`), following
disentanglement_lib's definitions and default settings (Locatello et al. 2019,
"Challenging common assumptions in the unsupervised learning of disentangled
representations"):

==================  ============================================== ======================
metric              what                                           keys
==================  ============================================== ======================
``beta_vae``        Higgins et al. 2017: linear classifier of the   train/eval_accuracy
                    fixed factor from mean ``|Δz|`` of pairs
``factor_vae``      Kim & Mnih 2018: majority vote of the code of   train/eval_accuracy,
                    least normalized variance                       num_active_dims
``mig``             Chen et al. 2018: gap of the top two mutual     mig
                    informations over the factor's entropy
``dci``             Eastwood & Williams 2018: gradient-boosted      disentanglement,
                    trees' importances                              completeness,
                                                                    informativeness_*
``sap``             Kumar et al. 2018: gap of the top two one-code  sap_score
                    classifiers' accuracies
==================  ============================================== ======================

    >>> from pyro_vae.data.dsprites import DSprites
    >>> scores = disentanglement_metrics(encoder_mean(vae), DSprites(), seed=0, progress=True)
    >>> scores["mig"]["mig"]

Every metric is seeded (an int or a numpy ``Generator``), encodes in chunks, and shows a
tqdm progress bar when ``progress=True``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from pyro_vae.evaluation.disentanglement.beta_vae import beta_vae_score
from pyro_vae.evaluation.disentanglement.codes import (
    Encoder,
    Representation,
    Seed,
    encoder_mean,
)
from pyro_vae.evaluation.disentanglement.dci import dci_from_importance, dci_score, gradient_boosting
from pyro_vae.evaluation.disentanglement.factor_vae import factor_vae_score
from pyro_vae.evaluation.disentanglement.mig import mig_score
from pyro_vae.evaluation.disentanglement.sap import sap_score

METRICS = {
    "beta_vae": beta_vae_score,
    "factor_vae": factor_vae_score,
    "mig": mig_score,
    "dci": dci_score,
    "sap": sap_score,
}


def disentanglement_metrics(
    representation: Representation,
    data: object,
    metrics: Sequence[str] = tuple(METRICS),
    seed: int = 0,
    settings: Mapping[str, Mapping[str, object]] | None = None,
    **common: object,
) -> dict[str, dict[str, float]]:
    """The scores of ``metrics`` (names of :data:`METRICS`), ``{metric: {key: value}}``.

    Each metric draws from its own generator seeded with ``seed``, so a metric's score
    does not depend on which others ran. ``settings`` maps a metric to keyword arguments
    of its own (e.g. ``{"dci": {"num_train": 2000}}``); ``common`` go to every metric
    (``chunk_size``, ``progress``).
    """
    unknown = [m for m in metrics if m not in METRICS] + [
        m for m in (settings or {}) if m not in METRICS
    ]
    if unknown:
        raise ValueError(f"unknown disentanglement metrics {unknown}: choose from {list(METRICS)}")
    settings = settings or {}
    return {
        m: METRICS[m](representation, data, seed=seed, **common, **settings.get(m, {}))
        for m in metrics
    }


__all__ = [
    "METRICS",
    "Encoder",
    "Representation",
    "Seed",
    "beta_vae_score",
    "dci_from_importance",
    "dci_score",
    "disentanglement_metrics",
    "encoder_mean",
    "factor_vae_score",
    "gradient_boosting",
    "mig_score",
    "sap_score",
]
