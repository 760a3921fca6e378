r"""Hamiltonian Monte Carlo over the per-point latents of a package model.

The posterior p_θ(z|x) of a model whose data points are independent given θ factorizes
over the points of a batch, so its sampler can be one chain per point. Two samplers
take the same ``log_prob_fn(u) -> (rows,)`` (``u``: ``(rows, d)``, one row per chain
and point, the latents flattened and mapped to unconstrained space):

* :class:`BatchedHMC` (``hmc_backend = "batched"``, the default) runs every row's chain
  at once: one leapfrog trajectory of the whole ``(rows, d)`` array, whose gradient is
  per row because the rows' log-densities are separate terms of one sum, and a
  Metropolis accept/reject **per row** (each row's own Hamiltonian). The step size is
  shared by a group of rows (a chain over all points) and adapted from their mean
  acceptance: dual averaging (Hoffman & Gelman 2014) during a warm-up, or a constant-gain
  Robbins–Monro update on log ε that keeps tracking a moving target (MCEM, where θ
  changes between E-steps).
* :class:`PyroJointHMC` (``hmc_backend = "pyro"``) is :class:`pyro.infer.mcmc.HMC` on the
  potential ``−Σ_rows log p``: one chain over the joint state, so one accept/reject for
  the whole batch, and Pyro's dual-averaging step-size adaptation. Exact, but a joint
  acceptance probability is a product over rows: to keep it near the target the step
  size must shrink as the batch grows, and mixing per point slows down (the benchmark
  ``benchmarks/inference_step_time.py`` measures both, and a per-point Pyro loop).

:class:`LatentSpace` maps a model's latent sites to and from the flat unconstrained
rows (``biject_to(support)``, with the log-Jacobian) and gives the log-joint
``log p_θ(x_i, z_i)`` per row with the model conditioned on the latents; discrete or
enumerated latents are refused there. :func:`sample_posterior` runs several chains per
point with warm-up and returns draws and statistics as ArviZ ``InferenceData``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pyro
import pyro.infer.mcmc
import torch
from pyro import poutine
from pyro.ops.dual_averaging import DualAveraging
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to

from pyro_vae.errors import ConfigError
from pyro_vae.traces import DATA_PLATE, per_point_log_prob, repeat_rows

LogProbFn = Callable[[torch.Tensor], torch.Tensor]

#: An energy error above this marks a divergent trajectory (as Pyro and Stan do).
MAX_ENERGY_ERROR = 1000.0

BACKENDS = ("batched", "pyro")


# ----------------------------------------------------------------------------- latents


@dataclass
class _Site:
    name: str
    event_shape: torch.Size
    unconstrained_shape: torch.Size
    transform: torch.distributions.Transform
    start: int
    size: int


class LatentSpace:
    """The latent sites of ``model`` on ``x`` as one flat unconstrained row per point.

    Every latent must be a continuous per-point site in the ``"data"`` plate, with batch
    shape ``(len(x),)`` (its event may have any shape). ``dim`` is the row length.
    """

    def __init__(self, model: Callable, x: torch.Tensor, what: str = "HMC"):
        self.model = model
        with poutine.block(), torch.no_grad():
            tr = prune_subsample_sites(poutine.trace(model).get_trace(x))
        n, self.sites, start = len(x), [], 0
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            fn = site["fn"]
            if site["infer"].get("enumerate") or fn.support.is_discrete:
                raise ConfigError(
                    f"{what} samples z from p(z|x) with gradients, so it needs continuous latents; "
                    f"the model's site {name!r} is discrete ({type(fn).__name__})"
                )
            frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
            if not frames or tuple(fn.batch_shape) != (n,):
                raise ConfigError(
                    f"{what} needs per-point latents: site {name!r} must sit in the {DATA_PLATE!r} "
                    f"plate alone with batch shape ({n},), got batch shape {tuple(fn.batch_shape)}"
                )
            transform = biject_to(fn.support)
            ushape = transform.inverse_shape(fn.event_shape)
            size = int(np.prod(ushape)) if len(ushape) else 1
            self.sites.append(_Site(name, fn.event_shape, torch.Size(ushape), transform, start, size))
            start += size
        if not self.sites:
            raise ConfigError(f"{what}: the model has no latent sites to sample")
        self.dim = start
        self._nesting = max(
            [-f.dim for s in tr.nodes.values() if s["type"] == "sample"
             for f in s["cond_indep_stack"] if f.vectorized] + [1]
        )

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``u (rows, dim)`` -> site values ``{name: (rows, *event)}`` and ``log|det J| (rows,)``."""
        values, log_det = {}, u.new_zeros(u.shape[:-1])
        for s in self.sites:
            us = u[..., s.start:s.start + s.size].reshape(u.shape[:-1] + s.unconstrained_shape)
            v = s.transform(us)
            values[s.name] = v
            ladj = s.transform.log_abs_det_jacobian(us, v)
            extra = ladj.dim() - (u.dim() - 1)
            log_det = log_det + (ladj.sum(tuple(range(-extra, 0))) if extra > 0 else ladj)
        return values, log_det

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Site values ``{name: (rows, *event)}`` -> ``u (rows, dim)``."""
        parts = []
        for s in self.sites:
            v = values[s.name]
            u = s.transform.inv(v)
            parts.append(u.reshape(v.shape[0], s.size))
        return torch.cat(parts, -1)

    @torch.no_grad()
    def prior_draw(self, x: torch.Tensor) -> torch.Tensor:
        """``(len(x), dim)``: the latents of one model run on ``x`` (draws of the prior)."""
        with poutine.block():
            tr = poutine.trace(self.model).get_trace(x)
        return self.unconstrain({s.name: tr.nodes[s.name]["value"] for s in self.sites})

    def log_joint(self, x: torch.Tensor, u: torch.Tensor, index: Optional[torch.Tensor] = None,
                  num_data: Optional[int] = None) -> torch.Tensor:
        """``(rows,)`` log p_θ(x_i, z_i) + log|det J| at ``u (rows, dim)``, with x's rows
        (``index``: their positions in a training set of ``num_data`` points, for a model
        whose prior depends on them, e.g. the GAE's leave-one-out mixture)."""
        values, log_det = self.constrain(u)
        # Trajectories that overshoot reach values outside a support (z = exp(u) = 0) or
        # NaN; their proposals are rejected, so their densities need no validation.
        with poutine.block(), pyro.validation_enabled(False):
            tr = poutine.trace(poutine.condition(self.model, data=values)).get_trace(x, index, num_data)
            tr = prune_subsample_sites(tr)
            tr.compute_log_prob()
        shape, dim = (1, len(x)), -(self._nesting + 1)
        total = log_det
        for site in tr.nodes.values():
            if site["type"] == "sample":
                total = total + per_point_log_prob(site, dim, shape)[0]
        return total

    def log_prob_fn(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
                    num_data: Optional[int] = None) -> LogProbFn:
        return lambda u: self.log_joint(x, u, index, num_data)

    def values_numpy(self, u: torch.Tensor) -> dict[str, np.ndarray]:
        """``u (..., dim)`` -> ``{name: array (..., *event)}`` (constrained values)."""
        flat = u.reshape(-1, self.dim)
        values, _ = self.constrain(flat)
        return {k: v.reshape(u.shape[:-1] + v.shape[1:]).detach().cpu().numpy() for k, v in values.items()}


# ----------------------------------------------------------------------------- samplers


@dataclass
class Transition:
    """One HMC transition of every row: the new state and its statistics (per row)."""

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    accept_prob: torch.Tensor
    accepted: torch.Tensor
    energy_error: torch.Tensor

    @property
    def diverging(self) -> torch.Tensor:
        return ~(self.energy_error.abs() < MAX_ENERGY_ERROR)


def log_prob_and_grad(log_prob_fn: LogProbFn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows,)`` log-densities and ``(rows, d)`` their gradients (rows are independent)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob_fn(z)
        (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


class BatchedHMC:
    """Independent HMC chains, one per row, integrated together.

    Args:
        num_steps: leapfrog steps per transition (the AEVB paper: 10).
        step_size: initial ε, a float or one per group ``(num_groups,)``.
        target_accept: the mean acceptance probability the adaptation aims at.
        num_groups: rows form this many contiguous groups of equal size, each with its
            own step size (a chain over all points: groups = chains).
        gain: the Robbins–Monro gain on log ε for ``adapt="track"``.
        jitter: each row's ε is drawn uniformly from ``ε (1 ± jitter)`` at every
            transition. A fixed trajectory length ``L ε`` that is close to a period of
            the posterior's dynamics (a Gaussian of scale σ has period 2πσ) sends the
            chain back where it started; on a 2-D linear-Gaussian posterior jitter 0
            gave a median bulk ESS of 37 of 1600 draws, 0.5 gave 1241.

    The mass matrix is the identity.
    """

    def __init__(self, num_steps: int = 10, step_size: float = 0.1, target_accept: float = 0.9,
                 num_groups: int = 1, gain: float = 0.5, jitter: float = 0.5):
        _check_hmc(num_steps, step_size, target_accept)
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.num_steps, self.target_accept, self.gain, self.jitter = num_steps, target_accept, gain, jitter
        self.step_size = torch.as_tensor(step_size, dtype=torch.float32).expand(num_groups).clone()
        self.dual: Optional[DualAveraging] = None

    def _row_step_size(self, rows: int) -> torch.Tensor:
        g = len(self.step_size)
        if rows % g:
            raise ValueError(f"{rows} rows do not split into {g} step-size groups")
        return self.step_size.repeat_interleave(rows // g).unsqueeze(-1)

    def transition(self, log_prob_fn: LogProbFn, z: torch.Tensor, log_prob: Optional[torch.Tensor] = None,
                   grad: Optional[torch.Tensor] = None, adapt: Optional[str] = None) -> Transition:
        """One transition from ``z (rows, d)``; ``log_prob``/``grad`` at ``z`` if known.

        ``adapt``: None (fixed ε), ``"track"`` (Robbins–Monro) or ``"warmup"`` (dual
        averaging; call :meth:`end_warmup` after the last warm-up transition).
        """
        if log_prob is None or grad is None:
            log_prob, grad = log_prob_and_grad(log_prob_fn, z)
        eps = self._row_step_size(len(z)).to(z)
        if self.jitter:
            eps = eps * (1.0 + self.jitter * (2.0 * torch.rand_like(eps) - 1.0))
        p0 = torch.randn_like(z)
        p = p0 + 0.5 * eps * grad
        z_new, lp_new, g_new = z, log_prob, grad
        for i in range(self.num_steps):
            z_new = z_new + eps * p
            lp_new, g_new = log_prob_and_grad(log_prob_fn, z_new)
            p = p + (eps if i < self.num_steps - 1 else 0.5 * eps) * g_new
        energy_error = (-lp_new + 0.5 * p.pow(2).sum(-1)) - (-log_prob + 0.5 * p0.pow(2).sum(-1))
        energy_error = torch.where(torch.isfinite(energy_error), energy_error, torch.full_like(energy_error, math.inf))
        accept_prob = torch.exp(-energy_error.clamp(min=0.0))
        accepted = torch.rand_like(accept_prob) < accept_prob
        keep = accepted.unsqueeze(-1)
        out = Transition(torch.where(keep, z_new, z), torch.where(accepted, lp_new, log_prob),
                         torch.where(keep, g_new, grad), accept_prob, accepted, energy_error)
        if adapt is not None:
            self.adapt(accept_prob, adapt)
        return out

    def adapt(self, accept_prob: torch.Tensor, how: str, average: Optional[Callable] = None) -> None:
        """Adapt the step sizes to a transition's ``accept_prob (rows,)`` (``how`` as
        ``adapt`` in :meth:`transition`). ``average(group_means, rows_per_group)``, if
        given, replaces each group's mean acceptance, e.g. by
        :func:`pyro_vae.distributed.global_mean` over every process's rows."""
        group_accept = accept_prob.reshape(len(self.step_size), -1).mean(-1).to(self.step_size.device)
        if average is not None:
            group_accept = average(group_accept, accept_prob.shape[0] // len(self.step_size))
        if how == "track":
            self.step_size = self.step_size * torch.exp(self.gain * (group_accept - self.target_accept))
        elif how == "warmup":
            # Nesterov dual averaging of log ε toward the target (Hoffman & Gelman 2014,
            # algorithm 5), Pyro's, one scheme per group (it works elementwise on tensors)
            if self.dual is None:
                self.dual = DualAveraging(prox_center=torch.log(10 * self.step_size))
            self.dual.step(self.target_accept - group_accept)
            self.step_size = self.dual.get_state()[0].exp()
        else:
            raise ValueError(f"adapt must be None, 'track' or 'warmup', got {how!r}")

    def end_warmup(self) -> None:
        if self.dual is not None:  # the averaged step size is the one to sample with
            self.step_size = self.dual.get_state()[1].exp()
            self.dual = None

    def state_dict(self) -> dict:
        return {"step_size": self.step_size.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.step_size = state["step_size"].clone()


class PyroJointHMC:
    """:class:`pyro.infer.mcmc.HMC` on the joint potential ``−Σ_rows log p`` (one chain,
    one accept/reject for all rows), with Pyro's dual-averaging step-size adaptation
    while ``adapt`` is set. Same interface as :class:`BatchedHMC`."""

    def __init__(self, num_steps: int = 10, step_size: float = 0.1, target_accept: float = 0.9,
                 num_groups: int = 1, gain: float = 0.1):
        _check_hmc(num_steps, step_size, target_accept)
        if num_groups != 1:
            raise ConfigError("hmc_backend = \"pyro\" runs one joint chain: use num_chains = 1")
        self.num_steps, self.target_accept = num_steps, target_accept
        self._step_size = float(torch.as_tensor(step_size).mean())
        self._fn: Optional[LogProbFn] = None
        self._kernel = None
        self._shape = None
        self._adapting = False

    @property
    def step_size(self) -> torch.Tensor:
        return torch.tensor([self._kernel.step_size if self._kernel else self._step_size])  # cpu-ok: a setting

    def _potential(self, params: dict) -> torch.Tensor:
        return -self._fn(params["z"]).sum()

    def _ensure_kernel(self, z: torch.Tensor, adapt: bool) -> None:
        if self._kernel is not None and self._shape == z.shape and self._adapting == adapt:
            return
        if self._kernel is not None:
            self._step_size = float(self._kernel.step_size)
        kernel = pyro.infer.mcmc.HMC(
            potential_fn=self._potential, step_size=self._step_size, num_steps=self.num_steps,
            adapt_step_size=adapt, adapt_mass_matrix=False, target_accept_prob=self.target_accept,
        )
        kernel.initial_params = {"z": z.detach()}
        # Adaptation runs during "warm-up": while adapting, the warm-up never ends.
        kernel.setup(warmup_steps=10**9 if adapt else 0)
        self._kernel, self._shape, self._adapting = kernel, z.shape, adapt

    def transition(self, log_prob_fn: LogProbFn, z: torch.Tensor, log_prob: Optional[torch.Tensor] = None,
                   grad: Optional[torch.Tensor] = None, adapt: Optional[str] = None) -> Transition:
        self._fn = log_prob_fn
        self._ensure_kernel(z, adapt is not None)
        self._kernel.clear_cache()  # the potential may have changed (new batch, new θ)
        with poutine.block():
            z_new = self._kernel.sample({"z": z.detach()})["z"]
        accepted = torch.full((len(z),), not torch.equal(z_new, z), device=z.device)
        lp, g = log_prob_and_grad(log_prob_fn, z_new)
        return Transition(z_new, lp, g, accepted.float(), accepted, z.new_zeros(len(z)))

    def end_warmup(self) -> None:
        if self._kernel is not None and self._adapting:
            self._step_size = float(self._kernel.step_size)
            self._kernel = None

    def state_dict(self) -> dict:
        return {"step_size": self.step_size}

    def load_state_dict(self, state: dict) -> None:
        self._step_size = float(state["step_size"][0])
        self._kernel = None


def make_sampler(backend: str, **kwargs):
    if backend == "batched":
        return BatchedHMC(**kwargs)
    if backend == "pyro":
        return PyroJointHMC(**kwargs)
    raise ConfigError(f"[inference] hmc_backend = {backend!r} is unknown: choose one of {list(BACKENDS)}")


def _check_hmc(num_steps: int, step_size: float, target_accept: float) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"[inference] hmc_leapfrog_steps must be a positive integer, got {num_steps!r}")
    if not torch.as_tensor(step_size).gt(0).all():
        raise ConfigError(f"[inference] hmc_step_size must be positive, got {step_size}")
    if not 0.0 < target_accept < 1.0:
        raise ConfigError(f"[inference] target_accept must be in (0, 1), got {target_accept}")


# ----------------------------------------------------------------------------- sampling


@dataclass
class PosteriorSamples:
    """Draws of p(z|x) for ``n`` points from ``C`` chains of ``S`` draws each.

    Attributes:
        u: ``(C, S, n, dim)`` unconstrained draws (the sampler's state).
        log_joint: ``(C, S, n)`` log p(x, z) (+ log-Jacobian) at the draws.
        accept_prob, diverging: ``(C, S, n)`` per-transition statistics.
        step_size: ``(C, n)`` the step sizes used after warm-up.
        seconds: wall time of the draws after warm-up.
        space: the :class:`LatentSpace` the rows live in.
    """

    u: torch.Tensor
    log_joint: torch.Tensor
    accept_prob: torch.Tensor
    diverging: torch.Tensor
    step_size: torch.Tensor
    seconds: float
    space: LatentSpace
    warmup_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def values(self) -> dict[str, torch.Tensor]:
        """Constrained draws ``{site: (C, S, n, *event)}``."""
        return {k: torch.as_tensor(v) for k, v in self.space.values_numpy(self.u).items()}

    def to_inference_data(self):
        """The draws as ArviZ ``InferenceData``: posterior ``{site}`` with dims
        ``(chain, draw, point, {site}_dim_0, ...)``, sample_stats ``lp``,
        ``accept_prob``, ``diverging`` and ``step_size`` ``(chain, draw, point)``."""
        return to_inference_data(self.space, self.u, {
            "lp": self.log_joint, "accept_prob": self.accept_prob, "diverging": self.diverging,
            "step_size": self.step_size[:, None, :].expand(self.u.shape[:3]),
        })


def to_inference_data(space: LatentSpace, u: torch.Tensor, stats: dict[str, torch.Tensor]):
    """ArviZ ``InferenceData`` of ``u (chain, draw, point, dim)`` in ``space`` and
    per-draw statistics ``(chain, draw[, point])``."""
    import arviz as az

    posterior = space.values_numpy(u)
    n = u.shape[2]
    dims = {name: ["point"] + [f"{name}_dim_{i}" for i in range(v.ndim - 3)] for name, v in posterior.items()}
    stats_np = {k: v.detach().cpu().numpy() for k, v in stats.items()}
    for k, v in stats_np.items():
        if v.ndim == 3:
            dims[k] = ["point"]
    with warnings.catch_warnings():
        # An E-step records one draw of several chains: ArviZ suspects swapped axes.
        warnings.filterwarnings("ignore", message="More chains .* than draws")
        return az.from_dict(posterior=posterior, sample_stats=stats_np, dims=dims,
                            coords={"point": np.arange(n)})


def sample_posterior(
    model: Callable,
    x: torch.Tensor,
    num_draws: int = 200,
    num_warmup: int = 200,
    num_chains: int = 4,
    num_steps: int = 10,
    step_size: float = 0.1,
    target_accept: float = 0.9,
    init: Optional[torch.Tensor] = None,
    backend: str = "batched",
    thin: int = 1,
    init_candidates: int = 1,
) -> PosteriorSamples:
    """HMC draws of p_θ(z|x) for every row of ``x``, ``num_chains`` chains per row.

    Chains start from prior draws (over-dispersed relative to the posterior, as R-hat
    wants) unless ``init`` ``(C, n, dim)`` is given; with ``init_candidates = k > 1``
    each chain starts from the most probable (highest log p(x, z)) of ``k`` prior draws
    of its own, which keeps chains out of local modes of negligible mass (at the price
    of a less over-dispersed start). With the batched backend every
    chain of every point has its own step size (a float, or ``(C·n,)`` to continue
    earlier chains), adapted by dual averaging during ``num_warmup`` transitions, then
    fixed: posteriors of different points can differ in scale by orders of magnitude,
    and one shared step size left the narrow ones diverging (a benchmark on MNIST: 141
    divergences in 80000 transitions with one per chain, see the benchmark script).
    """
    space = LatentSpace(model, x)
    n = len(x)
    x_rep = repeat_rows(x, num_chains)
    fn = space.log_prob_fn(x_rep)
    if init is None and init_candidates > 1:
        rows = len(x_rep)
        candidates = space.prior_draw(repeat_rows(x_rep, init_candidates))  # (k * rows, dim)
        with torch.no_grad():
            lp = space.log_joint(repeat_rows(x_rep, init_candidates), candidates).reshape(init_candidates, rows)
        best = torch.nan_to_num(lp, nan=-math.inf).argmax(0)
        z = candidates.reshape(init_candidates, rows, -1)[best, torch.arange(rows, device=best.device)]
    elif init is None:
        z = space.prior_draw(x_rep)
    else:
        z = init.reshape(num_chains * n, space.dim).clone()
    sampler = make_sampler(backend, num_steps=num_steps, step_size=step_size, target_accept=target_accept,
                           num_groups=num_chains * n if backend == "batched" else num_chains)
    lp, grad = log_prob_and_grad(fn, z)
    t0 = _now()
    for _ in range(num_warmup):
        tr = sampler.transition(fn, z, lp, grad, adapt="warmup")
        z, lp, grad = tr.z, tr.log_prob, tr.grad
    sampler.end_warmup()
    t1 = _now()
    us, lps, accs, divs = [], [], [], []
    for i in range(num_draws * thin):
        tr = sampler.transition(fn, z, lp, grad)
        z, lp, grad = tr.z, tr.log_prob, tr.grad
        if (i + 1) % thin == 0:
            us.append(z)
            lps.append(lp)
            accs.append(tr.accept_prob)
            divs.append(tr.diverging)
    seconds = _now() - t1

    def stack(ts, *tail):
        return torch.stack(ts, 0).reshape(num_draws, num_chains, n, *tail).transpose(0, 1)

    step_sizes = sampler.step_size.clone().expand(num_chains * n).reshape(num_chains, n)
    return PosteriorSamples(stack(us, space.dim), stack(lps), stack(accs), stack(divs),
                            step_sizes, seconds, space, warmup_seconds=t1 - t0)


def _now() -> float:
    import time

    return time.perf_counter()


def summarize_chains(idata, var_names: Optional[list[str]] = None) -> dict[str, float]:
    """Headline convergence figures of an ``InferenceData``: the worst and median R-hat
    and bulk ESS over every scalar of ``var_names`` (all posterior variables by default),
    and the total number of divergences."""
    import arviz as az

    rhat = az.rhat(idata, var_names=var_names)
    ess = az.ess(idata, var_names=var_names, method="bulk")
    r = np.concatenate([np.ravel(rhat[v].values) for v in rhat.data_vars])
    e = np.concatenate([np.ravel(ess[v].values) for v in ess.data_vars])
    out = {"rhat_max": float(np.nanmax(r)), "rhat_median": float(np.nanmedian(r)),
           "ess_bulk_min": float(np.nanmin(e)), "ess_bulk_median": float(np.nanmedian(e))}
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        out["divergences"] = int(idata.sample_stats["diverging"].values.sum())
    return out
