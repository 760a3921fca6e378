r"""Importance-weighted (multi-sample) objectives: IWAE and VIMCO.

Both ascend, for each data point, the K-sample bound of Burda, Grosse & Salakhutdinov
(2016), "Importance Weighted Autoencoders":

.. math::

    \mathcal L_K(x) = \mathbb E \log \frac1K \sum_{k=1}^K w_k, \qquad
    w_k = \frac{p_θ(x, z_k)}{q_φ(z_k|x)}, \quad z_k \sim q_φ(\cdot|x),

which is the ELBO at K = 1 and tends to log p_θ(x) as K grows. They differ in the
gradient with respect to φ.

* **IWAE** (``"iwae"``) is :class:`pyro.infer.RenyiELBO` with ``alpha = 0``: the
  reparameterization gradient, so every guide site must be reparameterizable
  (continuous). Pyro's estimator keeps the ``"data"`` plate's dim (it is common to all
  sites) and so takes the log-sum-exp over particles per data point, as it should; but
  it multiplies each site's log-density by the plate's subsample scale ``N/B`` *inside*
  the log-sum-exp, which turns a minibatch's bound into a different (not a lower)
  bound. :class:`IWAE` therefore runs the model and guide under
  ``poutine.scale(B/N)`` (unscaled weights, the minibatch is still subsampled) and
  scales the *gradient* of every site's log-density (not its value) by ``N/B``: the
  backward pass gives exactly the gradient of ``N/B · Σ_{i∈batch} L_K(x_i)`` to every
  leaf it reaches, the parameters and a family's cached tensors whose gradients are
  kept for later (the GAE's deferred component gradients) alike.
* **VIMCO** (``"vimco"``; Mnih & Rezende 2016, "Variational Inference for Monte Carlo
  Objectives") handles guide sites without reparameterized samples (discrete latents):
  their score-function term gets, for particle k, the per-point learning signal
  ``L̂ − L̂_{−k}`` where ``L̂_{−k}`` replaces ``log w_k`` by the mean of the other
  ``log w_j`` (the geometric-mean leave-one-out baseline). Reparameterized sites keep
  their pathwise gradient, so on a continuous model VIMCO is IWAE.

A model with enumerated latents that its family sums out (the GAE, ``objective``: its
:class:`~pyro_vae.inference.base.Collapsing` training objective) is trained on its collapsed
story: the weights use the family's estimate of the prior with y summed out, one pool for
all K particles. The GAE's knn estimate is an unbiased *density*, drawn independently of the
particles, so ``E[(1/K) Σ_k w_k] = p(x)`` still and the bound stays a lower bound in
expectation (the pseudo-marginal argument); the family's penalty is added to the loss.

Both report ``"iwae"`` (the K-sample bound per point) and ``"elbo"`` (the mean of the
same ``log w_k``: a K-sample ELBO estimate, no extra model runs).

**Warm-up** (IWAE's ``warmup_epochs = T``, the recipe SVI's runs use): for the first ``T``
epochs every latent site's log-density, in the model and in the guide, weighs
``β = min(1, (epoch + 1) / T)`` (0-based epochs) inside the weights
(:class:`~pyro_vae.inference.annealing.scale_latents`),
``log w_k = log p(x|z_k) + β (log p(z_k) − log q(z_k|x))``, the β-weighted ELBO's tilt
applied to each particle; from the ``T``-th epoch on it is the bound above. ``"iwae"`` is then the
tilted bound that is trained, ``"elbo"`` stays at ``β = 1``, and validation is always at
``β = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pyro.infer
import torch
from pyro import poutine
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.inference.annealing import check_annealing, kl_weight_at, scale_latents
from pyro_vae.inference.base import Inference, collapsed_story, collapsing_objective
from pyro_vae.inference.optim import RoleOptimizers
from pyro_vae.traces import (
    max_plate_nesting,
    non_reparameterized_sites,
    particle_traces,
    per_point_log_prob,
    preserved_rng,
    scored_sites,
    subsample_scale,
    zero_grad,
)


@dataclass
class IWAEConfig:
    """``[inference] name = "iwae"``."""

    name: str = "iwae"
    #: K, importance samples per data point of the bound (1: the ELBO).
    num_particles: int = 1
    #: T: the latent sites' weight in the log weights rises linearly to 1 over T epochs
    #: (0: none); see the module's "Warm-up".
    warmup_epochs: int = 0


@dataclass
class VIMCOConfig:
    """``[inference] name = "vimco"``."""

    name: str = "vimco"
    #: K >= 2 samples per data point (the leave-one-out baseline needs two).
    num_particles: int = 5


def _check_particles(num_particles: int, name: str) -> None:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(f"[inference] num_particles must be a positive integer, got {num_particles!r}")
    if name == "vimco" and num_particles < 2:
        raise ConfigError("VIMCO's leave-one-out baseline needs [inference] num_particles >= 2")


class _RecordingRenyiELBO(pyro.infer.RenyiELBO):
    """RenyiELBO that keeps its last (model, guide) traces, to report the ELBO for free,
    and whose gradient is ``grad_scale`` times its own.

    RenyiELBO's surrogate is ``Σ_k w̃_k Σ_sites log p_site`` with the normalised weights
    ``w̃_k`` detached: linear in the sites' log-densities, so scaling each one's gradient
    (its value unchanged: ``ℓ̄ + s·(ℓ − ℓ̄)``, ``ℓ̄`` detached) scales the whole gradient
    by ``s``, for every leaf the backward pass reaches.
    """

    grad_scale = 1.0

    def _get_trace(self, model, guide, args, kwargs):
        traces = super()._get_trace(model, guide, args, kwargs)
        if self.grad_scale != 1.0:
            for site in (s for tr in traces for s in tr.nodes.values() if s["type"] == "sample"):
                lp = site["log_prob"]
                if torch.is_tensor(lp) and lp.requires_grad:
                    site["log_prob"] = lp.detach() + self.grad_scale * (lp - lp.detach())
        self.last_traces = traces
        return traces


class _OneOptimizer(Inference):
    """What IWAE and VIMCO share: one optimizer (role ``"all"``) over all the module's
    parameters."""

    figures = ("iwae", "elbo")

    def _build_optimizer(self, optimizer: str, lr: float) -> None:
        self.optimizers = RoleOptimizers(optimizer, lr, {"all": self.module.parameters()})

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers["all"]


class IWAE(_OneOptimizer):
    """The IWAE bound with K particles, via ``pyro.infer.RenyiELBO(alpha=0)``.

    Args:
        module: the model module.
        num_particles: K (1 is the ELBO, with the Trace_ELBO gradient).
        optimizer, lr: one optimizer over all the module's parameters.
        warmup_epochs: T of the warm-up (the module's "Warm-up"; the training loop calls
            :meth:`start_epoch`).
    """

    def __init__(self, module: nn.Module, num_particles: int = 5, optimizer: str = "adam", lr: float = 1e-3,
                 objective=None, warmup_epochs: int = 0):
        self.objective = collapsing_objective(module, "iwae", objective)
        _check_particles(num_particles, "iwae")
        check_annealing(1.0, warmup_epochs)
        self.warmup_epochs = warmup_epochs
        self.beta = kl_weight_at(0, 1.0, warmup_epochs)
        self.module, self.model, self.guide = module, module.model, module.guide
        self.num_particles = num_particles
        self.elbo = _RecordingRenyiELBO(alpha=0.0, num_particles=num_particles, vectorize_particles=True)
        self._build_optimizer(optimizer, lr)
        self._checked = False

    def _check(self, x: torch.Tensor) -> None:
        with poutine.block(), torch.no_grad(), preserved_rng(), collapsed_story(self.module):
            nesting = max_plate_nesting(self.model, self.guide, x[:2])  # what RenyiELBO would guess
            tr = particle_traces(self.model, self.guide, x[:2], None, None, 1, nesting)
        discrete = non_reparameterized_sites(tr)
        if discrete:
            raise ConfigError(
                f"[inference] name = \"iwae\" needs reparameterizable guide sites, but {discrete} "
                "cannot be reparameterized (discrete latents): use name = \"vimco\""
            )
        self.elbo.max_plate_nesting = nesting + (1 if self.num_particles > 1 else 0)
        self._checked = True

    def start_epoch(self, epoch: int) -> None:
        """Set β for the 0-based ``epoch`` (the warm-up schedule), and the objective's."""
        self.beta = kl_weight_at(epoch, 1.0, self.warmup_epochs)
        super().start_epoch(epoch)

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        if not self._checked:
            self._check(x)
        scale = subsample_scale(x, num_data)
        unscale = 1.0 / scale
        model = poutine.scale(self.model, scale=unscale)
        guide = poutine.scale(self.guide, scale=unscale)
        if self.beta != 1.0:
            model, guide = scale_latents(self.beta)(model), scale_latents(self.beta)(guide)
        zero_grad(self.module.parameters())
        # N/B on the gradient, not the parameters' .grad afterwards: a collapsed step's
        # cached components (the GAE's knn) also get theirs from this backward pass
        self.elbo.grad_scale = scale
        with self.collapsed_step(x, index, num_data) as story:
            loss = self.elbo.loss_and_grads(model, guide, x, index, num_data)
            _backward(story.terms())  # the family's own terms (a penalty), at their own scale
            self.optimizer.step()
        return {"iwae": -loss / len(x), "elbo": self._mean_log_weight(len(x))}

    def _mean_log_weight(self, batch: int) -> float:
        model_tr, guide_tr = self.elbo.last_traces
        k = self.num_particles
        dim = -self.elbo.max_plate_nesting if k > 1 else -(self.elbo.max_plate_nesting + 1)
        model_sites, guide_sites = scored_sites(model_tr, guide_tr)
        shape = (k, batch)
        total = sum(per_point_log_prob(s, dim, shape).detach() for s in model_sites)
        total = total - sum(per_point_log_prob(s, dim, shape).detach() for s in guide_sites)
        return total.mean().item()


