r"""The GAE's story with its data index ``y`` summed out, for one training step of an
algorithm that samples every latent (IWAE, VIMCO, RWS, wake-sleep, MCEM).

Summed out, the GAE is a continuous-latent model: for a training point ``x_b`` (row
``index[b]``)

.. math::

    p(x_b, z) = p_θ(x_b | z) \, P_{−b}(z), \qquad P_{−b}(z) = \frac{1}{n−1} \sum_{j ≠ b} q_φ(z | x_j),

so an importance weight, a wake-phase log-joint or an HMC potential needs only
``log P_{−b}(z)``, a differentiable log-sum-exp. Training replaces it by the objective's
estimator over a pool of components (:mod:`pyro_vae.models.gae.estimators`):
``log P̂_b(z) = logsumexp_q(log k_q(z) + log π_bq)`` (:class:`PoolMixture`), with the same
cache, neighbour lists, fresh re-encodings and deferred gradients as the GAE's own
ELBO. How the estimate enters each algorithm:

* ``exact``: ``P̂ = P_{−b}``; every algorithm is exactly its textbook self on the GAE.
* ``knn`` (and ``random``, which is biased by construction): ``E[P̂_b(z)] = P_{−b}(z)``
  given the cache (an unbiased *density*, so ``E log P̂ ≤ log P``).

  - IWAE / VIMCO: the weights ``w_k = p(x|z_k) P̂(z_k) / q(z_k|x)`` share one pool; as
    the pool is drawn independently of the particles, ``E[(1/K) Σ_k w_k] = p(x)``
    still, so ``E log (1/K) Σ_k w_k ≤ log p(x)``: the bound stays a lower bound in
    expectation (the pseudo-marginal argument), a noisier one.
  - wake-sleep / RWS wake phases: ``E log p(x|z) P̂(z) ≤ log p(x, z)``, a stochastic
    lower bound of the log-joint; RWS's self-normalised weights target
    ``p(x|z) P̂(z)``, consistent as the pool grows (they are biased for any K anyway).
  - MCEM: a potential that changes between leapfrog steps breaks detailed balance, so
    the E-step (:meth:`CollapsedStep.fixed`) scores the *exact* leave-one-out mixture
    over the cache frozen at the step's start (all ``n`` cached components; ``exact``:
    all ``n`` freshly encoded; ``random``: the step's pool), without gradients: a fixed
    target. The M-step ascends ``log p(x|z) + log P̂(z)`` at the samples, with the
    estimator's gradients.

* Dreams (wake-sleep's sleep phase, RWS with ``insomnia < 1``) draw ``y`` uniformly, then
  ``z ~ k_y`` and ``x ~ p(x|z)``, as the GAE generates; with the cache (``knn``) the
  components are the cached ones (no pass over all ``n`` per step).

The λ penalty and the deferred component gradients are the family's own training terms:
:meth:`CollapsedStep.terms` returns them for the algorithm to add to a loss that trains
the encoder (each step's deferred gradients once). The deferred gradients are what the
algorithm's own backward pass leaves on the pool's cached components, so its loss must
carry its whole scale (``n/B``) when differentiated: a factor applied to the parameters'
gradients afterwards misses them (IWAE scales its gradient at the sites' log-densities).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from pyro_vae.models.gae.estimators import ExemplarPool, PoolMixture, PoolStats, uniform_logits


class CollapsedStep:
    """One training step's view of the GAE with ``y`` summed out (module docstring).

    Made by :meth:`~pyro_vae.models.gae.objective.ExemplarELBO.collapsed` for the
    minibatch ``x = exemplars[index]``: the pool is drawn once, on entry, and serves
    every call of the model inside the step; :meth:`marginal` is what the prior emits
    for the step's rows (or ``c`` stacked copies of them).
    """

    def __init__(self, objective, x: torch.Tensor, index: torch.Tensor, num_data: Optional[int],
                 pool: ExemplarPool):
        self.objective, self.x, self.index, self.pool = objective, x, index, pool
        self.scale = (num_data or len(x)) / len(x)
        self.applied = False  # the deferred gradients entered a loss
        self._fixed_depth = 0
        self._fixed: Optional[PoolMixture] = None
        self._last: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def prior(self):
        return self.objective.prior

    def _encode(self) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self.objective.encoder(self.x)
        self._last = (loc.detach(), scale.detach())
        return loc, scale

    def marginal(self, index: torch.Tensor) -> PoolMixture:
        """``z``'s distribution for training rows ``index``: the step's rows, or ``c`` copies
        of them stacked (``(c·B,)``, e.g. MCEM's chains). Differentiable in the
        components unless inside :meth:`fixed` or without gradients."""
        self._check_rows(index)
        if self._fixed_depth:
            return self._fixed_marginal().expand((len(index),))
        stats = self.objective.pool_stats(self.pool, *self._encode())
        return PoolMixture(self.pool.logits, stats, (len(index),))

    def _check_rows(self, index: torch.Tensor) -> None:
        b = len(self.index)
        if len(index) % b or not bool((index.view(-1, b) == self.index).all()):
            raise ValueError("a collapsed training step scores its own minibatch's rows (or copies of them "
                             "stacked); open one step per minibatch")

    @torch.no_grad()
    def _fixed_marginal(self) -> PoolMixture:
        if self._fixed is None:
            pool = self.objective.fixed_pool(self.index, self.pool)
            stats = self.objective.pool_stats(pool, *self._encode())
            self._fixed = PoolMixture(pool.logits, PoolStats(*_detached(stats)))
        return self._fixed

    @contextlib.contextmanager
    def fixed(self) -> Iterator["CollapsedStep"]:
        """Within it the prior is one fixed function of ``z``, computed once per step
        without gradients: the exact leave-one-out mixture over the cache (``knn``), over
        all ``n`` fresh components (``exact``), or the step's pool (``random``). What an
        MCMC potential needs (detailed balance holds for a fixed target)."""
        self._fixed_depth += 1
        try:
            yield self
        finally:
            self._fixed_depth -= 1

    def terms(self) -> torch.Tensor:
        """The family's own training terms of the minibatch, to add to a loss that trains
        the encoder: ``(n/B) Σ_b R(x_b)`` (the λ penalty) and, on the first call of the
        step with gradients, the zero-valued term that applies the deferred gradients of
        the batch's cached components (``knn``)."""
        objective = self.objective
        loc, scale = self._encode()
        total = loc.new_zeros(())
        if objective.penalty:
            total = total + self.scale * objective.penalty(loc, scale).sum()
        if objective.defers and torch.is_grad_enabled() and not self.applied:
            total = total + objective._deferred_term(self.index, loc, scale)
            self.applied = True
        return total

    @torch.no_grad()
    def fresh_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's latest encoder statistics, what the cache is written with."""
        return self._last if self._last is not None else tuple(t.detach() for t in self.objective.encoder(self.x))


def _detached(stats: PoolStats) -> tuple:
    near = None if stats.near_features is None else tuple(t.detach() for t in stats.near_features)
    return tuple(t.detach() for t in stats.features), near


def exact_cache_pool(index: torch.Tensor, num: int, leave_one_out: bool) -> ExemplarPool:
    """All ``num`` cached components, uniform weights (own excluded), the batch's own rows
    spliced in from its fresh encoding."""
    rows = torch.arange(num, device=index.device)
    return ExemplarPool(rows, uniform_logits(rows, index, leave_one_out), batch_pos=index)
