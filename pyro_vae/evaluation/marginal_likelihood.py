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
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from tqdm.auto import tqdm

DATA_PLATE = "data"
_PARTICLE_PLATE = "_importance_particles"

__all__ = ["LogLikelihood", "elbo_per_point", "importance_log_likelihood", "log_likelihood"]


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


@torch.no_grad()
def importance_log_likelihood(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    chunk_size: int = 500,
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
        chunk_size: particles drawn together; the per-chunk log-mean-exps are combined
            with a streaming log-sum-exp, so memory grows like
            ``chunk_size * batch_size * D`` whatever K is.
        progress: show a progress bar over batches.

    Random draws use the global torch RNG: seed with ``pyro.set_rng_seed``.
    """
    _check_args(data, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size)
    nesting = _guess_max_plate_nesting(model, guide, data[:batch_size])
    per_point = torch.cat([
        _batch_log_likelihood(model, guide, x, num_samples, chunk_size, nesting)
        for x in tqdm(data.split(batch_size), disable=not progress, desc="log p(x)", unit="batch")
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
    nesting = _guess_max_plate_nesting(model, guide, data[:batch_size])
    return torch.cat([
        sum(lw.sum(0) for lw in _log_weight_chunks(model, guide, x, num_samples, chunk_size, nesting))
        / num_samples
        for x in data.split(batch_size)
    ])


def _batch_log_likelihood(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, chunk_size: int, nesting: int
) -> torch.Tensor:
    """``(batch,)`` log-mean-exp of the log weights, accumulated chunk by chunk."""
    total = None
    for log_w in _log_weight_chunks(model, guide, x, num_samples, chunk_size, nesting):
        chunk_total = log_w.logsumexp(0)
        total = chunk_total if total is None else torch.logaddexp(total, chunk_total)
    return total - math.log(num_samples)


def _log_weight_chunks(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, chunk_size: int, nesting: int
) -> Iterator[torch.Tensor]:
    """The ``num_samples`` log weights of batch ``x`` as ``(≤ chunk_size, batch)`` chunks."""
    for start in range(0, num_samples, chunk_size):
        yield _log_weights(model, guide, x, min(chunk_size, num_samples - start), nesting)


def _log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_particles: int,
    max_plate_nesting: Optional[int] = None,
) -> torch.Tensor:
    """``(num_particles, batch)`` log weights ``log p(x, z_k) − log q(z_k|x)``, ``z_k ~ q``.

    The particles are a plate at dim ``-(max_plate_nesting + 1)``, left of every plate
    of the model and guide (``max_plate_nesting`` is guessed when not given).
    """
    if max_plate_nesting is None:
        max_plate_nesting = _guess_max_plate_nesting(model, guide, x)
    particle_dim = -(max_plate_nesting + 1)
    with pyro.plate(_PARTICLE_PLATE, num_particles, dim=particle_dim):
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    model_tr, guide_tr = prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    model_sites, guide_sites = _scored_sites(model_tr, guide_tr)
    shape = (num_particles, len(x))
    log_w = torch.zeros(shape)
    for site in model_sites:
        log_w = log_w + _per_point_log_prob(site, particle_dim, shape)
    for site in guide_sites:
        log_w = log_w - _per_point_log_prob(site, particle_dim, shape)
    return log_w


def _scored_sites(model_tr: poutine.Trace, guide_tr: poutine.Trace) -> tuple[list[dict], list[dict]]:
    """The model sites and the guide sites whose log-densities enter the weight."""
    model_sites = _sample_sites(model_tr, "model")
    guide_sites = _sample_sites(guide_tr, "guide")
    for name in guide_sites:
        if name not in model_sites or model_sites[name]["is_observed"]:
            raise ValueError(
                f"guide site {name!r} is not a latent site of the model: every guide sample "
                "site must be a latent the model scores (auxiliary guide variables have no "
                "importance weight)"
            )
    scored = [s for name, s in model_sites.items() if s["is_observed"] or name in guide_sites]
    return scored, list(guide_sites.values())


def _sample_sites(trace: poutine.Trace, role: str) -> dict[str, dict]:
    sites = {name: s for name, s in trace.nodes.items() if s["type"] == "sample"}
    for name, site in sites.items():
        if site["infer"].get("enumerate"):
            raise ValueError(
                f"{role} site {name!r} has infer={{'enumerate': ...}}: enumerated discrete "
                "latents are not supported; sample them in the guide instead (no enumerate)"
            )
    return sites


def _per_point_log_prob(site: dict, particle_dim: int, shape: tuple[int, int]) -> torch.Tensor:
    """The site's unscaled, masked log-density summed to ``(num_particles, batch)``.

    Dims other than the particles' and the ``"data"`` plate's (inner or outer plates of
    the site) are summed: they are factors of the one data point's density.
    """
    data_dim = _data_dim(site)
    rank = -particle_dim
    log_p = torch.as_tensor(scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"]))
    if log_p.dim() > rank:
        raise ValueError(
            f"site {site['name']!r} has log_prob of shape {tuple(log_p.shape)}, more batch "
            f"dims than its plates allow ({rank - 1}); declare its batch dims with plates or "
            "move them into the event shape with .to_event()"
        )
    log_p = log_p.reshape((1,) * (rank - log_p.dim()) + tuple(log_p.shape))
    keep = (0, rank + data_dim)
    other = [d for d in range(rank) if d not in keep]
    if other:
        log_p = log_p.sum(other, keepdim=True)
    return log_p.reshape(log_p.shape[0], log_p.shape[keep[1]]).expand(shape)


def _data_dim(site: dict) -> int:
    """The (negative) dim of the site's ``"data"`` plate; errors when there is none."""
    frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not frames:
        raise ValueError(
            f"site {site['name']!r} is outside the {DATA_PLATE!r} plate: its density is "
            "shared by the whole batch, so it has no per-point importance weight. Put "
            f"per-point sites inside pyro.plate({DATA_PLATE!r}, len(x)); global latents "
            "are not supported"
        )
    if frames[0].dim is None:
        raise ValueError(
            f"site {site['name']!r} is in a sequential {DATA_PLATE!r} plate; use a "
            f"vectorized one (`with pyro.plate({DATA_PLATE!r}, len(x)):`)"
        )
    return frames[0].dim


def _guess_max_plate_nesting(model: Callable, guide: Callable, x: torch.Tensor) -> int:
    """The number of plate dims the model and guide use, from one un-vectorized run.

    Like :meth:`pyro.infer.ELBO._guess_max_plate_nesting`; assumes a static structure.
    """
    with poutine.block():
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    dims = [
        frame.dim
        for trace in (prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr))
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


def _check_args(data: torch.Tensor, **counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not torch.is_tensor(data) or data.dim() != 2:
        shape = tuple(data.shape) if torch.is_tensor(data) else type(data).__name__
        raise ValueError(
            f"data must be an (n, D) tensor with one data point per row, got {shape}; "
            "flatten images with data.reshape(len(data), -1), or use x[None] for one point"
        )
    if len(data) == 0:
        raise ValueError("data is empty (0 rows): give at least one data point")


def log_likelihood(module, data: torch.Tensor, num_samples: int = 5000, **kwargs) -> LogLikelihood:
    """log p(x) of a package model: its own ``log_likelihood`` if it has one (a model whose
    prior the generic sampler cannot score, e.g. an enumerated mixture), else
    :func:`importance_log_likelihood` on its ``model`` and ``guide``."""
    if hasattr(module, "log_likelihood"):
        return module.log_likelihood(data, num_samples=num_samples, **kwargs)
    return importance_log_likelihood(module.model, module.guide, data, num_samples=num_samples, **kwargs)
