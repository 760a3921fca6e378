"""What the algorithms beyond SVI share: per-data-point log-densities of a model/guide
pair, the split of a module's parameters into the model's (θ) and the guide's (φ), the
dreams of the sleep phase, and the ELBO every algorithm reports for comparable curves.

Every algorithm here works on the package's model protocol (see :mod:`pyro_vae.models`):
``model(x, index, num_data)`` and ``guide(x, index, num_data)`` with their per-point
sites in ``pyro.plate("data")``. Per-point log-densities are *unscaled* (the plate's
subsample factor ``num_data / len(x)`` is applied by the algorithm, outside any
log-sum-exp over particles) and summed over any other plates; the per-site rules
(which sites enter the weight, the errors for global or enumerated sites) are those of
:mod:`pyro_vae.evaluation.marginal_likelihood`, whose helpers are reused so that the
training objectives and the reported log-likelihoods weigh a trace the same way.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import pyro
import pyro.infer
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pyro_vae.config import ConfigError
from pyro_vae.evaluation.marginal_likelihood import (
    _guess_max_plate_nesting,
    _per_point_log_prob,
    _scored_sites,
)

PARTICLE_PLATE = "_particles"


def subsample_scale(x: torch.Tensor, num_data: Optional[int]) -> float:
    """``num_data / len(x)``: the factor by which a minibatch's sum estimates the data set's."""
    return 1.0 if num_data is None else num_data / len(x)


def refuse_enumerated(module: nn.Module, algorithm: str) -> None:
    """A :class:`ConfigError` for a model that marks discrete latents for enumeration."""
    if getattr(module, "has_enumerated_latents", False):
        raise ConfigError(
            f"[inference] name = {algorithm!r} cannot train {type(module).__name__}: it sums out "
            "enumerated discrete latents, which only [inference] name = \"svi\" (elbo = "
            "\"trace_enum\" or \"auto\") supports"
        )


@contextlib.contextmanager
def preserved_rng():
    """Run set-up traces (parameter split, plate nesting, site checks) without consuming
    random numbers: a run resumed from a checkpoint sets up again, and its draws must
    still be those of the uninterrupted run."""
    state = pyro.util.get_rng_state()
    try:
        yield
    finally:
        pyro.util.set_rng_state(state)


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParameterSplit:
    """The module's parameters by where they are used.

    Attributes:
        model: parameters registered (``pyro.module``/``pyro.param``) while running the
            model: θ, the generative parameters.
        guide: parameters registered only by the guide: φ, the recognition parameters.
        shared: parameters both register (e.g. a prior that reuses the encoder); they
            are also in ``model``.
    """

    model: list[nn.Parameter]
    guide: list[nn.Parameter]
    shared: list[nn.Parameter]
    model_names: list[str]
    guide_names: list[str]
    shared_names: list[str]


@torch.no_grad()
def split_parameters(module: nn.Module, x: torch.Tensor) -> ParameterSplit:
    """θ and φ of ``module``: the parameters seen at param sites of a model trace and of
    a guide trace on ``x`` (any batch), matched to ``module.parameters()`` by identity.

    Works for any module following the model protocol; parameters neither program
    registers are left out (nothing would update them anyway).
    """
    owned = {id(p): p for p in module.parameters()}

    def seen(fn, *args) -> dict[int, str]:
        with poutine.block():
            tr = poutine.trace(fn, param_only=True).get_trace(*args)
        out = {}
        for name, site in tr.nodes.items():
            if site["type"] == "param" and id(site["value"]) in owned:
                out.setdefault(id(site["value"]), name)
        return out

    in_model, in_guide = seen(module.model, x), seen(module.guide, x)
    model = [owned[i] for i in in_model]
    guide = [owned[i] for i in in_guide if i not in in_model]
    shared = [owned[i] for i in in_guide if i in in_model]
    return ParameterSplit(
        model, guide, shared,
        list(in_model.values()),
        [n for i, n in in_guide.items() if i not in in_model],
        [n for i, n in in_guide.items() if i in in_model],
    )


# ----------------------------------------------------------------------------- particles


@dataclass
class ParticleTraces:
    """Per-point log-densities of ``K`` guide particles, each ``(K, batch)``.

    ``log_p``: log p(x, z_k) over the model's observed sites and the latents the guide
    samples; ``log_q``: log q(z_k|x); ``log_q_score``: the part of ``log_q`` from guide
    sites without reparameterized samples (discrete latents), the sites that need a
    score-function (REINFORCE/VIMCO) gradient.
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_score: torch.Tensor
    model_trace: poutine.Trace
    guide_trace: poutine.Trace

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q


