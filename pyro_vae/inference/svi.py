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

import contextlib

import pyro
import pyro.infer
import torch
from torch import nn

from pyro_vae.inference.annealing import check_annealing, kl_weight_at, scale_latents
from pyro_vae.plates import module_registration_skipped


class JitTraceMeanField_ELBO(pyro.infer.JitTraceMeanField_ELBO):
    """Pyro's ``JitTraceMeanField_ELBO``, compiled once rather than at every call.

    Pyro 1.9 guards the construction of its compiled closure with a test of
    ``_loss_and_surrogate_loss`` but stores it as ``_differentiable_loss``, so each
    call builds (and ``torch.jit.trace``s) a new one: slower than no JIT at all.
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
    """The ``torch.optim`` optimizer called ``name`` over ``params``.

    Adam uses its fused kernel where every parameter allows it (floating point, on a
    device with the kernel), else the default implementation; the two differ only by
    floating-point rounding. Adagrad keeps the default one, which also takes sparse
    gradients.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {sorted(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    params = list(params)
    if name == "adam" and _fused_ok(params):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            pass
    return OPTIMIZERS[name](params, lr=lr)


def _fused_ok(params: list) -> bool:
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return bool(tensors) and all(
        torch.is_tensor(p) and p.is_floating_point() and not p.is_sparse
        and p.device.type in ("cpu", "cuda") for p in tensors
    )


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

    ``kl_weight`` (β) and ``warmup_epochs`` (T) weigh the latent sites' terms of the
    training ELBO by ``β · min(1, (epoch + 1) / T)`` (:mod:`pyro_vae.inference.annealing`;
    the training loop calls :meth:`start_epoch`); :meth:`evaluate` is always the ELBO.
    """

    def __init__(self, module: nn.Module, elbo: str = "meanfield", num_particles: int = 1,
                 optimizer: str = "adam", lr: float = 1e-3, kl_weight: float = 1.0, warmup_epochs: int = 0):
        check_annealing(kl_weight, warmup_epochs)
        if warmup_epochs and elbo.startswith("jit"):
            raise ValueError(f"a warm-up changes the ELBO's weight every epoch, but the compiled ELBO {elbo!r} "
                             f"keeps the weight it was traced with: use elbo = {elbo.removeprefix('jit_')!r}")
        self.module = module
        self.kl_weight, self.warmup_epochs = float(kl_weight), warmup_epochs
        self.beta = kl_weight_at(0, self.kl_weight, warmup_epochs)
        # Bound once: the JIT ELBOs key their compiled code on id(model) and id(guide),
        # and ``module.model`` makes a new bound-method object at every access.
        self.model, self.guide = module.model, module.guide
        self.elbo = make_elbo(elbo, num_particles)
        self._elbo_name, self._num_particles = elbo, num_particles
        # A compiled ELBO is traced for one batch shape (sizes become constants in the
        # graph) but keyed on the number of arguments only: one per shape keeps it right.
        self._jit_elbos = {}
        # Evaluation runs on batches of other sizes: compiling each is wasted work.
        self.eval_elbo = make_elbo(elbo.removeprefix("jit_"), num_particles)
        self.optimizer = make_optimizer(optimizer, module.parameters(), lr)
        self._validated = False

    def start_epoch(self, epoch: int) -> None:
        """Set β for the 0-based ``epoch`` (the warm-up schedule)."""
        self.beta = kl_weight_at(epoch, self.kl_weight, self.warmup_epochs)

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """One step; ``"elbo"`` is the training objective: the β-weighted ELBO while β ≠ 1."""
        weighted = scale_latents(self.beta) if self.beta != 1.0 else contextlib.nullcontext()
        with self._fast_path(), weighted:
            # index is positional: the JIT keys its cache on keyword values, not on tensors.
            loss = differentiable_loss(self._step_elbo(x), self.model, self.guide, x, index,
                                       num_data=num_data)
        self._validated = True
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"elbo": -loss.item() / num_data}

    def _fast_path(self) -> contextlib.AbstractContextManager:
        """After the first step: no Pyro validation and, for the eager ELBOs, no param
        sites (see the module docstring)."""
        if not self._validated:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(pyro.validation_enabled(False))
        if not self._elbo_name.startswith("jit"):
            stack.enter_context(module_registration_skipped())
        return stack

    def _step_elbo(self, x: torch.Tensor) -> pyro.infer.ELBO:
        if not self._elbo_name.startswith("jit"):
            return self.elbo
        shape = tuple(x.shape)
        if shape not in self._jit_elbos:
            first = not self._jit_elbos
            self._jit_elbos[shape] = self.elbo if first else make_elbo(self._elbo_name, self._num_particles)
        return self._jit_elbos[shape]

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> float:
        # ``loss``, not ``differentiable_loss``: TraceEnum_ELBO refuses the latter without grad.
        return -self.eval_elbo.loss(self.model, self.guide, x) / len(x)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
