"""What a model family can do, declared once: evaluation, plots, reports and the
inference algorithms' refusals read these flags instead of probing attributes.

A model class declares ``capabilities`` (a class attribute); its instances report the
same flags with their ``event_shape`` filled in. A module that declares nothing (a
user's own ``nn.Module`` with ``model`` and ``guide``) is taken to be a plain
latent-variable model with an amortized guide (:data:`LATENT_VARIABLE_MODEL`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Capabilities:
    """What a model family offers.

    Attributes:
        has_guide: an amortized guide q(z|x) comes with the model (ELBO, importance-
            sampled likelihoods, reconstructions and latent plots apply).
        exact_log_prob: the model scores log p(x) in closed form (a normalizing flow).
        enumerated_latents: the model marks discrete latents for enumeration
            (``TraceEnum_ELBO`` sums them out; algorithms that sample every latent need
            them summed out of the story first: ``collapsible``).
        collapsible: the enumerated latents can be summed out of the story, leaving every
            latent sampled with an exact log-density (``module.collapsed()`` on held-out
            data; in training the family's objective supplies the same story under its
            scalable estimator, ``objective.collapsed(x, index, num_data)``, see
            :mod:`pyro_vae.inference.base`). The GAE: ``y`` summed out, ``z`` from the mixture.
        can_sample: ``model(None, num_data=n)`` generates n points.
        reparameterized_story: the story run forwards is a differentiable function of
            parameter-free noise, as a GAN's generator must be: every latent drawn as one
            (a Normal given its parents; a discrete draw only from fixed probabilities,
            which carry no parameter to differentiate), and an image of ``x`` (the mean
            or a relaxed sample of ``p(x|z)``) computed from the latents in one pass.
            False for an autoregressive decoder, which draws each pixel given the drawn
            pixels before it.
        has_encoder: a recognition network ``q(z|x)`` whose code is a differentiable
            function of ``x`` and noise: the guide, or an encoder that is no ELBO guide
            (the PixelGAN autoencoder's, whose code is matched adversarially).
        aggregate_prior: the prior is the aggregate posterior ``E_x q(z|x)`` itself (the
            exemplar mixture of the encoder's codes), not a distribution of its own.
        latent_sites: the names of the per-point latent sample sites, in order.
        latent_layers: for a model with several continuous latent layers (a hierarchy),
            their sites, top (furthest from x) first; empty for one layer. Per-layer
            figures (KL bars, traversals, active units) are drawn for these.
        event_shape: the shape of one data point (None: not known until built).
    """

    has_guide: bool = True
    exact_log_prob: bool = False
    enumerated_latents: bool = False
    collapsible: bool = False
    can_sample: bool = True
    reparameterized_story: bool = True
    has_encoder: bool = True
    aggregate_prior: bool = False
    latent_sites: tuple[str, ...] = ("z",)
    latent_layers: tuple[str, ...] = ()
    event_shape: Optional[tuple[int, ...]] = None

    @property
    def sampled_story(self) -> bool:
        """Every latent sampled, as the importance-weighted, wake-sleep and MCMC algorithms
        need: no enumerated latents, or enumerated ones the family sums out."""
        return not self.enumerated_latents or self.collapsible

    def with_event_shape(self, event_shape) -> "Capabilities":
        return dataclasses.replace(self, event_shape=tuple(int(s) for s in event_shape))


#: What a module that declares nothing is taken to be.
LATENT_VARIABLE_MODEL = Capabilities()


def capabilities_of(module) -> Capabilities:
    """The capabilities ``module`` declares, or :data:`LATENT_VARIABLE_MODEL`."""
    declared = getattr(type(module), "capabilities", None)
    if declared is None:
        return LATENT_VARIABLE_MODEL
    return module.capabilities
