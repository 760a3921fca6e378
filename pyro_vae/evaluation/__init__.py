"""Evaluation: estimates of how well a fitted model explains held-out data.

What a model can honestly be scored by follows from its declared capabilities
(:mod:`pyro_vae.capabilities`): the importance-sampled bound on ``log p(x)`` and the ELBO
for a latent-variable model with a guide (:func:`log_likelihood`, :func:`evaluate_elbo`),
the appendix-D HMC estimator for low-dimensional latents (:func:`hmc_log_likelihood`),
and Parzen-window scores for a model that can only sample (:func:`parzen_evaluate`).
"""

from pyro_vae.evaluation.checkpointed import checkpointed_log_likelihood, evaluation_seconds, saved_scores
from pyro_vae.evaluation.elbo import evaluate_elbo
from pyro_vae.evaluation.hmc_marginal import hmc_log_likelihood
from pyro_vae.evaluation.layers import active_units, layer_kl, linear_probe, posterior_means
from pyro_vae.evaluation.marginal_likelihood import (
    LogLikelihood,
    elbo_per_point,
    importance_log_likelihood,
    log_likelihood,
    log_weights,
)
from pyro_vae.evaluation.parzen import (
    DEFAULT_SIGMAS,
    ParzenResult,
    parzen_evaluate,
    parzen_log_density,
    parzen_log_likelihood,
    select_bandwidth,
)

__all__ = [
    "DEFAULT_SIGMAS",
    "LogLikelihood",
    "active_units",
    "ParzenResult",
    "checkpointed_log_likelihood",
    "evaluation_seconds",
    "elbo_per_point",
    "evaluate_elbo",
    "hmc_log_likelihood",
    "importance_log_likelihood",
    "layer_kl",
    "linear_probe",
    "log_likelihood",
    "log_weights",
    "parzen_evaluate",
    "parzen_log_density",
    "parzen_log_likelihood",
    "posterior_means",
    "saved_scores",
    "select_bandwidth",
]
