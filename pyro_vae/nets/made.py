"""MADE (Germain et al. 2015): a masked autoencoder whose output ``i`` depends only on
the inputs before ``i`` in a chosen order, as Pyro's :class:`~pyro.nn.AutoRegressiveNN`.

The conditioner of MAF's autoregressive layers and of the MADE MoG density
(:mod:`pyro_vae.models.flow`). Its masks and order are buffers: they follow the
network to its device.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro.nn import AutoRegressiveNN

from pyro_vae.nets.mlp import GATED, activation


def made(input_dim: int, hidden: Sequence[int], param_dims: Sequence[int] = (1, 1),
         order: Optional[torch.Tensor] = None, act: str = "relu") -> AutoRegressiveNN:
    """``x (..., D) -> params``: for each ``p`` of ``param_dims`` a tensor ``(..., p, D)``
    (``(..., D)`` where every ``p`` is 1), entry ``i`` a function of ``x[order[:k]]``,
    ``k`` the position of ``i`` in ``order`` (default: ``0, 1, …, D − 1``).

    Args:
        input_dim: D.
        hidden: the hidden layers' widths, at least D each (Pyro's masks need it).
        param_dims: the parameters per dimension (MAF: ``(1, 1)`` for shift and log-scale;
            a mixture of C Gaussians: ``(C, C, C)``).
        order: the autoregressive order, a permutation of ``range(D)``.
        act: the hidden activation (one of :data:`pyro_vae.nets.ACTIVATIONS`, not gated).
    """
    if act in GATED:
        raise ValueError(f"activation {act!r} halves its input, which a MADE's masks do not allow: "
                         "choose relu, tanh, softplus, elu or sigmoid")
    if not hidden or min(hidden) < input_dim:
        raise ValueError(f"hidden = {list(hidden)}: a MADE needs hidden layers at least as wide as the data's "
                         f"dimension D = {input_dim} (so that every output can see every input before it)")
    return AutoRegressiveNN(input_dim, list(hidden), param_dims=list(param_dims), permutation=order,
                            nonlinearity=activation(act))
