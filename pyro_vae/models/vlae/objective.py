r"""The VLAE's training objective: the ELBO with every layer's KL in closed form, and the
paper's KL warm-up by steps.

For a minibatch of ``B`` points of ``N`` and ``z_l = μ_l(x) + σ_l(x) ⊙ ε_l``,

.. math::

    \frac{N}{B} \sum_b \Bigl( \frac1K \sum_k \log p_θ(x_b | z_{1:L,k})
        − β_t \sum_l \mathrm{KL}\bigl(q(z_l|x_b) \,\|\, N(0, I)\bigr) \Bigr),
    \qquad β_t = β\,(1 − e^{−t/τ}),

``t`` the number of training steps taken so far (1 at the first) and ``τ`` the
``warmup_steps`` of ``[model]`` (the paper's code: 15000; 0: no warm-up). ``β`` is what the
algorithm passes (``[inference] kl_weight`` and its epoch warm-up). The step count is
the objective's state: it is checkpointed, so a resumed run goes on with the same β.
It is ``TraceMeanField_ELBO`` on the story under ``scale_latents(β_t)`` (tested).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


class LadderELBO(nn.Module):
    """The VLAE's objective (module docstring).

    Args:
        vlae: the model (:class:`~pyro_vae.models.vlae.VLAE`).
        warmup_steps: τ of the warm-up ``1 − exp(−t/τ)``; 0: none.
        num_particles: draws of ``z`` per point, averaged.
    """

    def __init__(self, vlae: nn.Module, warmup_steps: int = 15000, num_particles: int = 1):
        super().__init__()
        for name, v, low in (("warmup_steps", warmup_steps, 0), ("num_particles", num_particles, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        self.__dict__["vlae"] = vlae  # read here, saved apart (not a submodule)
        self.warmup_steps, self.num_particles = warmup_steps, num_particles
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # cpu-ok: a counter, moved with the objective

    def weight(self, beta: float = 1.0) -> float:
        """``β_t`` for the next step."""
        if not self.warmup_steps:
            return beta
        return beta * (1.0 - math.exp(-(int(self.steps) + 1) / self.warmup_steps))

    def differentiable_loss(self, x: torch.Tensor, index: Optional[torch.Tensor], num_data: Optional[int],
                            beta: float = 1.0) -> torch.Tensor:
        """``−(N/B) · ELBO_{β_t}`` of the minibatch ``x (B, *event_shape)``; counts the step
        when gradients are on."""
        self.vlae.batch_size(x, num_data)
        beta_t = self.weight(beta)
        stats = self.vlae.guide.encoder(x)
        zs, kl = [], 0.0
        for loc, scale in stats:
            eps = torch.randn((self.num_particles,) + loc.shape, dtype=loc.dtype, device=loc.device)
            zs.append(loc + scale * eps)
            var = scale.pow(2)
            kl = kl + 0.5 * (loc.pow(2) + var - 1 - var.log()).sum()
        log_lik = self.vlae.decoder.total_log_prob(zs, x) / self.num_particles
        if torch.is_grad_enabled():
            self.steps += 1
        return -((num_data or len(x)) / len(x)) * (log_lik - beta_t * kl)

    def start_epoch(self, epoch: int) -> None:
        pass


__all__ = ["LadderELBO"]
