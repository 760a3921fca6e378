r"""Neighbour search among exemplars: for each exemplar, the components with the highest
expected log-density under its posterior (what the GAE's ``knn`` estimator lists).

:func:`nearest_exemplars` is the exact, chunked all-pairs top-k; :func:`clustered_neighbours`
an IVF index (k-means cells, exact search among a few nearby cells) for large ``n``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_vae.models.gae.kernels import MAX_ELEMENTS, component_features, expected_query_features, take

#: Up to this many exemplars, neighbour lists are rebuilt by exact all-pairs search.
EXACT_SEARCH = 8192


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
            s[torch.arange(len(ex), device=s.device), ex] = -math.inf
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
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same cells on every device
    if centroids is None or centroids.shape != (num_clusters, dim):
        centroids = loc[torch.randperm(n, generator=gen)[:num_clusters].to(loc.device)].clone()
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
        centroids[empty] = loc[torch.randint(0, n, (len(empty),), generator=gen).to(loc.device)]
    order = assign.argsort()
    members = list(order.split(torch.bincount(assign, minlength=num_clusters).tolist()))
    sizes = torch.tensor([len(m) for m in members])  # cpu-ok: bookkeeping
    between = torch.cdist(centroids, centroids).fill_diagonal_(-1.0)  # own cell first, even if another coincides
    cell_order = between.argsort(-1).cpu()  # (C, C), bookkeeping on the CPU
    # [E z², E z, 1] · [w_j, c_j]: the constant folded into the product (no bias pass)
    w, c = component_features(loc, scale)
    table = torch.cat([w, c.unsqueeze(-1)], -1)
    query = torch.cat([expected_query_features(loc, scale), loc.new_ones(n, 1)], -1)
    out = torch.empty(n, k, dtype=torch.long, device=loc.device)
    for cell in range(num_clusters):
        q = members[cell]
        if not len(q):
            continue
        reach = sizes[cell_order[cell]].cumsum(0)
        needed = max(probe, int((reach < k + 1).sum()) + 1)
        cand = torch.cat([members[j] for j in cell_order[cell, :needed].tolist()])
        scores = take(query, q) @ take(table, cand).T
        scores[:, : len(q)].fill_diagonal_(-math.inf)  # cand starts with the cell's own members q
        out[q] = cand[scores.topk(k, dim=-1).indices]
    return out, centroids
