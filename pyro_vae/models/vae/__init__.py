"""The VAE family: ``[model] name = "vae"``."""

from __future__ import annotations

from typing import Union

from torch import nn

from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder, IAFGuide
from pyro_vae.inference.regularisers import make_regulariser
from pyro_vae.models.vae.config import VAEConfig
from pyro_vae.models.vae.flow_prior import MAFPrior
from pyro_vae.models.vae.model import LIKELIHOODS, VAE, Decoder, StandardNormal
from pyro_vae.models.vae.objective import MeanFieldELBO, MonteCarloELBO, has_closed_form_kl

#: ``[guide] name``: the amortized posteriors a model with a guide takes.
GUIDES = ("diagonal_normal", "iaf")
#: ``[model] prior``: the VAE's priors on z.
PRIORS = ("normal", "maf")


def encoder_for(config, event_shape) -> GaussianEncoder:
    """The amortized encoder of ``config``: ``[guide]`` widths and activation, else the
    decoder's."""
    m, g = config.model, config.guide
    if g.name not in GUIDES:
        raise ValueError(f"[guide] name = {g.name!r} is unknown: choose one of {list(GUIDES)}")
    return GaussianEncoder(event_shape, m.z_dim, m.hidden if g.hidden is None else g.hidden,
                           g.activation or m.activation, m.network)


def guide_for(config, event_shape) -> nn.Module:
    """The guide ``[guide]`` declares: the diagonal Gaussian, or the IAF posterior on top of it."""
    g = config.guide
    encoder = encoder_for(config, event_shape)
    if g.name == "diagonal_normal":
        return DiagonalNormalGuide(encoder)
    return IAFGuide(encoder, g.flow_steps, g.flow_hidden, g.context_dim, g.activation or config.model.activation)


def prior_for(config) -> Union[StandardNormal, MAFPrior]:
    """The prior ``[model] prior`` declares."""
    m = config.model
    if m.prior not in PRIORS:
        raise ValueError(f"[model] prior = {m.prior!r} is unknown: choose one of {list(PRIORS)}")
    if m.prior == "normal":
        return StandardNormal(m.z_dim)
    return MAFPrior(m.z_dim, m.prior_flows, m.prior_hidden, "relu" if m.activation == "glu" else m.activation)


def build(config, data) -> VAE:
    """The VAE ``config`` declares, for data of ``data.event_shape``."""
    m = config.model
    guide = guide_for(config, data.event_shape)
    return VAE(data.event_shape, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide, prior=prior_for(config),
               network=m.network)


def objective(config, vae: VAE, num_particles: int = 1) -> Union[MeanFieldELBO, MonteCarloELBO]:
    """What ``[inference] elbo = "auto"`` trains the VAE with, computed directly: estimator B
    (the closed-form KL) for the diagonal guide and N(0, I), with ``[inference]
    regulariser``'s latent term; estimator A (a Monte Carlo KL) when the guide or the prior
    is a flow, which have no closed-form KL."""
    regulariser = make_regulariser(config.inference)
    if has_closed_form_kl(vae):
        return MeanFieldELBO(vae, num_particles, regulariser)
    if regulariser is not None:
        raise ValueError(f"[inference] regulariser = {config.inference.regulariser!r} acts on the diagonal guide's "
                         "moments and the closed-form KL, which a flow guide or a flow prior does not have: use "
                         "[guide] name = \"diagonal_normal\" and [model] prior = \"normal\" with it")
    return MonteCarloELBO(vae, num_particles)


__all__ = ["GUIDES", "LIKELIHOODS", "PRIORS", "VAE", "Decoder", "MAFPrior", "MeanFieldELBO", "MonteCarloELBO",
           "StandardNormal", "VAEConfig", "build", "encoder_for", "guide_for", "objective", "prior_for"]
