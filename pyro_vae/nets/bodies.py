"""Encoder and decoder bodies for data of any event shape, by MLP or by convolutions.

:func:`encoder_body` builds what a guide puts before its head (e.g. a
:class:`~pyro_vae.nets.mlp.GaussianHead` to ``z``); :func:`decoder_body` builds a whole
decoder network, body and head, whose output parametrises ``p(x|z)``:

* ``decoder_body(z_dim, event_shape, hidden)(z)``: one output per pixel, e.g.
  Bernoulli logits, ``(..., *event_shape)``;
* ``decoder_body(..., gaussian=True)(z)``: a pair ``(loc, scale)``, each
  ``(..., *event_shape)``, with ``scale = exp(½ log σ²)`` as in :class:`GaussianHead`;
* ``out_channels`` (image event shapes ``(C, H, W)`` only) replaces C in the output
  shape, e.g. for several outputs per channel.

With ``network="mlp"`` and ``event_shape=(x_dim,)`` the decoder is exactly
``body = mlp(z_dim, hidden, act)`` and ``head = nn.Linear(width, x_dim)`` or
``GaussianHead(width, x_dim)``: the same modules, created in the same order (the same
initial values under the same seed) with the same state-dict keys ``body.0.weight``, ...,
``head.weight`` or ``head.loc.weight``, ``head.log_var.weight``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence, Union

import torch
from torch import nn

from pyro_vae.nets.conv import ConvDecoderBody, ConvEncoder, upsampling
from pyro_vae.nets.mlp import mlp
from pyro_vae.nets.shapes import EventShape, as_event_shape, check_event

NETWORKS = ("mlp", "conv")


class FlatMLP(nn.Sequential):
    """``x: (..., *event_shape) -> (..., width)``: :func:`mlp` on the flattened event.

    Its layers are :func:`mlp`'s own (same names ``0``, ``1``, ..., same values).
    """

    def __init__(self, event_shape: EventShape, hidden: Sequence[int], act: str = "tanh"):
        shape = as_event_shape(event_shape)
        layers, width = mlp(math.prod(shape), hidden, act)
        super().__init__(*layers)
        self.event_shape, self.width = shape, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_event(x, self.event_shape)
        return super().forward(x.flatten(-len(self.event_shape)))


class LinearToShape(nn.Linear):
    """``h: (..., in_dim) -> (..., *shape)``: an ``nn.Linear`` to ``prod(shape)`` outputs, unflattened."""

    def __init__(self, in_dim: int, shape: Sequence[int]):
        super().__init__(in_dim, math.prod(shape))
        self.shape = tuple(shape)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(h).unflatten(-1, self.shape)


class GaussianPair(nn.Module):
    """``h -> (loc(h), exp(½ log_var(h)))``: :class:`GaussianHead` for any two maps ``loc``, ``log_var``."""

    def __init__(self, loc: nn.Module, log_var: nn.Module):
        super().__init__()
        self.loc, self.log_var = loc, log_var

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), torch.exp(0.5 * self.log_var(h))


class DecoderBody(nn.Module):
    """``z: (..., z_dim) -> head(body(z))``: ``(..., *out_shape)``, or ``(loc, scale)`` of that shape.

    A decoder may keep ``body`` and ``head`` as its own attributes of those names, so that
    its state-dict keys are this module's.
    """

    def __init__(self, body: nn.Module, head: nn.Module, out_shape: tuple[int, ...]):
        super().__init__()
        self.body, self.head = body, head
        self.out_shape = out_shape

    def forward(self, z: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return self.head(self.body(z))


def encoder_body(
    event_shape: EventShape, hidden: Sequence[int], activation: str = "tanh", network: str = "mlp"
) -> tuple[nn.Module, int]:
    """The network ``x: (..., *event_shape) -> (..., width)`` and its ``width``.

    ``network="mlp"``: :class:`FlatMLP`, i.e. ``mlp(prod(event_shape), hidden, activation)``
    on the flattened event. ``network="conv"``: :class:`~pyro_vae.nets.conv.ConvEncoder`,
    strided convolutions then the ``hidden`` layers, for ``event_shape = (C, H, W)``
    (see :mod:`pyro_vae.nets.conv` for which H, W it takes).
    """
    _check_network(network)
    build = FlatMLP if network == "mlp" else ConvEncoder
    net = build(event_shape, hidden, activation)
    return net, net.width


def decoder_body(
    z_dim: int,
    event_shape: EventShape,
    hidden: Sequence[int],
    activation: str = "tanh",
    network: str = "mlp",
    out_channels: Optional[int] = None,
    gaussian: bool = False,
) -> DecoderBody:
    """The decoder network ``z: (..., z_dim) -> (..., *out_shape)``.

    ``out_shape`` is ``event_shape``, or ``(out_channels, H, W)`` for an image event shape
    ``(C, H, W)`` when ``out_channels`` is given. With ``gaussian=True`` it returns
    ``(loc, scale)``, each ``(..., *out_shape)``, from two heads ``loc`` and ``log_var``.

    ``network="mlp"``: ``body = mlp(z_dim, hidden, activation)``, head a Linear to
    ``prod(out_shape)`` reshaped to ``out_shape``. ``network="conv"``: ``body`` a
    :class:`~pyro_vae.nets.conv.ConvDecoderBody` mirroring the conv encoder of
    ``event_shape``, head the last transposed convolution to ``out_shape[0]`` channels.
    """
    _check_network(network)
    shape = as_event_shape(event_shape)
    out_shape = _out_shape(shape, out_channels)
    if network == "mlp":
        body, width = mlp(z_dim, hidden, activation)
        make_head = partial(LinearToShape, width, out_shape)
    else:
        body = ConvDecoderBody(z_dim, shape, hidden, activation)
        make_head = partial(upsampling, body.feature_shape[0], out_shape[0])
    # Body first, then loc, then log_var: today's Decoder's order, hence its initial values.
    head = GaussianPair(make_head(), make_head()) if gaussian else make_head()
    return DecoderBody(body, head, out_shape)


def _check_network(network: str) -> None:
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}: choose one of {list(NETWORKS)}")


def _out_shape(event_shape: tuple[int, ...], out_channels: Optional[int]) -> tuple[int, ...]:
    if out_channels is None:
        return event_shape
    if len(event_shape) != 3 or not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(
            f"out_channels={out_channels!r} replaces C of an image event shape (C, H, W) by a positive "
            f"int, but the event shape is {event_shape}: leave out_channels=None "
            "(gaussian=True gives loc and scale)"
        )
    return (out_channels, *event_shape[1:])
