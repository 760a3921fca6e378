"""What the training loop needs of an inference algorithm, and what SVI needs of an objective.

An **algorithm** (:class:`Inference`) is bound to a model module: ``step`` takes one
optimisation step on a minibatch and returns named figures (the log keeps every one of
them, as ``train_<name>`` columns); ``evaluate`` returns named figures on held-out data
(``valid_<name>`` columns; ``[budget] monitor`` picks the one early stopping follows);
``start_epoch`` runs schedules (KL warm-up, a cache refresh); ``state_dict`` holds every
piece of state that changes per step (optimizers by parameter role, chains, caches), so
that a checkpoint resumes exactly.

An **objective** (:class:`Objective`) is what SVI ascends: ``differentiable_loss(x,
index, num_data, beta)`` is minus a (β-weighted) ELBO estimate on the minibatch. A Pyro
ELBO on the module's model and guide is one (:class:`PyroELBO`); a model family whose
training needs its own terms or state brings one (the GAE's
:class:`~pyro_vae.models.gae.objective.ExemplarELBO`), as ``pyro.contrib.cevae`` keeps its
training terms in an ELBO subclass so that model and guide stay plain.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Optional, Protocol

import pyro
import pyro.infer
import torch
from pyro import poutine
from torch import nn

from pyro_vae.capabilities import capabilities_of
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.elbo import evaluate_elbo
from pyro_vae.inference.annealing import scale_latents
from pyro_vae.inference.optim import RoleOptimizers
from pyro_vae.plates import module_registration_skipped
from pyro_vae.traces import preserved_rng


class Inference:
    """One training algorithm bound to a model module (``self.module``), with optimizers
    by parameter role (``self.optimizers``, a
    :class:`~pyro_vae.inference.optim.RoleOptimizers`) and, where it ascends one, an
    :class:`Objective` (``self.objective``) whose state it checkpoints too.

    Subclasses define :meth:`step` and the names of what it reports (:attr:`figures`);
    the defaults here evaluate held-out data by the one ELBO evaluator and checkpoint the
    optimizers and the objective.
    """

    #: Names of the figures :meth:`step` returns, and of those :meth:`evaluate` returns.
    figures: tuple[str, ...] = ()
    valid_figures: tuple[str, ...] = ("elbo",)
    module: nn.Module
    optimizers: RoleOptimizers
    objective: Optional["Objective"] = None

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """One optimisation step on the minibatch ``x = data[index]`` of a set of ``num_data``;
        figures per data point (``"elbo"``: nats, higher is better)."""
        raise NotImplementedError

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """Figures on ``x`` (the whole batch is the data set), per data point: the ELBO."""
        return {"elbo": evaluate_elbo(self.module, x)}

    def collapsed_step(self, x: torch.Tensor, index: Optional[torch.Tensor],
                       num_data: Optional[int]) -> contextlib.AbstractContextManager:
        """One training step's context (:class:`Collapsing`): the objective's, which sums
        the model's enumerated latents out, or one yielding :data:`PLAIN_STEP`."""
        objective = self.objective
        if objective is not None and hasattr(objective, "collapsed"):
            return objective.collapsed(x, index, num_data)
        return contextlib.nullcontext(PLAIN_STEP)

    def start_epoch(self, epoch: int) -> None:
        """Called with the 0-based epoch before its first step (schedules, cache refreshes)."""
        if self.objective is not None:
            self.objective.start_epoch(epoch)

    def state_dict(self) -> dict:
        """Everything needed to resume but the module's parameters."""
        state = {"optimizers": self.optimizers.state_dict()}
        if self.objective is not None:
            state["objective"] = self.objective.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizers.load_state_dict(state["optimizers"])
        if self.objective is not None:
            self.objective.load_state_dict(state["objective"])


