"""The per-layer figures of a run whose model has several latent layers (its
capabilities' ``latent_layers``): traversals, KL bars with active units, and one latent
scatter per layer; :func:`pyro_vae.report.write_plots` draws them (``pyro-vae plot``).

The model offers, beside the protocol of :mod:`pyro_vae.models`: ``layer_sizes`` (each
layer's dimensions), ``generate(n)`` (every layer drawn from the story), ``decode(latents)``
(E[x | every layer]) and ``layer_quantiles(layer, u, held)`` (the layer's prior quantiles,
given the layers ``held`` above it where it depends on them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_vae import layer_plots, plots
from pyro_vae.evaluation.layers import active_units, layer_kl, posterior_means


@torch.no_grad()
def traversal_images(module, n: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per layer (top first), the decoded ``n x n`` traversal of that layer with the others
    held at draws from the model (:func:`pyro_vae.layer_plots.layer_grid`), ``(n*n, D)`` on the CPU."""
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        sizes = module.layer_sizes
        held = module.generate(n)
        u = plots.grid_levels(n)
        out = {}
        for layer in sizes:
            d = sizes[layer]
            rows = {k: v[:1] for k, v in held.items()} if d >= 2 else held
            quantiles = {layer: module.layer_quantiles(layer, u, rows).cpu()}
            grid = layer_plots.layer_grid(sizes, n, quantiles, {k: v.cpu() for k, v in rows.items()}, layer)
            device = held[layer].device
            images = module.decode({k: v.to(device) for k, v in grid.items()})
            out[layer] = images.reshape(len(images), -1).cpu()
        return out


@torch.no_grad()
def write_layer_plots(exp, out_dir: str | Path, num_points: int = 1000, n: int = 10) -> list[Path]:
    """``layers_traversal.png`` (image data), ``layers_kl.png`` and ``layers_latent.png`` on
    up to ``num_points`` test points."""
    out_dir, module, data = Path(out_dir), exp.module, exp.data
    x, labels = data.test[:num_points], data.test_labels
    labels = None if labels is None else labels[:num_points]
    paths = []
    if data.is_image:
        paths.append(layer_plots.layer_traversals(traversal_images(module, n), data.event_shape,
                                                  out_dir / "layers_traversal.png"))
    if len(x):
        kl = layer_kl(module, x, num_samples=4)
        means = posterior_means(module, x, num_samples=8)
        paths.append(layer_plots.layer_kl_bars(kl, out_dir / "layers_kl.png", active_units(module, x, means=means),
                                               module.layer_sizes))
        paths.append(layer_plots.layer_scatter(means, labels, out_dir / "layers_latent.png",
                                               title="test set, posterior means per layer"))
    return paths


__all__ = ["traversal_images", "write_layer_plots"]
