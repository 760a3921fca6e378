r"""NICE's layers as Pyro transforms: the coupling layer (additive, or RealNVP's affine
form one setting away) with an interleaved partition, and the diagonal scaling; MAF's
autoregressive layer (Pyro's, with a dtype-correct inverse).

Pyro has affine coupling (:class:`~pyro.distributions.transforms.AffineCoupling`) but not
NICE's additive one, and its couplings keep the *first* ``split_dim`` dimensions. NICE
keeps the odd or the even ones (Dinh et al. 2014, section 5.1), so :class:`Coupling`
partitions by parity with index buffers: no permutation layers between couplings.

Both are written in the paper's direction, data -> base (``h = f(x)``);
:class:`~pyro_vae.models.flow.model.Flow` runs them backwards in its story.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import AffineAutoregressive
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import DenseNN
from torch import nn

from pyro_vae.nets.mlp import GATED, activation


class Coupling(TransformModule):
    r"""A coupling layer ``x (..., D) -> y (..., D)`` (NICE, eq. 4-5; RealNVP's affine form):

    .. math::

        y_K = x_K, \qquad y_C = x_C ⊙ \exp(s(x_K)) + m(x_K),

    with ``K`` the dimensions of parity ``parity`` (0: even, 1: odd; NICE alternates them
    layer by layer), ``C`` the others, and ``m``, ``s`` one ReLU MLP. ``affine = False`` is
    NICE's additive coupling (``s = 0``, volume preserving: ``log |det J| = 0``); else
    ``log |det J| = Σ_C s(x_K)``, with ``s`` clipped to ``log_scale_clip`` (gradients kept).
    Either direction is one pass of the network. The network's last layer starts at zero,
    so the layer starts as the identity (a deep stack of them starts stable).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, parity: int, hidden: Sequence[int], act: str = "relu", affine: bool = False,
                 log_scale_clip: tuple[float, float] = (-5.0, 3.0)):
        super().__init__(cache_size=0)  # no identity cache: a step between two calls changes the result
        if dim < 2:
            raise ValueError(f"a coupling layer splits the dimensions in two: it needs D >= 2, got D = {dim}")
        if act in GATED or not hidden:
            raise ValueError(f"a coupling network needs hidden layers and a plain activation, got {list(hidden)}, "
                             f"{act!r}")
        index = torch.arange(dim)  # cpu-ok: buffers below follow the module
        kept, changed = index[index % 2 == parity], index[index % 2 != parity]
        self.register_buffer("kept", kept, persistent=False)  # cpu-ok: buffers follow the module
        self.register_buffer("changed", changed, persistent=False)  # cpu-ok
        # y = cat(y_K, y_C)[..., order] puts each dimension back in its place
        self.register_buffer("order", torch.argsort(torch.cat([kept, changed])), persistent=False)  # cpu-ok
        self.affine, self.log_scale_clip = affine, log_scale_clip
        n = len(changed)
        self.net = DenseNN(len(kept), list(hidden), param_dims=[n, n] if affine else [n], nonlinearity=activation(act))
        nn.init.zeros_(self.net.layers[-1].weight)
        nn.init.zeros_(self.net.layers[-1].bias)
        self._last: Optional[tuple] = None  # (x, y, log_scale) of the last call, for log_abs_det_jacobian

    def _shift_and_log_scale(self, x_kept: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.net(x_kept)
        if not self.affine:
            return out, None
        shift, log_scale = out
        return shift, clamp_preserve_gradients(log_scale, *self.log_scale_clip)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        x_kept, x_changed = x[..., self.kept], x[..., self.changed]
        shift, log_scale = self._shift_and_log_scale(x_kept)
        y_changed = x_changed + shift if log_scale is None else x_changed * log_scale.exp() + shift
        y = torch.cat([x_kept, y_changed], -1)[..., self.order]
        self._last = (x, y, log_scale)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y_kept, y_changed = y[..., self.kept], y[..., self.changed]
        shift, log_scale = self._shift_and_log_scale(y_kept)
        x_changed = y_changed - shift if log_scale is None else (y_changed - shift) * torch.exp(-log_scale)
        x = torch.cat([y_kept, x_changed], -1)[..., self.order]
        self._last = (x, y, log_scale)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log |det ∂y/∂x|``, ``(...)``."""
        if not self.affine:
            return x.new_zeros(x.shape[:-1])
        last = self._last
        if last is None or last[0] is not x or last[1] is not y:
            _, log_scale = self._shift_and_log_scale(x[..., self.kept])
        else:
            log_scale = last[2]
        return log_scale.sum(-1)


class DiagonalScaling(TransformModule):
    r"""NICE's last layer ``h = exp(s) ⊙ x`` with a learned ``s (D,)`` (section 3.3):
    ``log |det J| = Σ_d s_d``, the only volume change of an additive NICE."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int):
        super().__init__(cache_size=0)
        self.log_scale = nn.Parameter(torch.zeros(dim))  # cpu-ok: a parameter follows the module

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])


class AffineAutoregressiveLayer(AffineAutoregressive):
    r"""Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive` (one MADE, the
    IAF direction: ``y = μ(x) + σ(x) ⊙ x`` in one pass), whose sequential inverse builds its
    tensors in ``y``'s dtype and device (Pyro 1.9's starts from zeros of the default dtype,
    which fails for a float64 model). The inverse is ``D`` passes of the MADE, one per
    dimension in its order, each writing its column into a copy of the previous pass's input."""

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        """``y = σ(x) ⊙ x + μ(x)``, one MADE pass (Pyro's), the clamp of ``log σ`` a plain
        one where no gradient is recorded (scoring held-out data: one pass instead of the
        three of a clamp that keeps gradients)."""
        mean, log_scale = self.arn(x)
        log_scale = _clamp(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
        self._cached_log_scale = log_scale
        return torch.exp(log_scale) * x + mean

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(y)
        for i in self.arn.permutation.tolist():
            mean, log_scale = self.arn(x)
            log_scale = _clamp(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            column = (y[..., i] - mean[..., i]) * torch.exp(-log_scale[..., i])
            # out of place (autograd keeps every pass's input), one copy per pass rather than
            # Pyro's stack of D one-column tensors
            x = x.index_copy(-1, torch.tensor([i], device=y.device), column.unsqueeze(-1))
        self._cached_log_scale = log_scale  # the last pass saw every dimension a scale depends on
        return x


def _clamp(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``t`` clamped to ``[lo, hi]``; with autograd recording, the gradient passes the clamp
    unchanged (Pyro's ``clamp_preserve_gradients``), else a plain clamp (the same values)."""
    return clamp_preserve_gradients(t, lo, hi) if torch.is_grad_enabled() else t.clamp(lo, hi)
