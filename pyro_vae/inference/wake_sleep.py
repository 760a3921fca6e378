r"""Wake-sleep and reweighted wake-sleep: two objectives, one for the model, one for the guide.

**Wake-sleep** (Hinton, Dayan, Frey & Neal 1995, "The wake-sleep algorithm for
unsupervised neural networks"; the baseline of Kingma & Welling 2014, figure 2) alternates

* the *wake* phase: draw one ``z ~ q_φ(z|x)`` per data point (no gradient through it)
  and take a gradient step on θ only, maximizing ``log p_θ(x, z)``;
* the *sleep* phase: dream ``z ~ p(z)``, ``x ~ p_θ(x|z)`` and take a gradient step on φ
  only, maximizing ``log q_φ(z|x)``.

θ and φ are found generically (:func:`~pyro_vae.inference.traces.split_parameters`):
the parameters registered while running ``module.model`` and ``module.guide``. Each
phase has its own optimizer over its own parameters. Parameters both register (a prior
made of the guide's encodings: the GAE's) are the guide's role: its optimizer steps once
per minibatch with the sum of their wake gradient (as the prior's parameters) and their
sleep gradient (as the guide's).

A model with enumerated latents that its family sums out (the GAE's data index) is trained
on its collapsed story (``objective``, :class:`~pyro_vae.inference.base.Collapsing`): the
wake phases score ``log p(x|z) + log P̂(z)`` under the family's estimator (an unbiased
density estimate gives a lower bound of ``log p(x, z)`` in expectation), and dreams draw
y, then z, then x, as the model generates.

**Reweighted wake-sleep** (Bornschein & Bengio 2015; Le et al. 2019) uses ``K > 1``
guide particles per point: wake-θ ascends the IWAE bound ``log (1/K) Σ_k w_k`` with the
weights' dependence on φ cut, wake-φ ascends ``Σ_k w̃_k log q_φ(z_k|x)`` with the
self-normalized weights ``w̃_k``, and sleep-φ is the sleep phase above; ``insomnia``
mixes wake-φ (1) and sleep-φ (0). This is :class:`pyro.infer.ReweightedWakeSleep`,
whose docs warn that minibatches are not supported. The reason is in its ``_loss``: it
sums each site's *scaled* log-density over the whole batch before the log-sum-exp over
particles, so the bound is that of the batch as one observation (its importance
weights degenerate as the batch grows) and the subsample factor ``N/B`` lands inside
the log-sum-exp. :class:`MinibatchRWS` keeps Pyro's class and overrides ``_loss``:
unscaled per-point weights, a log-sum-exp per data point, and ``N/B`` applied to the
per-point sums afterwards. For one data point without subsampling it is Pyro's loss
exactly (a test checks this); the sleep-φ term dreams ``(z, x)`` through the package's
generative call ``model(None, None, n)`` instead of Pyro's ``observations=`` guide
keyword, which the package's guides do not take.

Both report ``"elbo"``, the single-sample (wake-sleep) or K-sample average (RWS) of
``log p(x, z) − log q(z|x)`` at the wake particles: an honest ELBO estimate that costs
nothing extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pyro.infer
import torch
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.inference.base import Inference, collapsed_story, collapsing_objective
from pyro_vae.inference.optim import RoleOptimizers, check_optimizer
from pyro_vae.traces import (
    max_plate_nesting,
    observed_site,
    particle_traces,
    per_point_log_prob,
    preserved_rng,
    scored_sites,
    sleep_log_q,
    split_parameters,
    subsample_scale,
    zero_grad,
)


@dataclass
class WakeSleepConfig:
    """``[inference] name = "wake_sleep"``."""

    name: str = "wake_sleep"
    #: Points dreamt per sleep phase (None: the minibatch size).
    sleep_batch_size: Optional[int] = None


@dataclass
class RWSConfig:
    """``[inference] name = "rws"``: reweighted wake-sleep."""

    name: str = "rws"
    #: K >= 2 guide particles per data point.
    num_particles: int = 5
    #: Weight of the wake-φ update against the sleep-φ update (1: wake only).
    insomnia: float = 1.0


class _LazySetup(Inference):
    """Parameter roles and optimizers built at the first batch (the split traces the
    model and guide, which needs data); state loaded before that waits for it."""

    def __init__(self, module: nn.Module, optimizer: str, lr: float):
        self.module = module
        self.model, self.guide = module.model, module.guide
        self.optimizer_name, self.lr = optimizer, lr
        check_optimizer(optimizer, lr)
        self.split = None
        self.optimizers: Optional[RoleOptimizers] = None
        self._pending: Optional[dict] = None

    def _setup(self, x: torch.Tensor) -> None:
        if self.split is None:
            with preserved_rng(), collapsed_story(self.module):
                self.split = split_parameters(self.module, x[:2])
                self._build(x)
            if self._pending is not None:
                self.optimizers.load_state_dict(self._pending["optimizers"])
                self._pending = None

    def _roles(self) -> dict:
        """θ: the model's own parameters; φ: the guide's, with those the model shares
        (a prior made of the guide's encodings, the GAE's): they follow the guide's
        optimizer, which steps once per minibatch with every phase's gradient of them."""
        s = self.split
        shared = {id(p) for p in s.shared}
        return {"model": [p for p in s.model if id(p) not in shared], "guide": s.guide + s.shared}

    def state_dict(self) -> dict:
        if self.optimizers is None:
            state = dict(self._pending or {})
            if self.objective is not None:
                state["objective"] = self.objective.state_dict()
            return state
        return super().state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.optimizers is None:
            self._pending = state
            if self.objective is not None:  # built up front: loaded at once
                self.objective.load_state_dict(state["objective"])
        else:
            super().load_state_dict(state)


