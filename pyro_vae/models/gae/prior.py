r"""The GAE's prior as a component of a VAE-shaped model: the mixture of the encoder's
posteriors over the training points ("exemplars").

.. math::

    P(z; φ) = \frac1n \sum_j k_j(z), \qquad k_j = q_φ(z | x_j) = N(μ_φ(x_j), \operatorname{diag} σ_φ(x_j)^2)

(or, with a shared bandwidth, ``k_j = N(μ_φ(x_j), diag s²)``), written for each data point as

    y ~ Categorical(1/n, ..., 1/n)        the data index: which exemplar generated it
    z ~ k_y(z)                            that exemplar's component

with ``y`` marked ``infer={"enumerate": "parallel"}`` so that ``TraceEnum_ELBO`` sums it
out exactly. A training point (its row's ``index`` given) has the leave-one-out prior
``P_{−i}``: ``y`` ranges over the other ``n − 1`` points. The components are the encoder's
statistics under the *current* parameters, encoded afresh at each call: the prior holds
no cache and no counter, so running the model under any Pyro handler changes nothing.

Three scoped views of the same story (context managers, nothing persists after them):

* :meth:`ExemplarPrior.frozen`: the exact components encoded once, without gradients,
  and reused by every call inside (responsibilities over many batches);
* :meth:`ExemplarPrior.collapsed`: ``y`` summed out of the story, ``z`` drawn from the
  marginal :class:`~pyro_vae.models.gae.distribution.ExemplarMixture`: how the one
  importance sampler and the ELBO evaluator score held-out data;
* :func:`using_pool`: training calls enumerate the components an estimator chose
  (:mod:`pyro_vae.models.gae.estimators`) instead of all ``n``; the training objective
  and the EM E-step use it;
* :func:`summing_out`: training calls emit no ``y`` and draw ``z`` from the estimator's
  pool mixture (``y`` summed out, differentiable): how IWAE, VIMCO, RWS, wake-sleep and
  MCEM train the story (:mod:`pyro_vae.models.gae.collapsed`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models.gae.distribution import ExemplarMixture, ExemplarNormal, UniformIndex
from pyro_vae.models.gae.kernels import MAX_ELEMENTS, component_features, log_mixture, mixture_table
from pyro_vae.plates import register_module

BANDWIDTHS = ("posterior", "shared")

#: Rows of the exemplars encoded at once when no gradient is needed.
_ENCODE_BATCH = 2000


class SharedBandwidth(nn.Module):
    """``s = exp(log_scale)``, ``(z_dim,)``: one learned scale per latent dimension, shared
    by every component of the prior (the Exemplar VAE's Parzen-window bandwidth)."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(z_dim))  # cpu-ok: a parameter, moved with the module

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, loc: torch.Tensor) -> torch.Tensor:
        return self.scale.expand_as(loc)


