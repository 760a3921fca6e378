"""What every model and guide in the package shares: the ``"data"`` plate, and the
registration of its networks' parameters with Pyro."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import pyro
import torch
from torch import nn

_SKIP_REGISTRATION = contextvars.ContextVar("pyro_vae_skip_module_registration", default=False)


def story_batch_size(x: Optional[torch.Tensor], num_data: Optional[int], event_shape: tuple) -> int:
    """The number of points a story is told for: ``len(x)`` (checked to be ``(batch,
    *event_shape)``), or ``num_data`` when it generates (``x`` None)."""
    if x is not None:
        if tuple(x.shape[1:]) != tuple(event_shape):
            raise ValueError(f"x must be a (batch, *event_shape) tensor with event_shape {tuple(event_shape)}, "
                             f"got shape {tuple(x.shape)}: data points of shape {tuple(x.shape[1:])}")
        return len(x)
    if num_data is None:
        raise ValueError("model(x=None) generates data: give num_data, the number of points")
    return num_data


def data_plate(batch_size: int, index: Optional[torch.Tensor], num_data: Optional[int]) -> pyro.plate:
    """The ``"data"`` plate over a batch of ``batch_size`` rows.

    ``index`` holds the rows' positions in a data set of ``num_data`` points (a minibatch);
    without it the batch is taken to be the whole data set, or a uniformly drawn
    subsample of ``num_data`` points when only ``num_data`` is given.
    """
    if num_data is None or num_data == batch_size:
        return pyro.plate("data", batch_size)
    if index is None:
        index = torch.arange(batch_size)
    return pyro.plate("data", num_data, subsample=index)


def register_module(name: str, module: nn.Module) -> nn.Module:
    """``pyro.module(name, module)``: the module's parameters as ``pyro.param`` sites.

    Plain Pyro needs them (``pyro.infer.SVI`` finds what to optimize in the trace's
    param sites, the JIT ELBOs read parameters from the param store by name). Inside
    :func:`module_registration_skipped` the call does nothing: the package's own SVI
    optimizes ``module.parameters()`` directly and enters it for the eager ELBOs, which
    never read param sites, to save Pyro's per-parameter bookkeeping on every step.
    """
    if not _SKIP_REGISTRATION.get():
        pyro.module(name, module)
    return module


@contextlib.contextmanager
def module_registration_skipped() -> Iterator[None]:
    """Within it, :func:`register_module` registers nothing (see there)."""
    token = _SKIP_REGISTRATION.set(True)
    try:
        yield
    finally:
        _SKIP_REGISTRATION.reset(token)

