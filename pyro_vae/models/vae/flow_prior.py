r"""A learned prior on ``z``: a masked autoregressive flow (Papamakarios, Pavlakou & Murray
2017) with base ``N(0, I)``, as a prior component of the VAE (``[model] prior = "maf"``).

.. math::

    \log p(z) = \log N(u; 0, I) + \sum_{k} \log \lvert \det \partial u_k / \partial u_{k−1} \rvert,
    \qquad u = f_K ∘ … ∘ f_1(z),

each ``f_k`` an autoregressive layer ``u_i = μ_i(z_{<i}) + σ_i(z_{<i}) z_i`` conditioned by
a MADE: scoring ``z`` (the ELBO's ``log p(z)`` of the guide's draws, the importance
weights) is one MADE pass per layer; drawing from the prior is ``z_dim`` passes per layer.
No batch normalisation: the prior's input is the guide's draws, whose statistics move as
the guide learns. There is no closed-form KL to it, so the VAE's ``elbo = "auto"`` trains
with a Monte Carlo KL (:class:`~pyro_vae.models.vae.objective.MonteCarloELBO`).
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.guides.iaf import default_flow_hidden
from pyro_vae.models.flow.model import MAF
from pyro_vae.plates import register_module


class MAFPrior(nn.Module):
    """``z ~ MAF`` (module docstring), a prior component with the protocol of
    :class:`~pyro_vae.models.vae.StandardNormal` (``forward``, ``log_prob``, ``collapsed``;
    no ``kl``, no ``quantiles``: the manifold plot spans quantiles of its samples).

    Args:
        z_dim: the latent dimensions.
        num_flows: autoregressive layers ``K`` (the order reversed layer to layer).
        hidden: each MADE's hidden widths, at least ``z_dim`` (None: ``[max(64, 2 z_dim)]``).
        activation: the MADEs' activation.
    """

    enumerated = False
    latent_sites = ("z",)

    def __init__(self, z_dim: int, num_flows: int = 2, hidden: Optional[Sequence[int]] = None,
                 activation: str = "relu"):
        super().__init__()
        if isinstance(num_flows, bool) or not isinstance(num_flows, int) or num_flows < 1:
            raise ValueError(f"[model] prior_flows must be an integer >= 1, got {num_flows!r}")
        hidden = list(hidden) if hidden is not None else default_flow_hidden(z_dim)
        self.z_dim = z_dim
        self.flow = MAF((z_dim,), num_flows, hidden, activation, batch_norm=False, base="normal")

    def register(self) -> None:
        register_module("prior", self)

    def distribution(self) -> dist.Distribution:
        """``p(z)`` of one point, event shape ``(z_dim,)``."""
        return self.flow.distribution()

    def forward(self, batch: int, index: Optional[torch.Tensor] = None, num_data: Optional[int] = None,
                generative: bool = False) -> torch.Tensor:
        """Emit ``z`` for ``batch`` rows inside the model's ``"data"`` plate."""
        return pyro.sample("z", self.distribution().expand([batch]))

    def log_prob(self, z: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log p(z)`` for ``z (..., z_dim)``: ``(...)``, one MADE pass per layer."""
        return self.distribution().log_prob(z)

    def collapsed(self) -> contextlib.AbstractContextManager:
        """The story with discrete latents summed out: the same, there are none."""
        return contextlib.nullcontext()
