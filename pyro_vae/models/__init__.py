"""Models: generative stories p_θ(x, z) written as Pyro models.

``build_model(config, data)`` maps ``[model] name = ...`` to a module; adding a model is
a new entry in :data:`MODELS`, a function ``(config, data) -> module``. A module has

* ``model(x=None, index=None, num_data=None)`` and ``guide(x, index=None, num_data=None)``,
  plain Pyro callables over a ``pyro.plate("data", ...)`` (:func:`pyro_vae.plates.data_plate`);
* ``z_dim``, ``decoder.mean(z)``, ``sample(n)``, ``encode(x)`` and ``reconstruct(x)`` for
  generation and plots;
* ``has_enumerated_latents = True`` when the model marks discrete latents for
  enumeration (``[inference] elbo = "auto"`` then picks ``TraceEnum_ELBO``);
* optionally ``log_likelihood(x, num_samples)``, when the generic importance sampler of
  :mod:`pyro_vae.evaluation` does not apply (see :func:`pyro_vae.evaluation.log_likelihood`).
"""

from __future__ import annotations

from torch import nn


from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataSplits
from pyro_vae.data.binarize import bernoulli_sample
from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.models.gae import GAE, fit_em
from pyro_vae.models.vae import VAE, Decoder

#: [model] entries only the GAE reads, and the GAE argument each one sets.
GAE_SETTINGS = {
    "lambda1": "lambda1", "lambda2": "lambda2", "exemplar_estimator": "estimator",
    "exemplar_neighbours": "neighbours", "exemplar_tail": "tail", "exemplar_fresh": "fresh",
    "exemplar_refresh": "refresh_every", "leave_one_out": "leave_one_out",
    "exemplar_bandwidth": "bandwidth",
}


def _encoder(config: Config, x_dim: int) -> GaussianEncoder:
    m, g = config.model, config.guide
    if g.name != "diagonal_normal":
        raise ConfigError(f"[guide] name = {g.name!r} is unknown: choose 'diagonal_normal'")
    hidden = m.hidden if g.hidden is None else g.hidden
    return GaussianEncoder(x_dim, m.z_dim, hidden, g.activation or m.activation)


def _vae(config: Config, data: DataSplits) -> VAE:
    m = config.model
    _refuse_gae_settings(config)
    guide = DiagonalNormalGuide(_encoder(config, data.x_dim))
    return VAE(data.x_dim, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide)


def _refuse_gae_settings(config: Config) -> None:
    used = [k for k in GAE_SETTINGS if getattr(config.model, k) is not None]
    if used:
        raise ConfigError(f"[model] {used} are GAE settings; [model] name = {config.model.name!r} does not use them")


def _gae(config: Config, data: DataSplits) -> GAE:
    """The GAE over ``data.train``. Under dynamic binarization its exemplars are the
    static binarization of the training split, so that the encoder sees binary inputs
    for its components as it does for the minibatches."""
    m = config.model
    if len(data.train) == 0:
        raise ConfigError(f"the GAE's prior is a mixture over the training set, and {data.name}'s is empty")
    exemplars = data.train
    if data.binarize == "dynamic":
        exemplars = bernoulli_sample(data.train, config.seed, "train")
    options = {arg: getattr(m, key) for key, arg in GAE_SETTINGS.items() if getattr(m, key) is not None}
    guide = DiagonalNormalGuide(_encoder(config, data.x_dim))
    return GAE(exemplars, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide, **options)


MODELS = {"vae": _vae, "gae": _gae}


def build_model(config: Config, data: DataSplits) -> nn.Module:
    name = config.model.name
    if name not in MODELS:
        raise ConfigError(f"[model] name = {name!r} is unknown: choose one of {sorted(MODELS)}")
    if config.model.z_dim < 1:
        raise ConfigError(f"[model] z_dim must be >= 1, got {config.model.z_dim}")
    try:
        return MODELS[name](config, data)
    except ValueError as e:
        raise ConfigError(f"[model]/[guide]: {e}") from None


__all__ = ["GAE", "MODELS", "VAE", "Decoder", "build_model", "fit_em"]