@dataclass
class _Scope:
    """A frozen (and perhaps collapsed) view of one prior: its exact components, and the
    kernel features and weighted tables of its marginals, each built on first use and then
    shared by every call inside (:attr:`features`, :meth:`table`)."""

    prior: "ExemplarPrior"
    loc: torch.Tensor
    scale: torch.Tensor
    collapsed: bool
    tables: dict = field(default_factory=dict)

    @functools.cached_property
    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~pyro_vae.models.gae.kernels.component_features` of the ``n`` components.
        Lazy because a collapsed step opens a scope for its dreams whether or not it has any:
        an IWAE step never dreams, and the features of all ``n`` components cost it about a
        sixth of its time."""
        with torch.no_grad():
            return component_features(self.loc, self.scale)

    def table(self, log_weights: Optional[torch.Tensor]) -> torch.Tensor:
        """:func:`~pyro_vae.models.gae.kernels.mixture_table` of the mixture over all
        components (``log_weights`` None) or of the leave-one-out one (its weights are the
        same for every row: ``−log(n − 1)``)."""
        key = log_weights is None
        if key not in self.tables:
            with torch.no_grad():
                self.tables[key] = mixture_table(*self.features, log_weights)
        return self.tables[key]


_SCOPE: contextvars.ContextVar[Optional[_Scope]] = contextvars.ContextVar("pyro_vae_exemplar_scope", default=None)
#: (prior, pool, stats): the components training calls of that prior enumerate instead.
_POOL: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("pyro_vae_exemplar_pool", default=None)


#: (prior, marginal): training calls of that prior draw ``z ~ marginal(index)``, ``y`` summed out.
_SUMMED: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("pyro_vae_exemplar_summed", default=None)


@contextlib.contextmanager
def summing_out(prior: "ExemplarPrior", marginal: Callable) -> Iterator[None]:
    """Within it, training calls of ``prior`` (rows with an ``index``) emit no ``y``: they
    draw ``z ~ marginal(index)``, a distribution of batch shape ``(len(index),)`` whose
    log-density is the prior's with ``y`` summed out under the training objective's
    estimator (:meth:`~pyro_vae.models.gae.objective.ExemplarELBO.collapsed`). What lets
    the algorithms that sample every latent (IWAE, VIMCO, RWS, wake-sleep, MCEM) train
    the story."""
    token = _SUMMED.set((prior, marginal))
    try:
        yield
    finally:
        _SUMMED.reset(token)


@contextlib.contextmanager
def using_pool(prior: "ExemplarPrior", pool, stats) -> Iterator[None]:
    """Within it, training calls of ``prior`` (rows with an ``index``) enumerate ``y`` over
    ``pool`` (an :class:`~pyro_vae.models.gae.estimators.ExemplarPool`) with components
    ``stats`` (its :class:`~pyro_vae.models.gae.estimators.PoolStats`)."""
    token = _POOL.set((prior, pool, stats))
    try:
        yield
    finally:
        _POOL.reset(token)


class ExemplarPrior(nn.Module):
    """``P(z) = (1/n) Σ_j k_j(z)`` over ``exemplars``, through the enumerated index ``y``.

    Args:
        exemplars: ``(n, *event_shape)`` training points ``x_j``; row ``j`` is ``y = j``,
            and a minibatch's ``index`` refers to these rows.
        encoder: the guide's encoder ``x -> (loc, scale)``; shared with the guide, so its
            parameters are the guide's (not registered twice in the state dict).
        bandwidth: ``"posterior"`` (``k_j = q_φ(z|x_j)``, the GAE) or ``"shared"``
            (``k_j = N(μ_φ(x_j), diag s²)`` with ``s`` learned, the Exemplar VAE's).
        leave_one_out: a training point's own component is not in its prior.
        max_enumerated: largest ``components × batch`` table a held-out call enumerates
            per exemplar; beyond it ``y`` enumerates groups of consecutive exemplars,
            each scored as the exact mixture of its members.
    """

    enumerated = True
    #: ``y`` sums out of the story: :meth:`collapsed` (held-out data), :func:`summing_out`
    #: (training, under the objective's estimator).
    collapsible = True
    #: The mixture of the encoder's posteriors over the training set: the aggregate posterior.
    aggregate = True
    latent_sites = ("y", "z")

    def __init__(self, exemplars: torch.Tensor, encoder: nn.Module, bandwidth: str = "posterior",
                 leave_one_out: bool = True, max_enumerated: int = MAX_ELEMENTS):
        super().__init__()
        if not torch.is_tensor(exemplars) or exemplars.dim() < 2:
            shape = tuple(exemplars.shape) if torch.is_tensor(exemplars) else type(exemplars).__name__
            raise ValueError(f"exemplars must be an (n, *event_shape) tensor of training points, got {shape}")
        n = exemplars.shape[0]
        if n < 1 + leave_one_out:
            raise ValueError(
                f"the GAE's prior is a mixture over the training set, which has {n} point(s): "
                f"give at least {1 + leave_one_out}" + (" (leave-one-out excludes each point's own)" if leave_one_out else "")
            )
        if bandwidth not in BANDWIDTHS:
            raise ValueError(f"unknown exemplar bandwidth {bandwidth!r}: choose one of {list(BANDWIDTHS)}")
        if isinstance(max_enumerated, bool) or not isinstance(max_enumerated, int) or max_enumerated < 1:
            raise ValueError(f"max_enumerated must be an integer >= 1, got {max_enumerated!r}")
        # Data, not state: moves with the module, never saved (the data set has it).
        self.register_buffer("exemplars", exemplars.detach().to(torch.float32), persistent=False)
        self.__dict__["encoder"] = encoder  # the guide's: not a submodule of the prior
        self.z_dim = encoder.z_dim
        self.bandwidth = SharedBandwidth(self.z_dim) if bandwidth == "shared" else None
        self.leave_one_out = leave_one_out
        self.max_enumerated = max_enumerated

    @property
    def num_exemplars(self) -> int:
        return self.exemplars.shape[0]

    def register(self) -> None:
        register_module("encoder", self.encoder)
        if self.bandwidth is not None:
            register_module("bandwidth", self.bandwidth)

    # ------------------------------------------------------------------ components

    def components(self, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The components ``(loc, scale)`` of exemplars whose posteriors are
        ``N(loc, diag scale²)``: the posteriors themselves, or ``N(loc, diag s²)``."""
        return (loc, scale) if self.bandwidth is None else (loc, self.bandwidth(loc))

    def component_features(self, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of :meth:`components` (a shared bandwidth broadcast, not expanded:
        its powers and logarithm are taken once, not once per component)."""
        return component_features(loc, scale if self.bandwidth is None else self.bandwidth.scale)

    def encode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The exemplars' posteriors ``(μ_j, σ_j)`` under the current encoder, ``(n, z_dim)``
        each (in blocks when no gradient is needed)."""
        if torch.is_grad_enabled():
            return self.encoder(self.exemplars)
        parts = [self.encoder(x) for x in self.exemplars.split(_ENCODE_BATCH)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def exact_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's ``n`` components under the current parameters (or those frozen by
        :meth:`frozen`)."""
        scope = self._scope()
        if scope is not None:
            return scope.loc, scope.scale
        return self.components(*self.encode())

    def _scope(self) -> Optional[_Scope]:
        scope = _SCOPE.get()
        return scope if scope is not None and scope.prior is self else None

    @contextlib.contextmanager
    def frozen(self, collapsed: bool = False, posteriors: Optional[tuple[torch.Tensor, torch.Tensor]] = None
               ) -> Iterator["ExemplarPrior"]:
        """Within it, every call reuses the exact components encoded once on entry,
        without gradients (``collapsed``: and ``y`` is summed out, see :meth:`collapsed`);
        ``posteriors``: the exemplars' ``(μ_j, σ_j)`` to use instead of encoding them (a
        training cache's, so that dreams cost no pass over all ``n``)."""
        with torch.no_grad():
            loc, scale = self.components(*(self.encode() if posteriors is None else posteriors))
        token = _SCOPE.set(_Scope(self, loc, scale, collapsed))
        try:
            yield self
        finally:
            _SCOPE.reset(token)

    def collapsed(self) -> contextlib.AbstractContextManager:
        """Within it, the story draws ``z`` from the marginal mixture (``y`` summed out,
        leave-one-out for training rows), with the exact components frozen on entry."""
        return self.frozen(collapsed=True)

    # ------------------------------------------------------------------ the story

    def forward(self, batch: int, index: Optional[torch.Tensor] = None, num_data: Optional[int] = None,
                generative: bool = False) -> torch.Tensor:
        """Emit ``y`` and ``z`` for ``batch`` rows inside the model's ``"data"`` plate:
        training rows (``index``) under the leave-one-out prior, held-out rows and
        generated points under the mixture over all ``n``."""
        if index is not None:
            index = self.check_index(index, batch, num_data)
            summed = _SUMMED.get()
            if summed is not None and summed[0] is self:
                return pyro.sample("z", summed[1](index))
            pooled = _POOL.get()
            if pooled is not None and pooled[0] is self:
                return self._pooled(*pooled[1:])
        scope = self._scope()
        if scope is not None and scope.collapsed:
            return pyro.sample("z", self.marginal(batch, index, scope))
        loc, scale = self.exact_components()
        if index is not None:
            return self._leave_one_out(loc, scale, index)
        if generative:
            return self._generated(loc, scale)
        return self._all(loc, scale, batch, grouped=True)

    def _generated(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """A generated point: ``y`` uniform over the n exemplars, then ``z | y`` the Normal of
        component y, a plain reparameterised draw given y (so that a GAN's generator can draw
        it from noise: y from a fixed uniform, z = μ_y + σ_y·ε)."""
        y = pyro.sample("y", UniformIndex.over(self.num_exemplars, loc), infer={"enumerate": "parallel"})
        return pyro.sample("z", dist.Normal(loc[y], scale.expand_as(loc)[y]).to_event(1))

    def _pooled(self, pool, stats) -> torch.Tensor:
        y = pyro.sample("y", dist.Categorical(logits=pool.logits), infer={"enumerate": "parallel"})
        return pyro.sample("z", stats.distribution(y, torch.isfinite(pool.logits)))

    def _leave_one_out(self, loc: torch.Tensor, scale: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        n = self.num_exemplars
        logits = loc.new_zeros(len(index), n)
        if self.leave_one_out:
            own = torch.arange(n, device=index.device) == index.unsqueeze(1)
            logits = logits.masked_fill(own, -math.inf)
        logits = logits - logits.logsumexp(-1, keepdim=True)
        y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
        z_given_y = ExemplarNormal(None, None, y, features=component_features(loc, scale), support=torch.isfinite(logits))
        return pyro.sample("z", z_given_y)

    def _all(self, loc: torch.Tensor, scale: torch.Tensor, batch: int, grouped: bool) -> torch.Tensor:
        n = self.num_exemplars
        size = max(1, math.ceil(n * batch / self.max_enumerated)) if grouped else 1
        if size == 1:
            logits, log_w = loc.new_full((n,), -math.log(n)), None
        else:  # groups of `size` consecutive exemplars, the last one padded
            groups = math.ceil(n / size)
            pad = groups * size - n
            loc = torch.cat([loc, loc.new_zeros(pad, loc.shape[1])])
            scale = torch.cat([scale, scale.new_ones(pad, scale.shape[1])])
            counts = loc.new_full((groups,), float(size))
            counts[-1] = size - pad
            logits = counts.log() - math.log(n)
            log_w = torch.cat([loc.new_zeros(n), loc.new_full((pad,), -math.inf)])
            log_w = log_w - counts.repeat_interleave(size).log()
        y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
        return pyro.sample("z", ExemplarNormal(loc, scale, y, size, log_w))

    def marginal(self, batch: int, index: Optional[torch.Tensor] = None,
                 scope: Optional[_Scope] = None) -> ExemplarMixture:
        """``P(z)`` (``index``: the leave-one-out ``P_{−i}(z)`` of training rows) with ``y``
        summed out, batch shape ``(batch,)``."""
        if scope is None:
            loc, scale = self.exact_components()
            features = component_features(loc, scale)
        else:
            loc, scale, features = scope.loc, scope.scale, scope.features
        log_w, exclude = self._leave_one_out_weights(index, loc)
        table = None if scope is None else scope.table(log_w)
        return ExemplarMixture(loc, scale, (batch,), log_w, exclude, features, table)

    def _leave_one_out_weights(self, index: Optional[torch.Tensor], like: torch.Tensor):
        if index is None or not self.leave_one_out:
            return None, None
        return like.new_full((self.num_exemplars,), -math.log(self.num_exemplars - 1)), index

    def log_prob(self, z: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log P(z)``, exact over all ``n`` components, for ``z (..., B, z_dim)``; with
        ``index (B,)`` the leave-one-out ``log P_{−i}(z)``. Returns ``z.shape[:-1]``."""
        loc, scale = self.exact_components()
        log_w, exclude = self._leave_one_out_weights(index, loc)
        if exclude is not None:
            exclude = torch.as_tensor(exclude, device=z.device).expand(z.shape[:-1]).reshape(-1)
        flat = z.reshape(-1, z.shape[-1])
        return log_mixture(flat, loc, scale, log_weights=log_w, exclude=exclude).view(z.shape[:-1])

    @torch.no_grad()
    def quantiles(self, u: torch.Tensor, steps: int = 48) -> torch.Tensor:
        """The quantiles of ``z_d`` under the mixture over all ``n`` components at levels
        ``u (m,)`` in (0, 1), every dimension: ``(m, z_dim)``, on the prior's device.

        The marginal of ``z_d`` is the 1-D mixture ``F_d(t) = (1/n) Σ_j Φ((t − μ_jd) / σ_jd)``,
        increasing in ``t``; each quantile is found by ``steps`` bisections of
        ``F_d(t) = u`` between ``min_j(μ_jd − 10 σ_jd)`` and ``max_j(μ_jd + 10 σ_jd)``:
        exact to float precision, with no sampling noise. Costs ``steps`` passes over the
        ``n × m × z_dim`` kernel values (in blocks, so memory stays bounded).
        """
        loc, scale = self.exact_components()  # (n, D) each
        u = u.to(loc).unsqueeze(-1)  # (m, 1)
        lo = (loc - 10 * scale).min(0).values.expand(len(u), -1).clone()  # (m, D)
        hi = (loc + 10 * scale).max(0).values.expand(len(u), -1).clone()
        for _ in range(steps):
            mid = (lo + hi) / 2
            below = _mixture_cdf(mid, loc, scale) < u
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

    def check_index(self, index, batch: int, num_data: Optional[int]) -> torch.Tensor:
        """``index`` as positions in the training set of ``n`` rows, checked."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.exemplars.device)
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


def _mixture_cdf(t: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, block: int = 1 << 22) -> torch.Tensor:
    """``(1/n) Σ_j Φ((t − μ_j) / σ_j)`` per dimension for ``t (m, D)`` and components
    ``loc, scale (n, D)``: ``(m, D)``, summed over blocks of components of about
    ``block`` kernel values each."""
    rows = max(1, block // max(1, t.numel()))
    total = torch.zeros_like(t)
    for s in range(0, len(loc), rows):
        z = (t.unsqueeze(1) - loc[s : s + rows]) / scale[s : s + rows]  # (m, rows, D)
        total += torch.special.ndtr(z).sum(1)
    return total / len(loc)
