"""What a finished run reports: the figures its model can honestly be scored by, in
``summary.json``, and the plots its capabilities allow.

A latent-variable model with a guide is scored by the ELBO and the importance-sampled
bound on ``log p(x)``; the algorithm's own held-out figures (``inference.evaluate``) are
reported on the test split as ``test_<name>``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_vae import plots
from pyro_vae.evaluation import log_likelihood
from pyro_vae.loop import TrainState
from pyro_vae.runs import write_summary
from pyro_vae.train import Experiment


def summarize(exp: Experiment, state: TrainState, run_dir: str | Path, num_samples: int) -> dict:
    """Test figures and (``num_samples`` > 0, a model with a guide) the importance-sampled
    test log-likelihood, written to ``run_dir/summary.json``."""
    test, caps = exp.data.test, exp.capabilities
    summary = {"epochs": state.epoch, "steps": state.step, "stopped": state.stopped,
               f"best_{exp.config.budget.monitor}": state.best_score}
    if len(test):
        summary.update({f"test_{k}": v for k, v in exp.inference.evaluate(test).items()})
    if num_samples > 0 and len(test) and caps.has_guide:
        ll = log_likelihood(exp.module, test, num_samples=num_samples)
        summary.update(test_log_likelihood=ll.mean, test_log_likelihood_stderr=ll.stderr,
                       test_log_likelihood_samples=num_samples)
    write_summary(run_dir, summary)
    return summary


@torch.no_grad()
def write_plots(exp: Experiment, history: list[dict], out_dir: str | Path, num_samples: int = 100) -> list[Path]:
    """The figures the model's capabilities allow: samples (it can sample);
    reconstructions, the latent scatter and, for N_z = 2, the manifold over its prior's
    quantiles (it has a guide: :func:`manifold`), or for several latent layers their
    traversals, KL bars and scatters (:mod:`pyro_vae.layer_report`); for 2-D data and an exact density (a
    flow), the density, samples and base-space picture (``density.png``); the curves of
    every logged figure (``elbo.png``)."""
    out_dir, module, data, caps = Path(out_dir), exp.module, exp.data, exp.capabilities
    paths = []
    if history:
        curves = plots.elbo_curves if _elbo_only(history) else plots.figure_curves
        paths.append(curves(history, out_dir / "elbo.png"))
    if caps.has_guide:
        paths.append(plots.latent_scatter(module.encode(data.test), data.test_labels, out_dir / "latent.png",
                                          title="test set, posterior means"))
    if caps.exact_log_prob and data.event_shape == (2,) and len(data.test) > 1:
        paths.append(_density_2d(exp, out_dir / "density.png", num_samples=10 * num_samples))
    layered = len(caps.latent_layers) > 1
    if layered:  # a hierarchy: traversals, KL and latents per layer (instead of one manifold)
        from pyro_vae.layer_report import write_layer_plots

        paths += write_layer_plots(exp, out_dir)
    if not data.is_image:  # the rest are pictures of data points
        return paths
    shape, x = data.event_shape, data.test[:10]
    if caps.can_sample:
        paths.append(plots.image_grid(_flat(module.sample(num_samples)), shape, out_dir / "samples.png",
                                      title="samples"))
    if caps.has_guide and len(x):
        paths.append(plots.reconstructions(_flat(x), _flat(module.reconstruct(x)), shape,
                                           out_dir / "reconstructions.png"))
    if caps.has_guide and module.z_dim == 2 and not layered:
        paths.append(manifold(module, shape, out_dir / "manifold.png", device=exp.device))
    return paths


@torch.no_grad()
def manifold(module, shape, path: str | Path, n: int = 20, device=None, **kwargs) -> Path:
    """The manifold plot of a 2-D latent model with a decoder (``module.decoder.mean``),
    over the quantiles of the module's own prior (:meth:`~pyro_vae.models.VAE.prior_quantiles`
    at :func:`~pyro_vae.plots.grid_levels`): N(0, 1)'s for a VAE, the exemplar mixture's
    for a GAE, whose latents lie far outside N(0, 1)'s range. ``kwargs`` go to
    :func:`pyro_vae.plots.manifold` (``title``)."""
    grid = module.prior_quantiles(plots.grid_levels(n)).cpu()
    # the plot builds its latent grid on the CPU: decode it where the module is
    return plots.manifold(lambda z: _flat(module.decoder.mean(z.to(device))), shape, path, grid=grid,
                          z_dim=module.z_dim, **kwargs)


def _density_2d(exp: Experiment, path: Path, num_samples: int) -> Path:
    """A 2-D flow's density, samples and base-space picture of the test set."""
    module, test = exp.module, exp.data.test
    return plots.density_2d(lambda x: module.log_density(x.to(exp.device)).cpu(), test.cpu(), path,
                            samples=module.sample(num_samples).cpu(), base_points=module.to_base(test).cpu(),
                            labels=exp.data.test_labels)


def _flat(images: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)`` images as rows ``(n, C·H·W)`` on the CPU, for the plots."""
    return images.reshape(len(images), -1).cpu()


def _elbo_only(history: list[dict]) -> bool:
    """Whether the log's only figure is the ELBO (then the classic two-curve plot)."""
    return {k for row in history for k in row if k.startswith(("train_", "valid_"))} <= {"train_elbo", "valid_elbo"}
