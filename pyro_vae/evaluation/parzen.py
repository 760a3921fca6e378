r"""Parzen-window (Gaussian KDE) log-likelihood: the protocol of the GAN, GMMN and AAE papers.

A model that can only *sample* is scored by fitting an isotropic Gaussian kernel
density estimate to ``m`` of its samples ``s_1..s_m`` and evaluating held-out data under it:

.. math::

    \log \hat p_σ(x) = \log \frac{1}{m} \sum_{k=1}^{m} N(x; s_k, σ^2 I)
      = \operatorname{logsumexp}_k\Bigl(-\frac{\lVert x - s_k\rVert^2}{2σ^2}\Bigr)
        - \log m - \frac{D}{2} \log(2π σ^2).

The protocol (Goodfellow et al. 2014, "Generative Adversarial Nets", section 5, after
Breuleux et al. 2011): ``m = 10000`` samples; the bandwidth ``σ`` is the value of a
log-spaced grid (``logspace(-1, 0, 10)`` in their code) with the highest mean
log-likelihood on a validation split; the reported figure is the mean test
log-likelihood ``± the standard error`` of the mean over test points, on real-valued
(grey-level) MNIST. The estimate is known to be a poor proxy for the true likelihood
in high dimension (Theis, van den Oord & Bethge 2016); it is kept for comparison with
the published numbers.

Any model works: :func:`parzen_evaluate` only calls ``module.sample(m)`` (or a sampling
function). Distances are computed as ``‖x‖² + ‖s‖² − 2 x·s`` by blocked matrix
products in float64 (``dtype``), so memory stays ``O(block · m)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_vae.ops import logsumexp

__all__ = [
    "DEFAULT_SIGMAS",
    "ParzenResult",
    "parzen_evaluate",
    "parzen_log_density",
    "parzen_log_likelihood",
    "select_bandwidth",
]

#: The bandwidth grid of the GAN paper's ``parzen_ll.py``: 10 values from 0.1 to 1.
DEFAULT_SIGMAS: tuple[float, ...] = tuple(float(s) for s in np.logspace(-1.0, 0.0, 10))


@dataclass(frozen=True)
class ParzenResult:
    """A Parzen-window log-likelihood and how it was obtained.

    Attributes:
        per_point: ``(n,)`` ``log p̂_σ(x_i)`` of the test points, in nats.
        mean, stderr: their mean and standard error (``std / √n``; NaN for one point).
        sigma: the bandwidth used.
        num_samples: ``m``, the samples in the estimate.
        validation: ``{σ: mean validation log-likelihood}`` for every σ tried (empty
            when σ was given).
    """

    per_point: torch.Tensor
    mean: float
    stderr: float
    sigma: float
    num_samples: int
    validation: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.per_point)

    def __str__(self) -> str:
        return (f"{self.mean:.2f} ± {self.stderr:.2f} nats (Parzen, σ={self.sigma:.4g}, "
                f"m={self.num_samples}, n={self.n})")


def _as_matrix(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x) or x.dim() != 2:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name} must be an (n, D) tensor with one point per row, got {shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _check_sigmas(sigmas) -> list[float]:
    values = [float(s) for s in (sigmas if isinstance(sigmas, (list, tuple, np.ndarray, torch.Tensor)) else [sigmas])]
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"bandwidths must be positive finite numbers, got {list(values)}")
    return values


def _block_log_densities(
    x: torch.Tensor, samples: torch.Tensor, sigmas: Sequence[float], batch_size: int, dtype: torch.dtype,
    progress: bool = False, desc: str = "Parzen",
) -> torch.Tensor:
    """``(len(sigmas), n)`` log-densities of every row of ``x`` for every bandwidth."""
    if x.shape[1] != samples.shape[1]:
        raise ValueError(f"the points have D = {x.shape[1]} but the samples have D = {samples.shape[1]}")
    s = samples.to(dtype)
    s_sq = s.pow(2).sum(-1)
    m, dim = s.shape
    sig = torch.tensor(sigmas, dtype=dtype, device=s.device)
    const = -math.log(m) - 0.5 * dim * torch.log(2 * math.pi * sig.pow(2))  # (S,)
    out = []
    for start in tqdm(range(0, len(x), batch_size), disable=not progress, desc=desc, unit="batch"):
        xb = x[start : start + batch_size].to(dtype)
        sq = (xb.pow(2).sum(-1, keepdim=True) + s_sq - 2 * xb @ s.T).clamp_(min=0)  # (b, m)
        per_sigma = [logsumexp(-sq / (2 * sg * sg)) for sg in sigmas]
        out.append(torch.stack(per_sigma) + const.unsqueeze(-1))
    return torch.cat(out, -1)


@torch.no_grad()
def parzen_log_density(
    x: torch.Tensor,
    samples: torch.Tensor,
    sigma: float,
    batch_size: int = 500,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``log (1/m) Σ_k N(x_i; s_k, σ² I)`` for every row of ``x``: ``(n,)`` (float64)."""
    x, samples = _as_matrix(x, "x"), _as_matrix(samples, "samples")
    (sigma,) = _check_sigmas(sigma)
    return _block_log_densities(x, samples, [sigma], batch_size, dtype)[0]


