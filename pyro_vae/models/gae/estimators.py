r"""How a training step forms the GAE's prior: which components it enumerates, with what
weights. Small strategy objects, each ``make_pool(index, bank) -> ExemplarPool``:

* :class:`Exact`: all ``n`` components, freshly encoded with gradients (the definition;
  for small data sets and tests).
* :class:`Random`: ``tail`` exemplars drawn uniformly per step, freshly encoded, uniform
  weights (the Exemplar VAE's random-subset estimator; biased, for comparison).
* :class:`KNN` (default): a **stratified** estimator over the training objective's cache
  of all ``n`` encoder statistics. For training point ``i`` the ``n − 1`` other components
  split into its ``K`` listed neighbours ``N_i`` (scored exactly, weight ``1/(n−1)`` each)
  and the rest ``T_i``, whose mass ``|T_i|/(n−1)`` is spread uniformly over a random
  sample ``S_i`` of it (the rest of the shuffled minibatch and ``tail`` uniformly drawn
  exemplars, minus ``N_i ∪ {i}``)::

      P̂_i(z) = (1/(n−1)) Σ_{j∈N_i} q_j(z) + (|T_i|/(n−1)) · mean_{j∈S_i} q_j(z)

  ``E[P̂_i(z)] = P_{−i}(z)`` whatever the lists (a uniform sample's mean is unbiased for
  the tail's mean), so every training point's component takes part, with probability
  one through ``N_i`` or at random through ``S_i``; good lists only lower the variance.
  ``y`` is enumerated over ``K`` per-point slots (each point's own list) followed by the
  shared sample, with per-point weights as the Categorical's logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from pyro.distributions import TorchDistribution, constraints

from pyro_vae.models.gae.cache import ExemplarBank
from pyro_vae.models.gae.distribution import ExemplarNormal
from pyro_vae.models.gae.kernels import take

ESTIMATORS = ("knn", "exact", "random")
#: Random exemplars (besides the minibatch) offered to each step's neighbour-list update.
EXPLORE = 100


@dataclass
class ExemplarPool:
    """The components one training call enumerates, and each row's weights over them.

    ``y`` ranges over ``K`` per-row components (``near (B, K)``: training-set positions,
    e.g. each point's neighbour list; ``K = 0`` when ``near`` is None) followed by ``P``
    shared ones (``rows (P,)``). ``logits (B, K + P)``: row ``b``'s log prior weight of each
    (``−inf`` outside its support), each row normalised. Re-encoded with gradients: the
    ``near_fresh`` leading near columns, the shared positions ``fresh``, and the
    minibatch's own rows at shared positions ``batch_pos`` (from the guide's pass).
    """

    rows: torch.Tensor
    logits: torch.Tensor
    near: Optional[torch.Tensor] = None
    near_fresh: int = 0
    batch_pos: Optional[torch.Tensor] = None
    fresh: Optional[torch.Tensor] = None
    explore: Optional[torch.Tensor] = None  # candidates for the neighbour-list update

    @property
    def num_near(self) -> int:
        return 0 if self.near is None else self.near.shape[1]


@dataclass
class PoolStats:
    """A pool's components as kernel features: shared ``(w (P, 2D), c (P,))`` and per-row
    ``(w (B, K, 2D), c (B, K))`` (:func:`~pyro_vae.models.gae.kernels.component_features`)."""

    features: tuple[torch.Tensor, torch.Tensor]
    near_features: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def distribution(self, y: torch.Tensor, support: Optional[torch.Tensor] = None) -> ExemplarNormal:
        return ExemplarNormal(None, None, y, features=self.features, row_features=self.near_features,
                              support=support)

    def log_prob_table(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., B, K + P)``: ``log k_j(z_b)`` for every component of the pool, for one
        or several ``z (..., B, D)`` per row."""
        d = self.distribution(torch.zeros(z.shape[-2], dtype=torch.long, device=z.device))
        return d._outer(z, torch.arange(d.support_size, device=z.device))


class PoolMixture(TorchDistribution):
    r"""``z ~ Σ_q π_bq k_q(z)``: a training pool's mixture, ``y`` summed out, row by row.

    ``logits (B, Q)`` are the pool's per-row log-weights ``log π_bq`` (−inf outside a row's
    support: its own component under leave-one-out), ``stats`` its components
    (:class:`PoolStats`). ``log_prob(z)`` for ``z (..., R, D)`` with ``R = c·B`` (rows
    ``r·B + b`` are copies of row ``b``: particles or MCMC chains stacked on the batch) is
    ``logsumexp_q(log k_q(z_rb) + log π_bq)``, ``(..., R)``: one table of kernel values
    (:meth:`PoolStats.log_prob_table`), differentiable in ``z`` and in the components.

    With the ``exact`` estimator this is ``log P_{−b}(z)`` itself; with ``knn`` it is
    ``log P̂_b(z)`` of the stratified estimator, whose *density* is unbiased,
    ``E P̂_b(z) = P_{−b}(z)`` (the module docstring), so its log is biased low.
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, logits: torch.Tensor, stats: PoolStats, batch_shape=None, validate_args=None):
        self.logits, self.stats = logits, stats
        dim = stats.features[0].shape[-1] // 2
        shape = torch.Size(batch_shape) if batch_shape is not None else logits.shape[:1]
        if shape[-1] % logits.shape[0]:
            raise ValueError(f"{shape[-1]} rows are not copies of the pool's {logits.shape[0]} rows")
        super().__init__(shape, torch.Size([dim]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return PoolMixture(self.logits, self.stats, batch_shape)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """``(..., c·B, *tail) -> (..., c, B, *tail)``, ``tail`` the event dims."""
        b = self.logits.shape[0]
        lead = t.shape[:-2]
        return t.reshape(lead + (t.shape[-2] // b, b, t.shape[-1]))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        table = self.stats.log_prob_table(self._split(value))  # (..., c, B, Q)
        lp = torch.logsumexp(table + self.logits, -1).reshape(value.shape[:-1])
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        b = self.logits.shape[0]
        logits = self.logits.expand(shape[:-1] + (shape[-1] // b,) + self.logits.shape)
        y = torch.distributions.Categorical(logits=logits).sample()  # (..., c, B)
        return self.stats.distribution(y).rsample().reshape(shape + self.event_shape)


def uniform_logits(rows: torch.Tensor, index: torch.Tensor, leave_one_out: bool) -> torch.Tensor:
    """Uniform weights over the pool ``rows``, minus each row's own component under leave-one-out."""
    logits = torch.zeros(len(index), len(rows), device=rows.device)
    if leave_one_out:
        logits = logits.masked_fill(rows.unsqueeze(0) == index.unsqueeze(1), -math.inf)
    if bool(torch.isinf(logits).all(-1).any()):
        raise ValueError("a training point's pool holds only its own component: enlarge the pool")
    return logits - logits.logsumexp(-1, keepdim=True)


