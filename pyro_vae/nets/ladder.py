r"""The rungs of a ladder network: one encoder and one decoder cut into ``L`` pieces, one
per latent layer (the VLAE's networks, Zhao, Song & Ermon 2017, section 4).

Rung ``l`` (``l = 1..L``, 1 nearest the data) maps the features ``h_{l−1}`` (``h_0 = x``)
to ``h_l`` going up (:func:`up_rung`) and back going down (:func:`down_rung`). A rung is

* ``"conv"``: a stride-2 convolution (kernel 4, padding 1: H and W halve exactly, the
  rule of :mod:`pyro_vae.nets.conv`) to ``width`` channels, then ``depth − 1`` 3x3
  convolutions; on the way down the mirror image, ending in a stride-2 transposed
  convolution;
* ``"fc"``: ``depth`` Linear layers of ``width`` units on the flattened features; down,
  ``depth − 1`` of them then a Linear layer back to ``h_{l−1}``'s shape.

With ``network = "conv"`` (images) the lowest rungs are convolutional while the map can be
halved (:func:`~pyro_vae.nets.conv.conv_sizes`), leaving at least the top rung fully
connected; ``"mlp"`` makes every rung ``"fc"``. Every up-rung ends in the activation; every
down-rung ends *before* it (:func:`plan` and the model add the latent first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from pyro_vae.nets.conv import KERNEL, PADDING, STRIDE, ImageSequential, channel_activation, conv_sizes
from pyro_vae.nets.mlp import GATED, activation
from pyro_vae.nets.shapes import as_event_shape


@dataclass(frozen=True)
class Rung:
    """One rung: its ``kind`` (``"conv"`` or ``"fc"``), layers (``depth``), ``width``, and
    the shapes of its input ``h_{l−1}`` and output ``h_l``."""

    kind: str
    depth: int
    width: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def plan(event_shape, widths: Sequence[int], depths: Sequence[int], network: str = "mlp") -> list[Rung]:
    """The rungs, bottom first, of a ladder on data of ``event_shape`` (checked by the
    caller: one width and one depth per latent layer)."""
    shape = as_event_shape(event_shape)
    if network not in ("mlp", "conv"):
        raise ValueError(f"unknown network {network!r}: choose one of ['mlp', 'conv']")
    num_conv = 0 if network == "mlp" else min(len(widths) - 1, len(conv_sizes(shape)))
    rungs, sizes = [], conv_sizes(shape) if network == "conv" else []
    for l, (width, depth) in enumerate(zip(widths, depths)):
        if l < num_conv:
            out = (width, *sizes[l])
            rungs.append(Rung("conv", depth, width, shape, out))
        else:
            out = (width,)
            rungs.append(Rung("fc", depth, width, shape, out))
        shape = out
    return rungs


class Flatten(nn.Module):
    """``(..., *shape) -> (..., prod(shape))``."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.flatten(-len(self.shape)) if len(self.shape) > 1 else h


class Unflatten(nn.Module):
    """``(..., prod(shape)) -> (..., *shape)``."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.unflatten(-1, self.shape) if len(self.shape) > 1 else h


def _dense(n_in: int, n_out: int, act: str) -> list[nn.Module]:
    return [nn.Linear(n_in, 2 * n_out if act in GATED else n_out), activation(act)]


def _conv(c_in: int, c_out: int, act: str, transposed: bool = False, stride: int = 1) -> list[nn.Module]:
    c = 2 * c_out if act in GATED else c_out
    kernel, pad = (KERNEL, PADDING) if stride == STRIDE else (3, 1)
    layer = (nn.ConvTranspose2d if transposed else nn.Conv2d)(c_in, c, kernel, stride, pad)
    return [layer, channel_activation(act)]


def up_rung(rung: Rung, act: str) -> nn.Module:
    """``h_{l−1}: (..., *in_shape) -> h_l: (..., *out_shape)``, ending in the activation."""
    if rung.kind == "conv":
        layers = _conv(rung.in_shape[0], rung.width, act, stride=STRIDE)
        for _ in range(rung.depth - 1):
            layers += _conv(rung.width, rung.width, act)
        return ImageSequential(*layers)
    layers = [Flatten(rung.in_shape)] + _dense(math.prod(rung.in_shape), rung.width, act)
    for _ in range(rung.depth - 1):
        layers += _dense(rung.width, rung.width, act)
    return nn.Sequential(*layers)


def down_rung(rung: Rung, act: str, out_channels: int | None = None) -> nn.Module:
    """``u_l: (..., *out_shape) -> (..., *in_shape)`` before any activation (``out_channels``
    replaces the input's channels or units: e.g. twice them for two heads)."""
    target = rung.in_shape if out_channels is None else (out_channels, *rung.in_shape[1:])
    if rung.kind == "conv":
        layers: list[nn.Module] = []
        for _ in range(rung.depth - 1):
            layers += _conv(rung.width, rung.width, act)
        layers.append(nn.ConvTranspose2d(rung.width, target[0], KERNEL, STRIDE, PADDING))
        return ImageSequential(*layers)
    layers = []
    for _ in range(rung.depth - 1):
        layers += _dense(rung.width, rung.width, act)
    layers += [nn.Linear(rung.width, math.prod(target)), Unflatten(target)]
    return nn.Sequential(*layers)


class Embedding(nn.Module):
    """``z_l: (..., d) -> (..., *shape)``: a Linear layer, unflattened to ``h_l``'s shape (how a
    latent joins the decoder at its rung)."""

    def __init__(self, z_dim: int, shape: tuple[int, ...]):
        super().__init__()
        self.linear, self.unflatten = nn.Linear(z_dim, math.prod(shape)), Unflatten(shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.unflatten(self.linear(z))


__all__ = ["Embedding", "Flatten", "Rung", "Unflatten", "down_rung", "plan", "up_rung"]
