r"""Data transforms for density models, declared in ``[data]``: uniform dequantization,
rescaling and the logit transform, each with its log-Jacobian.

A density model (a normalizing flow) scores continuous values, but pixels are 8-bit
integers. The papers report their figures in the space they model, after these
transforms, and compare models by bits per dimension of the 8-bit pixels:

* **dequantize**: a stored grey level ``x ∈ {0, 1/255, …, 1}`` is the integer
  ``k = round(255 x)``; the model sees ``y = (k + u) / 256`` with ``u ~ U[0, 1)^D``, in
  (0, 1). By Jensen, ``log P(k) ≥ E_u[log p(y)] − D log 256`` (Theis et al. 2016): the
  continuous density on [0, 1]^D bounds the discrete one of the 8-bit pixels. NICE
  reports ``log p(y)`` (MNIST: 1980.50 nats).
* **rescale** ``z = lo + (hi − lo) y`` (NICE's CIFAR-10 on [−1, 1]); log-Jacobian
  ``D log(hi − lo)`` per point.
* **logit** ``z = logit(λ + (1 − 2λ) y)`` (MAF: λ = 1e-6 for MNIST, 0.05 for CIFAR-10),
  log-Jacobian ``Σ_d [log(1 − 2λ) − log s_d − log(1 − s_d)]`` with
  ``s = λ + (1 − 2λ) y``. MAF reports ``log p(z)`` in logit space.

The figures of a point (:meth:`DataTransform.figures`), from ``log p_y(y)`` (the density
on [0, 1]^D) and the transform's log-Jacobian ``J(y) = log |det ∂z/∂y|``::

    log_likelihood = log p_z(z) = log p_y(y) − J(y)        (the paper's space)
    bits_per_dim   = (D log 256 − log p_y(y)) / (D log 2)  (dequantized 8-bit pixels)
                   = 8 − log p_y(y) / (D log 2)

Without dequantization the values are taken as they are (e.g. 2-D toy data) and
``bits_per_dim = −log p_z(z) / (D log 2)``, a continuous density's bits per dimension.
The deterministic part (rescale, logit) is a bijection: a flow builds its inverse into
its story (:meth:`DataTransform.to_data_space`), so that the model's ``x`` site, its
samples and its plots live in data space; dequantization is noise, drawn by the training
algorithm for every batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.distributions import constraints
from torch.distributions import transforms as T

from pyro_vae.data.errors import DataError

#: The steps a ``[data] transform`` list may hold, in the order they may appear.
STEPS = ("dequantize", "rescale", "logit")


@dataclass(frozen=True)
class DataTransform:
    """The ``[data]`` transform of a density model: ``steps`` (a subsequence of
    :data:`STEPS`: ``"dequantize"``, then ``"rescale"`` or ``"logit"``), with ``levels``
    grey levels per pixel (256: 8-bit), ``rescale_to = (lo, hi)`` and ``logit_lambda`` λ.

    Values enter in [0, 1] (the data sets' grey levels) whenever a step is declared.
    """

    steps: tuple[str, ...] = ()
    levels: int = 256
    rescale_to: tuple[float, float] = (-1.0, 1.0)
    logit_lambda: float = 1e-6

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "rescale_to", tuple(float(v) for v in self.rescale_to))
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise DataError(f"[data] transform: unknown step(s) {unknown}: choose from {list(STEPS)}")
        if list(steps) != sorted(steps, key=STEPS.index) or len(set(steps)) != len(steps):
            raise DataError(f"[data] transform = {list(steps)}: give each step at most once, in the order "
                            f"{list(STEPS)} (dequantize the pixels first, then map them out of [0, 1])")
        if "rescale" in steps and "logit" in steps:
            raise DataError("[data] transform: \"rescale\" and \"logit\" both map [0, 1] to the model's space: "
                            "choose one")
        lo, hi = self.rescale_to
        if not hi > lo:
            raise DataError(f"[data] rescale_to = {list(self.rescale_to)}: need lo < hi, e.g. [-1.0, 1.0]")
        if not 0.0 <= self.logit_lambda < 0.5:
            raise DataError(f"[data] logit_lambda = {self.logit_lambda}: λ must lie in [0, 0.5) "
                            "(1e-6 for MNIST as MAF, 0.05 for CIFAR-like data)")
        if self.levels < 2:
            raise DataError(f"levels = {self.levels}: a pixel needs at least 2 grey levels")

    @classmethod
    def from_config(cls, data_config) -> "DataTransform":
        """The transform a ``[data]`` section declares (``transform``, ``rescale_to``,
        ``logit_lambda``)."""
        return cls(tuple(data_config.transform), rescale_to=tuple(data_config.rescale_to),
                   logit_lambda=data_config.logit_lambda)

    # ------------------------------------------------------------------ what it is

    @property
    def dequantizes(self) -> bool:
        return "dequantize" in self.steps

    @property
    def bounded(self) -> bool:
        """Whether the data space is [0, 1] (some step is declared)."""
        return bool(self.steps)

    def describe(self) -> str:
        return " -> ".join(self.steps) or "none"

    # ------------------------------------------------------------------ checks

    def check(self, x: torch.Tensor, what: str = "data") -> None:
        """A :class:`DataError` naming the first bad value when ``x`` is outside the
        transform's domain: NaN or infinite anywhere, outside [0, 1] when a step is declared."""
        if not len(x):
            return
        flat = x.reshape(len(x), -1)
        bad = ~torch.isfinite(flat)
        if self.bounded:
            bad |= (flat < 0) | (flat > 1)
        if not bool(bad.any()):
            return
        row = int(bad.any(1).nonzero()[0])
        value = float(flat[row][bad[row]][0])
        if not math.isfinite(value):
            raise DataError(f"{what}: row {row} holds {value}: a density model needs finite values; "
                            "drop or impute the rows with missing values")
        raise DataError(
            f"{what}: row {row} holds the value {value:.6g}, outside [0, 1], but [data] transform = "
            f"{list(self.steps)} takes grey levels in [0, 1] ({self.describe()}): rescale the data to [0, 1] "
            "(divide 8-bit pixels by 255), or set [data] transform = [] for data that are already continuous")

    # ------------------------------------------------------------------ the steps

    def dequantize(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``y = (round((levels − 1) x) + u) / levels`` with ``u ~ U[0, 1)`` of ``x``'s shape,
        dtype and device (drawn from ``generator``, else torch's global RNG); ``x`` as it
        is without the ``"dequantize"`` step."""
        if not self.dequantizes:
            return x
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (torch.round(x * (self.levels - 1)) + u) / self.levels

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``z = g(y)``: [0, 1] values to the model's space (rescale or logit)."""
        if "logit" in self.steps:
            log_s, log_1ms = self._logs(y)
            return log_s - log_1ms
        if "rescale" in self.steps:
            lo, hi = self.rescale_to
            return lo + (hi - lo) * y
        return y

    def log_abs_det_jacobian(self, y: torch.Tensor, event_dims: int) -> torch.Tensor:
        """``J(y) = log |det ∂g/∂y|`` per point, summed over the last ``event_dims`` dims of ``y``."""
        return self.to_model_space(y, event_dims)[1]

    def to_model_space(self, y: torch.Tensor, event_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, J(y))``: :meth:`forward` and :meth:`log_abs_det_jacobian` in one pass (the
        logit's ``log s`` and ``log(1 − s)`` serve both), ``z`` of ``y``'s shape, ``J`` of
        its batch shape (the last ``event_dims`` dims summed). Without a step ``z`` is ``y``."""
        dims = tuple(range(-event_dims, 0))
        batch = y.shape[: y.dim() - event_dims]
        d = math.prod(y.shape[y.dim() - event_dims:])
        if "logit" in self.steps:
            log_s, log_1ms = self._logs(y)
            # Σ_d [log(1 − 2λ) − log s_d − log(1 − s_d)], the constant taken out of the sum
            jacobian = d * math.log1p(-2 * self.logit_lambda) - (log_s + log_1ms).sum(dims)
            return log_s - log_1ms, jacobian
        if "rescale" in self.steps:
            lo, hi = self.rescale_to
            return lo + (hi - lo) * y, y.new_full(batch, d * math.log(hi - lo))
        return y, y.new_zeros(batch)

    def _logs(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log s, log(1 − s))`` with ``s = λ + (1 − 2λ) y``, elementwise."""
        lam = self.logit_lambda
        s = lam + (1 - 2 * lam) * y
        return torch.log(s), torch.log1p(-s)

    def to_data_space(self) -> list[T.Transform]:
        """``g⁻¹`` as torch transforms, model space -> data space: what a flow appends to
        its learned transforms so that its ``x`` is in [0, 1]. Their parameters are Python
        floats, so they follow any device and dtype."""
        if "logit" in self.steps:
            return [InverseLogit(self.logit_lambda)]
        if "rescale" in self.steps:
            lo, hi = self.rescale_to
            return [T.AffineTransform(-lo / (hi - lo), 1 / (hi - lo))]
        return []

    # ------------------------------------------------------------------ figures

    def figures(self, log_p_data: torch.Tensor, y: torch.Tensor, event_dims: int,
                log_jacobian: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Per point: ``log_likelihood`` (nats in the model's space) and ``bits_per_dim``
        (of the ``levels``-level pixels when dequantized), from ``log_p_data = log p_y(y)``;
        ``log_jacobian``: ``J(y)`` when the caller has it (a flow's :meth:`score`), else
        computed here."""
        d = math.prod(y.shape[y.dim() - event_dims:])
        if log_jacobian is None:
            log_jacobian = self.log_abs_det_jacobian(y, event_dims)
        log_p_model = log_p_data - log_jacobian
        if self.dequantizes:
            bpd = bits_per_dim(log_p_data, d, self.levels)
        else:
            bpd = -log_p_model / (d * math.log(2))
        return {"log_likelihood": log_p_model, "bits_per_dim": bpd}


class InverseLogit(T.Transform):
    r"""``y = (σ(z) − λ) / (1 − 2λ)``, elementwise: the logit step's inverse, model space ->
    [0, 1], as one transform (torch's Sigmoid then Affine cost two passes and two
    log-Jacobians, one of them softplus twice). With ``s = σ(z) = λ + (1 − 2λ) y``::

        log |dy/dz| = log s + log(1 − s) − log(1 − 2λ)

    computed from ``y`` (what scoring holds), the negative of the logit's log-Jacobian.
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, lam: float, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.lam = float(lam)

    def __eq__(self, other) -> bool:
        return isinstance(other, InverseLogit) and other.lam == self.lam

    def with_cache(self, cache_size: int = 1) -> "InverseLogit":
        return self if self._cache_size == cache_size else InverseLogit(self.lam, cache_size)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(z) - self.lam) / (1 - 2 * self.lam)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        s = self.lam + (1 - 2 * self.lam) * y
        return torch.log(s) - torch.log1p(-s)

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.lam + (1 - 2 * self.lam) * y
        return torch.log(s) + torch.log1p(-s) - math.log1p(-2 * self.lam)


def bits_per_dim(log_likelihood, dims: int, levels: int = 256, log_jacobian=0.0):
    r"""Bits per dimension of ``levels``-level pixels from a log-likelihood in nats of
    dequantized data: ``log2(levels) − (log_likelihood + log_jacobian) / (dims · ln 2)``.

    ``log_likelihood`` is in the space a model scored; ``log_jacobian`` is ``log |det ∂z/∂y|``
    of the map from [0, 1] pixels to that space (0 for [0, 1] itself, ``dims · ln 2``
    for [−1, 1]). NICE's MNIST 1980.50 nats is 4.36 bits/dim; its CIFAR-10 on [−1, 1],
    5371.78 nats, is 4.48.
    """
    return math.log2(levels) - (log_likelihood + log_jacobian) / (dims * math.log(2))