def max_plate_nesting(model: Callable, guide: Callable, x: torch.Tensor) -> int:
    """How many plate dims the pair uses (from one run on ``x``)."""
    return _guess_max_plate_nesting(model, guide, x)


def particle_traces(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    index: Optional[torch.Tensor],
    num_data: Optional[int],
    num_particles: int,
    nesting: int,
    grad_guide: bool = True,
) -> ParticleTraces:
    """Run the guide with ``num_particles`` vectorized particles and the model replayed
    on it; the log-densities keep their graphs, so ``log_p`` differentiates in θ (and in
    φ through reparameterized samples) and ``log_q`` in φ.

    ``grad_guide=False`` draws the particles without a graph (the wake phase: z is data
    for the model, log q is only reported).
    """
    particle_dim = -(nesting + 1)
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
        with torch.set_grad_enabled(grad_guide and torch.is_grad_enabled()):
            guide_tr = poutine.trace(guide).get_trace(x, index, num_data)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, index, num_data)
    model_tr, guide_tr = prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)
    with torch.set_grad_enabled(grad_guide and torch.is_grad_enabled()):
        guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    model_sites, guide_sites = _scored_sites(model_tr, guide_tr)
    shape = (num_particles, len(x))
    log_p = sum((_per_point_log_prob(s, particle_dim, shape) for s in model_sites), torch.zeros(shape))
    log_q = torch.zeros(shape)
    log_q_score = torch.zeros(shape)
    for site in guide_sites:
        lq = _per_point_log_prob(site, particle_dim, shape)
        log_q = log_q + lq
        if not getattr(site["fn"], "has_rsample", False):
            log_q_score = log_q_score + lq
    return ParticleTraces(log_p, log_q, log_q_score, model_tr, guide_tr)


def non_reparameterized_sites(traces: ParticleTraces) -> list[str]:
    """Names of the guide's sample sites without ``rsample`` (discrete latents)."""
    return [
        name for name, site in traces.guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
        and not getattr(site["fn"], "has_rsample", False)
    ]


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


# ----------------------------------------------------------------------------- sleep


def observed_site(model: Callable, x: torch.Tensor) -> str:
    """The name of the model's one observed site (what the guide reads as ``x``)."""
    with poutine.block(), torch.no_grad():
        tr = poutine.trace(model).get_trace(x[:1])
    names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and s["is_observed"]]
    if len(names) != 1:
        raise ConfigError(
            f"the sleep phase dreams (z, x) from the model and feeds x to the guide: it needs "
            f"exactly one observed site, the model has {names}"
        )
    return names[0]


def sleep_log_q(model: Callable, guide: Callable, obs_name: str, num_dreams: int) -> torch.Tensor:
    """``(num_dreams,)`` log q_φ(z|x) at (z, x) dreamt from the model, ``p_θ(z) p_θ(x|z)``.

    The model runs generatively (``model(None, None, num_dreams)``) without a graph, so
    only φ gets gradients.
    """
    with torch.no_grad(), poutine.block():
        model_tr = poutine.trace(model).get_trace(None, None, num_dreams)
    x_dream = model_tr.nodes[obs_name]["value"]
    guide_tr = poutine.trace(poutine.replay(guide, trace=model_tr)).get_trace(x_dream, None, None)
    guide_tr = prune_subsample_sites(guide_tr)
    guide_tr.compute_log_prob()
    shape = (1, num_dreams)
    sites = [s for s in guide_tr.nodes.values() if s["type"] == "sample" and not s["is_observed"]]
    missing = [s["name"] for s in sites if s["name"] not in model_tr.nodes]
    if missing:
        raise ConfigError(f"guide sites {missing} are not latent sites of the model: nothing to dream them from")
    return sum(_per_point_log_prob(s, -2, shape) for s in sites)[0]


# ----------------------------------------------------------------------------- reporting


@torch.no_grad()
def evaluate_elbo(model: Callable, guide: Callable, x: torch.Tensor) -> float:
    """The ELBO per data point on ``x`` (the whole batch is the data set), with
    :class:`~pyro.infer.TraceMeanField_ELBO` (the analytic KL where torch has it): the
    same estimator as the SVI default, so that every algorithm's curves compare. A guide
    with non-reparameterized (discrete) sites, which that estimator refuses, gets the
    plain Monte Carlo ELBO (:class:`~pyro.infer.Trace_ELBO`)."""
    try:
        return -pyro.infer.TraceMeanField_ELBO().loss(model, guide, x) / len(x)
    except NotImplementedError:
        return -pyro.infer.Trace_ELBO().loss(model, guide, x) / len(x)


def zero_grad(params) -> None:
    for p in params:
        p.grad = None
