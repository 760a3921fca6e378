r"""The distribution of ``z`` given the GAE's enumerated data index ``y``.

:class:`ExemplarNormal` is ``N(μ_y, diag σ_y²)`` over a table of components (or the
mixture of a group of them); under Pyro's parallel enumeration it scores every value of
``y`` against every ``z`` with the quadratic-feature kernel of
:mod:`pyro_vae.models.gae.kernels`, never materialising a ``(Q, batch, z_dim)`` tensor.
:class:`ExemplarMixture` is the same table with ``y`` summed out: the marginal
``P(z) = Σ_j w_j N(z; μ_j, σ_j²)`` (the collapsed story the importance sampler scores).
:class:`UniformIndex` is ``y`` itself where all ``n`` values are equally likely, drawn
without torch's multinomial (:func:`uniform_index`).
"""

from __future__ import annotations

import math
from typing import Optional

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints

from pyro_vae.models.gae.kernels import (
    _LOG_2PI,
    MAX_ELEMENTS,
    component_features,
    features_to_params,
    log_mixture,
    mixture_table,
    query_features,
    take,
)
from pyro_vae.ops import logsumexp


def _shape(t: Optional[torch.Tensor]):
    return None if t is None else tuple(t.shape)


def uniform_index(n: int, shape: torch.Size, device, exclude: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Indices uniform over ``range(n)``, of ``shape``; with ``exclude`` (broadcastable to
    ``shape``), uniform over the other ``n − 1`` values of each entry.

    ``torch.randint``, not ``Categorical(logits).sample()``: torch's multinomial behind
    the latter took 200 ms for 100 draws over n = 50000 on one CPU core (randint: 0.02 ms),
    most of a GAE wake-sleep step over the MNIST training set."""
    if exclude is None:
        return torch.randint(n, shape, device=device)
    j = torch.randint(n - 1, shape, device=device)
    return j + (j >= exclude).long()


class UniformIndex(dist.Categorical):
    """A ``Categorical`` whose logits are all equal (build it with :meth:`over`): scored
    and enumerated as one, drawn by :func:`uniform_index`."""

    @classmethod
    def over(cls, n: int, like: torch.Tensor) -> "UniformIndex":
        """Uniform over ``range(n)``, on ``like``'s device and dtype."""
        return cls(logits=like.new_full((n,), -math.log(n)))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return uniform_index(self._num_events, self._extended_shape(sample_shape), self.logits.device)


class ExemplarNormal(TorchDistribution):
    r"""``z | y``: the ``y``-th component(s) of a table of diagonal Gaussians.

    The values of ``y`` index, in order:

    * optionally, ``K`` **per-row** components ``row_loc, row_scale (B, K, D)``: for
      ``y = k < K`` data point ``b`` gets ``N(row_loc[b, k], diag row_scale[b, k]²)``
      (each point's own neighbour list, say; ``B`` is the data plate's size);
    * then a **shared** table ``loc, scale (P, D)``: ``y = K + p`` gives
      ``N(loc[p], diag scale[p]²)``. With ``group_size = S`` the table's rows come in
      consecutive groups of ``S`` and ``y = K + g`` gives the mixture
      ``Σ_s exp(log_weights[gS + s]) N(loc[gS + s], scale[gS + s]²)`` of group ``g``
      (each group's weights sum to one; padding rows get ``−inf``).

    ``y`` may be a sampled index tensor (batch shape = its shape) or, under Pyro's
    parallel enumeration, the enumerated support ``(Q, 1, ..., 1)``: then
    :meth:`log_prob` scores all ``Q`` values against every ``z`` of the batch with
    blocked matrix products (see :func:`log_prob_matrix`), never materialising a
    ``(Q, batch, z_dim)`` tensor.

    ``support (B, Q)``, optional, marks the values of ``y`` that have prior mass for each
    data point; the enumerated table is ``−inf`` elsewhere. The density there is
    irrelevant (``p(y) = 0``), but Pyro's log-space contraction shifts each factor by
    its own maximum over ``y``: an excluded component far more likely than all allowed
    ones (a training point's own, under leave-one-out) would make the allowed terms
    underflow to ``exp(−∞)`` and the ELBO ``−inf``.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        loc: Optional[torch.Tensor],
        scale: Optional[torch.Tensor],
        y: torch.Tensor,
        group_size: int = 1,
        log_weights: Optional[torch.Tensor] = None,
        row_loc: Optional[torch.Tensor] = None,
        row_scale: Optional[torch.Tensor] = None,
        batch_shape: Optional[torch.Size] = None,
        features: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        row_features: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        support: Optional[torch.Tensor] = None,
        validate_args: Optional[bool] = None,
    ):
        if loc is None and features is None:
            raise ValueError("give the shared table as loc and scale, or as its kernel features")
        if loc is not None and (loc.dim() != 2 or scale is None or loc.shape != scale.shape):
            raise ValueError(f"loc and scale must both be (P, D), got {_shape(loc)} and {_shape(scale)}")
        size = loc.shape[0] if loc is not None else features[0].shape[0]
        dim = loc.shape[-1] if loc is not None else features[0].shape[-1] // 2
        if size % group_size:
            raise ValueError(f"the table's {size} rows are not a whole number of groups of {group_size}")
        if group_size > 1 and (log_weights is None or log_weights.shape != (size,)):
            raise ValueError("group_size > 1 needs log_weights of shape (P,)")
        if (row_loc is None) != (row_scale is None) or (
            row_loc is not None and (row_loc.dim() != 3 or row_loc.shape != row_scale.shape
                                     or row_loc.shape[-1] != dim)):
            raise ValueError("row_loc and row_scale must both be given, as (B, K, D) tensors")
        self.loc, self.scale, self.y = loc, scale, y
        self.group_size = group_size
        self.log_weights = log_weights
        self.row_loc, self.row_scale = row_loc, row_scale
        self._features, self._row_features = features, row_features
        self.support_mask = support
        self._size = size
        shape = torch.Size(batch_shape) if batch_shape is not None else y.shape
        super().__init__(shape, torch.Size([dim]), validate_args=False)

    @property
    def num_rows(self) -> int:
        """``K``, the per-row components."""
        if self.row_loc is not None:
            return self.row_loc.shape[1]
        return 0 if self._row_features is None else self._row_features[1].shape[1]

    @property
    def support_size(self) -> int:
        """The number of values of ``y``."""
        return self.num_rows + self._size // self.group_size

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        torch.broadcast_shapes(batch_shape, self.y.shape)  # raises when not broadcastable
        return ExemplarNormal(self.loc, self.scale, self.y, self.group_size, self.log_weights,
                              self.row_loc, self.row_scale, batch_shape=batch_shape,
                              features=self._features, row_features=self._row_features,
                              support=self.support_mask)

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of the shared table (computed once, unless given)."""
        if self._features is None:
            self._features = component_features(self.loc, self.scale)
        return self._features

    def row_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of the per-row table: ``(B, K, 2D)``, ``(B, K)``."""
        if self._row_features is None:
            self._row_features = component_features(self.row_loc, self.row_scale)
        return self._row_features

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``loc, scale`` of the shared and the per-row tables (from the features if needed)."""
        if self.loc is None:
            self.loc, self.scale = features_to_params(self._features[0])
        if self.row_loc is None and self._row_features is not None:
            self.row_loc, self.row_scale = features_to_params(self._row_features[0])
        return self.loc, self.scale, self.row_loc, self.row_scale

    def _gather(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Component parameters for sampled ``y`` (``(..., B)``): ``(..., B, D)`` each, or
        ``(..., B, S, D)`` for groups, plus the within-group log weights (or None)."""
        k, s = self.num_rows, self.group_size
        table_loc, table_scale, row_loc, row_scale = self._tables()
        shared = (y - k).clamp(min=0)
        if s == 1:
            loc, scale, log_w = take(table_loc, shared), take(table_scale, shared), None
        else:
            rows = shared.unsqueeze(-1) * s + torch.arange(s, device=y.device)
            loc, scale, log_w = take(table_loc, rows), take(table_scale, rows), take(self.log_weights, rows)
        if k:
            b = torch.arange(row_loc.shape[0], device=y.device).expand(y.shape)
            kk = y.clamp(max=k - 1)
            near = (y < k).unsqueeze(-1)
            if s > 1:
                raise NotImplementedError("per-row components with grouped shared components")
            loc = torch.where(near, row_loc[b, kk], loc)
            scale = torch.where(near, row_scale[b, kk], scale)
        return loc, scale, log_w

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        loc, scale, log_w = self._gather(self.y.expand(shape))
        if log_w is not None:
            pick = torch.distributions.Categorical(logits=log_w).sample()
            idx = pick[..., None, None].expand(pick.shape + (1, loc.shape[-1]))
            loc, scale = loc.gather(-2, idx).squeeze(-2), scale.gather(-2, idx).squeeze(-2)
        return loc + scale * torch.randn_like(loc)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        vb = value.shape[:-1]
        y = self.y
        k = len(vb)
        # The enumerated case: y varies only left of value's batch dims.
        if y.dim() > k and all(s == 1 for s in y.shape[y.dim() - k:]):
            table = self._outer(value, y.reshape(-1))  # (..., B, Q)
            out = table.movedim(-1, 0).reshape(y.shape[: y.dim() - k] + vb)
            return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))
        shape = torch.broadcast_shapes(y.shape, vb, self.batch_shape)
        loc, scale, log_w = self._gather(y.expand(shape))
        value = value.expand(shape + value.shape[-1:])
        if log_w is None:
            return (-0.5 * ((value - loc) / scale).pow(2) - scale.log() - 0.5 * _LOG_2PI).sum(-1)
        lp = (-0.5 * ((value.unsqueeze(-2) - loc) / scale).pow(2) - scale.log() - 0.5 * _LOG_2PI).sum(-1)
        return logsumexp(lp + log_w)

    def _outer(self, value: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(*vb, Q)``: log-density of every ``z`` under every value in ``y (Q,)``."""
        vb = value.shape[:-1]
        q = query_features(value.reshape(-1, value.shape[-1]))  # (V, 2D)
        k = self.num_rows
        parts = []
        if k:
            w, c = self.row_features()  # (B, K, 2D), (B, K)
            qb = q.view(-1, w.shape[0], 1, q.shape[-1])  # (V, B, 1, 2D)
            # one z per row (V = 1, training): a broadcast product, whose backward is too;
            # einsum's backward for w is an outer-product bmm that CPU runs batch by batch
            near = (qb * w).sum(-1) if len(qb) == 1 else torch.einsum("vbof,bkf->vbk", qb, w)
            parts.append((near + c).reshape(-1, k))
        parts.append(self._shared(q))
        table = torch.cat(parts, -1) if k else parts[0]
        if self.support_mask is not None:  # (B, Q): -inf where y has no prior mass
            table = table.view(-1, *self.support_mask.shape).masked_fill(~self.support_mask, -math.inf)
            table = table.view(-1, table.shape[-1])
        if not (len(y) == table.shape[-1] and bool((y == torch.arange(len(y), device=y.device)).all())):
            table = table.index_select(-1, y)
        return table.reshape(vb + table.shape[-1:])

    def _shared(self, q: torch.Tensor) -> torch.Tensor:
        """``(V, G)``: log-density of query features ``q`` under every shared group, in
        blocks of consecutive groups (slices: views, whose backward is a copy, not the
        scatter of an index)."""
        w, c = self.features()
        s = self.group_size
        block = max(1, MAX_ELEMENTS // max(1, len(q) * s)) * s  # rows of the table per block
        cols = []
        for start in range(0, len(c), block):
            rows = slice(start, start + block)
            if s == 1:
                cols.append(torch.addmm(c[rows], q, w[rows].T))
                continue
            lp = torch.addmm(c[rows] + self.log_weights[rows], q, w[rows].T)
            cols.append(logsumexp(lp.view(len(q), -1, s)))
        return torch.cat(cols, -1) if len(cols) > 1 else cols[0]


class ExemplarMixture(TorchDistribution):
    r"""``z ~ Σ_j w_j N(μ_j, diag σ_j²)``: the exemplar prior with ``y`` summed out.

    ``loc (P, D)`` and ``scale`` (``(P, D)``, or ``(D,)`` for a shared bandwidth) are the
    components, ``log_weights (P,)`` their log-weights (default uniform, ``−log P``).
    ``exclude``, broadcastable to the batch shape, drops component ``exclude[b]`` from
    row ``b``'s sum (leave-one-out: pass ``log_weights = −log(P − 1)``). ``log_prob`` is
    the exact log-sum-exp over all components, blocked (:func:`log_mixture`), with the
    kernel features computed once per distribution, and without gradients its
    :func:`~pyro_vae.models.gae.kernels.mixture_table` too (``table``: precomputed, e.g.
    once per frozen scope of the prior, for every chunk of importance particles).
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, batch_shape=torch.Size(),
                 log_weights: Optional[torch.Tensor] = None, exclude: Optional[torch.Tensor] = None,
                 features: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                 table: Optional[torch.Tensor] = None, validate_args=None):
        self.loc, self.scale = loc, scale
        self.log_weights, self.exclude = log_weights, exclude
        self._features, self._table = features, table
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=False)

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._features is None:
            self._features = component_features(self.loc, self.scale)
        return self._features

    def table(self) -> torch.Tensor:
        """The weighted kernel table of the evaluation path (computed once, unless given)."""
        if self._table is None:
            self._table = mixture_table(*self.features(), self.log_weights)
        return self._table

    def expand(self, batch_shape, _instance=None):
        return ExemplarMixture(self.loc, self.scale, batch_shape, self.log_weights, self.exclude,
                               self._features, self._table)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        rows = value.shape[:-1]
        exclude = None if self.exclude is None else self.exclude.expand(rows).reshape(-1)
        flat = value.reshape(-1, value.shape[-1])
        differentiable = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad
            for t in (value, self.loc, self.scale, self.log_weights, *self.features()))
        table = None if differentiable else self.table()
        return log_mixture(flat, self.loc, self.scale, self.log_weights, exclude, self.features(),
                           table=table).view(rows)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        j = self._component(shape)
        scale = self.scale.expand_as(self.loc)
        return take(self.loc, j) + take(scale, j) * torch.randn(shape + self.event_shape, device=self.loc.device,
                                                                dtype=self.loc.dtype)

    def _component(self, shape: torch.Size) -> torch.Tensor:
        """Each draw's component ``j``, of ``shape``, by the weights (less ``exclude``)."""
        num, w = self.loc.shape[0], self.log_weights
        exclude = None if self.exclude is None else self.exclude.expand(shape)
        if w is None or bool((w == w[0]).all()):
            return uniform_index(num, shape, self.loc.device, exclude)
        logits = w.expand(shape + (num,))
        if exclude is not None:  # the own component has no mass
            logits = logits.masked_fill(torch.nn.functional.one_hot(exclude, num).bool(), -math.inf)
        return torch.distributions.Categorical(logits=logits).sample()
