r"""The quadratic-feature kernel: Gaussian log-densities of many points under many
diagonal components as one matrix product.

``log N(z; μ_j, σ_j) = [z², z] · w_j + c_j`` with ``w_j = [−½ σ_j⁻², μ_j σ_j⁻²]`` and
``c_j = −½ Σ_d (μ_jd² σ_jd⁻² + log 2π σ_jd²)``, so a whole ``(points, components)`` table
of log-densities is one ``addmm`` instead of a ``(points, components, z_dim)`` broadcast
(:func:`log_prob_matrix`, :func:`log_mixture`). The same features with
``[μ_i² + σ_i², μ_i]`` in place of ``[z², z]`` give the expected log-density
``E_{z∼q(z|x_i)} log q(z|x_j)`` in closed form, the score that ranks neighbours
(:func:`expected_log_prob_matrix`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_vae.ops import logsumexp

_LOG_2PI = math.log(2 * math.pi)
#: Largest number of (z, component) log-densities held at once by the chunked kernels.
MAX_ELEMENTS = 1 << 22


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


def mixture_table(w: torch.Tensor, c: torch.Tensor, log_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(P, 2D + 1)`` table ``[w_j, c_j + log weight_j]`` of :func:`component_features`
    ``(w, c)`` with the mixture's log-weights (default ``−log P``) folded into the constant:
    then ``[z², z, 1] · table_j = log weight_j + log N(z; μ_j, σ_j²)``, a whole block of
    weighted log-densities one matrix product with no bias pass (:func:`log_mixture`)."""
    num = w.shape[0]
    const = c - math.log(num) if log_weights is None else c + log_weights
    return torch.cat([w, const.unsqueeze(-1)], -1)


def log_mixture(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_weights: Optional[torch.Tensor] = None,
    exclude: Optional[torch.Tensor] = None,
    features: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    max_elements: int = MAX_ELEMENTS,
    table: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""``log Σ_j w_j N(z_v; loc_j, scale_j²)`` for every row of ``z (V, D)``: ``(V,)``.

    Exact log-sum-exp over all ``P`` components, computed in blocks of at most
    ``max_elements`` log-densities (streaming ``logaddexp`` over component blocks), so
    memory does not grow with ``V · P``. ``log_weights (P,)`` defaults to ``−log P``
    (the uniform mixture). ``exclude (V,)`` drops component ``exclude[v]`` from row
    ``v``'s sum (leave-one-out; ``−1`` excludes nothing) without renormalising the
    weights. ``features`` are precomputed :func:`component_features` of ``loc, scale``;
    ``table``, the precomputed :func:`mixture_table` of them and ``log_weights``.

    Without gradients (evaluation: the importance sampler scores ``V`` = particles x
    points rows against all ``P`` exemplars) the blocks are written into one reused
    buffer by a single matrix product each (:func:`mixture_table`: the constants ride in
    the product) and reduced in place (:func:`_log_mixture_blocks`); with gradients the
    same sums are taken out of place, differentiably.
    """
    num = loc.shape[0] if loc is not None else (table if table is not None else features[0]).shape[0]
    if num == 0:
        raise ValueError("the mixture has no components")
    differentiable = torch.is_grad_enabled() and (
        z.requires_grad or any(t is not None and t.requires_grad for t in (loc, scale, log_weights, table))
        or (features is not None and any(t.requires_grad for t in features)))
    if not differentiable:
        if table is None:
            w, c = features if features is not None else component_features(loc, scale)
            table = mixture_table(w, c, log_weights)
        return _log_mixture_blocks(z, table, exclude, max_elements)
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
                    block = block.index_put((rows, ex[rows] - c0), block.new_tensor(-math.inf))
            lse = logsumexp(block)
            total = lse if total is None else torch.logaddexp(total, lse)
        out.append(total)
    return torch.cat(out)


#: The evaluation path's blocks: up to ``ROW_BLOCK`` rows of z and ``FAST_BLOCK``
#: log-densities (8 MB in float32), the fastest of the shapes measured (256-2000 rows,
#: 0.5-4 M elements; ``benchmarks/importance_sampling.py``, the README's section).
ROW_BLOCK = 1024
FAST_BLOCK = 1 << 21


def _log_mixture_blocks(z: torch.Tensor, table: torch.Tensor, exclude: Optional[torch.Tensor],
                        max_elements: int) -> torch.Tensor:
    """:func:`log_mixture` without gradients, from its :func:`mixture_table`.

    Each ``(rows, cols)`` block of weighted log-densities is one ``mm`` of
    ``[z², z, 1]`` and the table into a buffer reused by every block (no bias copy, no
    fresh allocation), then reduced in place: the row maxima, ``exp`` of the shifted
    terms floored as in :func:`pyro_vae.ops.logsumexp` (terms that underflow leave
    ``exp``'s vectorised path), the row sums; the blocks' log-sum-exps are combined by a
    streaming ``logaddexp``, as in the differentiable path.
    """
    num = table.shape[0]
    budget = max(1, min(max_elements, FAST_BLOCK))
    rows = max(1, min(len(z), ROW_BLOCK, budget))
    cols = max(1, min(num, budget // rows))
    query = torch.cat([z * z, z, z.new_ones(len(z), 1)], -1)
    buffer = z.new_empty(rows * cols)
    floor = math.log(torch.finfo(z.dtype).tiny) + 1.0
    out = z.new_empty(len(z))
    for r0 in range(0, len(z), rows):
        q = query[r0 : r0 + rows]
        ex = None if exclude is None else exclude[r0 : r0 + rows]
        total = None
        for c0 in range(0, num, cols):
            part = table[c0 : c0 + cols]
            block = torch.mm(q, part.T, out=buffer[: len(q) * len(part)].view(len(q), len(part)))
            if ex is not None:
                hit = (ex >= c0) & (ex < c0 + len(part))
                if bool(hit.any()):
                    hit_rows = hit.nonzero().squeeze(-1)
                    block.index_put_((hit_rows, ex[hit_rows] - c0), block.new_tensor(-math.inf))
            top = block.amax(1)
            empty = top == -math.inf
            shift = top.masked_fill(~torch.isfinite(top), 0.0)
            block.sub_(shift.unsqueeze(1)).clamp_(min=floor).exp_()
            lse = block.sum(1).log_().add_(shift).masked_fill_(empty, -math.inf)
            total = lse if total is None else torch.logaddexp(total, lse)
        out[r0 : r0 + len(q)] = total
    return out


