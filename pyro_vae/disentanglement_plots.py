"""Figures of disentangling (issue 20): latent traversals, one row per latent dimension
(the figure of the β-VAE and DIP-VAE papers), and the KL each dimension carries.

As in :mod:`pyro_vae.plots`: plain tensors in, a PNG written to ``path``, its Path
returned; figures on an Agg canvas (pyplot is never imported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pyro_vae.plots import ArrayLike, PathLike, _figure, _png_path, _save, _to_numpy, tile_images

__all__ = ["kl_per_dimension_bars", "latent_traversals"]


def latent_traversals(images: ArrayLike, image_shape: Sequence[int], path: PathLike, num_values: int,
                      row_labels: Optional[Sequence[str]] = None, title: Optional[str] = None) -> Path:
    """Rows of ``num_values`` images each, ``images (rows * num_values, D)`` in [0, 1] row by
    row: row ``r`` is one latent dimension varied from its low to its high values with the
    others held, labelled ``row_labels[r]`` on the left."""
    path = _png_path(path)
    a = _to_numpy(images)
    rows = len(a) // num_values
    if rows < 1 or rows * num_values != len(a):
        raise ValueError(f"{len(a)} images do not make rows of num_values = {num_values}")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    mosaic = tile_images(a, image_shape, nrow=num_values)
    h = mosaic.shape[0] / rows
    fig, ax = _figure((max(4.0, 0.75 * num_values + 1.5), max(2.0, 0.75 * rows + 0.6)))
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * h for r in range(rows)], row_labels or [f"z{r}" for r in range(rows)], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title or "latent traversals (each row: one dimension varied)", fontsize=10)
    return _save(fig, path)


def kl_per_dimension_bars(kl: ArrayLike, path: PathLike, title: Optional[str] = None,
                          ylabel: str = "KL (nats per point)") -> Path:
    """Bars of the KL each latent dimension ``d`` carries, ``kl (L,)``, in index order."""
    path = _png_path(path)
    values = _to_numpy(kl).reshape(-1)
    if not len(values) or not np.isfinite(values).all():
        raise ValueError(f"kl must be a non-empty vector of finite numbers, got {values}")
    fig, ax = _figure((max(3.5, 0.45 * len(values) + 1.5), 3.0))
    ax.bar(np.arange(len(values)), values, color="tab:blue")
    ax.set_xticks(np.arange(len(values)), [f"z{d}" for d in range(len(values))], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"KL per latent dimension (total {values.sum():.2f})", fontsize=10)
    return _save(fig, path)
