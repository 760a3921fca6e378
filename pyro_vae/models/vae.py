"""The variational auto-encoder of Auto-Encoding Variational Bayes.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", ICLR. The generative story,
for each data point i:

    z_i ~ N(0, I)                                   (latent code, N_z dimensions)
    x_i ~ Bernoulli(logits = f_θ(z_i))              (binary data, e.g. MNIST), or
    x_i ~ N(sigmoid(f_θ(z_i)), diag σ_θ(z_i)²)      (continuous data in [0, 1], e.g. Frey Face)

with f_θ an MLP decoder. The guide (recognition model) is the amortized
``N(μ_φ(x), diag σ_φ(x)²)`` of :mod:`pyro_vae.guides.amortized`. Fitting
``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` is the paper's SGVB estimator A;
``TraceMeanField_ELBO`` (analytic KL) is estimator B.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.guides.amortized import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.nets import GaussianHead, mlp
from pyro_vae.plates import data_plate, register_module

LIKELIHOODS = ("bernoulli", "gaussian")


class Decoder(nn.Module):
    """``z: (..., z_dim) -> p_θ(x|z)``, a distribution with event shape ``(x_dim,)``.

    ``likelihood="bernoulli"`` gives ``Bernoulli(logits)``; ``"gaussian"`` gives a
    diagonal Normal whose mean is squashed into (0, 1) by a sigmoid (the bounded mean the
    paper uses for Frey Face) and whose scale is floored at ``min_scale``: with a learned
    variance the likelihood of a constant pixel grows without bound as σ → 0.
    """

    def __init__(
        self,
        z_dim: int,
        x_dim: int,
        hidden: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        min_scale: float = 1e-3,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}: choose one of {list(LIKELIHOODS)}")
        self.likelihood = likelihood
        self.min_scale = min_scale
        self.body, width = mlp(z_dim, hidden, activation)
        self.head = nn.Linear(width, x_dim) if likelihood == "bernoulli" else GaussianHead(width, x_dim)

    def forward(self, z: torch.Tensor) -> dist.Distribution:
        out = self.head(self.body(z))
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        loc, scale = out
        return dist.Normal(torch.sigmoid(loc), scale + self.min_scale).to_event(1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(..., x_dim)``."""
        return self(z).mean


class VAE(nn.Module):
    """AEVB's VAE as a Pyro model and an amortized guide.

    Args:
        x_dim: length of a (flattened) data vector.
        z_dim: number of latent dimensions N_z.
        hidden: widths of the decoder's hidden layers (and the encoder's, unless ``guide``
            is given).
        activation: hidden-layer non-linearity (see :data:`pyro_vae.nets.ACTIVATIONS`).
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        guide: the guide module; defaults to a :class:`DiagonalNormalGuide` whose encoder
            mirrors the decoder.

    ``vae.model`` and ``vae.guide`` take ``(x, index=None, num_data=None)``: the batch,
    the rows' positions in the data set and its size (see :func:`pyro_vae.plates.data_plate`).
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        guide: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.decoder = Decoder(z_dim, x_dim, hidden, activation, likelihood)
        self.guide = guide or DiagonalNormalGuide(GaussianEncoder(x_dim, z_dim, hidden, activation))

    @property
    def likelihood(self) -> str:
        return self.decoder.likelihood

    def model(
        self,
        x: Optional[torch.Tensor] = None,
        index: Optional[torch.Tensor] = None,
        num_data: Optional[int] = None,
    ) -> torch.Tensor:
        """p(x, z) = N(z; 0, I) p_θ(x|z). With ``x=None`` it generates ``num_data`` points."""
        register_module("decoder", self.decoder)
        batch = _batch_size(x, num_data)
        with data_plate(batch, index, num_data):
            z = pyro.sample("z", self.prior(batch))
            return pyro.sample("x", self.decoder(z), obs=x)

    def prior(self, batch: int) -> dist.Distribution:
        loc = torch.zeros(batch, self.z_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """E[x|z] for ``z ~ p(z)``: ``(num_samples, x_dim)``, what a samples grid shows."""
        return self.decoder.mean(self.prior(num_samples).sample())

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior means μ_φ(x), ``(batch, z_dim)``."""
        return self.guide.encoder(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x|z = μ_φ(x)], ``(batch, x_dim)``."""
        return self.decoder.mean(self.encode(x))


def _batch_size(x: Optional[torch.Tensor], num_data: Optional[int]) -> int:
    if x is not None:
        if x.dim() != 2:
            raise ValueError(f"x must be a (batch, x_dim) tensor, got shape {tuple(x.shape)}")
        return len(x)
    if num_data is None:
        raise ValueError("model(x=None) generates data: give num_data, the number of points")
    return num_data
