"""The variational auto-encoder of Auto-Encoding Variational Bayes.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", ICLR. The generative story,
for each data point i:

    z_i ~ p(z)                                      (the prior: N(0, I) by default)
    x_i ~ Bernoulli(logits = f_θ(z_i))              (binary data, e.g. MNIST), or
    x_i ~ N(sigmoid(f_θ(z_i)), diag σ_θ(z_i)²)      (continuous data in [0, 1], e.g. Frey Face)

with f_θ a decoder network and x_i of the data's event shape (``(D,)``, or ``(C, H, W)``
for images). The prior is a component the model takes, as a Pyro GP takes a kernel:
:class:`StandardNormal` here, the GAE's exemplar mixture in
:mod:`pyro_vae.models.gae`. The guide (recognition model) is the amortized
``N(μ_φ(x), diag σ_φ(x)²)`` of :mod:`pyro_vae.guides.amortized`. Fitting
``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` is the paper's SGVB estimator A;
``TraceMeanField_ELBO`` (analytic KL) is estimator B.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from pyro_vae.capabilities import Capabilities
from pyro_vae.guides.amortized import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.nets import decoder_body
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module, story_batch_size

LIKELIHOODS = ("bernoulli", "gaussian")


class Decoder(nn.Module):
    """``z: (..., z_dim) -> p_θ(x|z)``, a distribution with the data's event shape.

    ``likelihood="bernoulli"`` gives ``Bernoulli(logits)``; ``"gaussian"`` gives a
    diagonal Normal whose mean is squashed into (0, 1) by a sigmoid (the bounded mean the
    paper uses for Frey Face) and whose scale is floored at ``min_scale``: with a learned
    variance the likelihood of a constant pixel grows without bound as σ → 0. The network
    (:func:`pyro_vae.nets.decoder_body`) is an MLP or, for images, transposed convolutions.
    """

    def __init__(
        self,
        z_dim: int,
        event_shape: Union[int, Sequence[int]],
        hidden: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        min_scale: float = 1e-3,
        network: str = "mlp",
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}: choose one of {list(LIKELIHOODS)}")
        self.event_shape = as_event_shape(event_shape)
        self.likelihood = likelihood
        self.min_scale = min_scale
        net = decoder_body(z_dim, self.event_shape, hidden, activation, network, gaussian=likelihood == "gaussian")
        self.body, self.head = net.body, net.head  # today's state-dict keys

    def forward(self, z: torch.Tensor) -> dist.Distribution:
        out = self.head(self.body(z))
        dims = len(self.event_shape)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(dims)
        loc, scale = out
        return dist.Normal(torch.sigmoid(loc), scale + self.min_scale).to_event(dims)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(..., *event_shape)``."""
        return self(z).mean

    def total_log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``Σ log p_θ(x|z)`` over every point (and draw) of ``z (..., B, z_dim)``, a scalar:
        ``self(z).log_prob(x).sum()``, for a Bernoulli in one fused kernel (no per-point
        intermediate)."""
        if self.likelihood == "bernoulli":
            logits = self.head(self.body(z))
            return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="sum")
        return self(z).log_prob(x).sum()


class StandardNormal(nn.Module):
    """The VAE's prior ``z ~ N(0, I)`` as a component of the model.

    A prior component emits the latent sample sites of one data point inside the
    model's ``"data"`` plate (``forward``), scores ``z`` with every discrete latent it
    introduces summed out (``log_prob``: what importance sampling needs), and says
    whether it enumerates discrete latents. Its tensors are buffers, so they follow the
    module to its device and dtype.
    """

    enumerated = False
    latent_sites = ("z",)

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        # buffers follow the module to its device
        self.register_buffer("loc", torch.zeros(z_dim), persistent=False)  # cpu-ok
        self.register_buffer("scale", torch.ones(z_dim), persistent=False)  # cpu-ok

    def register(self) -> None:
        """Register the prior's parameters with Pyro (it has none)."""

    def distribution(self, batch: int) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).expand([batch, self.z_dim]).to_event(1)

    def forward(self, batch: int, index: Optional[torch.Tensor] = None, num_data: Optional[int] = None,
                generative: bool = False) -> torch.Tensor:
        """Emit ``z`` for ``batch`` rows inside the model's ``"data"`` plate (``index``:
        their positions in the data set; ``generative``: no ``x`` is observed)."""
        return pyro.sample("z", self.distribution(batch))

    def log_prob(self, z: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log p(z)`` for ``z (..., z_dim)``: ``(...)``."""
        return dist.Normal(self.loc, self.scale).log_prob(z).sum(-1)

    def quantiles(self, u: torch.Tensor) -> torch.Tensor:
        """The quantiles of ``z_d`` at levels ``u (m,)`` in (0, 1), every dimension:
        ``(m, z_dim)``, ``Normal(0, 1).icdf(u)`` in each column (on the prior's device)."""
        return dist.Normal(self.loc, self.scale).icdf(u.to(self.loc).unsqueeze(-1))

    def kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``KL(N(loc, diag scale²) ‖ N(0, I))`` per point, ``(...)``, in closed form:
        ``½ Σ_d (loc² + scale² − 1 − log scale²)``."""
        var = scale.pow(2)
        return 0.5 * (loc.pow(2) + var - 1 - var.log()).sum(-1)

    def collapsed(self) -> contextlib.AbstractContextManager:
        """The story with discrete latents summed out: the same, there are none."""
        return contextlib.nullcontext()


class VAE(nn.Module):
    """AEVB's VAE as a Pyro model and an amortized guide.

    Args:
        event_shape: the shape of one data point: ``x_dim`` (an int, for flat vectors)
            or a tuple such as ``(1, 28, 28)``.
        z_dim: number of latent dimensions N_z.
        hidden: widths of the decoder's hidden layers (and the encoder's, unless ``guide``
            is given).
        activation: hidden-layer non-linearity (see :data:`pyro_vae.nets.ACTIVATIONS`).
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        guide: the guide module; defaults to a :class:`DiagonalNormalGuide` whose encoder
            mirrors the decoder.
        prior: the prior component; defaults to :class:`StandardNormal`.
        network: ``"mlp"`` or ``"conv"`` (image event shapes), for the decoder and the
            default encoder.

    ``vae.model`` and ``vae.guide`` take ``(x, index=None, num_data=None)``: the batch
    ``(b, *event_shape)``, the rows' positions in the data set and its size (see
    :func:`pyro_vae.plates.data_plate`). The model is its generative story and nothing
    else: running it under any Pyro handler changes no state.
    """

    def __init__(
        self,
        event_shape: Union[int, Sequence[int]],
        z_dim: int = 20,
        hidden: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        guide: Optional[nn.Module] = None,
        prior: Optional[nn.Module] = None,
        network: str = "mlp",
    ):
        super().__init__()
        owner = type(self).__name__
        self.event_shape = _event_shape(owner, event_shape)
        self.x_dim, self.z_dim = math.prod(self.event_shape), _latent_size(owner, z_dim)
        self.decoder = Decoder(z_dim, self.event_shape, hidden, activation, likelihood, network=network)
        self.guide = guide or DiagonalNormalGuide(GaussianEncoder(self.event_shape, z_dim, hidden, activation, network))
        self.prior = prior or StandardNormal(z_dim)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(has_guide=True, enumerated_latents=self.prior.enumerated,
                            collapsible=getattr(self.prior, "collapsible", False),
                            aggregate_prior=getattr(self.prior, "aggregate", False),
                            latent_sites=self.prior.latent_sites, event_shape=self.event_shape)

    @property
    def likelihood(self) -> str:
        return self.decoder.likelihood

    def model(
        self,
        x: Optional[torch.Tensor] = None,
        index: Optional[torch.Tensor] = None,
        num_data: Optional[int] = None,
    ) -> torch.Tensor:
        """p(x, z) = p(z) p_θ(x|z). With ``x=None`` it generates ``num_data`` points."""
        register_module("decoder", self.decoder)
        self.prior.register()
        batch = self.batch_size(x, num_data)
        with data_plate(batch, index, num_data):
            z = self.prior(batch, index, num_data, generative=x is None)
            return pyro.sample("x", self.decoder(z), obs=x)

    def batch_size(self, x: Optional[torch.Tensor], num_data: Optional[int]) -> int:
        """The number of points the story is told for: ``len(x)`` (checked to be
        ``(batch, *event_shape)``), or ``num_data`` when it generates."""
        return story_batch_size(x, num_data, self.event_shape)

    def collapsed(self) -> contextlib.AbstractContextManager:
        """Within it, the model's discrete latents are summed out of its story (the
        prior emits ``z`` from its marginal): what importance sampling scores."""
        return self.prior.collapsed()

    @torch.no_grad()
    def generate(self, num_samples: int) -> dict[str, torch.Tensor]:
        """The story run forwards: every latent site and ``x`` for ``num_samples`` points."""
        tr = poutine.trace(self.model).get_trace(None, num_data=num_samples)
        return {name: tr.nodes[name]["value"] for name in self.prior.latent_sites + ("x",)}

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """E[x|z] for ``z ~ p(z)``: ``(num_samples, *event_shape)``, what a samples grid shows."""
        return self.decoder.mean(self.generate(num_samples)["z"])

    @torch.no_grad()
    def prior_quantiles(self, u: torch.Tensor, num_samples: int = 10000) -> torch.Tensor:
        """Quantiles of the prior's marginal in each latent dimension at levels ``u (m,)``
        in (0, 1), ascending: ``(m, z_dim)`` on the model's device. What a manifold plot
        spans (:func:`pyro_vae.plots.manifold`), so that it shows where this model's
        latents live rather than where N(0, I)'s would.

        Exact when the prior component has ``quantiles`` (N(0, I): its icdf; the GAE's
        mixture: by bisection on its CDF); else the empirical quantiles of
        ``num_samples`` draws of ``z`` from the model, where the model is.
        """
        exact = getattr(self.prior, "quantiles", None)  # a prior brought by the user may have none
        if exact is not None:
            return exact(u)
        z = self.generate(num_samples)["z"].reshape(num_samples, self.z_dim)
        return torch.quantile(z, u.to(z), dim=0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior means μ_φ(x), ``(batch, z_dim)`` (a flow posterior's
        ``guide.location(x)``: its flow applied to the base's mean)."""
        location = getattr(self.guide, "location", None)
        return location(x) if location is not None else self.guide.encoder(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x|z = μ_φ(x)], ``(batch, *event_shape)``."""
        return self.decoder.mean(self.encode(x))


def _event_shape(owner: str, event_shape) -> tuple[int, ...]:
    """``event_shape`` checked here, with the VAE's argument named (networks built with a
    zero or negative size fail deep inside torch, or silently have no weights)."""
    try:
        return as_event_shape(event_shape)
    except ValueError:
        raise ValueError(f"{owner}: event_shape (x_dim, the size of one data point) must be a positive int or a "
                         f"tuple of them such as (1, 28, 28), got {event_shape!r}") from None


def _latent_size(owner: str, z_dim) -> int:
    """``z_dim`` as an int >= 1 (a zero-width latent builds networks without weights)."""
    try:
        size = operator.index(z_dim) if not isinstance(z_dim, bool) else None
    except TypeError:
        size = None
    if size is None or size < 1:
        raise ValueError(f"{owner}: z_dim must be a positive int (the number of latent dimensions), got {z_dim!r}")
    return size