class WakeSleep(_LazySetup):
    """Classic single-sample wake-sleep on ``module.model`` / ``module.guide``.

    Args:
        module: the model module (its ``model``, ``guide`` and parameters).
        optimizer, lr: one optimizer of this kind per phase.
        sleep_batch_size: dreams per sleep phase (None: as many as the minibatch).

    ``step`` is :meth:`wake` then :meth:`sleep`; both are public so that each phase can
    be run (and checked) on its own. The parameter roles ``"model"`` (θ, the wake phase's
    optimizer) and ``"guide"`` (φ, the sleep phase's) each have their optimizer.
    """

    figures = ("elbo", "log_joint", "sleep_log_q")

    def __init__(self, module: nn.Module, optimizer: str = "adagrad", lr: float = 0.01,
                 sleep_batch_size: Optional[int] = None, objective=None):
        objective = collapsing_objective(module, "wake_sleep", objective)
        if sleep_batch_size is not None and sleep_batch_size < 1:
            raise ConfigError(f"[inference] sleep_batch_size must be >= 1, got {sleep_batch_size}")
        super().__init__(module, optimizer, lr)
        self.objective = objective
        self.sleep_batch_size = sleep_batch_size
        self._carried: list = []  # the wake phase's gradients of the shared parameters

    def _build(self, x: torch.Tensor) -> None:
        roles = self._roles()
        if not roles["model"] or not roles["guide"]:
            raise ConfigError(
                f"wake-sleep needs parameters of the model's own ({len(roles['model'])} found) and of the "
                f"guide ({len(roles['guide'])} found)"
            )
        self.optimizers = RoleOptimizers(self.optimizer_name, self.lr, roles)
        self._obs = observed_site(self.model, x)
        self._nesting = max_plate_nesting(self.model, self.guide, x[:2])

    def wake(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
             num_data: Optional[int] = None) -> dict[str, float]:
        """One step on θ: ascend ``log p_θ(x, z)`` at ``z ~ q_φ(z|x)`` (z held fixed).
        Parameters the model shares with the guide keep this gradient for the next
        :meth:`sleep`, whose step on φ applies it with the sleep phase's."""
        self._setup(x)
        with self.collapsed_step(x, index, num_data) as story:
            return self._wake(x, index, num_data, story)

    def _wake(self, x, index, num_data, story) -> dict[str, float]:
        tr = particle_traces(self.model, self.guide, x, index, num_data, 1, self._nesting, grad_guide=False)
        loss = -subsample_scale(x, num_data) * tr.log_p.sum() + story.terms()
        zero_grad(self.module.parameters())
        loss.backward()
        self.optimizers["model"].step()
        self._carried = [(p, p.grad) for p in self.split.shared if p.grad is not None]
        return {"elbo": tr.log_w.detach().mean().item(), "log_joint": tr.log_p.detach().mean().item()}

    def sleep(self, num_dreams: int, num_data: Optional[int] = None) -> dict[str, float]:
        """One step on φ: ascend ``log q_φ(z|x)`` at ``(z, x) ~ p_θ``; ``num_data`` scales
        the loss like a minibatch of that data set (the wake phase's scale)."""
        if self.optimizers is None:
            raise RuntimeError("run a wake phase (or step) first: the parameter split needs data")
        log_q = sleep_log_q(self.model, self.guide, self._obs, num_dreams)
        loss = -((num_data or num_dreams) / num_dreams) * log_q.sum()
        zero_grad(self.module.parameters())
        loss.backward()
        for p, g in self._carried:  # the last wake phase's gradient of the shared parameters
            p.grad = g if p.grad is None else p.grad + g
        self._carried = []
        self.optimizers["guide"].step()
        return {"sleep_log_q": log_q.detach().mean().item()}

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        self._setup(x)
        with self.collapsed_step(x, index, num_data) as story:  # dreams too: from the step's components
            out = self._wake(x, index, num_data, story)
            out.update(self.sleep(self.sleep_batch_size or len(x), num_data))
        return out



