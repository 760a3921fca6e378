r"""Guides for models with several latent layers.

* :class:`TopDownGuide` -- the two-level guide of VampPrior's HVAE (Tomczak & Welling
  2018, section 3.2; their code's ``HVAE_2level``): ``q(z_2|x) q(z_1|x, z_2)``. The top
  layer is read off ``x`` alone, so its posterior is a Gaussian per data point, which is
  what an exemplar prior mixes (``P(z_2) = (1/n) Σ_j q(z_2|x_j)``).
* :class:`~pyro_vae.guides.ladder.LadderGuide` -- the VLAE's: every layer from its own
  depth of one encoder, ``q(z_l|x) = N(μ_l(h_l), σ_l(h_l)²)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.guides.amortized import GaussianEncoder
from pyro_vae.nets import GaussianHead, encoder_body, mlp
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module


class ConditionalEncoder(nn.Module):
    """``(x, z_2) -> (loc, scale)`` of ``q(z_1 | x, z_2)``, each ``(..., z1_dim)``.

    ``x: (B, *event_shape)`` goes through a body of width ``hidden[0]``, ``z_2: (..., B,
    z2_dim)`` through a Linear layer of the same width; the two are concatenated and
    go through ``hidden[1:]`` (VampPrior: one gated layer of 300) to a Gaussian head.
    The ``x`` features are computed once and broadcast over ``z_2``'s leading (particle)
    dims.
    """

    def __init__(self, event_shape, z2_dim: int, z1_dim: int, hidden: Sequence[int] = (300,),
                 activation: str = "tanh", network: str = "mlp"):
        super().__init__()
        width = hidden[0]
        self.event_shape = as_event_shape(event_shape)
        self.z_dim = z1_dim
        self.x_body, _ = encoder_body(self.event_shape, [width], activation, network)
        self.z_body, _ = mlp(z2_dim, [width], activation)
        self.joint, out = mlp(2 * width, list(hidden[1:]), activation)
        self.head = GaussianHead(out, z1_dim)

    def forward(self, x: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hz = self.z_body(z2)
        hx = self.x_body(x).expand_as(hz)
        return self.head(self.joint(torch.cat([hx, hz], -1)))


class TopDownGuide(nn.Module):
    """``z_2 ~ q(z_2|x)``, then ``z_1 ~ q(z_1|x, z_2)``, per data point in the ``"data"``
    plate; the sites are ``"z2"`` and ``"z1"``.

    Args:
        top: ``x -> (loc, scale)`` of ``q(z_2|x)`` (a :class:`GaussianEncoder`; an exemplar
            prior mixes its posteriors).
        lower: ``(x, z_2) -> (loc, scale)`` of ``q(z_1|x, z_2)`` (:class:`ConditionalEncoder`).
    """

    def __init__(self, top: GaussianEncoder, lower: ConditionalEncoder):
        super().__init__()
        self.encoder, self.lower = top, lower  # ``encoder``: the top one, as the VAE's guide names it

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
                num_data: Optional[int] = None) -> dict[str, torch.Tensor]:
        register_module("encoder", self.encoder)
        register_module("lower_encoder", self.lower)
        with data_plate(len(x), index, num_data):
            loc, scale = self.encoder(x)
            z2 = pyro.sample("z2", dist.Normal(loc, scale).to_event(1))
            loc1, scale1 = self.lower(x, z2)
            z1 = pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))
        return {"z2": z2, "z1": z1}


__all__ = ["ConditionalEncoder", "TopDownGuide"]
