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
                    block = block.index_put((rows, ex[rows] - c0), block.new_tensor(-math.inf))
            lse = logsumexp(block)
            total = lse if total is None else torch.logaddexp(total, lse)
        out.append(total)
    return torch.cat(out)