class MinibatchRWS(pyro.infer.ReweightedWakeSleep):
    """:class:`pyro.infer.ReweightedWakeSleep` made correct for batches and minibatches.

    Call it like Pyro's, with the package's ``(x, index, num_data)`` arguments:
    ``loss_and_grads(model, guide, x, index, num_data)`` returns ``(wake_theta_loss,
    phi_loss)`` and back-propagates their sum. See the module docstring for what
    changes; ``last`` holds the figures of the latest call (per data point).

    Args:
        num_particles: K >= 2 guide particles per data point.
        insomnia: weight of wake-φ against sleep-φ (1: wake-φ only, Pyro's default).
        num_sleep_particles: dreams per data point of the batch for sleep-φ (default K).
    """

    def __init__(self, num_particles: int = 5, insomnia: float = 1.0,
                 num_sleep_particles: Optional[int] = None):
        if num_particles < 2:
            raise ConfigError(f"reweighted wake-sleep needs [inference] num_particles >= 2, got {num_particles}")
        if not 0.0 <= insomnia <= 1.0:
            raise ConfigError(f"[inference] insomnia must be in [0, 1], got {insomnia}")
        super().__init__(num_particles=num_particles, insomnia=insomnia,
                         num_sleep_particles=num_sleep_particles, vectorize_particles=True)
        self.last: dict[str, float] = {}
        self._obs: Optional[str] = None

    def _loss(self, model, guide, args, kwargs):
        x, index, num_data = (list(args) + [None, None])[:3]
        index, num_data = kwargs.get("index", index), kwargs.get("num_data", num_data)
        K, batch = self.num_particles, len(x)
        scale = subsample_scale(x, num_data)
        model_tr, guide_tr = next(self._get_traces(model, guide, args, kwargs))
        particle_dim = -self.max_plate_nesting
        model_sites, guide_sites = scored_sites(model_tr, guide_tr)
        shape = (K, batch)
        log_p = sum(per_point_log_prob(s, particle_dim, shape) for s in model_sites)
        log_q = sum(per_point_log_prob(s, particle_dim, shape) for s in guide_sites)
        log_w = log_p - log_q.detach()  # (K, batch); z is detached (Pyro's detach=True)
        log_mean_w = torch.logsumexp(log_w, 0) - math.log(K)
        wake_theta_loss = -scale * log_mean_w.sum()
        self.last = {"elbo": log_w.detach().mean().item(), "iwae": log_mean_w.detach().mean().item()}

        phi_loss = 0.0
        if self.insomnia > 0:
            weights = torch.softmax(log_w.detach(), 0)
            wake_phi_loss = -scale * (weights * log_q).sum()
            phi_loss = self.insomnia * wake_phi_loss
        if self.insomnia < 1:
            if self._obs is None:
                self._obs = observed_site(model, x)
            n = self.num_sleep_particles * batch
            sleep_lq = sleep_log_q(model, guide, self._obs, n)
            sleep_phi_loss = -((num_data or batch) / n) * sleep_lq.sum()
            self.last["sleep_log_q"] = sleep_lq.detach().mean().item()
            phi_loss = phi_loss + (1.0 - self.insomnia) * sleep_phi_loss
        return wake_theta_loss, phi_loss


class RWS(_LazySetup):
    """RWS as a package inference: :class:`MinibatchRWS` with one optimizer per role
    (wake-θ's gradient reaches only θ, the φ losses' only φ)."""

    figures = ("elbo", "iwae", "sleep_log_q")

    def __init__(self, module: nn.Module, num_particles: int = 5, insomnia: float = 1.0,
                 optimizer: str = "adam", lr: float = 1e-3, objective=None):
        objective = collapsing_objective(module, "rws", objective)
        super().__init__(module, optimizer, lr)
        self.objective = objective
        self.rws = MinibatchRWS(num_particles, insomnia)

    def _build(self, x: torch.Tensor) -> None:
        # Parameters the model shares with the guide follow the guide's optimizer, which
        # steps with their wake-θ and φ gradients summed.
        self.optimizers = RoleOptimizers(self.optimizer_name, self.lr, self._roles())
        self.rws.max_plate_nesting = max_plate_nesting(self.model, self.guide, x[:2]) + 1  # + particles
        if self.rws.insomnia < 1:
            self.rws._obs = observed_site(self.model, x)

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        self._setup(x)
        zero_grad(self.module.parameters())
        with self.collapsed_step(x, index, num_data) as story:
            self.rws.loss_and_grads(self.model, self.guide, x, index, num_data)
            terms = story.terms()  # the family's own terms (a penalty): their gradient joins
            if torch.is_tensor(terms) and terms.requires_grad:
                terms.backward()
            self.optimizers["model"].step()
            self.optimizers["guide"].step()
        return dict(self.rws.last)
