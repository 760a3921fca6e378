r"""The GAE of Kim, Kim & Hwang (2018): a VAE whose prior is the mixture of its own posteriors.

The VAE fixes ``p(z) = N(0, I)``. The GAE instead lets the marginal of ``z`` be the
encoder's posteriors averaged over the ``n`` training points ("exemplars")::

    P(z; φ)    = (1/n) Σ_j q_φ(z | x_j),        q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²)
    P(x; θ, φ) = (1/n) Σ_j ∫ p_θ(x|z) q_φ(z|x_j) dz

As a Pyro model, for each data point::

    y ~ Categorical(1/n, ..., 1/n)        the data index: which exemplar generated it
    z ~ q_φ(z | x_y)                      the exemplar's posterior (the guide's encoder)
    x ~ p_θ(x | z)                        the VAE's decoder

``y`` is a discrete latent marked ``infer={"enumerate": "parallel"}``: ``TraceEnum_ELBO``
sums it out exactly, so the ELBO of a point is
``E_{q(z|x)}[log p(x|z) + log P(z) − log q(z|x)]`` with ``log P(z)`` a log-sum-exp over
components. The guide is the VAE's amortized ``q_φ(z|x)`` (``[inference] elbo = "auto"``
picks ``TraceEnum_ELBO`` because ``has_enumerated_latents`` is true): training a GAE is
``[model] name = "gae"`` in a VAE config.

**Leave-one-out.** A training point's own component ``q_φ(z|x_i)`` is excluded from its
prior (the index ``y`` ranges over the other ``n − 1`` points), else the prior can put a
spike on each training point and the model memorises; this is what the Exemplar VAE
(Norouzi et al. 2020) does. Held-out points use the mixture over all ``n``.

**The regulariser.** Training maximises ``Σ_i [ELBO(x_i) − R(x_i)]`` with, for the point's
posterior ``N(μ(x_i), diag σ(x_i)²)`` and its ``d`` latent dimensions,

.. math::

    R(x, φ, λ_1, λ_2) = λ_1 Σ_d μ_d(x)^2 − λ_2 Σ_d \bigl(1 + \log σ_d(x)^2 − σ_d(x)^2\bigr),

both terms ``≥ 0``: the first penalises means far from the origin, the second variances
far from 1 (``1 + log s − s ≤ 0`` with equality at ``s = 1``). With ``λ_1 = λ_2 = ½``,
``−R`` is exactly ``−KL(q(z|x) ‖ N(0, I))``, the VAE's own KL term, which motivates the
form. It enters the model as ``pyro.factor("regulariser", −R)`` inside the data plate
(scaled with the likelihood by ``n / batch``), on training calls only (``index`` given),
so held-out ELBOs and log-likelihoods stay bounds on ``log P(x)``. Why it is needed:
the GAE objective alone is invariant to any invertible affine map of the latent space
(the components, the posteriors and the decoder's first layer absorb it), so nothing
fixes the latent scale and it drifts during training (posterior scales of 6 to 20 after
a few epochs on MNIST without it). With ``λ_1 = λ_2 = λ`` the penalty of a global scale
``c`` is minimised where the aggregate posterior has ``E[μ_d² + σ_d²] ≈ 1`` per
dimension, as under a ``N(0, I)`` prior, whatever ``λ``; a small ``λ`` (default 0.05)
pins the scale while costing little of the objective.

**The EM view.** The authors treat ``y`` and ``z`` as latents and fit by EM. With
``r_ij = p(y = j | z_i)`` (the responsibilities), Fisher's identity
``∇ log Σ_j p_j q_j(z) = Σ_j r_ij ∇ log q_j(z)`` makes the gradient of the enumerated
ELBO *equal* to the EM M-step gradient with responsibilities recomputed at the current
parameters: plain enumeration is EM with one gradient M-step per (exact, per-sample)
E-step. :func:`fit_em` implements the other reading: an E-step that computes
``r_i(y) = E_{z∼q(z|x_i)} p(y | z, x_i)`` with Pyro's discrete inference
(``TraceEnum_ELBO.compute_marginals``), held fixed for ``m_steps`` gradient steps on
``Q = E_q[Σ_j r_ij log(p_j q_j(z)) + log p(x|z) − log q(z|x)]``. By Jensen,
``Q + H(r_i) ≤`` the enumerated ELBO, with equality only when ``p(y | z)`` does not vary
with ``z`` under ``q``, so EM climbs a looser bound; the two agree in the limit of
narrow posteriors. :meth:`GAE.responsibilities` returns ``q(y | x)`` over the training
points for any batch.

**Scale: the estimator.** Enumerating all ``n`` components with gradients costs ``n``
encoder passes per step. ``estimator`` chooses how training calls form the prior:

* ``"exact"``: all ``n`` components, freshly encoded with gradients (the definition;
  for small data sets and tests).
* ``"random"``: ``tail`` exemplars drawn uniformly per step, freshly encoded, uniform
  weights (the Exemplar VAE's random-subset estimator; biased, for comparison).
* ``"knn"`` (default): a **stratified** estimator over a cache of all ``n`` encoder
  statistics. For training point ``i`` the ``n − 1`` other components split into its
  ``K`` listed neighbours ``N_i`` (scored exactly, weight ``1/(n−1)`` each) and the rest
  ``T_i``, whose mass ``|T_i|/(n−1)`` is spread uniformly over a random sample ``S_i`` of
  it (the rest of the shuffled minibatch and ``tail`` uniformly drawn exemplars, minus
  ``N_i ∪ {i}``)::

      P̂_i(z) = (1/(n−1)) Σ_{j∈N_i} q_j(z) + (|T_i|/(n−1)) · mean_{j∈S_i} q_j(z)

  ``E[P̂_i(z)] = P_{−i}(z)`` whatever the lists (a uniform sample's mean is unbiased for
  the tail's mean), so every training point's component takes part, with probability
  one through ``N_i`` or at random through ``S_i``; good lists only lower the variance
  (:meth:`GAE.prior_estimate_error` measures the error against the exact prior and the
  responsibility mass the lists hold). ``y`` is enumerated over ``K`` per-point slots
  (each point's own list) followed by the shared sample, with per-point weights as the
  Categorical's logits, and every log-density comes from one blocked matrix product of
  quadratic features (:mod:`pyro_vae.models.exemplars`).

  *Cache.* Statistics of the minibatch itself are the guide's own encoder pass (reused,
  with gradients) and are written back after the step, so a cached entry is at most
  one epoch old; any evaluation that re-encodes all ``n`` refreshes the whole cache.
  *Lists* are built at the first training call and rebuilt from the cache every
  ``refresh_every`` calls (default: every two epochs) by a clustered search (k-means
  cells over the cached means, exact search among a few nearby cells; exact all-pairs
  up to ``EXACT_SEARCH`` exemplars), ranked by the closed-form expected log-density
  ``E_{q(z|x_i)} log q_j(z)``. *Gradients w.r.t. cached components* are not dropped:
  they are accumulated per exemplar (``bank.deferred_tables``) and applied
  through the encoder when that exemplar is next in a minibatch (a zero-valued factor
  whose gradient is exactly the deferred one), so the component gradient
  ``Σ_j r_ij ∇_φ log q_φ(z_i|x_j)`` reaches every component in the pool, at most one
  epoch late; ``fresh`` optionally re-encodes each point's nearest listed neighbours
  with gradients at once. The model does all this itself, counting its training calls:
  the training loop needs no hook. Under data-parallel training
  (:mod:`pyro_vae.distributed`) the cache writes, list updates and deferred gradients
  are gathered from every process, so all processes hold the same cache of all ``n``
  points.

**Bandwidth.** With ``bandwidth="shared"`` the components are ``N(μ_φ(x_j), diag s²)``
with ``s ∈ R^D`` one learned scale per latent dimension shared by every exemplar: the
Parzen-window prior of the Exemplar VAE (Norouzi et al. 2020, there isotropic), whose
bandwidth is fitted, leave-one-out, by the training objective itself rather than set by
each posterior's width. The posteriors ``q_φ(z|x)`` (the guide, the regulariser) keep their
own ``σ_φ(x)``; only the prior's components change, so every estimator, the exact
evaluation and generation apply unchanged (``z ~ N(μ_φ(x_y), diag s²)``). The cache keeps
the posteriors; neighbour lists rank by the components: by distance between the means in
units of ``s``.

Evaluation (held-out ELBO, :meth:`GAE.log_likelihood`, sampling) always uses the exact
mixture over all ``n`` components, re-encoded with the current parameters whenever
they changed.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, infer_discrete
from torch import nn
from tqdm.auto import tqdm

from pyro_vae import distributed
from pyro_vae.evaluation.marginal_likelihood import LogLikelihood, _check_args
from pyro_vae.models.exemplars import (
    MAX_ELEMENTS,
    ExemplarBank,
    ExemplarNormal,
    component_features,
    log_mixture,
    log_prob_matrix,
    take,
)
from pyro_vae.models.vae import VAE, _batch_size
from pyro_vae.plates import data_plate, register_module

ESTIMATORS = ("knn", "exact", "random")
BANDWIDTHS = ("posterior", "shared")
#: Random exemplars (besides the minibatch) offered to each step's neighbour-list update.
EXPLORE = 100

__all__ = ["BANDWIDTHS", "ESTIMATORS", "GAE", "SharedBandwidth", "fit_em"]


class SharedBandwidth(nn.Module):
    """``s = exp(log_scale)``, ``(z_dim,)``: one learned scale per latent dimension, shared
    by every component of the prior (the Exemplar VAE's Parzen-window bandwidth)."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, loc: torch.Tensor) -> torch.Tensor:
        return self.scale.expand_as(loc)


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
    ``(w (B, K, 2D), c (B, K))`` (:func:`~pyro_vae.models.exemplars.component_features`)."""

    features: tuple[torch.Tensor, torch.Tensor]
    near_features: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def distribution(self, y: torch.Tensor, support: Optional[torch.Tensor] = None) -> ExemplarNormal:
        return ExemplarNormal(None, None, y, features=self.features, row_features=self.near_features,
                              support=support)

    def log_prob_table(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, K + P)``: ``log q_j(z_b)`` for every component of the pool."""
        d = self.distribution(torch.zeros(len(z), dtype=torch.long))
        return d._outer(z, torch.arange(d.support_size))


class GAE(VAE):
    """The GAE: a VAE whose prior is the mixture of its posteriors over the training set.

    Args:
        exemplars: ``(n, x_dim)`` training points ``x_j`` whose posteriors make the prior
            (row ``j`` is the data index ``y = j`` and the minibatch ``index`` refers to it).
        z_dim, hidden, activation, likelihood, guide: as for :class:`~pyro_vae.models.VAE`.
        lambda1, lambda2: weights of the regulariser ``R`` (module docstring), ``>= 0``.
        estimator: ``"knn"``, ``"exact"`` or ``"random"`` (module docstring).
        neighbours: ``K``, listed neighbours per training point (``"knn"``).
        tail: random exemplars per step (``"knn"``: the tail sample; ``"random"``: the subset).
        fresh: nearest neighbours per point re-encoded with gradients (``"knn"``).
        refresh_every: neighbour lists rebuilt (clustered search over the cache) every
            this many training calls, and after 1/8, 1/4 and 1/2 of the first period;
            None: every two epochs (``2 n / batch`` calls); 0: only at the first call.
        improve: also improve the minibatch's lists at every step (NN-descent style).
        leave_one_out: exclude a training point's own component from its prior.
        max_enumerated: largest ``components × batch`` table a held-out call enumerates
            per exemplar; beyond it ``y`` enumerates groups of consecutive exemplars, each
            scored as the exact mixture of its members.
        deferred: (``"knn"``) keep the loss gradients w.r.t. cached components and apply
            them through the encoder when their exemplars are next in a minibatch.
        bandwidth: the components' scales: ``"posterior"`` (the GAE: each exemplar's own
            ``σ_φ(x_j)``) or ``"shared"`` (one learned scale per dimension for all, the
            Exemplar VAE's; module docstring).
    """

    has_enumerated_latents = True

    def __init__(
        self,
        exemplars: torch.Tensor,
        z_dim: int = 20,
        hidden: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        guide: Optional[nn.Module] = None,
        lambda1: float = 0.05,
        lambda2: float = 0.05,
        estimator: str = "knn",
        neighbours: int = 32,
        tail: int = 300,
        fresh: int = 0,
        refresh_every: Optional[int] = None,
        leave_one_out: bool = True,
        max_enumerated: int = MAX_ELEMENTS,
        deferred: bool = True,
        improve: bool = False,
        bandwidth: str = "posterior",
    ):
        if not torch.is_tensor(exemplars) or exemplars.dim() != 2:
            shape = tuple(exemplars.shape) if torch.is_tensor(exemplars) else type(exemplars).__name__
            raise ValueError(f"exemplars must be an (n, x_dim) tensor of training points, got {shape}")
        n = exemplars.shape[0]
        if n < 1 + leave_one_out:
            raise ValueError(
                f"the GAE's prior is a mixture over the training set, which has {n} point(s): "
                f"give at least {1 + leave_one_out}" + (" (leave-one-out excludes each point's own)" if leave_one_out else "")
            )
        for name, lam in (("lambda1", lambda1), ("lambda2", lambda2)):
            if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (a penalty weight), got {lam!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown exemplar estimator {estimator!r}: choose one of {list(ESTIMATORS)}")
        if bandwidth not in BANDWIDTHS:
            raise ValueError(f"unknown exemplar bandwidth {bandwidth!r}: choose one of {list(BANDWIDTHS)}")
        for name, v, low in (("neighbours", neighbours, 0), ("tail", tail, 0), ("fresh", fresh, 0),
                             ("refresh_every", 0 if refresh_every is None else refresh_every, 0),
                             ("max_enumerated", max_enumerated, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        super().__init__(exemplars.shape[1], z_dim, hidden, activation, likelihood, guide)
        if self.guide.encoder.z_dim != z_dim or self.guide.encoder.x_dim != exemplars.shape[1]:
            raise ValueError(
                f"the guide's encoder maps {self.guide.encoder.x_dim} -> {self.guide.encoder.z_dim} "
                f"but the exemplars have x_dim {exemplars.shape[1]} and z_dim is {z_dim}"
            )
        self.exemplars = exemplars.detach().to(torch.float32)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.estimator = estimator
        self.leave_one_out = leave_one_out
        self.tail, self.fresh, self.refresh_every = tail, fresh, refresh_every
        self.improve = improve
        self.max_enumerated = max_enumerated
        num_neighbours = min(neighbours, n - 1)
        self.bank = ExemplarBank(n, z_dim, num_neighbours, shared_scale=bandwidth == "shared")
        self._fingerprint = None  # encoder parameter versions the bank is exact for
        self._memo = None  # the guide's last encoder pass, reused by the model
        self._pool_override: Optional[ExemplarPool] = None
        self._force_exact = False
        self._last_refresh = -1
        self._fresh_near = None  # (rows, loc, scale) re-encoded by the last pool_stats
        self._pending: list = []  # cached-component leaves of the last step (deferred gradients)
        self.deferred = deferred
        self.bandwidth = SharedBandwidth(z_dim) if bandwidth == "shared" else None
        self.guide.encoder.register_forward_hook(self._remember_encoding)

    # ------------------------------------------------------------------ basics

    @property
    def num_exemplars(self) -> int:
        return self.exemplars.shape[0]

    def components(self, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior components ``(loc, scale)`` of exemplars whose posteriors are
        ``N(loc, diag scale²)``: the posteriors themselves, or with ``bandwidth="shared"``
        ``N(loc, diag s²)``."""
        return (loc, scale) if self.bandwidth is None else (loc, self.bandwidth(loc))

    def _component_features(self, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of :meth:`components` (a shared bandwidth broadcast, not expanded:
        its powers and logarithm are taken once, not once per component)."""
        return component_features(loc, scale if self.bandwidth is None else self.bandwidth.scale)

    def regulariser(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``R`` per point, ``(batch,)``: ``λ1 Σ μ² − λ2 Σ (1 + log σ² − σ²)`` (``>= 0``)."""
        log_var = 2 * scale.log()
        return self.lambda1 * loc.pow(2).sum(-1) - self.lambda2 * (1 + log_var - log_var.exp()).sum(-1)

    @torch.no_grad()
    def _encoder_version(self) -> tuple:
        """A checksum of the encoder's parameters (tensor version counters miss in-place
        updates by fused optimizer kernels, e.g. ``Adam(fused=True)``)."""
        return tuple(float(p.double().sum()) for p in self.guide.encoder.parameters())

    @torch.no_grad()
    def _head_version(self) -> tuple:
        """A cheap checksum (the encoder's output biases): enough to tell two passes of
        one training step from passes on either side of an optimizer step."""
        head = getattr(self.guide.encoder, "head", None)
        try:
            return (id(head), float(head.loc.bias.double().sum()), float(head.log_var.bias.double().sum()))
        except AttributeError:
            return self._encoder_version()

    def _remember_encoding(self, module, inputs, output) -> None:
        self._memo = (inputs[0], output, self._head_version(), torch.is_grad_enabled())

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encoder(x)``, reusing the guide's pass over the same ``x`` in the same step."""
        memo, self._memo = self._memo, None
        if (memo is not None and memo[0] is x and memo[2] == self._head_version()
                and memo[3] == torch.is_grad_enabled()):
            return memo[1]
        return self.guide.encoder(x)

    @torch.no_grad()
    def exemplar_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's ``n`` components ``(μ_j, scale_j)`` under the current encoder,
        ``(n, z_dim)`` each (:meth:`components` of the exemplars' posteriors).

        Re-encodes the training set only when the encoder's parameters changed since the
        last full encoding (and writes the result into the training cache too).
        """
        version = self._encoder_version()
        if self._fingerprint != version or not bool(self.bank.ready):
            self.bank.refresh_stats(self.guide.encoder, self.exemplars)
            self._fingerprint = version
        return self.components(self.bank.loc, self.bank.scale)

    @contextlib.contextmanager
    def exact(self) -> Iterator["GAE"]:
        """Within it, every call enumerates ``y`` over all ``n`` exemplars individually
        (training calls use the ``"exact"`` estimator; held-out calls never group)."""
        saved = self._force_exact
        self._force_exact = True
        try:
            yield self
        finally:
            self._force_exact = saved

    @contextlib.contextmanager
    def using_pool(self, pool: ExemplarPool) -> Iterator["GAE"]:
        """Within it, training calls enumerate over ``pool`` (e.g. fixed across an EM iteration)."""
        saved = self._pool_override
        self._pool_override = pool
        try:
            yield self
        finally:
            self._pool_override = saved

    # ------------------------------------------------------------------ the model

    def model(
        self,
        x: Optional[torch.Tensor] = None,
        index: Optional[torch.Tensor] = None,
        num_data: Optional[int] = None,
    ) -> torch.Tensor:
        """``y ~ U{training points}``, ``z ~ q_φ(z|x_y)``, ``x ~ p_θ(x|z)``.

        * ``x=None``: generates ``num_data`` points (``y`` sampled from the empirical
          distribution over all ``n``).
        * ``index`` given: ``x = exemplars[index]``, a training minibatch of a data set of
          ``num_data = n`` points; leave-one-out prior, regulariser, the ``estimator``.
        * otherwise: held-out points, scored under the exact mixture over all ``n``.
        """
        self._register_modules()
        if x is None:
            return self._generative(_batch_size(x, num_data))
        batch = _batch_size(x, num_data)
        if x.shape[1] != self.x_dim:
            raise ValueError(f"x has {x.shape[1]} columns but the model's x_dim is {self.x_dim}")
        if index is None:
            return self._held_out(x, num_data)
        return self._training(x, self._check_index(index, batch, num_data), num_data)

    def _register_modules(self) -> None:
        register_module("decoder", self.decoder)
        register_module("encoder", self.guide.encoder)
        if self.bandwidth is not None:
            register_module("bandwidth", self.bandwidth)

    def _check_index(self, index, batch: int, num_data: Optional[int]) -> torch.Tensor:
        index = torch.as_tensor(index, dtype=torch.long)
        n = self.num_exemplars
        if index.shape != (batch,):
            raise ValueError(f"index must have shape ({batch},), one position per row of x; got {tuple(index.shape)}")
        if num_data is not None and num_data != n:
            raise ValueError(
                f"index refers to the GAE's training set of {n} points, but num_data = {num_data}; "
                "held-out data are scored without an index"
            )
        if batch and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ValueError(f"index values must lie in [0, {n}), the training set's positions")
        return index

    def _generative(self, num: int) -> torch.Tensor:
        loc, scale = self.exemplar_stats()
        logits = torch.full((self.num_exemplars,), -math.log(self.num_exemplars))
        with data_plate(num, None, None):
            y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            z = pyro.sample("z", ExemplarNormal(loc, scale, y))
            return pyro.sample("x", self.decoder(z))

    def _held_out(self, x: torch.Tensor, num_data: Optional[int]) -> torch.Tensor:
        loc, scale = self.exemplar_stats()
        n, batch = self.num_exemplars, len(x)
        size = 1 if self._force_exact else max(1, math.ceil(n * batch / self.max_enumerated))
        if size == 1:
            logits, log_w = torch.full((n,), -math.log(n)), None
        else:  # groups of `size` consecutive exemplars, the last one padded
            groups = math.ceil(n / size)
            pad = groups * size - n
            loc = torch.cat([loc, loc.new_zeros(pad, loc.shape[1])])
            scale = torch.cat([scale, scale.new_ones(pad, scale.shape[1])])
            counts = torch.full((groups,), float(size))
            counts[-1] = size - pad
            logits = counts.log() - math.log(n)
            log_w = torch.cat([torch.full((n,), 0.0), torch.full((pad,), -math.inf)])
            log_w = log_w - counts.repeat_interleave(size).log()
        with data_plate(batch, None, num_data):
            y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            z = pyro.sample("z", ExemplarNormal(loc, scale, y, size, log_w))
            return pyro.sample("x", self.decoder(z), obs=x)

    def _training(self, x: torch.Tensor, index: torch.Tensor, num_data: Optional[int]) -> torch.Tensor:
        loc_x, scale_x = self._encode(x)
        knn = self._estimator() == "knn"
        if knn:
            self._collect_deferred()
            self._maybe_refresh(len(index))
        pool = self._pool_override or self.make_pool(index)
        stats = self.pool_stats(pool, loc_x, scale_x)
        deferred = knn and self.deferred and torch.is_grad_enabled()
        if deferred:
            self._apply_deferred(index, loc_x, scale_x)
        with data_plate(len(x), index, num_data):
            y = pyro.sample("y", dist.Categorical(logits=pool.logits), infer={"enumerate": "parallel"})
            z = pyro.sample("z", stats.distribution(y, torch.isfinite(pool.logits)))
            out = pyro.sample("x", self.decoder(z), obs=x)
            if self.lambda1 or self.lambda2:
                pyro.factor("regulariser", -self.regulariser(loc_x, scale_x))
        if knn:
            self._after_step(index, loc_x, scale_x, pool, deferred)
        return out

    def state_dict(self, *args, **kwargs):
        """The module's state, with the last step's deferred gradients collected first
        (so that a checkpoint written after a step resumes exactly)."""
        self._collect_deferred()
        return super().state_dict(*args, **kwargs)

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

    def _cached_features(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of the cached components of exemplars ``rows``, whose gradients
        are kept for later (deferred) when training with the ``"knn"`` estimator: w.r.t.
        the cached features, or with a shared bandwidth w.r.t. the cached means (``s`` is
        live: the features are formed from the means and the current ``s``, which gets its
        gradient at once; the means carry half the numbers the features do)."""
        leaves = (take(self.bank.w, rows), take(self.bank.c, rows)) if self.bandwidth is None \
            else (take(self.bank.loc, rows),)
        if self.deferred and torch.is_grad_enabled() and self._estimator() == "knn":
            for leaf in leaves:
                leaf.requires_grad_(True)
            self._pending.append((rows, leaves, distributed.grad_weight()))
        return leaves if self.bandwidth is None else component_features(leaves[0], self.bandwidth.scale)

    def _apply_deferred(self, index: torch.Tensor, loc_x: torch.Tensor, scale_x: torch.Tensor) -> None:
        r"""Route the gradients accumulated for the minibatch's cached components through
        its fresh encoder pass: a zero-valued factor ``−(S − S̄)`` with
        ``S = Σ_b ⟨∂L/∂w_b, w(μ_φ(x_b), σ_φ(x_b))⟩`` (with a shared bandwidth
        ``Σ_b ⟨∂L/∂μ_b, μ_φ(x_b)⟩``) adds exactly them to the loss gradient. (Divided by
        this rank's gradient weight, which the gradient sync multiplies back: the bank's
        sums are global already.) :meth:`_after_step` clears them."""
        grads = [take(t, index) for t in self.bank.deferred_tables]
        if not any(bool(g.any()) for g in grads):
            return
        fresh = component_features(loc_x, scale_x) if self.bandwidth is None else (loc_x,)
        surrogate = sum((g * f).sum() for g, f in zip(grads, fresh)) / distributed.grad_weight()
        pyro.factor("deferred_gradient", surrogate.detach() - surrogate)

    def _estimator(self) -> str:
        return "exact" if self._force_exact else self.estimator

    # ------------------------------------------------------------------ pools

    def make_pool(self, index: torch.Tensor) -> ExemplarPool:
        """The components and per-row weights a training call on rows ``index`` uses."""
        index = torch.as_tensor(index, dtype=torch.long)
        return {"exact": self._exact_pool, "random": self._random_pool,
                "knn": self._knn_pool}[self._estimator()](index)

    def _uniform_logits(self, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Uniform weights over the pool, minus each row's own component under leave-one-out."""
        logits = torch.zeros(len(index), len(rows))
        if self.leave_one_out:
            logits = logits.masked_fill(rows.unsqueeze(0) == index.unsqueeze(1), -math.inf)
        if bool(torch.isinf(logits).all(-1).any()):
            raise ValueError("a training point's pool holds only its own component: enlarge the pool")
        return logits - logits.logsumexp(-1, keepdim=True)

    def _exact_pool(self, index: torch.Tensor) -> ExemplarPool:
        rows = torch.arange(self.num_exemplars)
        return ExemplarPool(rows, self._uniform_logits(rows, index), batch_pos=index, fresh=rows)

    def _random_pool(self, index: torch.Tensor) -> ExemplarPool:
        n = self.num_exemplars
        rows = torch.randperm(n)[: max(1, min(self.tail, n))].sort().values
        return ExemplarPool(rows, self._uniform_logits(rows, index), fresh=torch.arange(len(rows)))

    def _knn_pool(self, index: torch.Tensor) -> ExemplarPool:
        n, batch = self.num_exemplars, len(index)
        if not bool(self.bank.listed):
            self._maybe_refresh(len(index))
        lists = take(self.bank.neighbours, index)  # (B, K): distinct, never the point itself
        k = lists.shape[1]
        sample = torch.arange(n) if self.tail >= n else torch.randint(0, n, (self.tail,))
        rows = torch.unique(torch.cat([index, sample]))  # sorted
        size = len(rows)
        batch_pos = torch.searchsorted(rows, index)
        # shared rows that are in a point's list already count in its near stratum
        pos = torch.searchsorted(rows, lists).clamp(max=size - 1)
        pos = torch.where(rows[pos] == lists, pos, size)
        listed = torch.zeros(batch, size + 1, dtype=torch.bool).scatter_(1, pos, True)[:, :size]
        own = torch.zeros(batch, size, dtype=torch.bool)
        own[torch.arange(batch), batch_pos] = True
        tail = ~listed & ~own  # the rest of the shared rows: a uniform sample of the tail
        others = n - 1 if self.leave_one_out else n
        num_near = k + (not self.leave_one_out)  # without leave-one-out the own component joins
        num_tail = tail.sum(-1, keepdim=True).float()
        tail_mass = (others - num_near) / others
        # with no tail sample (tiny n) the near stratum takes all the mass
        near_w = torch.where(num_tail > 0, torch.tensor(1.0 / others), torch.tensor(1.0 / max(num_near, 1)))
        tail_w = tail_mass / num_tail.clamp(min=1)
        shared = torch.where(tail, tail_w.log(), torch.tensor(-math.inf))
        if not self.leave_one_out:
            shared = torch.where(own, near_w.log(), shared)
        logits = torch.cat([near_w.log().expand(batch, k), shared], -1)
        explore = torch.cat([index, sample[:EXPLORE]])
        return ExemplarPool(rows, logits, near=lists, near_fresh=min(self.fresh, k), batch_pos=batch_pos,
                            explore=explore)

    def pool_stats(self, pool: ExemplarPool, loc_x: Optional[torch.Tensor] = None,
                   scale_x: Optional[torch.Tensor] = None) -> PoolStats:
        """The pool's components: cached, except the fresh ones (re-encoded with gradients)
        and the minibatch's own rows (``loc_x, scale_x``, the guide's pass). Without
        gradients, an all-fresh pool reads the exact :meth:`exemplar_stats`."""
        rows, fresh, bank = pool.rows, pool.fresh, self.bank
        all_fresh = fresh is not None and len(fresh) == len(rows)
        if not bool(bank.ready) or (all_fresh and not torch.is_grad_enabled()):
            self.exemplar_stats()
        if all_fresh and torch.is_grad_enabled():
            features = self._component_features(*self.guide.encoder(take(self.exemplars, rows)))
        else:
            features = self._cached_features(rows)
            if fresh is not None and len(fresh) and not all_fresh:
                new = self._component_features(*self.guide.encoder(take(self.exemplars, rows[fresh])))
                features = _splice(features, fresh, new)
        if pool.batch_pos is not None and loc_x is not None:
            features = _splice(features, pool.batch_pos, self._component_features(loc_x, scale_x))
        stats = PoolStats(features)
        if pool.near is not None:
            w, c = self._cached_features(pool.near)
            f = pool.near_fresh
            if f:
                f_loc, f_scale = self.guide.encoder(take(self.exemplars, pool.near[:, :f]).view(-1, self.x_dim))
                f_w, f_c = self._component_features(f_loc.view(-1, f, self.z_dim), f_scale.view(-1, f, self.z_dim))
                w, c = torch.cat([f_w, w[:, f:]], 1), torch.cat([f_c, c[:, f:]], 1)
                self._fresh_near = (pool.near[:, :f].reshape(-1), f_loc, f_scale)
            stats.near_features = (w, c)
        return stats

    # ------------------------------------------------------------------ the cache

    def rebuild_period(self, batch: int) -> int:
        """Training calls between two list rebuilds for minibatches of ``batch`` points:
        ``refresh_every``, by default two epochs (lists within about 0.02 of the
        responsibility mass of rebuilding every epoch, at half the cost:
        ``benchmarks/gae_refresh.py``); 0: never after the first call."""
        if self.refresh_every is not None:
            return self.refresh_every
        return 2 * math.ceil(self.num_exemplars / max(batch, 1))

    @torch.no_grad()
    def _maybe_refresh(self, batch: int) -> None:
        """Build the cache and lists at the first training call; rebuild the lists every
        :meth:`rebuild_period` calls."""
        bank, steps = self.bank, int(self.bank.steps)
        every = self.rebuild_period(batch)
        if not bool(bank.listed):
            self.exemplar_stats()
            self.rebuild_neighbours()
            self._last_refresh = steps
        elif every and steps != self._last_refresh and (
                steps % every == 0 or (steps < every and steps in (every // 8, every // 4, every // 2))):
            self.rebuild_neighbours()  # once per `every` calls, and sooner in the fast-moving start
            self._last_refresh = steps

    @torch.no_grad()
    def _after_step(self, index: torch.Tensor, loc_x: torch.Tensor, scale_x: torch.Tensor,
                    pool: ExemplarPool, deferred: bool) -> None:
        """Write the step's fresh statistics back, clear the deferred gradients just
        applied (``deferred``), and improve the minibatch's neighbour lists.

        Under several processes every rank writes the whole global batch's rows (its
        own and, gathered, the others'), so every rank's cache, and so its prior, holds
        all ``n`` training points, kept as fresh as in one process and the same on all.
        """
        fresh = [(index, loc_x, scale_x)] + ([self._fresh_near] if self._fresh_near is not None else [])
        self._fresh_near = None
        rows = torch.cat([r for r, _, _ in fresh])
        stats_ = torch.cat([torch.cat([loc.reshape(-1, self.z_dim), scale.reshape(-1, self.z_dim)], -1)
                            for _, loc, scale in fresh])
        is_batch = torch.zeros(len(rows), 1)
        is_batch[: len(index)] = 1.0
        rows, packed = distributed.all_gather_indexed(rows, torch.cat([is_batch, stats_], -1))
        is_batch, stats_ = packed[:, :1], packed[:, 1:]
        batch = is_batch[:, 0] > 0
        for part in (batch, ~batch):  # the minibatch first, then the re-encoded neighbours
            if bool(part.any()):
                self.bank.write(rows[part], *stats_[part].split(self.z_dim, -1))
        global_index = rows[batch]
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

    @torch.no_grad()
    def refresh(self, exact: Optional[bool] = None) -> None:
        """Re-encode every exemplar and rebuild all neighbour lists (``exact``: all pairs;
        default: all pairs up to ``EXACT_SEARCH`` exemplars, else the clustered search)."""
        self.bank.refresh_stats(self.guide.encoder, self.exemplars)
        self._fingerprint = self._encoder_version()
        self.rebuild_neighbours(exact)

    @torch.no_grad()
    def rebuild_neighbours(self, exact: Optional[bool] = None) -> None:
        """Rebuild every neighbour list from the cache as it is (see :meth:`refresh`), ranked
        by the prior's components (with a shared bandwidth: distance in units of ``s``)."""
        self.bank.rebuild_neighbours(exact, self._ranking_bandwidth())

    def _ranking_bandwidth(self) -> Optional[torch.Tensor]:
        return None if self.bandwidth is None else self.bandwidth.scale.detach()

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, num_samples: int) -> dict[str, torch.Tensor]:
        """The GAE's three steps, by running its model: ``{"y", "z", "x"}`` for ``num_samples``
        points (``y`` uniform over the training set, ``z ~ q_φ(z|x_y)``, ``x ~ p_θ(x|z)``)."""
        tr = poutine.trace(self.model).get_trace(None, num_data=num_samples)
        return {name: tr.nodes[name]["value"] for name in ("y", "z", "x")}

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """``E[x|z]`` for ``z`` drawn from the GAE prior: ``(num_samples, x_dim)``."""
        return self.decoder.mean(self.generate(num_samples)["z"])

    # ------------------------------------------------------------------ responsibilities

    @torch.no_grad()
    def responsibilities(
        self,
        x: torch.Tensor,
        index: Optional[torch.Tensor] = None,
        num_samples: int = 1,
        weighted: bool = True,
        batch_size: Optional[int] = None,
    ) -> torch.Tensor:
        r"""``q(y | x)``: which training points explain each row of ``x``; ``(batch, n)``.

        For each of ``num_samples`` draws ``z_k ~ q_φ(z|x)`` the exact posterior
        ``p(y | z_k, x) ∝ p(y) q_φ(z_k | x_y)`` comes from Pyro's discrete inference
        (``TraceEnum_ELBO.compute_marginals`` on the model with ``y`` enumerated over all
        ``n`` exemplars); the draws are averaged with self-normalised importance weights
        ``p(x, z_k) / q(z_k|x)`` (``weighted=True``, consistent for ``p(y | x)`` as
        ``num_samples`` grows) or uniformly (the EM E-step's ``E_q p(y|z, x)``). With
        ``index`` (the rows are training points) the leave-one-out prior applies and a
        point never explains itself. Rows sum to 1.
        """
        _check_args(x, num_samples=num_samples)
        if index is not None:
            index = self._check_index(index, len(x), None)
        n = self.num_exemplars
        batch_size = batch_size or max(1, self.max_enumerated // n)
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        out = []
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size]
            ib = None if index is None else index[s : s + batch_size]
            args = (xb, ib, n if ib is not None else None)
            probs, log_w = [], []
            for _ in range(num_samples):
                guide_tr = poutine.trace(self.guide).get_trace(*args)
                with self.exact():
                    marg = elbo.compute_marginals(self.model, poutine.replay(self.guide, trace=guide_tr), *args)
                probs.append(marg["y"].probs.reshape(len(xb), n))
                if weighted and num_samples > 1:
                    log_w.append(self._log_weight(xb, ib, guide_tr))
            if log_w:
                w = torch.stack(log_w).softmax(0).unsqueeze(-1)
                out.append((w * torch.stack(probs)).sum(0))
            else:
                out.append(torch.stack(probs).mean(0))
        return torch.cat(out)

    @torch.no_grad()
    def explain(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, temperature: int = 0,
                z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The data index ``y`` of each row of ``x`` drawn by Pyro's ``infer_discrete``
        from ``p(y | z, x)`` at ``z ~ q_φ(z|x)`` (or the given ``z``): its mode with
        ``temperature=0`` (the training point that best explains the row), a posterior
        sample with ``temperature=1``. ``(batch,)`` positions in the training set."""
        n = self.num_exemplars
        args = (x, None, None) if index is None else (x, self._check_index(index, len(x), None), n)
        if z is None:
            z = poutine.trace(self.guide).get_trace(*args).nodes["z"]["value"]
        with self.exact():
            model = infer_discrete(poutine.condition(self.model, data={"z": z}),
                                   first_available_dim=-2, temperature=temperature)
            return poutine.trace(model).get_trace(*args).nodes["y"]["value"]

    def _log_weight(self, x: torch.Tensor, index: Optional[torch.Tensor], guide_tr) -> torch.Tensor:
        """``log p(x|z) + log P(z) − log q(z|x)`` per row at the guide trace's ``z``."""
        site = guide_tr.nodes["z"]
        z = site["value"]
        log_q = site["fn"].log_prob(z)
        return self.decoder(z).log_prob(x) + self.log_prior(z, index) - log_q

    @torch.no_grad()
    def log_prior(self, z: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log P(z)``, exact over all ``n`` components, for ``z (..., B, z_dim)``; with
        ``index (B,)`` the leave-one-out ``log P_{−i}(z)``. Returns ``z.shape[:-1]``."""
        loc, scale = self.exemplar_stats()
        flat = z.reshape(-1, z.shape[-1])
        n = self.num_exemplars
        if index is None:
            return log_mixture(flat, loc, scale).view(z.shape[:-1])
        exclude = torch.as_tensor(index).expand(z.shape[:-1]).reshape(-1)
        log_w = torch.full((n,), -math.log(n - 1))
        return log_mixture(flat, loc, scale, log_weights=log_w, exclude=exclude).view(z.shape[:-1])

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        num_samples: int = 5000,
        batch_size: int = 100,
        chunk_size: int = 100,
        progress: bool = False,
        index: Optional[torch.Tensor] = None,
    ) -> LogLikelihood:
        r"""Importance-sampled ``log P(x)`` under the GAE prior, for every row of ``x``.

        ``log P(x) ≈ logmeanexp_k [log p(x|z_k) + log P(z_k) − log q(z_k|x)]`` with
        ``z_k ~ q_φ(z|x)``, ``k = 1..num_samples``: the estimator of
        :func:`pyro_vae.evaluation.importance_log_likelihood` (a stochastic lower bound,
        increasing in ``K``), with ``log P(z)`` the *exact* log-sum-exp over all ``n``
        training components (re-encoded with the current parameters, blocked so memory
        stays bounded). ``index`` marks ``x`` as training rows (leave-one-out prior).
        Cost: ``len(x) · num_samples · n`` Gaussian log-densities.
        """
        _check_args(x, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size)
        if x.shape[1] != self.x_dim:
            raise ValueError(f"x has {x.shape[1]} columns but the model's x_dim is {self.x_dim}")
        if index is not None:
            index = self._check_index(index, len(x), None)
        loc_all, scale_all = self.exemplar_stats()
        features = component_features(loc_all, scale_all)
        n = self.num_exemplars
        log_w_mix = None if index is None else torch.full((n,), -math.log(n - 1))
        per_point = []
        for s in tqdm(range(0, len(x), batch_size), disable=not progress, desc="log P(x)", unit="batch"):
            xb = x[s : s + batch_size]
            loc, scale = self.guide.encoder(xb)
            q = dist.Normal(loc, scale).to_event(1)
            total = None
            for k0 in range(0, num_samples, chunk_size):
                k = min(chunk_size, num_samples - k0)
                z = q.sample((k,))  # (k, B, D)
                flat = z.reshape(-1, z.shape[-1])
                exclude = None if index is None else index[s : s + batch_size].expand(k, -1).reshape(-1)
                log_prior = log_mixture(flat, loc_all, scale_all, log_weights=log_w_mix, exclude=exclude,
                                        features=features).view(k, -1)
                log_w = self.decoder(z).log_prob(xb) + log_prior - q.log_prob(z)
                chunk = log_w.logsumexp(0)
                total = chunk if total is None else torch.logaddexp(total, chunk)
            per_point.append(total - math.log(num_samples))
        return LogLikelihood.from_per_point(torch.cat(per_point), num_samples)

    @torch.no_grad()
    def prior_estimate_error(self, index: torch.Tensor, num_draws: int = 1) -> dict[str, float]:
        r"""How well the training estimator's prior matches the exact leave-one-out one.

        For training rows ``index`` and ``z ~ q(z|x_i)``: the mean and max absolute error
        of ``log P̂_i(z)`` (the pool the estimator builds, with the cache as it is now)
        against the exact ``log P_{−i}(z)`` (all ``n`` components re-encoded with the
        current parameters), and (``"knn"``) the exact responsibility mass
        ``Σ_{j∈N_i} r_ij`` that the neighbour lists cover.
        """
        index = self._check_index(index, len(index), None)
        x = self.exemplars[index]
        loc_x, scale_x = self.guide.encoder(x)
        draws = []
        for _ in range(num_draws):  # estimator first: exemplar_stats() refreshes the cache
            z = loc_x + scale_x * torch.randn_like(loc_x)
            pool = self.make_pool(index)
            stats = self.pool_stats(pool, loc_x, scale_x)
            draws.append((z, (stats.log_prob_table(z) + pool.logits).logsumexp(-1)))
        errors, coverage = [], []
        lists = self.bank.neighbours[index] if self.bank.num_neighbours else None
        for z, approx in draws:
            exact = self.log_prior(z, index)
            errors.append((approx - exact).abs())
            if lists is not None:
                loc, scale = self.exemplar_stats()
                table = log_prob_matrix(z, loc, scale).gather(1, lists) - math.log(self.num_exemplars - 1)
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


# ---------------------------------------------------------------------------- EM


def _expected_model(gae: GAE, x, index, num_data, pool: ExemplarPool, resp: torch.Tensor):
    """The M-step's complete-data model: ``Σ_j r_ij log(p_ij q_j(z_i)) + log p(x_i|z_i)``."""
    gae._register_modules()
    loc_x, scale_x = gae._encode(x)
    stats = gae.pool_stats(pool, loc_x, scale_x)
    with data_plate(len(x), index, num_data):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(loc_x), 1.0).to_event(1).mask(False))
        table = stats.log_prob_table(z) + pool.logits
        expected = torch.where(resp > 0, resp * table, torch.zeros_like(table)).sum(-1)
        pyro.factor("expected_prior", expected)
        pyro.sample("x", gae.decoder(z), obs=x)
        if gae.lambda1 or gae.lambda2:
            pyro.factor("regulariser", -gae.regulariser(loc_x, scale_x))


def fit_em(
    gae: GAE,
    epochs: int = 1,
    batch_size: int = 100,
    lr: float = 1e-3,
    m_steps: int = 1,
    num_samples: int = 1,
    optimizer: Optional[torch.optim.Optimizer] = None,
    progress: bool = False,
) -> list[dict]:
    r"""Fit ``gae`` by EM over minibatches of its training set ``gae.exemplars``.

    For each minibatch: the **E-step** fixes the pool of components the estimator uses
    and computes the responsibilities ``r_i(y) = E_{z∼q(z|x_i)} p(y | z, x_i)`` over it
    with ``TraceEnum_ELBO.compute_marginals`` (``num_samples`` draws of ``z``); the
    **M-step** takes ``m_steps`` optimizer steps on ``Q + H(r)`` (module docstring), a
    lower bound on the enumerated ELBO, with ``r`` held fixed. Returns one row per
    epoch with ``"em_bound"``, the mean of ``Q + H(r)`` per point over its M-steps.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("m_steps", m_steps),
                    ("num_samples", num_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    data, n = gae.exemplars, gae.num_exemplars
    optimizer = optimizer or torch.optim.Adam(gae.parameters(), lr=lr)
    elbo, m_elbo = TraceEnum_ELBO(max_plate_nesting=1), Trace_ELBO()
    history = []
    for epoch in range(epochs):
        order = torch.randperm(n)
        total, count = 0.0, 0
        for s in tqdm(range(0, n, batch_size), disable=not progress, desc=f"EM epoch {epoch + 1}"):
            index = order[s : s + batch_size]
            x = data[index]
            with torch.no_grad():  # E-step
                pool = gae.make_pool(index)
                with gae.using_pool(pool):
                    resp = sum(elbo.compute_marginals(gae.model, gae.guide, x, index, n)["y"].probs
                               .reshape(len(x), -1) for _ in range(num_samples)) / num_samples
                entropy = -torch.where(resp > 0, resp * resp.log(), torch.zeros_like(resp)).sum()
            for _ in range(m_steps):  # M-step
                loss = m_elbo.differentiable_loss(
                    lambda *a: _expected_model(gae, *a, pool=pool, resp=resp), gae.guide, x, index, n)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += (-loss.item() + entropy.item() * n / len(x)) / n
                count += 1
        history.append({"epoch": epoch + 1, "em_bound": total / count})
    return history
