"""Critics (and discriminators): networks ``x: (..., *event_shape) -> (...)``, one real
score per point, for adversarial training.

* ``"mlp"``: the flattened point through ``Linear -> LeakyReLU(0.2)`` layers of widths
  ``hidden``, then a ``Linear`` to one score (the WGAN paper's MLP critic has four
  hidden layers of 512 ReLU units; the leaky slope keeps a gradient for every input,
  which the gradient penalty needs).
* ``"conv"``: for images ``(C, H, W)``: the package's strided convolutions
  (:mod:`pyro_vae.nets.conv`'s rule: kernel 4, stride 2, halving while H and W are even
  and at least 8; channels 64, 128, ... as DCGAN's discriminator), LeakyReLU(0.2), then
  the ``hidden`` layers and a ``Linear`` to one score.

No batch normalisation in either: the gradient penalty is taken per point, and batch
statistics would make one point's score depend on the others in its batch (Gulrajani et
al. 2017, section 4: "No critic batch normalization"). The WGAN paper's weight clipping
works without it too.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from pyro_vae.nets.conv import KERNEL, PADDING, STRIDE, ImageSequential, conv_sizes
from pyro_vae.nets.shapes import EventShape, as_event_shape, check_event

CRITICS = ("mlp", "conv")
#: Channels of the first convolution; each further one doubles them (DCGAN's discriminator).
FIRST_CHANNELS = 64
SLOPE = 0.2


def _dense(in_dim: int, hidden: Sequence[int]) -> tuple[list[nn.Module], int]:
    layers, width = [], in_dim
    for h in hidden:
        if h < 1:
            raise ValueError(f"critic hidden widths must be positive, got {list(hidden)}")
        layers += [nn.Linear(width, h), nn.LeakyReLU(SLOPE)]
        width = h
    return layers, width


class Critic(nn.Module):
    """``x: (..., *event_shape) -> (...)``: a real score per point (a Wasserstein critic's
    ``f(x)``, or a discriminator's logit).

    Args:
        event_shape: one point's shape (``(D,)``, or ``(C, H, W)`` for ``kind="conv"``).
        kind: ``"mlp"`` or ``"conv"`` (module docstring).
        hidden: widths of the dense layers (after the convolutions for ``"conv"``).
    """

    def __init__(self, event_shape: EventShape, kind: str = "mlp", hidden: Sequence[int] = (512, 512, 512)):
        super().__init__()
        if kind not in CRITICS:
            raise ValueError(f"unknown critic {kind!r}: choose one of {list(CRITICS)}")
        self.event_shape, self.kind = as_event_shape(event_shape), kind
        if kind == "conv":
            sizes = conv_sizes(self.event_shape)  # a clear error for non-image shapes
            channels = [FIRST_CHANNELS * 2 ** i for i in range(len(sizes))]
            convs: list[nn.Module] = []
            for c_in, c_out in zip([self.event_shape[0], *channels], channels):
                convs += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.LeakyReLU(SLOPE)]
            self.features = ImageSequential(*convs)
            flat = channels[-1] * math.prod(sizes[-1])
        else:
            self.features = None
            flat = math.prod(self.event_shape)
        layers, width = _dense(flat, hidden)
        self.dense = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_event(x, self.event_shape)
        dims = len(self.event_shape)
        h = self.features(x).flatten(-3) if self.features is not None else x.flatten(-dims)
        return self.dense(h).squeeze(-1)


__all__ = ["CRITICS", "Critic"]
