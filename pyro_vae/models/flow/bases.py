r"""The base distributions of the flows, as modules whose tensors follow them to their
device: the standard Normal or logistic (NICE's prior), and MADE MoG, an autoregressive
density whose conditionals are mixtures of Gaussians (the base of MAF MoG).

A base's ``forward()`` returns a distribution of event shape ``(D,)``.
"""

from __future__ import annotations

from typing import Optional

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from torch import nn
from torch.nn import functional as F

from pyro_vae.nets.made import made

PRIORS = ("normal", "logistic")


class StandardBase(nn.Module):
    r"""``N(0, I)`` or the standard logistic ``p(h) = Π_d σ(h_d)(1 − σ(h_d))`` over ``D``
    dimensions (NICE's prior for MNIST: heavier tails than the Normal, so a point far out
    costs less and its gradient is bounded)."""

    def __init__(self, dim: int, kind: str = "normal"):
        super().__init__()
        if kind not in PRIORS:
            raise ValueError(f"unknown prior {kind!r}: choose one of {list(PRIORS)}")
        self.kind = kind
        self.register_buffer("loc", torch.zeros(dim), persistent=False)  # cpu-ok: buffers follow the module
        self.register_buffer("scale", torch.ones(dim), persistent=False)  # cpu-ok

    def forward(self) -> dist.Distribution:
        family = dist.Normal if self.kind == "normal" else dist.Logistic
        return family(self.loc, self.scale).to_event(1)


class AutoregressiveMixture(nn.Module):
    r"""MADE MoG (Germain et al. 2015; the MoG density of Papamakarios et al. 2017): a density on
    ``u (..., D)`` whose conditionals are mixtures of ``C`` Gaussians,

    .. math::

        p(u) = \prod_i \sum_c π_{ic}\, N(u_i; μ_{ic}, σ_{ic}^2),
        \qquad (\log π, μ, \log σ)_{i} = \mathrm{MADE}(u_{<i}),

    with ``<i`` taken in ``order``. Scoring is one pass of the MADE; sampling is ``D``
    passes, one dimension at a time.
    """

    def __init__(self, dim: int, hidden, components: int = 10, act: str = "relu",
                 order: Optional[torch.Tensor] = None, log_scale_clip: tuple[float, float] = (-7.0, 5.0)):
        super().__init__()
        if components < 1:
            raise ValueError(f"a mixture needs at least 1 component, got components = {components}")
        self.dim, self.components, self.log_scale_clip = dim, components, log_scale_clip
        self.made = made(dim, hidden, [components] * 3, order, act)

    def conditionals(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log π, μ, log σ)`` of every conditional, each ``(..., C, D)``."""
        shape = u.shape[:-1] + (self.components, self.dim)
        logits, loc, log_scale = (p.reshape(shape) for p in self.made(u))
        log_scale = clamp_preserve_gradients(log_scale, *self.log_scale_clip)
        return F.log_softmax(logits, dim=-2), loc, log_scale

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """``log p(u)``, ``(...)``: one pass."""
        log_w, loc, log_scale = self.conditionals(u)
        per_component = dist.Normal(loc, log_scale.exp()).log_prob(u.unsqueeze(-2))
        return torch.logsumexp(log_w + per_component, dim=-2).sum(-1)

    @torch.no_grad()
    def sample(self, shape: torch.Size) -> torch.Tensor:
        """``shape + (D,)`` draws: one pass per dimension, in the MADE's order."""
        p = self.made.layers[0].weight
        u = torch.zeros(tuple(shape) + (self.dim,), dtype=p.dtype, device=p.device)
        for i in self.made.permutation.tolist():
            log_w, loc, log_scale = (t[..., i] for t in self.conditionals(u))
            c = torch.distributions.Categorical(logits=log_w).sample()
            pick = (lambda t: t.gather(-1, c.unsqueeze(-1)).squeeze(-1))
            u[..., i] = pick(loc) + pick(log_scale).exp() * torch.randn_like(u[..., i])
        return u

    def forward(self) -> "AutoregressiveMixtureDistribution":
        return AutoregressiveMixtureDistribution(self)


class AutoregressiveMixtureDistribution(TorchDistribution):
    """:class:`AutoregressiveMixture` as a distribution of event shape ``(D,)`` (what a
    ``TransformedDistribution`` takes as its base)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, density: AutoregressiveMixture, validate_args=None):
        self.density = density
        super().__init__(torch.Size(), torch.Size([density.dim]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.density.log_prob(value)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.density.sample(torch.Size(sample_shape) + self.batch_shape)
