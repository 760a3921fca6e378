r"""The training cache of the GAE's scalable estimator: encoder statistics of all ``n``
exemplars, their neighbour lists and the deferred gradients, as buffers that checkpoint.

It belongs to the training objective (:mod:`pyro_vae.models.gae.objective`), never to the
model: scoring or sampling the model leaves it untouched.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from pyro_vae.models.gae.kernels import component_features, expected_query_features, take
from pyro_vae.models.gae.search import EXACT_SEARCH, clustered_neighbours, nearest_exemplars

#: Neighbours of a point's nearest neighbour offered to its list at each update.
SECOND_ORDER = 8


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

    def __init__(self, num: int, z_dim: int, num_neighbours: int, shared_scale: bool = False,
                 device: Optional[torch.device] = None):
        super().__init__()
        at = {"device": device}
        self.register_buffer("loc", torch.zeros(num, z_dim, **at))
        self.register_buffer("scale", torch.ones(num, z_dim, **at))
        self.register_buffer("neighbours", torch.zeros(num, num_neighbours, dtype=torch.long, **at))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, **at))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool, **at))
        self.register_buffer("listed", torch.zeros((), dtype=torch.bool, **at))
        self.shared_scale = shared_scale
        if shared_scale:
            self.register_buffer("grad_loc", torch.zeros(num, z_dim, **at))
            self._register_load_state_dict_pre_hook(self._feature_gradients_dropped)
        else:
            self.register_buffer("grad_w", torch.zeros(num, 2 * z_dim, **at))
            self.register_buffer("grad_c", torch.zeros(num, **at))
            self.register_buffer("w", torch.zeros(num, 2 * z_dim, **at), persistent=False)
            self.register_buffer("c", torch.zeros(num, **at), persistent=False)
            self._update_features()
            self.register_load_state_dict_post_hook(lambda module, keys: module._update_features())
        # the clustered index's cells, the next k-means start (saved: resumed runs match)
        self.register_buffer("centroids", torch.zeros(max(1, round(math.sqrt(num))), z_dim, **at))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool, **at))

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
                own = torch.arange(self.num, device=self.loc.device)
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
