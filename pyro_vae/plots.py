"""Figures for latent-variable models: image grids, reconstructions, the learned 2-D
manifold (AEVB Figure 4), latent scatter plots and ELBO curves.

Every function writes a PNG to ``path`` (creating its parent folders) and returns it as
a :class:`~pathlib.Path`. Inputs are plain tensors or arrays, never model objects; the
one exception is :func:`manifold`, which takes a decode function such as
``vae.decoder.mean``. Images are rows of length ``D = H * W`` with values in [0, 1]
(``(n, H, W)`` is accepted too) and are drawn in grey-scale, 0 black and 1 white.

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, so importing
this module neither imports pyplot nor changes the user's matplotlib backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyro_vae.ops import logsumexp

PathLike = Union[str, Path]
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]

__all__ = [
    "tile_images", "image_grid", "reconstructions", "grid_levels", "manifold", "latent_scatter", "elbo_curves",
    "figure_curves", "samples_side_by_side", "latent_kde", "density_2d",
]

_DPI = 100


# ----------------------------------------------------------------------------- helpers


def _to_numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=float)


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``(H, W)`` (grey: C = 1) or ``(C, H, W)`` with C = 1 or 3 (RGB)."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 3):
        raise ValueError(f"image_shape must be (height, width) or (channels, height, width) of positive ints "
                         f"with 1 (grey) or 3 (RGB) channels, got {tuple(image_shape)}")
    return shape


def _as_images(images: ArrayLike, image_shape: Sequence[int], name: str = "images") -> np.ndarray:
    """``images (n, D)``, ``(n, H, W)`` (grey) or ``(n, C, H, W)`` -> a checked float array
    ``(n, H, W, C)`` in [0, 1]."""
    c, h, w = _image_shape(image_shape)
    a = _to_numpy(images)
    if a.ndim >= 3 and (a.shape[1:] == (c, h, w) or (c == 1 and a.shape[1:] == (h, w))):
        a = a.reshape(len(a), -1)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (n, D) with D = C*H*W, or (n, C, H, W), got shape {a.shape}")
    if a.shape[1] != c * h * w:
        raise ValueError(
            f"{name} have D = {a.shape[1]} values per image but image_shape = {_shown((c, h, w))} "
            f"needs D = {c * h * w}"
        )
    if len(a) == 0:
        raise ValueError(f"{name} is empty: no images to draw")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}]")
    return np.clip(a, 0.0, 1.0).reshape(-1, c, h, w).transpose(0, 2, 3, 1)


def _shown(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """An image shape as the caller most likely wrote it: ``(H, W)`` for grey."""
    return shape[1:] if shape[0] == 1 else shape


def _imshow(ax: Axes, mosaic: np.ndarray) -> None:
    """A grey (2-D) or RGB (3-D) mosaic, 0 black and 1 white."""
    if mosaic.ndim == 2:
        ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")


def _png_path(path: PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png (these functions write PNGs), got {str(path)!r}")
    return path


def _figure(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _image_figure(mosaic: np.ndarray, title: Optional[str]) -> tuple[Figure, Axes]:
    """One ``imshow`` of ``mosaic`` filling the figure, an integer number of screen pixels
    per mosaic pixel (about 600 px on the long side) so that tiles stay crisp."""
    h, w = mosaic.shape[:2]
    scale = max(1, math.ceil(600 / max(h, w)))
    fig = Figure(figsize=(w * scale / _DPI, h * scale / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    _imshow(ax, mosaic)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.05)
    return path


def _principal_components(z: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA by SVD of the centred ``z (n, d)``: ``(projection (n, k), components (k, d),
    explained-variance ratios (k,))``. Each component's sign is fixed so that its largest
    loading is positive, so repeated plots of the same data agree."""
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    comps = vt[:k] * np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])[:, None]
    var = s**2
    ratio = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    return zc @ comps.T, comps, ratio


