r"""The GAE's training objective: its ELBO under a scalable prior estimator, the λ penalty,
and every piece of state that changes from step to step.

For a minibatch ``x = exemplars[index]`` of the ``n`` training points the objective is

.. math::

    \frac{n}{B} \sum_b \Bigl( E_{q(z|x_b)}\bigl[\log p(x_b|z) + β \log \hat P_{−b}(z) − β \log q(z|x_b)\bigr] − R(x_b) \Bigr)

with ``P̂`` the estimator's prior (:mod:`pyro_vae.models.gae.estimators`; with ``"exact"``
the leave-one-out mixture itself), ``β`` the latent sites' weight (KL warm-up, β-VAE) and
``R`` the penalty :class:`MomentPenalty`. It is the ELBO of the model's own story
(``TraceEnum_ELBO`` with ``y`` enumerated over the estimator's pool, see
:func:`pyro_vae.models.gae.prior.using_pool`), computed directly: one encoder pass serves
the guide's sample and the minibatch's own components, and the enumerated sum is one
log-sum-exp over the pool's table (the tests check it equals Pyro's).

The state, owned here as MCEM owns its chains (and saved by :meth:`state_dict`):

* *the cache* (:class:`~pyro_vae.models.gae.cache.ExemplarBank`): encoder statistics of all
  ``n`` exemplars. The minibatch's are written back after each step, so an entry is at
  most one epoch old, and :meth:`start_epoch` re-encodes all of them.
* *neighbour lists*, built at the first step and rebuilt from the cache every
  :meth:`rebuild_period` steps (default every two epochs) by a clustered search ranked by
  the closed-form expected log-density ``E_{q(z|x_i)} log k_j(z)``.
* *deferred gradients*: the loss's gradients w.r.t. cached components are accumulated per
  exemplar and applied through the encoder when that exemplar is next in a minibatch (a
  zero-valued term whose gradient is exactly the deferred one), so the component gradient
  ``Σ_j r_ij ∇_φ log k_j(z_i)`` reaches every component in the pool, at most one epoch late.

Under data-parallel training (:mod:`pyro_vae.distributed`) the cache writes, list updates
and deferred gradients are gathered from every process, so all hold the same cache.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
from torch import nn

from pyro_vae import distributed
from pyro_vae.models.gae.cache import ExemplarBank
from pyro_vae.models.gae.collapsed import CollapsedStep, exact_cache_pool
from pyro_vae.models.gae.estimators import ExemplarPool, PoolStats, make_estimator
from pyro_vae.models.gae.kernels import component_features, log_prob_matrix, take
from pyro_vae.models.gae.prior import summing_out


class MomentPenalty:
    r"""``R(x) = λ_1 Σ_d μ_d(x)² − λ_2 Σ_d (1 + log σ_d(x)² − σ_d(x)²)``, both terms ``≥ 0``.

    The first penalises posterior means far from the origin, the second variances far
    from 1. With ``λ_1 = λ_2 = ½``, ``−R`` is the VAE's ``−KL(q(z|x) ‖ N(0, I))``. The GAE
    objective alone is invariant to any invertible affine map of the latent space, so
    nothing else fixes the latent scale; a small ``λ`` pins it (see :mod:`pyro_vae.models.gae`).
    """

    def __init__(self, lambda1: float = 0.05, lambda2: float = 0.05):
        for name, lam in (("lambda1", lambda1), ("lambda2", lambda2)):
            if isinstance(lam, bool) or not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (a penalty weight), got {lam!r}")
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)

    def __bool__(self) -> bool:
        return bool(self.lambda1 or self.lambda2)

    def __call__(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``R`` per point, ``(batch,)``."""
        log_var = 2 * scale.log()
        return self.lambda1 * loc.pow(2).sum(-1) - self.lambda2 * (1 + log_var - log_var.exp()).sum(-1)


