r"""The VAE's training objective: the ELBO with the analytic KL (the AEVB paper's SGVB
estimator B), computed directly from the model's pieces.

For a minibatch ``x`` of ``B`` points of a data set of ``N``,

.. math::

    \frac{N}{B} \sum_b \Bigl( \frac1K \sum_k \log p_θ(x_b | z_{bk}) − β\,\mathrm{KL}\bigl(q_φ(z|x_b) \,\|\, p(z)\bigr) \Bigr),
    \qquad z_{bk} = μ_φ(x_b) + σ_φ(x_b) ⊙ ε_{bk},

with β the latent sites' weight (KL warm-up, β-VAE). With a regulariser
(:mod:`pyro_vae.inference.regularisers`: DIP-VAE, capacity annealing) the latent term
``β Σ_b KL_b`` becomes ``B · R(KL̄, μ_φ, σ_φ; β)``. Without one it is
``pyro.infer.TraceMeanField_ELBO`` on ``vae.model`` / ``vae.guide`` under
``scale_latents(β)`` (the tests check values and gradients), without Pyro's per-step
tracing: one encoder pass, the decoder, the prior component's closed-form KL. That is
``[inference] elbo = "auto"``'s choice for the VAE; the Pyro ELBOs remain a config entry
away (``"meanfield"``, ``"trace"``, their compiled variants).

A flow posterior (the IAF guide) or a flow prior (the MAF prior) has no closed-form KL:
``auto`` then trains with :class:`MonteCarloELBO`, estimator A (``Trace_ELBO``'s value and
gradients) computed the same direct way, its KL term ``log q(z|x) − log p(z)`` at the
guide's own draws (exact for an IAF: the draw's forward pass gives its log-density).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pyro_vae.guides import DiagonalNormalGuide
from pyro_vae.inference.base import StatelessObjective
from pyro_vae.inference.regularisers import Regulariser


def has_closed_form_kl(vae: nn.Module) -> bool:
    """Whether estimator B applies: a diagonal-Normal guide and a prior with a closed-form ``kl``."""
    return type(vae.guide) is DiagonalNormalGuide and hasattr(vae.prior, "kl")


class MeanFieldELBO(StatelessObjective):
    """Estimator B for a VAE whose prior has a closed-form KL (:class:`StandardNormal`).

    Args:
        vae: the model: a :class:`DiagonalNormalGuide` (its encoder gives ``μ_φ, σ_φ``),
            a ``decoder`` and a ``prior`` with a closed-form ``kl(loc, scale)``.
        num_particles: draws of ``z`` per point, averaged.
        regulariser: the latent term's regulariser (DIP-VAE, capacity), or None.
    """

    def __init__(self, vae: nn.Module, num_particles: int = 1, regulariser: Optional[Regulariser] = None):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles!r}")
        if not has_closed_form_kl(vae):
            raise ValueError(f"estimator B needs a diagonal-Normal guide and a prior with a closed-form KL, "
                             f"not {type(vae.guide).__name__} and {type(vae.prior).__name__}: train this "
                             "model with a Monte Carlo KL (MonteCarloELBO, or [inference] elbo = \"trace\")")
        self.vae, self.num_particles, self.regulariser = vae, num_particles, regulariser

    def differentiable_loss(self, x: torch.Tensor, index: Optional[torch.Tensor], num_data: Optional[int],
                            beta: float = 1.0) -> torch.Tensor:
        """``−(N/B) · ELBO_β`` of the minibatch ``x`` (``(B, *event_shape)``), a scalar."""
        self.vae.batch_size(x, num_data)  # a clear error for a batch of the wrong shape
        loc, scale = self.vae.guide.encoder(x)
        shape = loc.shape if self.num_particles == 1 else (self.num_particles,) + loc.shape
        z = loc + scale * torch.randn(shape, dtype=loc.dtype, device=loc.device)
        log_lik = self.vae.decoder.total_log_prob(z, x) / self.num_particles
        kl = self.vae.prior.kl(loc, scale).sum()
        n = num_data or len(x)
        if self.regulariser is None:
            return -(n / len(x)) * (log_lik - beta * kl)
        return -(n / len(x)) * log_lik + n * self.regulariser(kl / len(x), loc, scale, beta)

    def state_dict(self) -> dict:
        """The regulariser's state (a capacity's step count), if any."""
        return {} if self.regulariser is None else {"regulariser": dict(self.regulariser.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        if self.regulariser is not None and "regulariser" in state:
            self.regulariser.load_state_dict(state["regulariser"])


class MonteCarloELBO(StatelessObjective):
    r"""Estimator A for a VAE with any reparameterized guide and any prior that scores
    ``z``: for a minibatch ``x`` of ``B`` points of ``N``,

    .. math::

        \frac{N}{B} \sum_b \frac1K \sum_k \Bigl(\log p_θ(x_b | z_{bk})
            + β \bigl(\log p(z_{bk}) − \log q_φ(z_{bk}|x_b)\bigr)\Bigr),
        \qquad z_{bk} \sim q_φ(z|x_b) \text{ (reparameterized)},

    ``Trace_ELBO``'s value and gradients on the story under ``scale_latents(β)`` (tested),
    without its tracing.

    Args:
        vae: the model: a guide with ``distribution(x)`` (:class:`DiagonalNormalGuide`,
            :class:`~pyro_vae.guides.IAFGuide`), a ``decoder`` and a ``prior`` with
            ``log_prob(z)``.
        num_particles: draws of ``z`` per point, averaged.
    """

    def __init__(self, vae: nn.Module, num_particles: int = 1):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles!r}")
        if not hasattr(vae.guide, "distribution") or not hasattr(vae.prior, "log_prob"):
            raise ValueError(f"a Monte Carlo ELBO needs a guide with distribution(x) and a prior with log_prob(z), "
                             f"not {type(vae.guide).__name__} and {type(vae.prior).__name__}: train this model "
                             "with a Pyro ELBO ([inference] elbo = \"trace\")")
        self.vae, self.num_particles = vae, num_particles

    def differentiable_loss(self, x: torch.Tensor, index: Optional[torch.Tensor], num_data: Optional[int],
                            beta: float = 1.0) -> torch.Tensor:
        """``−(N/B) · ELBO_β`` of the minibatch ``x`` (``(B, *event_shape)``), a scalar."""
        self.vae.batch_size(x, num_data)
        q = self.vae.guide.distribution(x)
        z = q.rsample() if self.num_particles == 1 else q.rsample((self.num_particles,))
        log_lik = self.vae.decoder.total_log_prob(z, x)
        # log q first: the flow's cache holds this draw's forward pass (no inversion)
        kl = q.log_prob(z).sum() - self.vae.prior.log_prob(z, index).sum()
        elbo = (log_lik - beta * kl) / self.num_particles
        return -((num_data or len(x)) / len(x)) * elbo
