r"""Exact maximum likelihood, for a model whose capability is an exact log-density (a
normalizing flow): ``[inference] name = "mle"``.

Each step ascends the log-likelihood of the minibatch scaled to the data set,
``(N/B) Σ_b log p(y_b)``, with ``y = x`` dequantized afresh (uniform noise on the 8-bit
grid, when ``[data] transform`` declares it; :mod:`pyro_vae.data.transforms`). That is
the story's ``log p`` of its ``"x"`` site under the data plate, computed from the model's
distribution without tracing it. The figures, per data point:

* ``log_likelihood`` -- nats in the space the model's papers report: after the data
  transform (NICE: dequantized [0, 1] pixels; MAF: logit space);
* ``bits_per_dim`` -- bits per dimension of the 8-bit pixels when dequantized
  (``8 − log p_y(y) / (D ln 2)``), else ``−log p / (D ln 2)``.

They are log-likelihoods, not bounds: a flow has no ELBO. Held-out data are dequantized
with noise from a generator of fixed seed, so every evaluation of a split scores the
same points; training draws from torch's global RNG, which the checkpoint keeps, so a
resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pyro
import torch
from pyro.distributions.transforms import BatchNorm
from torch import nn

from pyro_vae import distributed
from pyro_vae.errors import ConfigError
from pyro_vae.inference.base import Inference
from pyro_vae.inference.optim import RoleOptimizers


@dataclass
class MLEConfig:
    """``[inference] name = "mle"``: exact maximum likelihood."""

    name: str = "mle"
    #: Points per chunk when scoring held-out data (memory, not the result).
    eval_chunk: int = 1000


class MLE(Inference):
    """Gradient ascent on the exact log-likelihood of ``module`` (a :class:`~pyro_vae.models.flow.Flow`:
    ``score(x)`` (``log p`` and the data transform's log-Jacobian), ``data_transform``,
    ``event_shape``), one optimizer (role ``"all"``).

    The module is in training mode during a step (batch normalisation by the batch) and in
    eval mode during :meth:`evaluate` (by its running averages).
    """

    figures = ("log_likelihood", "bits_per_dim")
    valid_figures = ("log_likelihood", "bits_per_dim")
    #: What ``[budget] monitor`` follows unless the config says otherwise.
    monitor = "valid_log_likelihood"
    #: The seed of held-out data's dequantization noise.
    eval_seed = 0

    def __init__(self, module: nn.Module, optimizer: str = "adam", lr: float = 1e-3, eval_chunk: int = 1000):
        if eval_chunk < 1:
            raise ValueError(f"eval_chunk must be >= 1, got {eval_chunk}")
        if distributed.world_size() > 1 and any(isinstance(m, BatchNorm) for m in module.modules()):
            # each process would normalise by its own shard and keep its own running averages
            raise ConfigError(f"batch normalisation under {distributed.world_size()} processes is not synchronised: "
                              "set [model] batch_norm = false, or train in one process")
        self.module, self.eval_chunk = module, eval_chunk
        self.optimizers = RoleOptimizers(optimizer, lr, {"all": module.parameters()})
        self.event_dims = len(module.event_shape)
        self._validated = False

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers["all"]

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """One step on the minibatch ``x (B, *event_shape)``; figures per point."""
        self.module.train()
        y = self.module.data_transform.dequantize(x)
        # Pyro's validation (and the flow's domain check) on the first step only: the loop
        # checks every step's figures for NaN/inf, and a check is a device sync
        with pyro.validation_enabled(False) if self._validated else contextlib.nullcontext():
            log_p, jacobian = self.module.score(y)
        self._validated = True
        loss = -(num_data / len(x)) * log_p.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return self._means(log_p.detach(), y, jacobian.detach())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """The figures of ``x`` (the whole split), per point, in eval mode."""
        if not len(x):
            return {name: float("nan") for name in self.valid_figures}
        generator = torch.Generator(device=x.device).manual_seed(self.eval_seed)
        sums = dict.fromkeys(self.valid_figures, 0.0)
        # validated as a step is: the data were checked before training (Family.check_data)
        checks = pyro.validation_enabled(False) if self._validated else contextlib.nullcontext()
        with self.module.evaluating(), checks:
            for start in range(0, len(x), self.eval_chunk):
                y = self.module.data_transform.dequantize(x[start:start + self.eval_chunk], generator)
                for name, value in self._per_point(*self.module.score(y), y).items():
                    sums[name] += float(value.double().sum())
        return {name: total / len(x) for name, total in sums.items()}

    def _per_point(self, log_p: torch.Tensor, jacobian: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.module.data_transform.figures(log_p, y, self.event_dims, log_jacobian=jacobian)

    def _means(self, log_p: torch.Tensor, y: torch.Tensor, jacobian: torch.Tensor) -> dict[str, float]:
        return {name: float(value.mean()) for name, value in self._per_point(log_p, jacobian, y).items()}
