"""Stochastic variational inference: AEVB / SGVB (Kingma & Welling 2014, section 2.3).

The ELBO estimators:

* ``"trace"`` -- :class:`~pyro.infer.Trace_ELBO`, the paper's estimator A:
  log p(x, z) − log q(z|x) at z = μ + σ ⊙ ε.
* ``"meanfield"`` -- :class:`~pyro.infer.TraceMeanField_ELBO`, estimator B: the KL term
  analytically, E_q[log p(x|z)] by sampling.
* ``"jit_trace"``, ``"jit_meanfield"`` -- the same, compiled with ``torch.jit``.
* ``"trace_enum"``, ``"jit_trace_enum"`` -- :class:`~pyro.infer.TraceEnum_ELBO`, which sums
  out the discrete latents a model marks for enumeration (e.g. the GAE's data index).

A model family may bring its own objective instead (the GAE's exemplar ELBO, with its
estimator and cache): ``elbo`` is then that :class:`~pyro_vae.inference.base.Objective`.

The gradient step is the one :class:`pyro.infer.SVI` takes, written as Pyro's
"custom training loop" (``elbo.differentiable_loss`` and one ``torch.optim``
optimizer over the module's parameters) so that optimizer state checkpoints with
``state_dict`` and one fused update serves all parameters.

Speed (see ``benchmarks/step_time.py``):

* Adam runs its fused kernel: one pass over each parameter instead of about ten
  elementwise ops, 0.7 against 4 ms a step for the 784-500-500-50 VAE on one CPU core.
* Pyro's run-time validation (argument checks, NaN/inf hooks on every log-density,
  model/guide shape checks) runs on an SVI object's first step, where a mistake in a
  model or guide shows, and is skipped on the steps after it, as Pyro's own JIT ELBOs
  skip it in compiled code; the training loop checks every step's ELBO for NaN/inf.
* From the second step on, the eager ELBOs run the model and guide without their
  ``pyro.module`` param sites (:func:`pyro_vae.plates.register_module`): the optimizer
  holds ``module.parameters()`` and these ELBOs never read param sites.
* The JIT mean-field ELBO compiles once, not at every step (Pyro 1.9's
  ``JitTraceMeanField_ELBO`` rebuilds its compiled closure on each call), and once per
  batch shape, since a traced graph holds the batch size as a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import pyro
import pyro.infer
import torch
from torch import nn

from pyro_vae.inference.annealing import check_annealing, kl_weight_at
from pyro_vae.inference.base import Inference, Objective, PyroELBO
from pyro_vae.inference.optim import RoleOptimizers


@dataclass
class SVIConfig:
    """``[inference] name = "svi"``: AEVB / SGVB."""

    name: str = "svi"
    #: "trace" (SGVB estimator A), "meanfield" (estimator B: analytic KL), "trace_enum"
    #: (sums out enumerated discrete latents), their ``"jit_"`` variants, or "auto": the
    #: model family's own objective (the VAE's: estimator B computed without Pyro's
    #: per-step tracing; the GAE's: its exemplar ELBO), else "meanfield".
    elbo: str = "auto"
    #: Samples per data point of the ELBO estimate.
    num_particles: int = 1
    #: β, the weight of the latent sites' terms (the KL) in the training ELBO (β-VAE:
    #: β ≠ 1); see pyro_vae.inference.annealing.
    kl_weight: float = 1.0
    #: Warm-up epochs T: β rises linearly as min(1, epoch / T) (0: no warm-up).
    warmup_epochs: int = 0
    #: A regulariser of the latent term (pyro_vae.inference.regularisers): "none",
    #: "dip_vae_i", "dip_vae_ii" (DIP-VAE), "capacity" (β-VAE's capacity annealing);
    #: with elbo = "auto", for the families whose objective takes one (vae, gae).
    regulariser: str = "none"
    #: DIP-VAE: λ_od, the weight of the off-diagonal covariances; λ_d = dip_factor · λ_od
    #: (dip_factor unset: 10 for DIP-VAE-I, 1 for DIP-VAE-II).
    dip_lambda_od: float = 10.0
    dip_factor: Optional[float] = None
    #: The capacity objective γ ``|KL − C(t)|``, C rising linearly to capacity_max nats over capacity_steps steps.
    capacity_max: float = 25.0
    capacity_steps: int = 100000
    capacity_gamma: float = 1000.0


class JitTraceMeanField_ELBO(pyro.infer.JitTraceMeanField_ELBO):
    """Pyro's ``JitTraceMeanField_ELBO``, compiled once rather than at every call.

    Pyro 1.9 guards the construction of its compiled closure with a test of
    ``_loss_and_surrogate_loss`` but stores it as ``_differentiable_loss``, so each
    call builds (and traces, ``torch.jit.trace``) a new one: slower than no JIT at all.
    Setting the tested attribute once the closure exists makes later calls reuse it.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        if getattr(self, "_loss_and_surrogate_loss", None) is None:
            self._loss_and_surrogate_loss = self._differentiable_loss
        return loss


