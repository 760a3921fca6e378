"""Event shapes: what one data point looks like, and how batches of them are reshaped.

A data point is a tensor of shape ``event_shape``: ``(x_dim,)`` for flat vectors,
``(C, H, W)`` for images. Networks take any number of leading batch dimensions in front
of it, e.g. ``(K, B, *event_shape)`` for K importance samples of a batch of B.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

EventShape = Union[int, Sequence[int]]


def as_event_shape(event_shape: EventShape) -> tuple[int, ...]:
    """``event_shape`` as a tuple of positive ints (an int ``n`` means ``(n,)``)."""
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"an event shape is a non-empty tuple of positive ints, got {event_shape!r}")
    return shape


def check_event(x: torch.Tensor, event_shape: tuple[int, ...]) -> None:
    """Raise a ValueError unless ``x`` is ``(..., *event_shape)``."""
    if x.dim() < len(event_shape) or tuple(x.shape[-len(event_shape):]) != event_shape:
        raise ValueError(
            f"expected a tensor of shape (..., {', '.join(map(str, event_shape))}), got {tuple(x.shape)}"
        )


def per_image(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn``, which takes ``(N, C, H, W)``, to ``x: (..., C, H, W)``.

    Convolutions need exactly one batch dim: the leading dims are folded into it and
    unfolded from the result, ``(..., C', H', W')``.
    """
    batch = x.shape[:-3]
    # numel(), not -1: a batch with no elements has no inferable size.
    y = fn(x.reshape(batch.numel(), *x.shape[-3:]))
    return y.reshape(*batch, *y.shape[1:])