class Exact:
    """All ``n`` components, freshly encoded with gradients."""

    name = "exact"
    uses_cache = False

    def make_pool(self, index: torch.Tensor, bank: ExemplarBank, leave_one_out: bool) -> ExemplarPool:
        rows = torch.arange(bank.num, device=index.device)
        return ExemplarPool(rows, uniform_logits(rows, index, leave_one_out), batch_pos=index, fresh=rows)


class Random:
    """``tail`` exemplars drawn uniformly per step, freshly encoded, uniform weights."""

    name = "random"
    uses_cache = False

    def __init__(self, tail: int):
        self.tail = tail

    def make_pool(self, index: torch.Tensor, bank: ExemplarBank, leave_one_out: bool) -> ExemplarPool:
        n = bank.num
        rows = torch.randperm(n, device=index.device)[: max(1, min(self.tail, n))].sort().values
        fresh = torch.arange(len(rows), device=index.device)
        return ExemplarPool(rows, uniform_logits(rows, index, leave_one_out), fresh=fresh)


class KNN:
    """Listed neighbours exactly, the rest of the mixture through a uniform sample (the
    module docstring); ``fresh`` nearest neighbours re-encoded with gradients."""

    name = "knn"
    uses_cache = True

    def __init__(self, tail: int, fresh: int = 0):
        self.tail, self.fresh = tail, fresh
        self._slots: Optional[torch.Tensor] = None  # scratch: each exemplar's column in the pool, -1 if none

    def make_pool(self, index: torch.Tensor, bank: ExemplarBank, leave_one_out: bool) -> ExemplarPool:
        n, batch, device = bank.num, len(index), index.device
        lists = take(bank.neighbours, index)  # (B, K): distinct, never the point itself
        k = lists.shape[1]
        sample = torch.arange(n, device=device) if self.tail >= n else torch.randint(0, n, (self.tail,), device=device)
        rows = torch.unique(torch.cat([index, sample]))  # sorted
        size = len(rows)
        slots = self._slot_table(n, device)
        slots[rows] = torch.arange(size, device=device)
        batch_pos, pos = slots[index], slots[lists]  # shared columns of the rows and of the listed
        slots[rows] = -1
        # the shared columns that are a point's own or in its list (counted in its near
        # stratum) are not its tail: the rest of the shared columns are a uniform sample of it
        tail = torch.ones(batch, size + 1, dtype=torch.bool, device=device)
        tail.scatter_(1, torch.where(pos < 0, size, pos), False)
        tail[torch.arange(batch, device=device), batch_pos] = False
        tail = tail[:, :size]
        others = n - 1 if leave_one_out else n
        num_near = k + (not leave_one_out)  # without leave-one-out the own component joins
        num_tail = tail.sum(-1, keepdim=True).float()
        tail_mass = (others - num_near) / others
        # with no tail sample (tiny n) the near stratum takes all the mass
        near_w = torch.where(num_tail > 0, 1.0 / others, 1.0 / max(num_near, 1))
        shared = (tail_mass / num_tail.clamp(min=1)).log().expand(batch, size).masked_fill(~tail, -math.inf)
        if not leave_one_out:
            own = torch.zeros(batch, size, dtype=torch.bool, device=device)
            own[torch.arange(batch, device=device), batch_pos] = True
            shared = torch.where(own, near_w.log(), shared)
        logits = torch.cat([near_w.log().expand(batch, k), shared], -1)
        explore = torch.cat([index, sample[:EXPLORE]])
        return ExemplarPool(rows, logits, near=lists, near_fresh=min(self.fresh, k), batch_pos=batch_pos,
                            explore=explore)

    def _slot_table(self, n: int, device: torch.device) -> torch.Tensor:
        if self._slots is None or len(self._slots) != n or self._slots.device != device:
            self._slots = torch.full((n,), -1, dtype=torch.long, device=device)
        return self._slots


def make_estimator(name: str, tail: int = 300, fresh: int = 0):
    """The estimator called ``name`` (one of :data:`ESTIMATORS`)."""
    if name == "exact":
        return Exact()
    if name == "random":
        return Random(tail)
    if name == "knn":
        return KNN(tail, fresh)
    raise ValueError(f"unknown exemplar estimator {name!r}: choose one of {list(ESTIMATORS)}")