ELBOS = {
    "trace": pyro.infer.Trace_ELBO,
    "meanfield": pyro.infer.TraceMeanField_ELBO,
    "jit_trace": pyro.infer.JitTrace_ELBO,
    "jit_meanfield": JitTraceMeanField_ELBO,
    "trace_enum": pyro.infer.TraceEnum_ELBO,
    "jit_trace_enum": pyro.infer.JitTraceEnum_ELBO,
}


def make_elbo(name: str, num_particles: int = 1, **kwargs) -> pyro.infer.ELBO:
    """The ELBO estimator called ``name`` (see :data:`ELBOS`)."""
    if name not in ELBOS:
        raise ValueError(f"unknown ELBO {name!r}: choose one of {sorted(ELBOS)}")
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    if name.startswith("jit"):
        kwargs.setdefault("ignore_jit_warnings", True)
    if name.endswith("enum"):
        kwargs.setdefault("max_plate_nesting", 1)  # the "data" plate
    return ELBOS[name](num_particles=num_particles, vectorize_particles=num_particles > 1, **kwargs)


class SVI(Inference):
    """AEVB: gradient ascent on an ELBO of ``module.model`` / ``module.guide``.

    Args:
        module: an ``nn.Module`` with ``model`` and ``guide`` callables taking
            ``(x, index, num_data)`` and holding every trainable parameter.
        elbo: the name of a Pyro ELBO (:data:`ELBOS`), or an
            :class:`~pyro_vae.inference.base.Objective` bound to the module.
        num_particles: samples per point of a named ELBO.
        optimizer, lr: one optimizer (role ``"all"``) over the module's parameters.
        kl_weight, warmup_epochs: β and the warm-up T: the latent terms of the training
            objective weigh ``β · min(1, (epoch + 1) / T)`` (:mod:`pyro_vae.inference.annealing`;
            the training loop calls :meth:`start_epoch`); :meth:`evaluate` is the ELBO.
    """

    figures = ("elbo",)

    def __init__(self, module: nn.Module, elbo: Union[str, Objective] = "meanfield", num_particles: int = 1,
                 optimizer: str = "adam", lr: float = 1e-3, kl_weight: float = 1.0, warmup_epochs: int = 0):
        check_annealing(kl_weight, warmup_epochs)
        if isinstance(elbo, str) and warmup_epochs and elbo.startswith("jit"):
            raise ValueError(f"a warm-up changes the ELBO's weight every epoch, but the compiled ELBO {elbo!r} "
                             f"keeps the weight it was traced with: use elbo = {elbo.removeprefix('jit_')!r}")
        self.module = module
        self.kl_weight, self.warmup_epochs = float(kl_weight), warmup_epochs
        self.beta = kl_weight_at(0, self.kl_weight, warmup_epochs)
        if isinstance(elbo, str):
            # Bound once: the JIT ELBOs key their compiled code on id(model) and id(guide),
            # and ``module.model`` makes a new bound-method object at every access.
            model, guide = module.model, module.guide
            self.objective = PyroELBO(make_elbo(elbo, num_particles), model, guide,
                                      make_copy=lambda: make_elbo(elbo, num_particles), module=module)
        else:
            self.objective = elbo
        self.optimizers = RoleOptimizers(optimizer, lr, {"all": module.parameters()})

    @property
    def elbo(self):
        """The estimator: a Pyro ELBO, or the family's own objective."""
        return self.objective.elbo if isinstance(self.objective, PyroELBO) else self.objective

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers["all"]

    def start_epoch(self, epoch: int) -> None:
        """Set β for the 0-based ``epoch`` (the warm-up schedule), and the objective's."""
        self.beta = kl_weight_at(epoch, self.kl_weight, self.warmup_epochs)
        super().start_epoch(epoch)

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """One step; ``"elbo"`` is the training objective: the β-weighted ELBO while β ≠ 1."""
        loss = self.objective.differentiable_loss(x, index, num_data, beta=self.beta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"elbo": -loss.item() / num_data}
