"""Figures of a model with several latent layers: what each layer does to the data
(the VLAE paper's figure: one grid per layer, that layer varied over its range while the
others are held at sampled values), how much each layer carries (per-layer KL bars) and
where the data lie in each layer (one scatter per layer).

As in :mod:`pyro_vae.plots`: plain tensors in, a PNG written to ``path``, its Path returned;
figures on an Agg canvas (pyplot is never imported).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from pyro_vae.plots import PathLike, _png_path, _save, _to_numpy, tile_images

__all__ = ["layer_grid", "layer_kl_bars", "layer_scatter", "layer_traversals"]


def _figure(ncols: int, size: float = 3.2, height: Optional[float] = None):
    """A row of ``ncols`` panels; the constrained layout keeps each panel's labels clear of
    its neighbours and a suptitle clear of the panel titles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * ncols, height or size), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def layer_grid(sizes: Mapping[str, int], n: int, quantiles: Mapping[str, torch.Tensor],
               held: Mapping[str, torch.Tensor], layer: str) -> dict[str, torch.Tensor]:
    """The latents of ``layer``'s traversal, ``n * n`` rows per layer, by name.

    A layer of 2 or more dimensions varies its first two over an ``n x n`` grid of
    ``quantiles[layer] (n, d)`` (its other dimensions at their median, the grid's middle
    row); a 1-D layer varies along the columns while each row holds the other layers at
    another draw (``held`` then has ``n`` rows per layer). The other layers repeat
    ``held``'s rows: ``held[name] (1 or n, d)``.
    """
    q = quantiles[layer]
    d = sizes[layer]
    if d >= 2:
        z = q[n // 2].repeat(n * n, 1)
        z[:, 0] = q[:, 0].repeat(n)  # column c
        z[:, 1] = q.flip(0)[:, 1].repeat_interleave(n)  # row r from the top: the largest first
    else:
        z = q[:, :1].repeat(n, 1)
    out = {}
    for name in sizes:
        if name == layer:
            out[name] = z
        else:
            h = held[name]
            out[name] = h.expand(n * n, -1) if len(h) == 1 else h.repeat_interleave(n, 0)
    return out


def layer_traversals(images: Mapping[str, torch.Tensor], image_shape: Sequence[int], path: PathLike,
                     title: Optional[str] = None) -> Path:
    """One panel per layer (keys, top first), each ``n x n`` images ``(n*n, D)`` in [0, 1]:
    the decoded grid of that layer's traversal (:func:`layer_grid`)."""
    path = _png_path(path)
    fig, axes = _figure(len(images))
    for ax, (name, imgs) in zip(axes, images.items()):
        n = int(round(math.sqrt(len(imgs))))
        ax.imshow(tile_images(imgs, image_shape, nrow=n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name} varied", fontsize=10)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def layer_kl_bars(kl: Mapping[str, float], path: PathLike, active: Optional[Mapping[str, int]] = None,
                  sizes: Optional[Mapping[str, int]] = None, title: Optional[str] = None) -> Path:
    """Bars of each layer's KL (nats per point; keys top first), labelled with its
    active units out of its dimensions when ``active`` and ``sizes`` are given."""
    path = _png_path(path)
    fig, (ax,) = _figure(1, size=max(3.0, 1.0 + 0.8 * len(kl)))
    names = list(kl)
    values = [float(kl[k]) for k in names]
    bars = ax.bar(range(len(names)), values, color="tab:blue")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("KL (nats per point)")
    if active is not None and sizes is not None:
        for bar, name in zip(bars, names):
            ax.annotate(f"{active[name]}/{sizes[name]} active", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_title(title or f"KL per layer (total {sum(values):.2f})", fontsize=10)
    return _save(fig, path)


def layer_scatter(means: Mapping[str, torch.Tensor], labels: Optional[torch.Tensor], path: PathLike,
                  title: Optional[str] = None) -> Path:
    """One panel per layer (keys, top first): the first two dimensions of its posterior
    means ``(n, d)`` (a 1-D layer against the point's index), coloured by ``labels``."""
    path = _png_path(path)
    fig, axes = _figure(len(means))
    c = None if labels is None else _to_numpy(labels)
    for ax, (name, m) in zip(axes, means.items()):
        m = _to_numpy(m)
        y = m[:, 1] if m.shape[1] > 1 else np.arange(len(m))
        points = ax.scatter(m[:, 0], y, c=c, cmap="tab10" if c is not None else None, s=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"{name}[0]")
        ax.set_ylabel(f"{name}[1]" if m.shape[1] > 1 else "point")
    if c is not None:
        fig.colorbar(points, ax=axes[-1])
    if title:
        fig.suptitle(title)
    return _save(fig, path)