def _int_labels(labels: ArrayLike, n: int) -> np.ndarray:
    lab = _to_numpy(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match z, got {lab.shape}")
    if not np.isfinite(lab).all() or (lab != np.round(lab)).any():
        raise ValueError("labels must be integers (class ids)")
    return lab.astype(int)


# ----------------------------------------------------------------------------- figures


def tile_images(
    images: ArrayLike,
    image_shape: Sequence[int],
    nrow: Optional[int] = None,
    pad: int = 1,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile ``images (n, D)`` (or ``(n, H, W)``, or ``(n, C, H, W)``) into one mosaic array.

    ``image_shape`` is ``(H, W)`` (grey) or ``(C, H, W)`` with C = 1 or 3 (RGB). ``nrow``
    is the number of images per row (as in ``torchvision.utils.make_grid``), by default
    ``ceil(sqrt(n))``, and at most ``n``. Image ``k`` goes to tile row ``k // nrow``,
    column ``k % nrow``. Tiles are separated by ``pad`` pixels of ``pad_value`` (no outer
    border); tiles past the last image are filled with ``pad_value``. Returns
    ``(rows*H + (rows-1)*pad, nrow*W + (nrow-1)*pad)``, with a last dim of 3 for RGB.
    """
    imgs = _as_images(images, image_shape)
    n, h, w, c = imgs.shape
    ncol = min(n, nrow if nrow is not None else math.ceil(math.sqrt(n)))
    if ncol < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow}")
    rows = math.ceil(n / ncol)
    tiles = np.full((rows * ncol, h + pad, w + pad, c), float(pad_value))
    tiles[:n, :h, :w] = imgs
    mosaic = tiles.reshape(rows, ncol, h + pad, w + pad, c).transpose(0, 2, 1, 3, 4)
    mosaic = mosaic.reshape(rows * (h + pad), ncol * (w + pad), c)
    mosaic = mosaic[: rows * (h + pad) - pad, : ncol * (w + pad) - pad]
    return mosaic[..., 0] if c == 1 else mosaic


def image_grid(
    images: ArrayLike,
    image_shape: Sequence[int],
    path: PathLike,
    nrow: Optional[int] = None,
    title: Optional[str] = None,
) -> Path:
    """A grid of ``images (n, D)`` or ``(n, C, H, W)`` in [0, 1], e.g. ``vae.sample(100)``
    (grey, or RGB for three channels).

    ``nrow`` images per row (default ``ceil(sqrt(n))``); see :func:`tile_images`.
    """
    path = _png_path(path)
    fig, ax = _image_figure(tile_images(images, image_shape, nrow), title)
    ax.set_axis_off()
    return _save(fig, path)


def reconstructions(
    x: ArrayLike,
    x_rec: ArrayLike,
    image_shape: Sequence[int],
    path: PathLike,
    n: int = 10,
    title: Optional[str] = None,
) -> Path:
    """The first ``n`` data ``x (batch, D)`` on the top row and their reconstructions
    ``x_rec (batch, D)`` (e.g. ``vae.reconstruct(x)``) on the row below."""
    path = _png_path(path)
    x, x_rec = _to_numpy(x), _to_numpy(x_rec)
    if x.shape != x_rec.shape:
        raise ValueError(f"x and x_rec must have the same shape, got {x.shape} and {x_rec.shape}")
    k = min(n, len(x))
    if k < 1:
        raise ValueError(f"nothing to draw: n = {n}, batch size {len(x)}")
    _, h, _ = _image_shape(image_shape)
    mosaic = tile_images(np.concatenate([x[:k], x_rec[:k]]), image_shape, nrow=k)
    fig, ax = _image_figure(mosaic, title)
    ax.set_yticks([(h - 1) / 2, h + 1 + (h - 1) / 2], ["original", "reconstruction"])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path)


def grid_levels(n: int) -> torch.Tensor:
    """The ``n`` probability levels of a manifold grid, ``u_i = (i + 0.5) / n``, ``(n,)``
    on the CPU: the midpoints of ``n`` equal slices of probability."""
    return (torch.arange(n) + 0.5) / n  # cpu-ok: a plot's grid


def manifold(
    decode: Callable[[torch.Tensor], ArrayLike],
    image_shape: Sequence[int],
    path: PathLike,
    n: Optional[int] = None,
    dims: tuple[int, int] = (0, 1),
    z_dim: int = 2,
    title: Optional[str] = None,
    grid: Optional[ArrayLike] = None,
) -> Path:
    """The learned 2-D manifold, as in AEVB (Kingma & Welling 2014) Figure 4.

    Each latent coordinate takes ``n`` values, the quantiles of the model's prior at the
    levels ``u_i = (i + 0.5) / n`` (:func:`grid_levels`), so that the grid covers the
    prior evenly in probability whatever its scale. ``grid (n, z_dim)`` gives them, one
    ascending column per latent dimension (e.g. ``module.prior_quantiles(grid_levels(n))``);
    None means the N(0, I) prior, ``z = Normal(0, 1).icdf(u)``, ``n`` = 20 unless given
    (a grid of another prior's quantiles would hide a model whose latents live elsewhere:
    a GAE's spread over [−7, 1.5] on MNIST, far beyond N(0, 1)'s ±1.96). Columns
    ``dims = (a, b)`` are plotted; the other ``z_dim - 2`` dimensions are 0. ``decode(z)``
    is called once, with ``z`` of shape ``(n*n, z_dim)`` on the CPU (moving it to its
    model's device is its own), and must return ``(n*n, D)`` means in [0, 1] (e.g.
    ``vae.decoder.mean``). The tile at row r (from the top), column c shows
    ``z[a] = grid[c, a]``, ``z[b] = grid[n-1-r, b]``: ``z[a]`` increases to the right and
    ``z[b]`` upward.
    """
    path = _png_path(path)
    a, b = (int(d) for d in dims)
    if z_dim < 2 or a == b or not (0 <= a < z_dim and 0 <= b < z_dim):
        raise ValueError(
            f"dims must be two different latent dimensions in [0, z_dim={z_dim}), got {tuple(dims)}"
        )
    q = _manifold_grid(grid, n, z_dim, (a, b))
    n = len(q)
    z = torch.zeros(n, n, z_dim)  # cpu-ok: decode moves it where its model is
    z[:, :, a] = q[None, :, 0]  # column c -> grid[c, a]
    z[:, :, b] = q.flip(0)[:, None, 1]  # row r -> grid[n-1-r, b]
    with torch.no_grad():
        out = decode(z.reshape(n * n, z_dim))
    imgs = _as_images(out, image_shape, name="decode(z)")
    if len(imgs) != n * n:
        raise ValueError(f"decode(z) returned {len(imgs)} images for {n * n} latent points")
    _, h, w = _image_shape(image_shape)
    fig, ax = _image_figure(tile_images(imgs.transpose(0, 3, 1, 2), image_shape, nrow=n), title)
    ticks = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))
    ax.set_xticks(ticks * (w + 1) + (w - 1) / 2, [f"{q[i, 0]:.2f}" for i in ticks])
    ax.set_yticks(ticks * (h + 1) + (h - 1) / 2, [f"{q[n - 1 - i, 1]:.2f}" for i in ticks])
    ax.set_xlabel(f"z[{a}]")
    ax.set_ylabel(f"z[{b}]")
    return _save(fig, path)


def _manifold_grid(
    grid: Optional[ArrayLike], n: Optional[int], z_dim: int, dims: tuple[int, int]
) -> torch.Tensor:
    """The values of the two plotted dimensions, ``(n, 2)`` float32 on the CPU: columns
    ``dims`` of ``grid``, or N(0, 1) quantiles when there is none."""
    if grid is None:
        n = 20 if n is None else n
        if n < 1:
            raise ValueError(f"n must be a positive int, got {n}")
        return torch.distributions.Normal(0.0, 1.0).icdf(grid_levels(n))[:, None].expand(n, 2)
    g = torch.as_tensor(np.asarray(grid.detach().cpu() if torch.is_tensor(grid) else grid, np.float32))
    if g.dim() != 2 or g.shape[1] != z_dim or len(g) < 1 or (n is not None and len(g) != n):
        rows = "n" if n is None else n
        raise ValueError(f"grid must be ({rows}, z_dim={z_dim}): one column of values per latent "
                         f"dimension, got shape {tuple(g.shape)}")
    q = g[:, list(dims)]
    if not torch.isfinite(q).all() or (q.diff(dim=0) < 0).any():
        raise ValueError(f"grid's columns {list(dims)} must be finite and ascending (quantiles at "
                         f"increasing levels), got {q.T.tolist()}")
    return q


def latent_scatter(
    z: ArrayLike,
    labels: Optional[ArrayLike],
    path: PathLike,
    title: Optional[str] = None,
    axis: str = "z",
) -> Path:
    """Scatter plot of latent codes ``z (n, d)``, e.g. ``vae.encode(x)`` (``axis`` names
    the coordinates: ``"x"`` for points of data space, such as a 2-D flow's samples).

    ``d == 2`` is drawn as is; ``d > 2`` is projected on its first two principal
    components (PCA by SVD of the centred codes; the axis labels say so, with the share
    of variance each explains). Points are coloured by integer ``labels (n,)`` (tab10
    with a legend for up to 10 classes, a colour bar beyond), or in one colour when
    ``labels`` is None.
    """
    path = _png_path(path)
    z = _to_numpy(z)
    if z.ndim != 2 or z.shape[1] < 2 or len(z) == 0:
        raise ValueError(f"z must be (n, d) with n >= 1 and d >= 2, got shape {z.shape}")
    if z.shape[1] == 2:
        xy, names = z, (f"{axis}[0]", f"{axis}[1]")
    else:
        xy, _, ratio = _principal_components(z)
        names = tuple(f"PC {i + 1} of {axis} ({ratio[i]:.0%} of variance)" for i in range(2))
    fig, ax = _figure((6.5, 5))
    style = dict(s=8, alpha=0.7, linewidths=0)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], **style)
    else:
        lab = _int_labels(labels, len(z))
        classes = np.unique(lab)
        if len(classes) <= 10:
            tab10 = colormaps["tab10"]
            by_value = classes.min() >= 0 and classes.max() < 10  # digit k keeps its colour
            for i, k in enumerate(classes):
                m = lab == k
                ax.scatter(xy[m, 0], xy[m, 1], color=tab10(k if by_value else i), label=str(k), **style)
            ax.legend(title="label", markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap="viridis", **style)
            fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    if title:
        ax.set_title(title)
    return _save(fig, path)


def elbo_curves(
    history: Sequence[Mapping],
    path: PathLike,
    x: str = "epoch",
    title: Optional[str] = None,
) -> Path:
    """Train and validation ELBO (nats per data point, higher is better) against ``x``.

    ``history`` has one dict per epoch with keys ``x`` (``"epoch"``, or e.g.
    ``"samples_seen"``), ``train_elbo`` and ``valid_elbo``; rows whose ELBO is missing,
    None or NaN are skipped for that curve (validation is often run every k epochs).
    Values may be floats or 0-d tensors.
    """
    path = _png_path(path)
    rows = list(history)
    if not rows:
        raise ValueError("history is empty: nothing to plot")
    missing = [i for i, r in enumerate(rows) if r.get(x) is None]
    if missing:
        raise ValueError(f"history rows {missing[:5]} have no {x!r} value (the x axis)")
    fig, ax = _figure((6.5, 4))
    for key, label in (("train_elbo", "train"), ("valid_elbo", "validation")):
        pts = [(float(r[x]), float(r[key])) for r in rows if r.get(key) is not None]
        pts = [p for p in pts if np.isfinite(p[1])]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
    if not ax.lines:
        raise ValueError("history has no train_elbo or valid_elbo values")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("ELBO (nats per data point)\nhigher is better")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def figure_curves(
    history: Sequence[Mapping],
    path: PathLike,
    x: str = "epoch",
    title: Optional[str] = None,
) -> Path:
    """Every figure a training log holds, one panel each, against ``x``.

    The figures are the ``train_<name>`` and ``valid_<name>`` columns of ``history``
    (what the inference algorithm reported: ``elbo``, IWAE's ``iwae``, MCEM's
    ``log_joint`` and ``accept_prob``, ...); a figure's train and validation values share
    its panel. Missing, None or NaN values are skipped.
    """
    path = _png_path(path)
    rows = list(history)
    if not rows:
        raise ValueError("history is empty: nothing to plot")
    names = list(dict.fromkeys(k.split("_", 1)[1] for r in rows for k in r if k.startswith(("train_", "valid_"))))
    if not names:
        raise ValueError("history has no train_<figure> or valid_<figure> columns")
    fig = Figure(figsize=(4.2 * len(names), 3.6), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        for prefix, label in (("train", "train"), ("valid", "validation")):
            pts = [(float(r[x]), float(r[f"{prefix}_{name}"])) for r in rows
                   if r.get(x) is not None and r.get(f"{prefix}_{name}") is not None]
            pts = [p for p in pts if np.isfinite(p[1])]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def samples_side_by_side(
    panels: Mapping[str, ArrayLike],
    image_shape: Sequence[int],
    path: PathLike,
    nrow: Optional[int] = None,
    title: Optional[str] = None,
) -> Path:
    """Grids of samples of several models next to each other, e.g.
    ``{"GAE": gae.sample(100), "VAE": vae.sample(100)}``, each titled by its key.

    Every value is ``(n, D)`` (or ``(n, H, W)``, ``(n, C, H, W)``) in [0, 1]; ``nrow`` images per row in
    each grid (default ``ceil(sqrt(n))``; see :func:`tile_images`).
    """
    path = _png_path(path)
    if not panels:
        raise ValueError("panels is empty: give at least one {name: images}")
    mosaics = {name: tile_images(images, image_shape, nrow) for name, images in panels.items()}
    h = max(m.shape[0] for m in mosaics.values())
    width = sum(m.shape[1] for m in mosaics.values())
    scale = 4.0 / h
    fig = Figure(figsize=(max(3.0, width * scale + 0.4 * len(mosaics)), 4.6), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(mosaics), squeeze=False)[0]
    for ax, (name, mosaic) in zip(axes, mosaics.items()):
        _imshow(ax, mosaic)
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _kde_log_density(points: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Scott's bandwidth, per axis) of ``points (n, 2)`` at ``grid (m, 2)``."""
    pts = torch.as_tensor(points, dtype=torch.float64)
    g = torch.as_tensor(grid, dtype=torch.float64)
    n = len(pts)
    bw = pts.std(0).clamp(min=1e-6) * n ** (-1.0 / 6.0)
    out = []
    for start in range(0, len(g), 2048):
        d = (g[start : start + 2048, None, :] - pts[None]) / bw
        out.append(logsumexp(-0.5 * d.pow(2).sum(-1)))
    log_norm = math.log(n) + math.log(2 * math.pi) + float(bw.log().sum())
    return (torch.cat(out) - log_norm).numpy()


def latent_kde(
    panels: Mapping[str, Union[ArrayLike, Callable[[torch.Tensor], ArrayLike]]],
    path: PathLike,
    extent: Optional[tuple[float, float, float, float]] = None,
    resolution: int = 150,
    log_scale: bool = False,
    points: Optional[Mapping[str, ArrayLike]] = None,
    title: Optional[str] = None,
) -> Path:
    """Densities over a 2-D latent space, one panel per entry (the GAE paper's KDE figure).

    A value is either latent codes ``(n, 2)`` (e.g. ``model.encode(x)`` or samples of the
    prior), drawn as their Gaussian kernel density estimate (Scott's bandwidth per
    axis), or a function ``z (m, 2) -> log-density (m,)`` evaluated on the grid (e.g.
    ``gae.log_prior``: the GAE's prior *is* a kernel density estimate with one
    posterior per training point). ``extent = (x0, x1, y0, y1)`` defaults to the range
    of the codes given (in ``panels`` or ``points``, 0.5 to 99.5 percentiles, padded), else
    ``±3``; every panel's axes span exactly the extent (overlaid codes outside it are cut).
    ``log_scale`` shows the log-density; ``points`` optionally overlays codes on the panel
    of the same name.
    """
    path = _png_path(path)
    if not panels:
        raise ValueError("panels is empty: give at least one {name: codes or log-density function}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    arrays = {}
    for name, value in {**panels, **(points or {})}.items():
        if callable(value):
            continue
        a = _to_numpy(value)
        if a.ndim != 2 or a.shape[1] != 2 or len(a) < 2 or not np.isfinite(a).all():
            raise ValueError(f"{name!r}: latent codes must be a finite (n >= 2, 2) array, got shape {a.shape}")
        arrays[name] = a
    if extent is None:
        if arrays:
            allp = np.concatenate(list(arrays.values()))
            lo, hi = np.percentile(allp, 0.5, axis=0), np.percentile(allp, 99.5, axis=0)
            pad = 0.1 * (hi - lo) + 1e-3
            extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
        else:
            extent = (-3.0, 3.0, -3.0, 3.0)
    x0, x1, y0, y1 = (float(e) for e in extent)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"extent must be (x0, x1, y0, y1) with x0 < x1 and y0 < y1, got {extent}")
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    fig = Figure(figsize=(4.2 * len(panels), 4.2), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, value) in zip(axes, panels.items()):
        if callable(value):
            with torch.no_grad():
                logd = _to_numpy(value(torch.as_tensor(grid, dtype=torch.float32))).reshape(-1)
            if logd.shape != (len(grid),):
                raise ValueError(f"{name!r}: the log-density function returned {logd.shape} values for {len(grid)} points")
        else:
            logd = _kde_log_density(arrays[name], grid)
        img = logd if log_scale else np.exp(logd - np.nanmax(logd))
        ax.imshow(img.reshape(resolution, resolution), origin="lower", extent=(x0, x1, y0, y1),
                  cmap="viridis", aspect="auto", interpolation="bilinear")
        if points and name in points:
            p = arrays[name]
            ax.scatter(p[:, 0], p[:, 1], s=2, c="white", alpha=0.3, linewidths=0)
        ax.set_xlim(x0, x1)  # the density's grid: codes outside it would widen the axes past the image
        ax.set_ylim(y0, y1)
        ax.set_title(name)
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def density_2d(
    log_density: Callable[[torch.Tensor], ArrayLike],
    points: ArrayLike,
    path: PathLike,
    samples: Optional[ArrayLike] = None,
    base_points: Optional[ArrayLike] = None,
    labels: Optional[ArrayLike] = None,
    extent: Optional[tuple[float, float, float, float]] = None,
    resolution: int = 150,
    title: Optional[str] = None,
) -> Path:
    """A 2-D density model's picture, one panel each: the learned density ``p(x)`` as a
    heat map (``log_density: x (m, 2) -> log p(x) (m,)``, e.g. ``flow.log_density``) with
    the data ``points (n, 2)`` over it; the model's ``samples (k, 2)``; and the data mapped
    to the base space, ``base_points (n, 2)`` (a flow's ``f(x)``, which should look like
    draws of its base density), coloured by ``labels``. ``extent = (x0, x1, y0, y1)``
    defaults to the data's range (0.5 to 99.5 percentiles) with a margin.
    """
    path = _png_path(path)
    pts = _to_numpy(points)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2 or not np.isfinite(pts).all():
        raise ValueError(f"points must be finite 2-D data (n >= 2, 2), got shape {pts.shape}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if extent is None:
        lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
        pad = 0.15 * (hi - lo) + 1e-3
        extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    x0, x1, y0, y1 = (float(e) for e in extent)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"extent must be (x0, x1, y0, y1) with x0 < x1 and y0 < y1, got {extent}")
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    with torch.no_grad():
        logd = _to_numpy(log_density(torch.as_tensor(grid, dtype=torch.float32))).reshape(-1)
    if logd.shape != (len(grid),):
        raise ValueError(f"log_density returned {logd.shape} values for {len(grid)} points")
    panels = 1 + (samples is not None) + (base_points is not None)
    fig = Figure(figsize=(4.2 * panels, 4.2), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = iter(fig.subplots(1, panels, squeeze=False)[0])
    ax = next(axes)
    ax.imshow(np.exp(logd - np.nanmax(logd)).reshape(resolution, resolution), origin="lower",
              extent=(x0, x1, y0, y1), cmap="viridis", aspect="auto", interpolation="bilinear")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="white", alpha=0.25, linewidths=0)
    ax.set(title="learned density p(x), data", xlabel="x[0]", ylabel="x[1]")
    style = dict(s=3, alpha=0.5, linewidths=0)
    if samples is not None:
        ax = next(axes)
        s = _to_numpy(samples)
        ax.scatter(s[:, 0], s[:, 1], **style)
        ax.set(title=f"{len(s)} samples", xlabel="x[0]", ylabel="x[1]", xlim=(x0, x1), ylim=(y0, y1))
    if base_points is not None:
        ax = next(axes)
        u = _to_numpy(base_points)
        if labels is None:
            ax.scatter(u[:, 0], u[:, 1], **style)
        else:
            lab = _int_labels(labels, len(u))
            ax.scatter(u[:, 0], u[:, 1], c=lab, cmap="tab10", vmin=0, vmax=9, **style)
        ax.set(title="data in the base space, f(x)", xlabel="u[0]", ylabel="u[1]", aspect="equal")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
