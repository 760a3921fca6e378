"""Models: generative stories p_θ(x, z) written as Pyro models.

``build_model(config, x_dim)`` maps ``[model] name = ...`` to a module with ``model``
and ``guide`` callables; adding a model is a new entry in :data:`MODELS`.
"""

from __future__ import annotations

from torch import nn

from pyro_vae.config import Config, ConfigError
from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.models.vae import VAE, Decoder


def _encoder(config: Config, x_dim: int) -> GaussianEncoder:
    m, g = config.model, config.guide
    if g.name != "diagonal_normal":
        raise ConfigError(f"[guide] name = {g.name!r} is unknown: choose 'diagonal_normal'")
    hidden = m.hidden if g.hidden is None else g.hidden
    return GaussianEncoder(x_dim, m.z_dim, hidden, g.activation or m.activation)


def _vae(config: Config, x_dim: int) -> VAE:
    m = config.model
    guide = DiagonalNormalGuide(_encoder(config, x_dim))
    return VAE(x_dim, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide)


MODELS = {"vae": _vae}


def build_model(config: Config, x_dim: int) -> nn.Module:
    name = config.model.name
    if name not in MODELS:
        raise ConfigError(f"[model] name = {name!r} is unknown: choose one of {sorted(MODELS)}")
    if config.model.z_dim < 1:
        raise ConfigError(f"[model] z_dim must be >= 1, got {config.model.z_dim}")
    try:
        return MODELS[name](config, x_dim)
    except ValueError as e:
        raise ConfigError(f"[model]/[guide]: {e}") from None


__all__ = ["MODELS", "VAE", "Decoder", "build_model"]
