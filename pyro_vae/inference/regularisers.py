r"""Regularisers of the latent term for disentangling (issue 20): DIP-VAE and β-VAE's
capacity annealing; β-VAE itself is ``[inference] kl_weight`` (β), nothing here.

One hook per method, as in disentanglement_lib: an objective that takes a regulariser
(the VAE's :class:`~pyro_vae.models.vae.objective.MeanFieldELBO`, the GAE's
:class:`~pyro_vae.models.gae.objective.ExemplarELBO`) hands it the minibatch's mean KL
and its encoder statistics, and the regulariser returns the latent term ``R`` that takes
the place of ``β KL̄``. For a minibatch of ``B`` of ``N`` points, the loss is

.. math::

    −\frac{N}{B} \sum_b \log p(x_b | z_b) + N\, R(\overline{KL}, μ, σ; β),
    \qquad \overline{KL} = \frac1B \sum_b \mathrm{KL}(q(z|x_b) \,\|\, p(z)),

and without a regulariser ``R = β KL̄`` (the β-weighted ELBO). ``KL̄`` is whatever the
objective has: the closed form for the VAE, the one-draw estimate ``log q − log P̂`` for
the GAE. The regularisers:

* **DIP-VAE** (Kumar, Sattigeri & Balakrishnan 2018, eqs. 6-7), :class:`DIPVAE`:
  ``R = β KL̄ + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²``, ``λ_d = factor · λ_od``, with
  ``C = Cov[μ(x)]`` (DIP-VAE-I) or ``Cov[μ(x)] + E[diag σ²(x)]`` (DIP-VAE-II, the
  covariance of the aggregate posterior ``q(z)``).
* **Capacity** (Burgess et al. 2018, "Understanding disentangling in β-VAE", eq. 8),
  :class:`Capacity`: ``R = γ |KL̄ − C(t)|``, the capacity ``C(t) = C_max · min(1, t / T)``
  rising linearly over the first ``T`` training steps (disentanglement_lib's AnnealedVAE).

**The batch statistics.** Each is a mean over the minibatch's rows, never a sum, so the
penalty's scale does not depend on the batch size:

.. math::

    m = \frac1B \sum_b μ_b \;(L),\quad S = \frac1B \sum_b μ_b μ_b^⊤ \;(L, L),\quad
    v = \frac1B \sum_b σ_b^2 \;(L),\qquad \mathrm{Cov}[μ] = S − m m^⊤,

the biased (``1/B``) estimate disentanglement_lib uses; ``E[diag σ²] = diag v``. The
penalty is a nonlinear function of them, so under data-parallel training a shard's own
moments would give another gradient: every rank takes the *global* batch's moments
(:func:`pyro_vae.distributed.batch_statistic`, one all-reduce of ``m, S, v, KL̄``), with
gradients through its own rows, and the synchronized gradient is the single-process one.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from pyro_vae import distributed

#: ``[inference] regulariser`` values.
REGULARISERS = ("none", "dip_vae_i", "dip_vae_ii", "capacity")
#: λ_d / λ_od by DIP-VAE kind when ``dip_factor`` is left unset (disentanglement_lib's study).
DIP_FACTORS = {"i": 10.0, "ii": 1.0}


class Regulariser(nn.Module):
    """The latent term ``R(KL̄, μ, σ; β)`` of a loss per data point (module docstring); a
    module so that any state (a step count) checkpoints with the objective."""

    def forward(self, kl_mean: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, beta: float) -> torch.Tensor:
        raise NotImplementedError


class DIPVAE(Regulariser):
    r"""DIP-VAE's ``R = β KL̄ + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²`` (module docstring).

    Args:
        kind: ``"i"`` (``C = Cov[μ]``) or ``"ii"`` (``C = Cov[μ] + E[diag σ²]``).
        lambda_od: ``λ_od >= 0``, the off-diagonal weight.
        factor: ``λ_d / λ_od >= 0``; None: 10 for I, 1 for II (:data:`DIP_FACTORS`).
    """

    def __init__(self, kind: str = "ii", lambda_od: float = 10.0, factor: Optional[float] = None):
        super().__init__()
        if kind not in DIP_FACTORS:
            raise ValueError(f"DIP-VAE kind must be 'i' or 'ii', got {kind!r}")
        factor = DIP_FACTORS[kind] if factor is None else factor
        check_weight("dip_lambda_od (λ_od)", lambda_od)
        check_weight("dip_factor (λ_d / λ_od)", factor)
        self.kind, self.lambda_od, self.lambda_d = kind, float(lambda_od), float(factor) * float(lambda_od)

    def forward(self, kl_mean: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, beta: float) -> torch.Tensor:
        return beta * kl_mean + self.penalty(self.covariance(loc, scale))

    def covariance(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``C (L, L)`` from ``loc, scale (B, L)``: the global batch's moments (module docstring)."""
        check_latent(loc, scale)
        b, dim = loc.shape
        parts = [loc.mean(0), (loc.unsqueeze(-1) * loc.unsqueeze(-2)).mean(0).reshape(-1)]
        if self.kind == "ii":
            parts.append(scale.pow(2).mean(0))
        moments = distributed.batch_statistic(torch.cat(parts), b)  # one all-reduce
        m, s = moments[:dim], moments[dim: dim + dim * dim].reshape(dim, dim)
        cov = s - m.unsqueeze(-1) * m.unsqueeze(-2)
        return cov + torch.diag(moments[dim + dim * dim:]) if self.kind == "ii" else cov

    def penalty(self, cov: torch.Tensor) -> torch.Tensor:
        """``λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²`` of ``cov (L, L)``, a scalar."""
        diag = torch.diagonal(cov)
        off = cov - torch.diag(diag)
        return self.lambda_od * off.pow(2).sum() + self.lambda_d * (diag - 1).pow(2).sum()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, lambda_od={self.lambda_od}, lambda_d={self.lambda_d}"


