r"""Importance-sampled estimates of the marginal log-likelihood log p_θ(x).

For a latent-variable model p_θ(x, z) and a guide q_φ(z|x), every data point gets

.. math::

    \log \hat p_K(x) = \log \frac{1}{K} \sum_{k=1}^{K} w_k, \qquad
    \log w_k = \log p_θ(x, z_k) - \log q_φ(z_k|x), \quad z_k \sim q_φ(\cdot|x),

the estimator of Rezende, Mohamed & Wierstra (2014), "Stochastic Backpropagation and
Approximate Inference in Deep Generative Models", appendix E, and of Burda, Grosse &
Salakhutdinov (2016), "Importance Weighted Autoencoders", with K = 5000 the value
used to report test log-likelihoods. Because E[w_k] = p_θ(x), Jensen's inequality gives
E[log p̂_K(x)] ≤ log p_θ(x): a stochastic lower bound that increases monotonically in K
(Burda et al., theorem 1) and tends to log p_θ(x) as K → ∞. K = 1 is the ELBO, whose
per-point estimate :func:`elbo_per_point` averages log w_k over particles instead.

Any model/guide pair that follows the package convention works (nothing here is
VAE-specific): ``model(x)`` and ``guide(x)`` put every per-point site inside a
vectorized ``pyro.plate("data", len(x))``, the guide samples every latent site the model
scores, and the model observes ``x``. The K particles are vectorized with an outer
plate to the left of the model's plates, so one pass of the guide and the replayed
model scores ``chunk`` particles for a whole batch.

Sites are handled as follows:

* observed model sites and latent model sites the guide samples are scored by the
  model, the guide's sites by the guide; the log-densities are *unscaled* (plate
  subsampling or ``poutine.scale`` annealing does not change p_θ(x)) but masks apply;
* a latent model site the guide does not sample is drawn from the model's own
  conditional, so its density cancels from the weight and is left out;
* a site outside the ``"data"`` plate (a global latent, shared by all points) has no
  per-point weight: it is an **error** (``ValueError``), as are sequential ``"data"``
  plates, guide sites the model lacks and sites marked for enumeration.

Cost: every chunk but an evaluation's first runs without Pyro's validation and without
param-site registration, and scores independent Bernoulli and Normal sites with the
evaluation kernels of :mod:`pyro_vae.traces` (``bernoulli_log_prob``,
``normal_log_prob``: the same densities with fewer full-size passes); the default sizes,
10 points x 500 particles per chunk, are the measured optimum on the MNIST VAE
(``benchmarks/importance_sampling.py``, where the sampler is timed against a plain
PyTorch loop).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.capabilities import capabilities_of
from pyro_vae.plates import module_registration_skipped
from pyro_vae.traces import max_plate_nesting, particle_traces

__all__ = ["LogLikelihood", "elbo_per_point", "importance_log_likelihood", "log_likelihood", "log_weights"]


@dataclass(frozen=True)
class LogLikelihood:
    """Per-point marginal log-likelihood estimates and their summary.

    Attributes:
        per_point: ``(n,)`` estimates of log p(x_i), in nats.
        mean: their mean, the reported test log-likelihood.
        stderr: standard error of the mean, ``std(per_point) / sqrt(n)`` (the spread
            across data points; NaN for a single point).
        num_samples: K, the importance samples per point.
    """

    per_point: torch.Tensor
    mean: float
    stderr: float
    num_samples: int

    @classmethod
    def from_per_point(cls, per_point: torch.Tensor, num_samples: int) -> "LogLikelihood":
        n = len(per_point)
        stderr = per_point.std().item() / math.sqrt(n) if n > 1 else float("nan")
        return cls(per_point, per_point.mean().item(), stderr, num_samples)

    @property
    def n(self) -> int:
        return len(self.per_point)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.stderr:.2f} nats (k={self.num_samples}, n={self.n})"


#: Default data points per batch of :func:`importance_log_likelihood`.
BATCH_SIZE = 10
#: Default (particle, point) pairs per chunk: ``chunk_size = CHUNK_PAIRS // batch_size``.
#: Measured (``benchmarks/importance_sampling.py``; MNIST VAE, 2 threads) about the
#: fastest: fewer pairs pay the per-chunk cost of the traces (some 2 ms) more often, and
#: from about 10000 pairs on the chunk's full-size tensors (30 MB of decoder output) are
#: slower to allocate and stream than they save.
CHUNK_PAIRS = 5000


@torch.no_grad()
def importance_log_likelihood(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = BATCH_SIZE,
    chunk_size: Optional[int] = None,
    progress: bool = False,
) -> LogLikelihood:
    r"""Importance-sampled log p(x_i) for every row of ``data``.

    ``log p(x) ≈ logmeanexp_k [log p(x, z_k) − log q(z_k|x)]``, ``z_k ~ q(·|x)``, with
    ``k = 1..num_samples`` (see the module docstring for the estimator and its bias).

    Args:
        model: ``model(x)``, a Pyro model with per-point sites in ``pyro.plate("data")``.
        guide: ``guide(x)``, its amortized guide.
        data: ``(n, D)`` data set.
        num_samples: K, importance samples per point (5000 in the literature).
        batch_size: data points scored together.
        chunk_size: particles drawn together (default ``CHUNK_PAIRS // batch_size``, 500:
            about 5000 particle-point pairs per chunk); the per-chunk log-mean-exps are
            combined with a streaming log-sum-exp, so memory grows like
            ``chunk_size * batch_size * D`` whatever K is.
        progress: show a progress bar over batches.

    Random draws use the global torch RNG: seed with ``pyro.set_rng_seed``. The same
    seed, data, ``batch_size`` and ``chunk_size`` give the same draws.
    """
    chunk_size = _default_chunk(chunk_size, batch_size)
    _check_args(data, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size)
    nesting = max_plate_nesting(model, guide, data[:batch_size])
    per_point = torch.cat([
        _batch_log_likelihood(model, guide, x, num_samples, chunk_size, nesting, validate=i == 0)
        for i, x in enumerate(tqdm(data.split(batch_size), disable=not progress, desc="log p(x)", unit="batch"))
    ])
    return LogLikelihood.from_per_point(per_point, num_samples)


@torch.no_grad()
def elbo_per_point(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    num_samples: int = 1,
    batch_size: int = 1000,
    chunk_size: int = 500,
) -> torch.Tensor:
    r"""Monte-Carlo ELBO of every row of ``data``: ``(n,)``, in nats.

    ``ELBO(x) ≈ mean_k [log p(x, z_k) − log q(z_k|x)]``, ``z_k ~ q(·|x)``: the same log
    weights as :func:`importance_log_likelihood`, averaged rather than log-mean-exp'ed,
    so ``ELBO(x) ≤ log p(x)`` and the gap is KL(q(z|x) ‖ p(z|x)).
    """
    _check_args(data, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size)
    nesting = max_plate_nesting(model, guide, data[:batch_size])
    return torch.cat([
        sum(lw.sum(0) for lw in _log_weight_chunks(model, guide, x, num_samples, chunk_size, nesting, i == 0))
        / num_samples
        for i, x in enumerate(data.split(batch_size))
    ])


def _batch_log_likelihood(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, chunk_size: int, nesting: int,
    validate: bool = True,
) -> torch.Tensor:
    """``(batch,)`` log-mean-exp of the log weights, accumulated chunk by chunk."""
    total = None
    for log_w in _log_weight_chunks(model, guide, x, num_samples, chunk_size, nesting, validate):
        chunk_total = log_w.logsumexp(0)
        total = chunk_total if total is None else torch.logaddexp(total, chunk_total)
    return total - math.log(num_samples)


def _log_weight_chunks(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, chunk_size: int, nesting: int,
    validate: bool = True,
) -> Iterator[torch.Tensor]:
    """The ``num_samples`` log weights of batch ``x`` as ``(≤ chunk_size, batch)`` chunks.

    No chunk registers the networks' parameters as Pyro param sites (the weights never
    read them; :func:`pyro_vae.plates.register_module`). With ``validate`` (the first
    batch of an evaluation) the first chunk runs with Pyro's validation as configured
    (argument and support checks, NaN warnings); every other chunk skips it, as the
    training objectives skip it after their first step: a mistake in the model shows
    on the first chunk, and the later ones run the same program on other particles and
    data points. Those fast chunks also score independent Bernoulli and Normal sites by
    :func:`pyro_vae.traces.bernoulli_log_prob` and :func:`pyro_vae.traces.normal_log_prob`.
    """
    for start in range(0, num_samples, chunk_size):
        checks = contextlib.nullcontext() if validate and start == 0 else pyro.validation_enabled(False)
        with module_registration_skipped(), checks:
            log_w = log_weights(model, guide, x, min(chunk_size, num_samples - start), nesting)
        yield log_w


def log_weights(model: Callable, guide: Callable, x: torch.Tensor, num_particles: int,
                nesting: int) -> torch.Tensor:
    """``(num_particles, batch)`` log weights ``log p(x, z_k) − log q(z_k|x)``, ``z_k ~ q``:
    the guide's particles vectorized in a plate left of every plate of the pair
    (``nesting``: :func:`pyro_vae.traces.max_plate_nesting`)."""
    return particle_traces(model, guide, x, None, None, num_particles, nesting, grad_guide=False).log_w


def _default_chunk(chunk_size: Optional[int], batch_size) -> Optional[int]:
    if chunk_size is not None or isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        return chunk_size  # checked as given
    return max(1, CHUNK_PAIRS // batch_size)


def _check_args(data: torch.Tensor, **counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not torch.is_tensor(data) or data.dim() < 2:
        shape = tuple(data.shape) if torch.is_tensor(data) else type(data).__name__
        raise ValueError(
            f"data must be an (n, *event_shape) tensor with one data point per row, got {shape}; "
            "use x[None] for one point"
        )
    if len(data) == 0:
        raise ValueError("data is empty (0 rows): give at least one data point")


def log_likelihood(module, data: torch.Tensor, num_samples: int = 5000, **kwargs) -> LogLikelihood:
    """log p(x) of a model module, as its declared capabilities allow: the importance
    sampler with the module's guide as proposal (:func:`importance_log_likelihood`);
    a model with enumerated discrete latents is scored through its collapsed story
    (``module.collapsed()``: the latents summed out of the prior, e.g. the GAE's exact
    mixture over all n exemplars)."""
    caps = capabilities_of(module)
    if not caps.has_guide:
        raise ValueError(f"{type(module).__name__} has no guide to propose latents from: "
                         "it cannot be scored by importance sampling")
    with module.collapsed() if caps.enumerated_latents else contextlib.nullcontext():
        return importance_log_likelihood(module.model, module.guide, data, num_samples=num_samples, **kwargs)
