"""Evaluation: estimates of how well a fitted model explains held-out data."""

from pyro_vae.evaluation.marginal_likelihood import (
    LogLikelihood,
    elbo_per_point,
    importance_log_likelihood,
    log_likelihood,
)

__all__ = [
    "LogLikelihood",
    "elbo_per_point",
    "importance_log_likelihood",
    "log_likelihood",
]
