r"""The VLAE's ladder inference network (Zhao, Song & Ermon 2017, section 4):

.. math::

    h_l = g_l(h_{l−1}),\quad h_0 = x, \qquad q(z_l | x) = N(μ_l(h_l), \operatorname{diag} σ_l(h_l)^2),
    \quad l = 1..L,

one encoder read at ``L`` depths: ``z_1`` from its lowest features, ``z_L`` from its top.
The layers are independent given ``x`` (the guide is mean-field across layers).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.nets import GaussianHead
from pyro_vae.nets.ladder import Flatten, Rung, up_rung
from pyro_vae.nets.shapes import check_event
from pyro_vae.plates import data_plate, register_module


def layer_names(num_layers: int) -> tuple[str, ...]:
    """The latent sites of a ladder, top first: ``("z<L>", ..., "z1")``."""
    return tuple(f"z{l}" for l in range(num_layers, 0, -1))


class LadderEncoder(nn.Module):
    """``x -> [(loc_l, scale_l)]``, ``l = 1..L`` (bottom first), each ``(..., z_dims[l−1])``.

    Args:
        rungs: the ladder's rungs (:func:`pyro_vae.nets.ladder.plan`), bottom first.
        z_dims: each latent layer's dimensions, bottom first.
        activation: every hidden layer's.
    """

    def __init__(self, rungs: Sequence[Rung], z_dims: Sequence[int], activation: str = "tanh"):
        super().__init__()
        self.event_shape = rungs[0].in_shape
        self.z_dims = tuple(z_dims)
        self.up = nn.ModuleList(up_rung(r, activation) for r in rungs)
        self.heads = nn.ModuleList(nn.Sequential(Flatten(r.out_shape), GaussianHead(math.prod(r.out_shape), d))
                                   for r, d in zip(rungs, z_dims))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        check_event(x, self.event_shape)
        out, h = [], x
        for up, head in zip(self.up, self.heads):
            h = up(h)
            out.append(head(h))
        return out


class LadderGuide(nn.Module):
    """``z_l ~ q(z_l | x)`` for every layer, in the ``"data"`` plate; sites ``"z<L>"`` (top)
    down to ``"z1"`` (bottom), the model's order. Returns them by name."""

    def __init__(self, encoder: LadderEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
                num_data: Optional[int] = None) -> dict[str, torch.Tensor]:
        register_module("encoder", self.encoder)
        out, stats = {}, self.encoder(x)
        with data_plate(len(x), index, num_data):
            for l in range(len(stats), 0, -1):  # top first, the model's order (mean-field checks it)
                loc, scale = stats[l - 1]
                out[f"z{l}"] = pyro.sample(f"z{l}", dist.Normal(loc, scale).to_event(1))
        return out


__all__ = ["LadderEncoder", "LadderGuide", "layer_names"]