def _backward(terms) -> None:
    """Add the gradient of a step's extra ``terms`` (a tensor, or 0 when there are none)."""
    if torch.is_tensor(terms) and terms.requires_grad:
        terms.backward()


def vimco_surrogate(log_w: torch.Tensor, log_q_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point VIMCO surrogate and bound, each ``(batch,)``, from ``(K, batch)`` inputs.

    ``log_w`` keeps its graph (pathwise gradients, and the gradient of the weights in θ
    and φ at fixed discrete samples); ``log_q_score`` is the log-density of the guide's
    non-reparameterized sites, differentiable in φ. The surrogate's gradient is VIMCO's
    estimate of ∇ E[log (1/K) Σ w_k]; its value is the bound plus a zero-mean term.
    """
    k = log_w.shape[0]
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    lw = log_w.detach()
    loo_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # (K, batch): mean of the others
    # (K, K, batch): row i is lw with entry i replaced by the leave-one-out mean.
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    replaced = torch.where(eye, loo_mean.unsqueeze(1), lw.unsqueeze(0))
    bound_minus = torch.logsumexp(replaced, 1) - math.log(k)  # (K, batch)
    signal = bound.detach().unsqueeze(0) - bound_minus
    surrogate = bound + (signal * log_q_score).sum(0)
    return surrogate, bound


class VIMCO(_OneOptimizer):
    """The K-sample bound with VIMCO's gradient for discrete (non-reparameterized)
    guide sites and the pathwise gradient for the others; see the module docstring."""

    def __init__(self, module: nn.Module, num_particles: int = 5, optimizer: str = "adam", lr: float = 1e-3,
                 objective=None):
        self.objective = collapsing_objective(module, "vimco", objective)
        _check_particles(num_particles, "vimco")
        self.module, self.model, self.guide = module, module.model, module.guide
        self.num_particles = num_particles
        self._build_optimizer(optimizer, lr)
        self._nesting: Optional[int] = None

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        if self._nesting is None:
            with preserved_rng(), collapsed_story(self.module):
                self._nesting = max_plate_nesting(self.model, self.guide, x[:2])
        with self.collapsed_step(x, index, num_data) as story:
            tr = particle_traces(self.model, self.guide, x, index, num_data, self.num_particles, self._nesting)
            surrogate, bound = vimco_surrogate(tr.log_w, tr.log_q_score)
            loss = -subsample_scale(x, num_data) * surrogate.sum() + story.terms()
            zero_grad(self.module.parameters())
            loss.backward()
            self.optimizer.step()
        return {"iwae": bound.detach().mean().item(), "elbo": tr.log_w.detach().mean().item()}
