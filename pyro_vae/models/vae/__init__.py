"""The VAE family: ``[model] name = "vae"``."""

from __future__ import annotations

from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.inference.regularisers import make_regulariser
from pyro_vae.models.vae.config import VAEConfig
from pyro_vae.models.vae.model import LIKELIHOODS, VAE, Decoder, StandardNormal
from pyro_vae.models.vae.objective import MeanFieldELBO


def encoder_for(config, event_shape) -> GaussianEncoder:
    """The amortized encoder of ``config``: ``[guide]`` widths and activation, else the
    decoder's."""
    m, g = config.model, config.guide
    if g.name != "diagonal_normal":
        raise ValueError(f"[guide] name = {g.name!r} is unknown: choose 'diagonal_normal'")
    return GaussianEncoder(event_shape, m.z_dim, m.hidden if g.hidden is None else g.hidden,
                           g.activation or m.activation, m.network)


def build(config, data) -> VAE:
    """The VAE ``config`` declares, for data of ``data.event_shape``."""
    m = config.model
    guide = DiagonalNormalGuide(encoder_for(config, data.event_shape))
    return VAE(data.event_shape, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide, network=m.network)


def objective(config, vae: VAE, num_particles: int = 1) -> MeanFieldELBO:
    """What ``[inference] elbo = "auto"`` trains the VAE with: estimator B, computed directly,
    with ``[inference] regulariser``'s latent term."""
    return MeanFieldELBO(vae, num_particles, make_regulariser(config.inference))


__all__ = ["LIKELIHOODS", "VAE", "Decoder", "MeanFieldELBO", "StandardNormal", "VAEConfig", "build", "encoder_for",
           "objective"]
