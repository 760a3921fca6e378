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
from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.models.vae import VAE, Decoder


def _encoder(config: Config, x_dim: int) -> GaussianEncoder:
    m, g = config.model, config.guide
    if g.name != "diagonal_normal":
        raise ConfigError(f"[guide] name = {g.name!r} is unknown: choose 'diagonal_normal'")
    hidden = m.hidden if g.hidden is None else g.hidden
    return GaussianEncoder(x_dim, m.z_dim, hidden, g.activation or m.activation)


def _vae(config: Config, data: DataSplits) -> VAE:
    m = config.model
    guide = DiagonalNormalGuide(_encoder(config, data.x_dim))
    return VAE(data.x_dim, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide)


MODELS = {"vae": _vae}


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


__all__ = ["MODELS", "VAE", "Decoder", "build_model"]
