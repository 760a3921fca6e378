r"""Training objectives of the two-level models, computed directly from their pieces.

For a minibatch of ``B`` points of ``N``, with ``z_2 = μ_2(x) + σ_2(x) ⊙ ε_2`` and
``z_1 = μ_1(x, z_2) + σ_1(x, z_2) ⊙ ε_1`` (K draws each),

.. math::

    \frac{N}{B} \sum_b \Bigl( \frac1K \sum_k \bigl[\log p(x_b|z_{1k}, z_{2k})
        − β\,\mathrm{KL}(q(z_1|x_b, z_{2k}) \,\|\, p(z_1|z_{2k}))\bigr] − β\,T_b \Bigr)

where the top level's term ``T`` is ``KL(q(z_2|x) ‖ N(0, I))`` in closed form
(:class:`HierarchicalELBO`: the value and gradients of ``TraceMeanField_ELBO`` on the story,
without Pyro's tracing), or, under the exemplar prior, the GAE's estimate
``E_q[log q(z_2|x) − log P̂_{−b}(z_2)]`` with its cache, neighbour lists, penalty and
deferred gradients (:class:`HierarchicalExemplarELBO`: the GAE's
:class:`~pyro_vae.models.gae.ExemplarELBO` with the lower level in its data term).
"""

from __future__ import annotations

from typing import Optional

import torch

from pyro_vae.inference.base import StatelessObjective
from pyro_vae.models.gae.objective import ExemplarELBO


def normal_kl(loc_q: torch.Tensor, scale_q: torch.Tensor, loc_p: torch.Tensor, scale_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(loc_q, diag scale_q²) ‖ N(loc_p, diag scale_p²))`` per point, summed over the last dim:
    ``Σ_d [log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²) / (2σ_p²) − ½]``."""
    var_ratio = (scale_q / scale_p).pow(2)
    return 0.5 * (var_ratio + ((loc_q - loc_p) / scale_p).pow(2) - 1 - var_ratio.log()).sum(-1)


def lower_level_terms(hvae, z2: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    """``Σ [log p(x|z_1, z_2) − β KL(q(z_1|x, z_2) ‖ p(z_1|z_2))]`` over the draws and points
    of ``z2 (K, B, D2)``, one reparameterized ``z_1`` per ``z_2``: a scalar."""
    loc_q, scale_q = hvae.guide.lower(x, z2)
    z1 = loc_q + scale_q * torch.randn_like(loc_q)
    kl = normal_kl(loc_q, scale_q, *hvae.z1_prior(z2)).sum()
    return hvae.decoder.total_log_prob(z1, z2, x) - beta * kl


class HierarchicalELBO(StatelessObjective):
    """The two-level ELBO under the N(0, I) top prior (module docstring).

    Args:
        hvae: an :class:`~pyro_vae.models.hvae.HVAE` whose prior has a closed-form ``kl``.
        num_particles: draws of ``(z_2, z_1)`` per point, averaged.
    """

    def __init__(self, hvae, num_particles: int = 1):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles!r}")
        if not hasattr(hvae.prior, "kl"):
            raise ValueError(f"the closed-form two-level ELBO needs a top prior with a closed-form KL, not "
                             f"{type(hvae.prior).__name__}: train it with [inference] elbo = \"trace_enum\"")
        self.hvae, self.num_particles = hvae, num_particles

    def differentiable_loss(self, x: torch.Tensor, index: Optional[torch.Tensor], num_data: Optional[int],
                            beta: float = 1.0) -> torch.Tensor:
        """``−(N/B) · ELBO_β`` of the minibatch ``x (B, *event_shape)``, a scalar."""
        self.hvae.batch_size(x, num_data)
        loc, scale = self.hvae.guide.encoder(x)
        eps = torch.randn((self.num_particles,) + loc.shape, dtype=loc.dtype, device=loc.device)
        z2 = loc + scale * eps
        elbo = lower_level_terms(self.hvae, z2, x, beta) / self.num_particles - beta * self.hvae.prior.kl(loc, scale).sum()
        return -((num_data or len(x)) / len(x)) * elbo


class HierarchicalExemplarELBO(ExemplarELBO):
    """The two-level GAE's objective: the GAE's (its prior estimator over the top level,
    its cache and penalty) with the lower level's terms in the data term."""

    def data_term(self, z: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
        return lower_level_terms(self.gae, z, x, beta)


__all__ = ["HierarchicalELBO", "HierarchicalExemplarELBO", "lower_level_terms", "normal_kl"]
