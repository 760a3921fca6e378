r"""Mixtures of the encoder's posteriors over exemplars: the machinery behind the GAE prior.

The GAE's prior is ``P(z) = (1/n) Σ_j q_φ(z | x_j)``, a mixture of ``n`` diagonal
Gaussians ``N(μ_j, diag σ_j²)``, one per training point ("exemplar"). This module holds
what scores and searches such mixtures fast:

* the **quadratic-feature kernel**: ``log N(z; μ_j, σ_j) = [z², z] · w_j + c_j`` with
  ``w_j = [−½ σ_j⁻², μ_j σ_j⁻²]`` and ``c_j = −½ Σ_d (μ_jd² σ_jd⁻² + log 2π σ_jd²)``, so
  a whole ``(batch, components)`` table of log-densities is one matrix product instead
  of a ``(batch, components, z_dim)`` broadcast (:func:`log_prob_matrix`,
  :func:`log_mixture`). The same features with ``[μ_i² + σ_i², μ_i]`` in place of
  ``[z², z]`` give the expected log-density ``E_{z∼q(z|x_i)} log q(z|x_j)`` in closed
  form, the score used to rank neighbours (:func:`expected_log_prob_matrix`).
* :class:`ExemplarNormal`, the distribution of ``z`` given the enumerated index ``y``:
  ``N(μ_y, diag σ_y²)``, or with ``group_size > 1`` the mixture of a group of components;
  under Pyro's parallel enumeration it scores every value of ``y`` against every ``z``
  with the kernel above.
* :func:`nearest_exemplars`, the exact (chunked, all-pairs) top-k search, and
  :class:`ExemplarBank`, the cache of all ``n`` encoder statistics and neighbour lists
  that the GAE's scalable estimator reads and keeps fresh.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from pyro_vae.ops import logsumexp

_LOG_2PI = math.log(2 * math.pi)
#: Largest number of (z, component) log-densities held at once by the chunked kernels.
MAX_ELEMENTS = 1 << 22
#: Neighbours of a point's nearest neighbour offered to its list at each update.
SECOND_ORDER = 8
#: Up to this many exemplars, neighbour lists are rebuilt by exact all-pairs search.
EXACT_SEARCH = 8192


# ----------------------------------------------------------------------------- kernels


def take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a row table ``(n, ...)`` and any-shaped ``index``, via
    ``index_select`` (an order of magnitude faster than advanced indexing with a 2-D
    index on CPU; differentiable in ``table``)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape + table.shape[1:])


def component_features(loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w (P, 2D), c (P,))`` with ``log N(z; loc_j, scale_j) = [z², z] · w_j + c_j``.
    ``scale`` may broadcast against ``loc (P, D)``, e.g. a shared ``(D,)`` bandwidth."""
    prec = scale.pow(-2)
    w = torch.cat([(-0.5 * prec).expand_as(loc), loc * prec], -1)
    c = -0.5 * ((loc.pow(2) * prec).sum(-1) + 2 * scale.log().sum(-1) + loc.shape[-1] * _LOG_2PI)
    return w, c


