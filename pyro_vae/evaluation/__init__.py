"""Evaluation: estimates of how well a fitted model explains held-out data."""

from pyro_vae.evaluation.marginal_likelihood import (
    LogLikelihood,
    elbo_per_point,
    importance_log_likelihood,
    log_likelihood,
)
from pyro_vae.evaluation.checkpointed import checkpointed_log_likelihood
from pyro_vae.evaluation.hmc_marginal import hmc_log_likelihood
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
    "ParzenResult",
    "checkpointed_log_likelihood",
    "elbo_per_point",
    "hmc_log_likelihood",
    "importance_log_likelihood",
    "log_likelihood",
    "parzen_evaluate",
    "parzen_log_density",
    "parzen_log_likelihood",
    "select_bandwidth",
]