class Capacity(Regulariser):
    r"""Capacity annealing: ``R = γ |KL̄ − C(t)|``, ``C(t) = C_max · min(1, t / T)`` with
    ``t`` the training steps taken before this one (the buffer ``steps``, checkpointed).

    Args:
        capacity_max: ``C_max >= 0``, nats per point (Burgess et al.: 25 on dSprites).
        steps: ``T >= 1``, the steps over which ``C`` rises (disentanglement_lib: 100000).
        gamma: ``γ >= 0`` (Burgess et al. and disentanglement_lib: 1000).

    A call with gradients enabled counts as a training step; one without (an evaluation)
    leaves the count.
    """

    def __init__(self, capacity_max: float = 25.0, steps: int = 100000, gamma: float = 1000.0):
        super().__init__()
        check_weight("capacity_max (C_max, nats)", capacity_max)
        check_weight("capacity_gamma (γ)", gamma)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"capacity_steps (T) must be an integer >= 1, got {steps!r}")
        self.capacity_max, self.num_steps, self.gamma = float(capacity_max), steps, float(gamma)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # cpu-ok: a counter

    def capacity(self) -> float:
        """``C(t)`` at the current step count."""
        return self.capacity_max * min(1.0, int(self.steps) / self.num_steps)

    def forward(self, kl_mean: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, beta: float) -> torch.Tensor:
        kl = distributed.batch_statistic(kl_mean.reshape(1), len(loc))[0]
        term = self.gamma * (kl - self.capacity()).abs()
        if torch.is_grad_enabled():
            self.steps += 1
        return term

    def extra_repr(self) -> str:
        return f"capacity_max={self.capacity_max}, steps={self.num_steps}, gamma={self.gamma}"


def make_regulariser(inference) -> Optional[Regulariser]:
    """The regulariser an ``[inference]`` config declares (None for ``"none"``, or for an
    algorithm whose config has no ``regulariser``)."""
    name = getattr(inference, "regulariser", "none")
    if name not in REGULARISERS:
        raise ValueError(f"[inference] regulariser = {name!r} is unknown: choose one of {list(REGULARISERS)}")
    if name == "none":
        return None
    if name == "capacity":
        if inference.kl_weight != 1.0 or inference.warmup_epochs:
            raise ValueError("[inference] regulariser = \"capacity\" replaces the β-weighted KL by "
                             "capacity_gamma · |KL − C(t)| and anneals C itself: leave kl_weight = 1 and "
                             "warmup_epochs = 0 (γ is capacity_gamma)")
        return Capacity(inference.capacity_max, inference.capacity_steps, inference.capacity_gamma)
    return DIPVAE(name.removeprefix("dip_vae_"), inference.dip_lambda_od, inference.dip_factor)


def check_latent(loc: torch.Tensor, scale: torch.Tensor) -> None:
    """Encoder statistics ``(B, L)`` with ``B, L >= 1`` and equal shapes, else a ValueError."""
    if loc.dim() != 2 or loc.shape != scale.shape:
        raise ValueError(f"the regulariser needs encoder statistics loc, scale of shape (batch, z_dim), "
                         f"got {tuple(loc.shape)} and {tuple(scale.shape)}")
    if loc.shape[1] == 0:
        raise ValueError("the latent has size 0: a covariance penalty needs at least one latent dimension "
                         "(set [model] z_dim >= 1)")
    if loc.shape[0] == 0:
        raise ValueError("an empty minibatch has no moments: use a batch of at least one point")


def check_weight(name: str, value) -> None:
    """A finite number ``>= 0``, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


__all__ = ["DIP_FACTORS", "REGULARISERS", "Capacity", "DIPVAE", "Regulariser", "check_latent", "make_regulariser"]
