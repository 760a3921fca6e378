"""Multi-layer perceptrons shared by models and guides: activations, `mlp`, `GaussianHead`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    # Gated linear unit (Dauphin et al. 2017): a ⊙ sigmoid(b) of the layer's two halves;
    # the gated dense layers of VampPrior (Tomczak & Welling 2018).
    "glu": nn.GLU,
}
#: Activations that halve their input: the Linear layer before them is twice as wide.
GATED = frozenset({"glu"})


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}"
        ) from None


def mlp(in_dim: int, hidden: Sequence[int], act: str = "tanh") -> tuple[nn.Sequential, int]:
    """A stack of ``Linear -> act`` layers of widths ``hidden`` (for a gated ``act``,
    :data:`GATED`, each Linear outputs twice the width and the gate halves it).

    Returns the network and its output width (``in_dim`` when ``hidden`` is empty).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        if h < 1:
            raise ValueError(f"hidden layer widths must be positive, got {list(hidden)}")
        layers += [nn.Linear(width, 2 * h if act in GATED else h), activation(act)]
        width = h
    return nn.Sequential(*layers), width


class GaussianHead(nn.Module):
    """Maps features to ``(loc, scale)`` of a diagonal Gaussian.

    The network outputs ``log σ²`` (as in Kingma & Welling, appendix C.2) and
    ``scale = exp(½ log σ²)``.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.loc = nn.Linear(in_dim, out_dim)
        self.log_var = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), torch.exp(0.5 * self.log_var(h))