def features_to_params(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` back from the ``w`` part of :func:`component_features`."""
    dim = w.shape[-1] // 2
    prec = -2 * w[..., :dim]
    return w[..., dim:] / prec, prec.rsqrt()


def _shape(t: Optional[torch.Tensor]):
    return None if t is None else tuple(t.shape)


def query_features(z: torch.Tensor) -> torch.Tensor:
    """``[z², z]``: ``(V, 2D)`` for ``z (V, D)``."""
    return torch.cat([z * z, z], -1)


def expected_query_features(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``E[z²], E[z]`` under ``N(loc, scale²)``: the kernel then gives ``E_q log N(z; ·)``."""
    return torch.cat([loc * loc + scale * scale, loc], -1)


def log_prob_matrix(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(V, P)`` table ``log N(z_v; loc_p, diag scale_p²)`` (differentiable in all inputs)."""
    w, c = component_features(loc, scale)
    return torch.addmm(c, query_features(z), w.T)


def expected_log_prob_matrix(
    q_loc: torch.Tensor, q_scale: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """``(V, P)`` table ``E_{z∼N(q_loc_v, q_scale_v²)} log N(z; loc_p, scale_p²)``."""
    w, c = component_features(loc, scale)
    return torch.addmm(c, expected_query_features(q_loc, q_scale), w.T)


def log_mixture(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_weights: Optional[torch.Tensor] = None,
    exclude: Optional[torch.Tensor] = None,
    features: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    max_elements: int = MAX_ELEMENTS,
) -> torch.Tensor:
    r"""``log Σ_j w_j N(z_v; loc_j, scale_j²)`` for every row of ``z (V, D)``: ``(V,)``.

    Exact log-sum-exp over all ``P`` components, computed in blocks of at most
    ``max_elements`` log-densities (streaming ``logaddexp`` over component blocks), so
    memory does not grow with ``V · P``. ``log_weights (P,)`` defaults to ``−log P``
    (the uniform mixture). ``exclude (V,)`` drops component ``exclude[v]`` from row
    ``v``'s sum (leave-one-out; ``−1`` excludes nothing) without renormalising the
    weights. ``features`` are precomputed :func:`component_features` of ``loc, scale``.
    """
    num = loc.shape[0]
    if num == 0:
        raise ValueError("the mixture has no components")
    w, c = features if features is not None else component_features(loc, scale)
    if log_weights is None:
        c = c - math.log(num)
    else:
        c = c + log_weights
    col_block = max(1, min(num, max_elements // max(1, min(len(z), 1024))))
    row_block = max(1, max_elements // col_block)
    out = []
    for r0 in range(0, len(z), row_block):
        q = query_features(z[r0 : r0 + row_block])
        ex = None if exclude is None else exclude[r0 : r0 + row_block]
        total = None
        for c0 in range(0, num, col_block):
            block = torch.addmm(c[c0 : c0 + col_block], q, w[c0 : c0 + col_block].T)
            if ex is not None:
                hit = (ex >= c0) & (ex < c0 + block.shape[1])
                if bool(hit.any()):
                    rows = hit.nonzero().squeeze(-1)
                    block = block.index_put((rows, ex[rows] - c0), torch.tensor(-math.inf))
            lse = logsumexp(block)
            total = lse if total is None else torch.logaddexp(total, lse)
        out.append(total)
    return torch.cat(out)


# ----------------------------------------------------------------------------- distribution


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
            rows = shared.unsqueeze(-1) * s + torch.arange(s)
            loc, scale, log_w = take(table_loc, rows), take(table_scale, rows), take(self.log_weights, rows)
        if k:
            b = torch.arange(row_loc.shape[0]).expand(y.shape)
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
        parts.append(self._shared(q, torch.arange(self.support_size - k)))
        table = torch.cat(parts, -1) if k else parts[0]
        if self.support_mask is not None:  # (B, Q): -inf where y has no prior mass
            table = table.view(-1, *self.support_mask.shape).masked_fill(~self.support_mask, -math.inf)
            table = table.view(-1, table.shape[-1])
        if not (len(y) == table.shape[-1] and bool((y == torch.arange(len(y))).all())):
            table = table.index_select(-1, y)
        return table.reshape(vb + table.shape[-1:])

    def _shared(self, q: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """``(V, G)``: log-density of query features ``q`` under the shared ``groups``."""
        w, c = self.features()
        s = self.group_size
        block = max(1, MAX_ELEMENTS // max(1, len(q) * s))
        cols = []
        for start in range(0, len(groups), block):
            gg = groups[start : start + block]
            if s == 1:
                cols.append(torch.addmm(take(c, gg), q, take(w, gg).T))
                continue
            rows = (gg.unsqueeze(-1) * s + torch.arange(s)).reshape(-1)
            lp = torch.addmm(take(c, rows) + take(self.log_weights, rows), q, take(w, rows).T)
            cols.append(logsumexp(lp.view(len(q), len(gg), s)))
        return torch.cat(cols, -1)


# ----------------------------------------------------------------------------- search


@torch.no_grad()
def nearest_exemplars(
    q_loc: torch.Tensor,
    q_scale: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    k: int,
    exclude: Optional[torch.Tensor] = None,
    max_elements: int = MAX_ELEMENTS,
) -> torch.Tensor:
    """The ``k`` components with the highest expected log-density under each query.

    Query ``v`` is the posterior ``N(q_loc_v, q_scale_v²)``; component ``j`` scores
    ``E_{z∼q_v} log N(z; loc_j, scale_j²)`` (closed form). ``exclude (V,)`` removes
    component ``exclude[v]`` from query ``v`` (its own). Exact, all-pairs, blocked.
    Returns ``(V, k)`` int64 indices, best first.
    """
    num = loc.shape[0]
    if not 1 <= k <= num - (exclude is not None):
        raise ValueError(f"k must be in [1, {num - (exclude is not None)}], got {k}")
    w, c = component_features(loc, scale)
    rows = max(1, max_elements // num)
    out = []
    for r0 in range(0, len(q_loc), rows):
        s = torch.addmm(c, expected_query_features(q_loc[r0 : r0 + rows], q_scale[r0 : r0 + rows]), w.T)
        if exclude is not None:
            ex = exclude[r0 : r0 + rows]
            s[torch.arange(len(ex)), ex] = -math.inf
        out.append(s.topk(k, dim=-1).indices)
    return torch.cat(out)


@torch.no_grad()
def clustered_neighbours(
    loc: torch.Tensor,
    scale: torch.Tensor,
    k: int,
    num_clusters: Optional[int] = None,
    probe: int = 4,
    iterations: int = 4,
    centroids: Optional[torch.Tensor] = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Approximate :func:`nearest_exemplars` of every exemplar among all (an IVF index).

    k-means (``iterations`` Lloyd steps on the means ``loc``, started from ``centroids``
    when given, else from exemplars drawn with ``seed``, as are the restarts of empty
    cells: a function of its inputs only, so processes holding the same cache build the
    same lists) splits the ``n``
    exemplars into ``num_clusters`` (default ``√n``) cells; each exemplar's ``k`` neighbours are then
    searched exactly, by expected log-density, among the members of the ``probe`` cells
    whose centroids are nearest its own cell's (at least ``k + 1`` candidates). Cost
    about ``n · probe · n / num_clusters`` scores instead of ``n²``.
    Returns ``(neighbours (n, k), centroids (num_clusters, D))``.
    """
    n, dim = loc.shape
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    num_clusters = min(n, num_clusters or max(1, round(math.sqrt(n))))
    gen = torch.Generator().manual_seed(seed)
    if centroids is None or centroids.shape != (num_clusters, dim):
        centroids = loc[torch.randperm(n, generator=gen)[:num_clusters]].clone()
    for it in range(iterations + 1):
        # nearest centroid: argmin of ‖c‖² − 2 x·c (‖x‖² is the same for every centroid)
        assign = torch.cat([torch.addmm(centroids.pow(2).sum(-1), loc[s : s + 8192], centroids.T, alpha=-2).argmin(-1)
                            for s in range(0, n, 8192)])
        if it == iterations:
            break
        counts = torch.bincount(assign, minlength=num_clusters).unsqueeze(-1).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, loc)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        # an empty cell restarts at a random exemplar: else cells left behind by a moving
        # cache (warm starts) stay empty and the others grow, and with them the search
        empty = (counts[:, 0] == 0).nonzero().squeeze(-1)
        centroids[empty] = loc[torch.randint(0, n, (len(empty),), generator=gen)]
    order = assign.argsort()
    members = list(order.split(torch.bincount(assign, minlength=num_clusters).tolist()))
    sizes = torch.tensor([len(m) for m in members])
    between = torch.cdist(centroids, centroids).fill_diagonal_(-1.0)  # own cell first, even if another coincides
    cell_order = between.argsort(-1)  # (C, C)
    w, c = component_features(loc, scale)
    query = expected_query_features(loc, scale)
    out = torch.empty(n, k, dtype=torch.long)
    for cell in range(num_clusters):
        q = members[cell]
        if not len(q):
            continue
        reach = sizes[cell_order[cell]].cumsum(0)
        needed = max(probe, int((reach < k + 1).sum()) + 1)
        cand = torch.cat([members[j] for j in cell_order[cell, :needed].tolist()])
        scores = torch.addmm(take(c, cand), take(query, q), take(w, cand).T)
        scores[:, : len(q)].fill_diagonal_(-math.inf)  # cand starts with the cell's own members q
        out[q] = cand[scores.topk(k, dim=-1).indices]
    return out, centroids


class ExemplarBank(nn.Module):
    r"""Cached encoder statistics ``(μ_j, σ_j)`` of all ``n`` exemplars and their neighbours.

    Buffers saved with the module, so that a resumed run continues with the same cache:
    ``loc``, ``scale`` ``(n, D)``; ``neighbours (n, K)``, for each exemplar the ``K``
    others with the highest expected log-density under its posterior (best first,
    never itself); ``steps``, the training calls seen; ``ready``, whether the statistics
    were ever filled; ``listed``, whether the neighbour lists were ever built;
    ``centroids``, ``clustered``, the cells of the last clustered neighbour search;
    and the loss gradients w.r.t. the cached components, accumulated until the exemplar's
    next minibatch (deferred gradients, :attr:`deferred_tables`): w.r.t. their features,
    ``grad_w (n, 2D)``, ``grad_c (n,)``, or, when the components share one scale
    (``shared_scale``: the scale is a live parameter, only the means are cached), w.r.t.
    their means, ``grad_loc (n, D)``. Derived, not saved, and only when the scales are
    cached (not ``shared_scale``): ``w (n, 2D)``, ``c (n,)``, the kernel features of every
    cached component (:func:`component_features`), kept in step with ``loc`` and ``scale``.
    """

    def __init__(self, num: int, z_dim: int, num_neighbours: int, shared_scale: bool = False):
        super().__init__()
        self.register_buffer("loc", torch.zeros(num, z_dim))
        self.register_buffer("scale", torch.ones(num, z_dim))
        self.register_buffer("neighbours", torch.zeros(num, num_neighbours, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("listed", torch.zeros((), dtype=torch.bool))
        self.shared_scale = shared_scale
        if shared_scale:
            self.register_buffer("grad_loc", torch.zeros(num, z_dim))
            self._register_load_state_dict_pre_hook(self._feature_gradients_dropped)
        else:
            self.register_buffer("grad_w", torch.zeros(num, 2 * z_dim))
            self.register_buffer("grad_c", torch.zeros(num))
            self.register_buffer("w", torch.zeros(num, 2 * z_dim), persistent=False)
            self.register_buffer("c", torch.zeros(num), persistent=False)
            self._update_features()
            self.register_load_state_dict_post_hook(lambda module, keys: module._update_features())
        # the clustered index's cells, the next k-means start (saved: resumed runs match)
        self.register_buffer("centroids", torch.zeros(max(1, round(math.sqrt(num))), z_dim))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))

    @property
    def num(self) -> int:
        return self.loc.shape[0]

    @property
    def num_neighbours(self) -> int:
        return self.neighbours.shape[1]

    @property
    def deferred_tables(self) -> tuple[torch.Tensor, ...]:
        """The deferred-gradient tables, in the order of the cached leaves they hold
        gradients for: ``(grad_w, grad_c)``, or ``(grad_loc,)`` with a shared scale."""
        return (self.grad_loc,) if self.shared_scale else (self.grad_w, self.grad_c)

    def _feature_gradients_dropped(self, state_dict, prefix, *args) -> None:
        """A shared-scale bank saved before its deferred gradients were kept w.r.t. the
        means holds them w.r.t. the features instead: they are dropped (the gradients of
        at most one epoch of steps, on a run resumed across that change)."""
        if prefix + "grad_loc" not in state_dict and prefix + "grad_w" in state_dict:
            del state_dict[prefix + "grad_w"], state_dict[prefix + "grad_c"]
            state_dict[prefix + "grad_loc"] = torch.zeros_like(self.grad_loc)

    @torch.no_grad()
    def _update_features(self, index: Optional[torch.Tensor] = None) -> None:
        if self.shared_scale:  # the features hold the live scale: formed where they are used
            return
        if index is None:
            w, c = component_features(self.loc, self.scale)
            self.w.copy_(w)
            self.c.copy_(c)
        else:
            w, c = component_features(take(self.loc, index), take(self.scale, index))
            self.w.index_copy_(0, index, w)
            self.c.index_copy_(0, index, c)

    @torch.no_grad()
    def refresh_stats(self, encoder: nn.Module, data: torch.Tensor, batch_size: int = 2000) -> None:
        """Re-encode all exemplars (no gradients)."""
        for s in range(0, self.num, batch_size):
            loc, scale = encoder(data[s : s + batch_size])
            self.loc[s : s + batch_size] = loc
            self.scale[s : s + batch_size] = scale
        self._update_features()
        self.ready.fill_(True)

    def _search_stats(self, rows: Optional[torch.Tensor] = None,
                      bandwidth: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What neighbours are ranked by: the cached posteriors ``(μ_j, σ_j)`` (of ``rows``),
        or, when the prior's components share one bandwidth ``s (D,)``, ``(μ_j / s, 1)``.
        Then every component is ``N(μ_j, diag s²)`` and ``E_{q_i} log N(z; μ_j, s²)`` ranks
        ``j`` by the distance ``‖(μ_i − μ_j) / s‖`` alone, which is what these give."""
        loc = self.loc if rows is None else take(self.loc, rows)
        if bandwidth is None:
            return loc, self.scale if rows is None else take(self.scale, rows)
        return loc / bandwidth, torch.ones_like(loc)

    def _search_features(self, rows: torch.Tensor,
                         bandwidth: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel features of components ``rows`` (any shape) as :meth:`_search_stats` ranks them."""
        if bandwidth is None and not self.shared_scale:  # kept up to date: read, not recomputed
            return take(self.w, rows), take(self.c, rows)
        return component_features(*self._search_stats(rows, bandwidth))

    @torch.no_grad()
    def rebuild_neighbours(self, exact: Optional[bool] = None, bandwidth: Optional[torch.Tensor] = None) -> None:
        """Neighbour lists from the cached statistics: exact (all pairs) or, by default
        above ``EXACT_SEARCH`` exemplars, from the clustered index of
        :func:`clustered_neighbours`. ``bandwidth``: the components' shared scale, if
        they have one (ranking as in :meth:`_search_stats`)."""
        if self.num_neighbours:
            loc, scale = self._search_stats(bandwidth=bandwidth)
            if exact or (exact is None and self.num <= EXACT_SEARCH):
                own = torch.arange(self.num)
                lists = nearest_exemplars(loc, scale, loc, scale, self.num_neighbours, exclude=own)
            else:
                start = self.centroids if bool(self.clustered) else None
                lists, centroids = clustered_neighbours(
                    loc, scale, self.num_neighbours, num_clusters=len(self.centroids), centroids=start,
                    seed=int(self.steps))
                self.centroids.copy_(centroids)
                self.clustered.fill_(True)
            self.neighbours.copy_(lists)
        self.listed.fill_(True)

    @torch.no_grad()
    def write(self, index: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """Store fresh statistics of exemplars ``index`` (a free refresh of the cache)."""
        self.loc.index_copy_(0, index, loc.detach())
        self.scale.index_copy_(0, index, scale.detach())
        self._update_features(index)

    @torch.no_grad()
    def improved_neighbours(self, index: torch.Tensor, extra: torch.Tensor,
                            bandwidth: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""Re-ranked neighbour lists ``(B, K)`` of exemplars ``index (B,)`` (NN-descent style).

        Each list is replaced by the best ``K`` of: itself, the first ``SECOND_ORDER`` of
        its nearest neighbour's list (neighbours of neighbours), and the best four of the
        shared candidates
        ``extra (m,)`` (random exemplars and the minibatch), scored by the expected
        log-density under the exemplar's cached posterior (given the components' shared
        ``bandwidth``: by distance in its units, see :meth:`_search_stats`).
        """
        k = self.num_neighbours
        lists = take(self.neighbours, index)  # (B, K)
        if k == 0:
            return lists
        second = take(self.neighbours, lists[:, 0])[:, :SECOND_ORDER]  # the nearest neighbour's
        query = expected_query_features(*self._search_stats(index, bandwidth))  # (B, 2D)
        w_extra, c_extra = self._search_features(extra, bandwidth)
        s_extra = torch.addmm(c_extra, query, w_extra.T)
        s_extra = s_extra.masked_fill(extra.unsqueeze(0) == index.unsqueeze(1), -math.inf)
        top = s_extra.topk(min(4, len(extra)), dim=-1)  # topk is slow on CPU: a few suffice
        local = torch.cat([lists, second], -1)
        w_local, c_local = self._search_features(local, bandwidth)
        s_local = torch.bmm(w_local, query.unsqueeze(-1)).squeeze(-1) + c_local
        cand = torch.cat([local, extra[top.indices]], -1)  # (B, L)
        score = torch.cat([s_local, top.values], -1)
        score = score.masked_fill(cand == index.unsqueeze(-1), -math.inf)
        # drop repeated candidates: sort by index, keep the first of each run
        sorted_cand, order = cand.sort(-1)
        dup = torch.zeros_like(sorted_cand, dtype=torch.bool)
        dup[:, 1:] = sorted_cand[:, 1:] == sorted_cand[:, :-1]
        score = score.scatter(-1, order, score.gather(-1, order).masked_fill(dup, -math.inf))
        best = score.topk(k, dim=-1).indices
        return cand.gather(-1, best)
