"""Stochastic variational inference: AEVB / SGVB (Kingma & Welling 2014, section 2.3).

The ELBO estimators:

* ``"trace"`` -- :class:`~pyro.infer.Trace_ELBO`, the paper's estimator A:
  log p(x, z) − log q(z|x) at z = μ + σ ⊙ ε.
* ``"meanfield"`` -- :class:`~pyro.infer.TraceMeanField_ELBO`, estimator B: the KL term
  analytically, E_q[log p(x|z)] by sampling.
* ``"jit_trace"``, ``"jit_meanfield"`` -- the same, compiled with ``torch.jit``.
* ``"trace_enum"``, ``"jit_trace_enum"`` -- :class:`~pyro.infer.TraceEnum_ELBO`, which sums
  out the discrete latents a model marks for enumeration (e.g. the GAE's data index).

The gradient step is the one :class:`pyro.infer.SVI` takes, written as Pyro's
"custom training loop" (``elbo.differentiable_loss`` and one ``torch.optim``
optimizer over the module's parameters) so that optimizer state checkpoints with
``state_dict`` and one fused update serves all parameters.
"""

from __future__ import annotations

import pyro.infer
import torch
from torch import nn

ELBOS = {
    "trace": pyro.infer.Trace_ELBO,
    "meanfield": pyro.infer.TraceMeanField_ELBO,
    "jit_trace": pyro.infer.JitTrace_ELBO,
    "jit_meanfield": pyro.infer.JitTraceMeanField_ELBO,
    "trace_enum": pyro.infer.TraceEnum_ELBO,
    "jit_trace_enum": pyro.infer.JitTraceEnum_ELBO,
}

OPTIMIZERS = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}


def make_elbo(name: str, num_particles: int = 1, **kwargs) -> pyro.infer.ELBO:
    """The ELBO estimator called ``name`` (see :data:`ELBOS`)."""
    if name not in ELBOS:
        raise ValueError(f"unknown ELBO {name!r}: choose one of {sorted(ELBOS)}")
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    if name.startswith("jit"):
        kwargs.setdefault("ignore_jit_warnings", True)
    if name.endswith("enum"):
        kwargs.setdefault("max_plate_nesting", 1)  # the "data" plate
    return ELBOS[name](num_particles=num_particles, vectorize_particles=num_particles > 1, **kwargs)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {sorted(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    return OPTIMIZERS[name](params, lr=lr)


def differentiable_loss(elbo: pyro.infer.ELBO, model, guide, *args, **kwargs) -> torch.Tensor:
    """−ELBO as a tensor whose gradient is the ELBO's gradient estimate."""
    if isinstance(elbo, pyro.infer.JitTrace_ELBO):
        # JitTrace_ELBO compiles only the (loss, surrogate loss) pair.
        return elbo.loss_and_surrogate_loss(model, guide, *args, **kwargs)[1]
    return elbo.differentiable_loss(model, guide, *args, **kwargs)


class SVI:
    """AEVB: gradient ascent on the ELBO of ``module.model`` / ``module.guide``.

    ``module`` is an ``nn.Module`` with ``model`` and ``guide`` callables taking
    ``(x, index, num_data)`` and holding every trainable parameter.
    """

    def __init__(self, module: nn.Module, elbo: str = "meanfield", num_particles: int = 1,
                 optimizer: str = "adam", lr: float = 1e-3):
        self.module = module
        # Bound once: the JIT ELBOs key their compiled code on id(model) and id(guide),
        # and ``module.model`` makes a new bound-method object at every access.
        self.model, self.guide = module.model, module.guide
        self.elbo = make_elbo(elbo, num_particles)
        # Evaluation runs on batches of other sizes: compiling each is wasted work.
        self.eval_elbo = make_elbo(elbo.removeprefix("jit_"), num_particles)
        self.optimizer = make_optimizer(optimizer, module.parameters(), lr)

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        # index is positional: the JIT keys its cache on keyword values, not on tensors.
        loss = differentiable_loss(self.elbo, self.model, self.guide, x, index,
                                   num_data=num_data)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"elbo": -loss.item() / num_data}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> float:
        loss = self.eval_elbo.differentiable_loss(self.model, self.guide, x)
        return -loss.item() / len(x)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