class ExemplarELBO(nn.Module):
    """The GAE's training objective and its state (module docstring).

    Args:
        gae: the model, a VAE whose prior is an
            :class:`~pyro_vae.models.gae.prior.ExemplarPrior` (not a submodule: the
            objective reads it, the checkpoint saves it apart).
        estimator: ``"knn"``, ``"exact"`` or ``"random"``.
        neighbours: ``K``, listed neighbours per training point (``"knn"``).
        tail: random exemplars per step (``"knn"``: the tail sample; ``"random"``: the subset).
        fresh: nearest neighbours per point re-encoded with gradients (``"knn"``).
        refresh_every: neighbour lists rebuilt every this many training steps, and after
            1/8, 1/4 and 1/2 of the first period; None: every two epochs; 0: only at the
            first step.
        improve: also improve the minibatch's lists at every step (NN-descent style).
        deferred: (``"knn"``) keep the gradients w.r.t. cached components for later.
        penalty: the ``λ`` penalty (:class:`MomentPenalty`); None: none.
        num_particles: draws of ``z`` per point, averaged.
        regulariser: a latent-term regulariser (DIP-VAE, capacity:
            :mod:`pyro_vae.inference.regularisers`), or None.
    """

    def __init__(self, gae: nn.Module, estimator: str = "knn", neighbours: int = 32, tail: int = 300,
                 fresh: int = 0, refresh_every: Optional[int] = None, improve: bool = False,
                 deferred: bool = True, penalty: Optional[MomentPenalty] = None, num_particles: int = 1,
                 regulariser: Optional[nn.Module] = None):
        super().__init__()
        for name, v, low in (("neighbours", neighbours, 0), ("tail", tail, 0), ("fresh", fresh, 0),
                             ("refresh_every", 0 if refresh_every is None else refresh_every, 0),
                             ("num_particles", num_particles, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        # The model and its prior: read here, saved apart (not submodules of the objective).
        self.__dict__["gae"], self.__dict__["prior"] = gae, gae.prior
        self.estimator = make_estimator(estimator, tail, fresh)
        self.refresh_every, self.improve, self.deferred = refresh_every, improve, deferred
        self.penalty = penalty if penalty is not None else MomentPenalty(0.0, 0.0)
        self.num_particles = num_particles
        self.regulariser = regulariser  # a submodule: its state (a step count) checkpoints with the cache
        n = self.prior.num_exemplars
        self.bank = ExemplarBank(n, self.prior.z_dim, min(neighbours, n - 1),
                                 shared_scale=self.prior.bandwidth is not None,
                                 device=self.prior.exemplars.device)
        self._last_refresh = -1
        self._pending: list = []  # cached-component leaves of the last step (deferred gradients)
        self._fresh_near = None  # (rows, loc, scale) re-encoded by the last pool_stats

    @property
    def encoder(self) -> nn.Module:
        return self.prior.encoder

    @property
    def _knn(self) -> bool:
        return self.estimator.uses_cache

    # ------------------------------------------------------------------ the objective

    def differentiable_loss(self, x: torch.Tensor, index: torch.Tensor, num_data: Optional[int] = None,
                            beta: float = 1.0) -> torch.Tensor:
        """``−`` the objective on the minibatch ``x = exemplars[index]`` (a tensor whose
        gradient is the training gradient, deferred gradients included)."""
        index = self.prior.check_index(index, len(x), num_data)
        scale_n = (num_data or len(x)) / len(x)
        if self._knn:
            self._collect_deferred()
            self._maybe_refresh(len(index))
        loc_x, scale_x = self.encoder(x)
        pool = self.make_pool(index)
        stats = self.pool_stats(pool, loc_x, scale_x)
        eps = torch.randn((self.num_particles,) + loc_x.shape, device=loc_x.device, dtype=loc_x.dtype)
        z = loc_x + scale_x * eps  # (K, B, D): the guide's reparameterized draws
        # Σ_b of the K-draw means, each term summed whole (no per-point intermediates)
        num_draws = self.num_particles
        log_lik = self.data_term(z, x, beta) / num_draws
        log_q = (-0.5 * eps.pow(2).sum() / num_draws - scale_x.log().sum()
                 - 0.5 * scale_x.numel() * math.log(2 * math.pi))
        log_prior = (stats.log_prob_table(z) + pool.logits).logsumexp(-1).sum() / num_draws
        if self.regulariser is None:
            loss = -scale_n * (log_lik + beta * (log_prior - log_q))
        else:  # the latent term R(KL̄, μ, σ; β) of pyro_vae.inference.regularisers, KL̄ estimated
            n = num_data or len(x)
            loss = -scale_n * log_lik + n * self.regulariser((log_q - log_prior) / len(x), loc_x, scale_x, beta)
        if self.penalty:
            loss = loss + scale_n * self.penalty(loc_x, scale_x).sum()
        deferred = self._knn and self.deferred and torch.is_grad_enabled()
        if deferred:
            loss = loss + self._deferred_term(index, loc_x, scale_x)
        if self._knn:
            self.write_back(index, loc_x, scale_x, pool, deferred)
        return loss

    def data_term(self, z: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
        """What the ELBO holds beside the prior's level, summed over the draws ``z (K, B, D)``
        and points: ``Σ log p(x|z)`` here; a hierarchy adds its lower levels' terms
        (:class:`~pyro_vae.models.hvae.objective.HierarchicalExemplarELBO`)."""
        return self.gae.decoder.total_log_prob(z, x)

    # ------------------------------------------------------------------ y summed out

    @contextlib.contextmanager
    def collapsed(self, x: torch.Tensor, index: torch.Tensor, num_data: Optional[int] = None
                  ) -> Iterator[CollapsedStep]:
        """One training step of an algorithm that samples every latent, on the minibatch
        ``x = exemplars[index]``: within it the model's training rows draw ``z`` from the
        estimator's pool mixture, ``y`` summed out (:mod:`pyro_vae.models.gae.collapsed`),
        and dreams use the cached components. Yields the step's
        :class:`~pyro_vae.models.gae.collapsed.CollapsedStep` (its ``terms()``: the
        penalty and deferred gradients to add to a loss); on leaving, the cache is
        written as after an SVI step (the same collectives, under several processes)."""
        if index is None:
            raise ValueError("a GAE training step needs the minibatch's index (its rows' positions in the "
                             "training set): the leave-one-out prior and the cache are per training point")
        index = self.prior.check_index(index, len(x), num_data)
        if self._knn:
            self._collect_deferred()
            self._maybe_refresh(len(index))
        step = CollapsedStep(self, x, index, num_data, self.make_pool(index))
        with summing_out(self.prior, step.marginal), self._dreams():
            yield step
        if self._knn:
            self.write_back(index, *step.fresh_stats(), step.pool, step.applied)

    @property
    def defers(self) -> bool:
        """Gradients w.r.t. cached components are kept and applied later (``knn``)."""
        return self._knn and self.deferred

    def fixed_pool(self, index: torch.Tensor, pool: ExemplarPool) -> ExemplarPool:
        """The components of a fixed target for rows ``index`` (an MCMC potential): every
        cached component with exact weights when there is a cache, else ``pool``."""
        if not self._knn:
            return pool
        return exact_cache_pool(index, self.prior.num_exemplars, self.prior.leave_one_out)

    def _dreams(self) -> contextlib.AbstractContextManager:
        """Generative calls reuse the cache's components (``knn``; else they encode all ``n``)."""
        if not (self._knn and bool(self.bank.ready)):
            return contextlib.nullcontext()
        return self.prior.frozen(posteriors=(self.bank.loc, self.bank.scale))

    def start_epoch(self, epoch: int) -> None:
        """Re-encode the whole cache with the parameters the epoch starts from."""
        if self._knn and bool(self.bank.ready):
            self.refresh_cache()

    def state_dict(self, *args, **kwargs):
        """The objective's state, with the last step's deferred gradients collected first
        (so that a checkpoint written after a step resumes exactly). Under several
        processes a collective: every rank calls it."""
        self._collect_deferred()
        return super().state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ pools

    def make_pool(self, index: torch.Tensor) -> ExemplarPool:
        """The components and per-row weights a training step on rows ``index`` uses."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.bank.loc.device)
        if self._knn and not bool(self.bank.listed):
            self._maybe_refresh(len(index))
        return self.estimator.make_pool(index, self.bank, self.prior.leave_one_out)

    def pool_stats(self, pool: ExemplarPool, loc_x: Optional[torch.Tensor] = None,
                   scale_x: Optional[torch.Tensor] = None) -> PoolStats:
        """The pool's components: cached, except the fresh ones (re-encoded, with gradients
        when enabled) and the minibatch's own rows (``loc_x, scale_x``, the guide's pass)."""
        rows, fresh = pool.rows, pool.fresh
        all_fresh = fresh is not None and len(fresh) == len(rows)
        if all_fresh:
            features = self._encoded_features(rows)
        else:
            if not bool(self.bank.ready):
                self.refresh_cache()
            features = self._cached_features(rows)
            if fresh is not None and len(fresh):
                features = _splice(features, fresh, self._encoded_features(rows[fresh]))
        if pool.batch_pos is not None and loc_x is not None:
            features = _splice(features, pool.batch_pos, self.prior.component_features(loc_x, scale_x))
        stats = PoolStats(features)
        if pool.near is not None:
            stats.near_features = self._near_features(pool)
        return stats

    def _encoded_features(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prior.component_features(*self.encoder(take(self.prior.exemplars, rows)))

    def _near_features(self, pool: ExemplarPool) -> tuple[torch.Tensor, torch.Tensor]:
        w, c = self._cached_features(pool.near)
        f = pool.near_fresh
        if f:
            near = pool.near[:, :f]
            f_loc, f_scale = self.encoder(take(self.prior.exemplars, near.reshape(-1)))
            z_dim = self.prior.z_dim
            f_w, f_c = self.prior.component_features(f_loc.view(-1, f, z_dim), f_scale.view(-1, f, z_dim))
            w, c = torch.cat([f_w, w[:, f:]], 1), torch.cat([f_c, c[:, f:]], 1)
            self._fresh_near = (near.reshape(-1), f_loc, f_scale)
        return w, c

    def _cached_features(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of the cached components of exemplars ``rows``, whose gradients
        are kept for later (deferred): w.r.t. the cached features, or with a shared
        bandwidth w.r.t. the cached means (``s`` is live: the features are formed from the
        means and the current ``s``, which gets its gradient at once)."""
        shared = self.prior.bandwidth is not None
        leaves = (take(self.bank.loc, rows),) if shared else (take(self.bank.w, rows), take(self.bank.c, rows))
        if self.deferred and torch.is_grad_enabled() and self._knn:
            for leaf in leaves:
                leaf.requires_grad_(True)
            self._pending.append((rows, leaves, distributed.grad_weight()))
        return component_features(leaves[0], self.prior.bandwidth.scale) if shared else leaves

    # ------------------------------------------------------------------ deferred gradients

    @torch.no_grad()
    def _collect_deferred(self) -> None:
        """Add the last step's loss gradients w.r.t. cached components to the bank.

        Under several processes each rank's gradients are weighted by its share of the
        global batch (as the optimizer's are) and every rank adds all of them: the bank
        holds the single-process sums, the same on every rank. A collective whenever
        there is something to collect, which every rank has after the same steps.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        tables = self.bank.deferred_tables
        widths = [t[0].numel() for t in tables]
        parts = [(r.reshape(-1), [_grad(leaf).reshape(r.numel(), -1) for leaf in leaves], weight)
                 for r, leaves, weight in pending]
        if distributed.is_active():  # one collective: every rank adds every rank's weighted gradients
            rows = torch.cat([r for r, _, _ in parts])
            table = torch.cat([torch.cat(grads, -1) * weight for _, grads, weight in parts])
            rows, table = distributed.all_gather_indexed(rows, table)
            parts = [(rows, table.split(widths, -1), 1.0)]
        for rows, grads, weight in parts:  # from a strided source index_add_ takes a 3x slower path
            for t, g in zip(tables, grads):
                t.index_add_(0, rows, g.reshape(-1, *t.shape[1:]).contiguous(), alpha=weight)

    def _deferred_term(self, index: torch.Tensor, loc_x: torch.Tensor, scale_x: torch.Tensor) -> torch.Tensor:
        r"""A zero-valued term whose gradient routes the gradients accumulated for the
        minibatch's cached components through its fresh encoder pass: ``S − S̄`` with
        ``S = Σ_b ⟨∂L/∂w_b, w(μ_φ(x_b), σ_φ(x_b))⟩`` (with a shared bandwidth
        ``Σ_b ⟨∂L/∂μ_b, μ_φ(x_b)⟩``). Divided by this rank's gradient weight, which the
        gradient sync multiplies back: the bank's sums are global already.
        :meth:`write_back` clears them."""
        grads = [take(t, index) for t in self.bank.deferred_tables]
        if not any(bool(g.any()) for g in grads):
            return loc_x.new_zeros(())
        fresh = component_features(loc_x, scale_x) if self.prior.bandwidth is None else (loc_x,)
        surrogate = sum((g * f).sum() for g, f in zip(grads, fresh)) / distributed.grad_weight()
        return surrogate - surrogate.detach()

    # ------------------------------------------------------------------ the cache

    @torch.no_grad()
    def refresh_cache(self) -> None:
        """Re-encode every exemplar into the cache (no gradients)."""
        self.bank.refresh_stats(self.encoder, self.prior.exemplars)

    @torch.no_grad()
    def refresh(self, exact: Optional[bool] = None) -> None:
        """Re-encode every exemplar and rebuild all neighbour lists (``exact``: all pairs;
        default: all pairs up to ``EXACT_SEARCH`` exemplars, else the clustered search)."""
        self.refresh_cache()
        self.rebuild_neighbours(exact)

    @torch.no_grad()
    def rebuild_neighbours(self, exact: Optional[bool] = None) -> None:
        """Rebuild every neighbour list from the cache as it is, ranked by the prior's
        components (with a shared bandwidth: distance in units of ``s``)."""
        self.bank.rebuild_neighbours(exact, self._ranking_bandwidth())

    def _ranking_bandwidth(self) -> Optional[torch.Tensor]:
        bandwidth = self.prior.bandwidth
        return None if bandwidth is None else bandwidth.scale.detach()

    def rebuild_period(self, batch: int) -> int:
        """Training steps between two list rebuilds for minibatches of ``batch`` points:
        ``refresh_every``, by default two epochs (lists within about 0.02 of the
        responsibility mass of rebuilding every epoch, at half the cost:
        ``benchmarks/gae_refresh.py``); 0: never after the first step."""
        if self.refresh_every is not None:
            return self.refresh_every
        return 2 * math.ceil(self.prior.num_exemplars / max(batch, 1))

    @torch.no_grad()
    def _maybe_refresh(self, batch: int) -> None:
        """Build the cache and lists at the first step; rebuild the lists every
        :meth:`rebuild_period` steps (and sooner in the fast-moving start)."""
        bank, steps = self.bank, int(self.bank.steps)
        every = self.rebuild_period(batch)
        if not bool(bank.listed):
            self.refresh_cache()
            self.rebuild_neighbours()
            self._last_refresh = steps
        elif every and steps != self._last_refresh and (
                steps % every == 0 or (steps < every and steps in (every // 8, every // 4, every // 2))):
            self.rebuild_neighbours()
            self._last_refresh = steps

    @torch.no_grad()
    def write_back(self, index: torch.Tensor, loc_x: torch.Tensor, scale_x: torch.Tensor,
                    pool: ExemplarPool, deferred: bool) -> None:
        """Write the step's fresh statistics back, clear the deferred gradients just
        applied (``deferred``), and improve the minibatch's neighbour lists.

        Under several processes every rank writes the whole global batch's rows (its
        own and, gathered, the others'), so every rank's cache holds all ``n`` training
        points, kept as fresh as in one process and the same on all.
        """
        z_dim = self.prior.z_dim
        fresh = [(index, loc_x, scale_x)] + ([self._fresh_near] if self._fresh_near is not None else [])
        self._fresh_near = None
        if not distributed.is_active():  # alone: nothing to gather, write straight away
            for rows, loc, scale in fresh:
                self.bank.write(rows, loc.reshape(-1, z_dim), scale.reshape(-1, z_dim))
            self._after_write(index, index, pool, deferred)
            return
        rows = torch.cat([r for r, _, _ in fresh])
        stats = torch.cat([torch.cat([loc.reshape(-1, z_dim), scale.reshape(-1, z_dim)], -1)
                           for _, loc, scale in fresh])
        is_batch = stats.new_zeros(len(rows), 1)
        is_batch[: len(index)] = 1.0
        rows, packed = distributed.all_gather_indexed(rows, torch.cat([is_batch, stats], -1))
        is_batch, stats = packed[:, :1], packed[:, 1:]
        batch = is_batch[:, 0] > 0
        for part in (batch, ~batch):  # the minibatch first, then the re-encoded neighbours
            if bool(part.any()):
                self.bank.write(rows[part], *stats[part].split(z_dim, -1))
        self._after_write(index, rows[batch], pool, deferred)

    def _after_write(self, index: torch.Tensor, global_index: torch.Tensor, pool: ExemplarPool,
                     deferred: bool) -> None:
        """Clear the deferred gradients just applied, count the step, improve the lists."""
        if deferred:
            for t in self.bank.deferred_tables:
                t.index_fill_(0, global_index, 0.0)
        self.bank.steps += 1
        if self.improve and pool.near is not None and pool.explore is not None:
            # candidates: the global batch and this rank's random exemplars
            explore = torch.cat([global_index, pool.explore[len(index):]])
            lists = self.bank.improved_neighbours(index, explore, self._ranking_bandwidth())
            mine, lists = distributed.all_gather_indexed(index, lists)
            self.bank.neighbours[mine] = lists

    # ------------------------------------------------------------------ diagnostics

    @torch.no_grad()
    def prior_estimate_error(self, index: torch.Tensor, num_draws: int = 1) -> dict[str, float]:
        r"""How well the estimator's prior matches the exact leave-one-out one.

        For training rows ``index`` and ``z ~ q(z|x_i)``: the mean and max absolute error
        of ``log P̂_i(z)`` (the pool the estimator builds, with the cache as it is now)
        against the exact ``log P_{−i}(z)`` (all ``n`` components encoded with the current
        parameters), and (``"knn"``) the exact responsibility mass ``Σ_{j∈N_i} r_ij`` the
        neighbour lists cover. Leaves the cache as it was.
        """
        index = self.prior.check_index(index, len(index), None)
        loc_x, scale_x = self.encoder(self.prior.exemplars[index])
        draws = []
        for _ in range(num_draws):
            z = loc_x + scale_x * torch.randn_like(loc_x)
            pool = self.make_pool(index)
            stats = self.pool_stats(pool, loc_x, scale_x)
            draws.append((z, (stats.log_prob_table(z) + pool.logits).logsumexp(-1)))
        errors, coverage = [], []
        lists = self.bank.neighbours[index] if self.bank.num_neighbours else None
        with self.prior.frozen():
            loc, scale = self.prior.exact_components()
            for z, approx in draws:
                exact = self.prior.log_prob(z, index)
                errors.append((approx - exact).abs())
                if lists is not None:
                    table = log_prob_matrix(z, loc, scale).gather(1, lists) - math.log(self.prior.num_exemplars - 1)
                    coverage.append((table.logsumexp(-1) - exact).exp())
        err = torch.cat(errors)
        out = {"mean_abs_error": err.mean().item(), "max_abs_error": err.max().item()}
        if coverage:
            out["neighbour_mass"] = torch.cat(coverage).mean().item()
        return out


def _grad(t: torch.Tensor) -> torch.Tensor:
    return t.grad if t.grad is not None else torch.zeros_like(t)


def _splice(features: tuple[torch.Tensor, torch.Tensor], positions: torch.Tensor,
            new: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return features[0].index_copy(0, positions, new[0]), features[1].index_copy(0, positions, new[1])