@torch.no_grad()
def select_bandwidth(
    samples: torch.Tensor,
    valid: torch.Tensor,
    sigmas: Optional[Sequence[float]] = None,
    batch_size: int = 500,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> tuple[float, dict]:
    """The σ of ``sigmas`` (default :data:`DEFAULT_SIGMAS`) with the highest mean
    log-likelihood of ``valid``, and ``{σ: that mean}`` for all of them (one pass over
    ``valid``: the distances are shared by all bandwidths)."""
    samples, valid = _as_matrix(samples, "samples"), _as_matrix(valid, "valid")
    sigmas = _check_sigmas(DEFAULT_SIGMAS if sigmas is None else sigmas)
    means = _block_log_densities(valid, samples, sigmas, batch_size, dtype, progress, "bandwidth").mean(-1)
    scores = {s: means[i].item() for i, s in enumerate(sigmas)}
    best = sigmas[int(means.argmax())]
    return best, scores


@torch.no_grad()
def parzen_log_likelihood(
    samples: torch.Tensor,
    test: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    sigma: Optional[float] = None,
    sigmas: Optional[Sequence[float]] = None,
    batch_size: int = 500,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> ParzenResult:
    """Parzen-window log-likelihood of ``test`` under a KDE of ``samples``.

    Give ``sigma``, or ``valid`` to choose it from ``sigmas`` (default
    :data:`DEFAULT_SIGMAS`) by :func:`select_bandwidth`. A chosen σ on the edge of the
    grid is reported in ``validation``: widen the grid if so.
    """
    samples, test = _as_matrix(samples, "samples"), _as_matrix(test, "test")
    if (sigma is None) == (valid is None):
        raise ValueError("give exactly one of sigma (a fixed bandwidth) or valid (data to choose it on)")
    scores = {}
    if sigma is None:
        sigma, scores = select_bandwidth(samples, valid, sigmas, batch_size, dtype, progress)
    per_point = parzen_log_density(test, samples, sigma, batch_size, dtype)
    n = len(per_point)
    stderr = per_point.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return ParzenResult(per_point, per_point.mean().item(), stderr, float(sigma), len(samples), scores)


@torch.no_grad()
def parzen_evaluate(
    model: Union[Callable[[int], torch.Tensor], "torch.nn.Module"],
    test: torch.Tensor,
    valid: torch.Tensor,
    num_samples: int = 10000,
    sigmas: Optional[Sequence[float]] = None,
    batch_size: int = 500,
    sample_batch: int = 1000,
    progress: bool = False,
) -> ParzenResult:
    """The protocol end to end for any model that samples.

    ``model`` is an object with ``sample(n) -> (n, ...)`` (every package model: for the
    VAE and GAE the decoder means ``E[x|z]``) or a function ``n -> (n, ...)``; samples
    and data are compared as flat vectors; it is asked
    for ``num_samples`` samples in batches of ``sample_batch``. σ is chosen on ``valid``
    from ``sigmas``; ``test`` is scored. Seed with ``pyro.set_rng_seed`` first.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    draw = model.sample if hasattr(model, "sample") else model
    if not callable(draw):
        raise ValueError("model must have a sample(n) method or be a function n -> samples")
    parts = [draw(min(sample_batch, num_samples - s)) for s in range(0, num_samples, sample_batch)]
    samples = torch.cat([torch.as_tensor(p).reshape(len(p), -1) for p in parts]).to(torch.float32)
    flat = [t.reshape(len(t), -1) if torch.is_tensor(t) and t.dim() > 2 else t for t in (test, valid)]
    return parzen_log_likelihood(samples, flat[0], valid=flat[1], sigmas=sigmas, batch_size=batch_size,
                                 progress=progress)
