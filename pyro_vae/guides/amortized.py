"""Amortized diagonal-Gaussian guide q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²).

The encoder is the recognition model of Kingma & Welling (2014), "Auto-Encoding
Variational Bayes", appendix C: an MLP whose last hidden layer feeds two linear maps,
one to μ and one to log σ².
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.nets import GaussianHead, encoder_body
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module


class GaussianEncoder(nn.Module):
    """``x: (..., *event_shape) -> (loc, scale)``, each ``(..., z_dim)``: a body
    (:func:`pyro_vae.nets.encoder_body`, an MLP or strided convolutions) feeding
    :class:`~pyro_vae.nets.GaussianHead`."""

    def __init__(self, event_shape: Union[int, Sequence[int]], z_dim: int, hidden: Sequence[int] = (400,),
                 activation: str = "tanh", network: str = "mlp"):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.x_dim, self.z_dim = math.prod(self.event_shape), z_dim
        self.body, width = encoder_body(self.event_shape, hidden, activation, network)
        self.head = GaussianHead(width, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x))


class DiagonalNormalGuide(nn.Module):
    """The guide: ``z ~ N(μ_φ(x), diag σ_φ(x)²)`` independently for each data point.

    Call it exactly like the model it pairs with::

        guide(x)                                # the whole batch is the data set
        guide(x, index=idx, num_data=N)         # x = data[idx], a minibatch of N points

    Its plate is named ``"data"`` like the model's, so that Pyro scales the minibatch
    ELBO by ``N / len(x)``.
    """

    def __init__(self, encoder: GaussianEncoder, name: str = "encoder"):
        super().__init__()
        self.encoder = encoder
        self.name = name

    def forward(
        self, x: torch.Tensor, index: Optional[torch.Tensor] = None, num_data: Optional[int] = None
    ) -> torch.Tensor:
        register_module(self.name, self.encoder)
        with data_plate(len(x), index, num_data):
            return pyro.sample("z", self.distribution(x))

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        """``q_φ(z|x)`` of each row of ``x``: batch shape ``(B,)``, event ``(z_dim,)``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