class Objective(Protocol):
    """What :class:`~pyro_vae.inference.svi.SVI` ascends (module docstring)."""

    def differentiable_loss(self, x: torch.Tensor, index: Optional[torch.Tensor], num_data: Optional[int],
                            beta: float = 1.0) -> torch.Tensor: ...

    def start_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class StatelessObjective:
    """An :class:`Objective` that keeps nothing from step to step (no epoch hook, no state)."""

    def start_epoch(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PyroELBO(StatelessObjective):
    """A :class:`pyro.infer.ELBO` on ``model`` and ``guide`` as an :class:`Objective`.

    ``beta`` weighs the latent sites through :class:`~pyro_vae.inference.annealing.scale_latents`.
    After the first call Pyro's run-time validation is skipped (a mistake in a model
    shows on the first step; the training loop checks every step's figures for NaN/inf),
    and the eager ELBOs run without ``pyro.module`` param sites
    (:func:`pyro_vae.plates.register_module`): the optimizer holds the module's
    parameters and these ELBOs never read param sites. The JIT ELBOs read parameters
    from the param store by name, so they keep them.
    """

    def __init__(self, elbo: pyro.infer.ELBO, model, guide, make_copy=None, module: Optional[nn.Module] = None):
        self.elbo, self.model, self.guide, self.module = elbo, model, guide, module
        self.jit = isinstance(elbo, (pyro.infer.JitTrace_ELBO, pyro.infer.JitTraceMeanField_ELBO,
                                     pyro.infer.JitTraceEnum_ELBO))
        # A compiled ELBO is traced for one batch shape (sizes become constants in the
        # graph) but keyed on the number of arguments only: one per shape keeps it right.
        self._make_copy = make_copy
        self._per_shape = {}
        self._validated = False

    def differentiable_loss(self, x, index, num_data, beta: float = 1.0) -> torch.Tensor:
        if self.jit and not self._validated and self.module is not None:
            _claim_param_store(self.module, self.model, self.guide, x, index, num_data)
        if self.jit and tuple(x.shape) not in self._per_shape:
            # Compiling runs the program three times (Pyro's parameter capture, the trace,
            # the call), drawing three times the random numbers of a step. Compile on a
            # call whose draws are given back, so that a step draws what an eager step
            # draws whether or not it compiled: a resumed run, which compiles again at its
            # first step, then draws what the uninterrupted run drew.
            with preserved_rng():
                self._loss(x, index, num_data, beta)
        loss = self._loss(x, index, num_data, beta)
        self._validated = True
        return loss

    def _loss(self, x, index, num_data, beta: float) -> torch.Tensor:
        weighted = scale_latents(beta) if beta != 1.0 else contextlib.nullcontext()
        with self._fast_path(), weighted, warnings.catch_warnings():
            # torch 2.13 deprecates torch.jit.trace, which Pyro's JIT ELBOs compile with
            # (once per batch shape); the pinned torch still runs it.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated", category=DeprecationWarning)
            # index is positional: the JIT keys its cache on keyword values, not on tensors.
            return _differentiable_loss(self._for_shape(x), self.model, self.guide, x, index, num_data=num_data)

    def _fast_path(self) -> contextlib.AbstractContextManager:
        if not self._validated:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(pyro.validation_enabled(False))
        if not self.jit:
            stack.enter_context(module_registration_skipped())
        return stack

    def _for_shape(self, x: torch.Tensor) -> pyro.infer.ELBO:
        if not self.jit:
            return self.elbo
        shape = tuple(x.shape)
        if shape not in self._per_shape:
            self._per_shape[shape] = self.elbo if not self._per_shape else self._make_copy()
        return self._per_shape[shape]


@torch.no_grad()
def _claim_param_store(module: nn.Module, model, guide, *args) -> None:
    """Drop the param-store entries that ``model`` and ``guide`` would read under their
    names but that are not ``module``'s parameters: a JIT ELBO passes the stored tensors
    to its compiled code, so an entry an earlier model of the same names left there
    would take the gradients instead of this module's parameter."""
    owned = {id(p) for p in module.parameters()}
    store = pyro.get_param_store()
    with poutine.block(), preserved_rng():
        for fn in (model, guide):
            tr = poutine.trace(fn, param_only=True).get_trace(*args)
            for name, site in tr.nodes.items():
                if site["type"] == "param" and id(site["value"]) not in owned and name in store:
                    del store[name]


def _differentiable_loss(elbo: pyro.infer.ELBO, model, guide, *args, **kwargs) -> torch.Tensor:
    """−ELBO as a tensor whose gradient is the ELBO's gradient estimate."""
    if isinstance(elbo, pyro.infer.JitTrace_ELBO):
        # JitTrace_ELBO compiles only the (loss, surrogate loss) pair.
        return elbo.loss_and_surrogate_loss(model, guide, *args, **kwargs)[1]
    return elbo.differentiable_loss(model, guide, *args, **kwargs)


# ----------------------------------------------------------------------------- y summed out


class PlainStep:
    """A training step of a model whose every latent is sampled already: nothing to sum
    out, no training terms of its own (the identity of :meth:`Collapsing.collapsed`)."""

    def terms(self) -> float:
        return 0.0

    def fixed(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext(self)


PLAIN_STEP = PlainStep()


class Collapsing(Protocol):
    """An :class:`Objective` that also lets the algorithms that sample every latent train
    a model with enumerated discrete latents (the GAE's
    :class:`~pyro_vae.models.gae.objective.ExemplarELBO`): ``collapsed(x, index,
    num_data)`` is a context manager for one training step, within which the model's story
    has those latents summed out (every remaining latent sampled, its log-density exact
    or the family's scalable estimate) and which yields a step object with

    * ``terms()``: the family's own training terms of the minibatch (a penalty, deferred
      gradients), a tensor to add to a loss that trains its parameters;
    * ``fixed()``: a context within which the story's log-density is one fixed function
      of the latents (an MCMC potential; detailed balance needs a fixed target).

    The step's state (caches) is updated on leaving. The algorithms call
    :meth:`Inference.collapsed_step`, which is :class:`PlainStep` for other models.
    """

    def collapsed(self, x: torch.Tensor, index: torch.Tensor,
                  num_data: Optional[int]) -> contextlib.AbstractContextManager: ...


def collapsing_objective(module, algorithm: str, objective=None):
    """``objective`` checked for ``algorithm``, which samples every latent: None for a
    model without enumerated latents (nothing to sum out), the objective when it sums
    them out (:class:`Collapsing`), else a :class:`~pyro_vae.errors.ConfigError`."""
    if not capabilities_of(module).enumerated_latents:
        return objective
    if objective is None or not hasattr(objective, "collapsed"):
        raise ConfigError(
            f"[inference] name = {algorithm!r} cannot train {type(module).__name__}: it samples every latent, and "
            "the model's enumerated discrete latents have no training objective that sums them out (a family "
            "declares one with Capabilities(collapsible=True) and an objective with collapsed(...)); train it "
            "with [inference] name = \"svi\" (elbo = \"auto\" or \"trace_enum\")"
        )
    return objective


def collapsed_story(module) -> contextlib.AbstractContextManager:
    """The module's story with its enumerated latents summed out (``module.collapsed()``,
    exact, no gradients to its components): what set-up traces (sites, plate nesting)
    run on. The identity for a model without enumerated latents."""
    if capabilities_of(module).enumerated_latents:
        return module.collapsed()
    return contextlib.nullcontext()


def refuse_enumerated(module, algorithm: str, objective=None) -> None:
    """A :class:`~pyro_vae.errors.ConfigError` for a model that declares enumerated discrete
    latents when no ``objective`` sums them out: ``algorithm`` samples every latent."""
    collapsing_objective(module, algorithm, objective)
