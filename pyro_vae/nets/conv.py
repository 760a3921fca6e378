"""Convolutional encoder and decoder bodies for images of event shape ``(C, H, W)``.

**The rule.** Every convolution has kernel 4, stride 2 and padding 1, which maps an
``h x w`` map to exactly ``h/2 x w/2`` when both are even. The encoder adds layers
while both H and W are even and at least 8 (:func:`conv_sizes`); the floor of 8 keeps
the top map at least 4 x 4, the kernel's size. Shapes that allow no layer at all (odd or
under 8 from the start) are refused with a ValueError. Examples::

    28 x 28 -> 14 x 14 -> 7 x 7            (2 layers)
    64 x 64 -> 32 -> 16 -> 8 -> 4           (4 layers)
     8 x  8 -> 4 x 4                        (1 layer)
    28 x 20 -> 14 x 10 -> 7 x 5             (2 layers)

**The channel schedule** (:func:`conv_channels`): the first half of the layers, rounded
up, have 32 channels and the rest 64: ``[32]``, ``[32, 64]``, ``[32, 32, 64]``,
``[32, 32, 64, 64]``, ... This gives the two standard stacks: 32, 64 for 28 x 28
(MNIST), and 32, 32, 64, 64 down to a 4 x 4 x 64 map for 64 x 64, the encoder of
Burgess et al. (2018), "Understanding disentangling in β-VAE", arXiv:1804.03599,
appendix A.1 (their FC 256 is ``hidden=(256,)``).

The decoder mirrors the encoder: MLP layers from z, one more to the top map
``(C_top, h, w)``, then stride-2 transposed convolutions back up the same sizes and
channels; the last one (the head, built by :func:`pyro_vae.nets.decoder_body`) gives
the output channels at full H x W.

A gated activation (:data:`~pyro_vae.nets.mlp.GATED`) gates over the channels here: the
convolution before it outputs twice the channels and the gate halves them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from pyro_vae.nets.mlp import ACTIVATIONS, GATED, activation, mlp
from pyro_vae.nets.shapes import EventShape, as_event_shape, check_event, per_image

KERNEL, STRIDE, PADDING = 4, 2, 1
#: A map is halved only while both of its sides are even and at least this.
MIN_HALVED = 8
#: Channels of the first half of the layers (rounded up), and of the rest.
NARROW, WIDE = 32, 64


def conv_sizes(event_shape: EventShape) -> list[tuple[int, int]]:
    """The ``(h, w)`` map after each encoder layer for images of ``event_shape = (C, H, W)``.

    Raises a ValueError for event shapes that are not ``(C, H, W)`` or whose H and W do
    not allow one halving (both even and at least :data:`MIN_HALVED`).
    """
    shape = as_event_shape(event_shape)
    if len(shape) != 3:
        raise ValueError(
            f'network="conv" needs an image event shape (C, H, W), got {shape}: '
            'use network="mlp" for flat data'
        )
    h, w = shape[1:]
    sizes = []
    while h % 2 == 0 and w % 2 == 0 and min(h, w) >= MIN_HALVED:
        h, w = h // 2, w // 2
        sizes.append((h, w))
    if not sizes:
        raise ValueError(
            f'network="conv" cannot halve the {shape[1]} x {shape[2]} images of event shape {shape}: '
            f'H and W must both be even and at least {MIN_HALVED}; use network="mlp" (or pad the images)'
        )
    return sizes


def conv_channels(num_layers: int) -> list[int]:
    """Channels of each encoder layer: :data:`NARROW` for the first half (rounded up), then :data:`WIDE`."""
    return [NARROW if 2 * i < num_layers else WIDE for i in range(num_layers)]


def channel_activation(name: str) -> nn.Module:
    """The activation ``name`` for ``(N, C, H, W)`` maps: a gated one gates over C (dim 1)."""
    return ACTIVATIONS[name](dim=1) if name in GATED else activation(name)


def _widened(channels: int, act: str) -> int:
    """Channels a layer outputs so that ``act`` leaves ``channels`` (a gate halves them)."""
    return 2 * channels if act in GATED else channels


class ImageSequential(nn.Sequential):
    """An ``nn.Sequential`` of 2-D (transposed) convolutions for ``(..., C, H, W)`` input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_image(super().forward, x)


class ImageConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` for ``(..., C, H, W)`` input, any number of leading dims."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_image(super().forward, x)


def upsampling(in_channels: int, out_channels: int) -> ImageConvTranspose2d:
    """A transposed convolution that doubles H and W exactly (kernel 4, stride 2, padding 1)."""
    return ImageConvTranspose2d(in_channels, out_channels, KERNEL, STRIDE, PADDING)


class ConvEncoder(nn.Module):
    """``x: (..., C, H, W) -> (..., width)``: strided convolutions, flatten, MLP ``hidden``.

    ``conv`` holds ``Conv2d -> act`` layers by the module's rule and channel schedule,
    ``mlp`` the ``Linear -> act`` layers of widths ``hidden`` on the flattened top map;
    ``width`` is ``hidden[-1]``, or the top map's size ``C_top * h * w`` when ``hidden`` is empty.
    """

    def __init__(self, event_shape: EventShape, hidden: Sequence[int] = (), act: str = "tanh"):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        sizes = conv_sizes(self.event_shape)
        channels = conv_channels(len(sizes))
        layers: list[nn.Module] = []
        for c_in, c_out in zip([self.event_shape[0], *channels], channels):
            layers += [
                nn.Conv2d(c_in, _widened(c_out, act), KERNEL, STRIDE, PADDING),
                channel_activation(act),
            ]
        self.conv = ImageSequential(*layers)
        self.top_shape = (channels[-1], *sizes[-1])
        self.mlp, self.width = mlp(math.prod(self.top_shape), hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_event(x, self.event_shape)
        return self.mlp(self.conv(x).flatten(-3))


class ConvDecoderBody(nn.Module):
    """``z: (..., z_dim) -> (..., C_1, H/2, W/2)``, the map the decoder's head upsamples.

    ``mlp`` holds the ``Linear -> act`` layers of widths ``hidden`` and one more to the
    encoder's top map ``top_shape = (C_top, h, w)``; ``deconv`` the ``ConvTranspose2d ->
    act`` layers that mirror the encoder's convolutions but its first. ``feature_shape``
    is the output's event shape; the head, ``upsampling(feature_shape[0], channels)``,
    gives the full H x W.
    """

    def __init__(self, z_dim: int, event_shape: EventShape, hidden: Sequence[int] = (), act: str = "tanh"):
        super().__init__()
        sizes = conv_sizes(event_shape)
        channels = conv_channels(len(sizes))
        self.top_shape = (channels[-1], *sizes[-1])
        self.mlp, _ = mlp(z_dim, [*hidden, math.prod(self.top_shape)], act)
        layers: list[nn.Module] = []
        down = channels[::-1]  # the encoder's channels, top first
        for c_in, c_out in zip(down, down[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, _widened(c_out, act), KERNEL, STRIDE, PADDING),
                channel_activation(act),
            ]
        self.deconv = ImageSequential(*layers)
        self.feature_shape = (channels[0], *sizes[0])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # A gate on the last Linear halves its flat output, i.e. gates the top map's channels.
        return self.deconv(self.mlp(z).unflatten(-1, self.top_shape))
