"""What a finished run reports: test figures in ``summary.json`` and the plots."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_vae import plots
from pyro_vae.evaluation import log_likelihood
from pyro_vae.train import Experiment, TrainState, write_summary


def summarize(exp: Experiment, state: TrainState, run_dir: str | Path, num_samples: int) -> dict:
    """Test ELBO and (``num_samples`` > 0) the importance-sampled test log-likelihood."""
    test = exp.data.test
    summary = {
        "epochs": state.epoch, "steps": state.step, "stopped": state.stopped,
        "best_valid_elbo": state.best_valid if state.history else None,
        "test_elbo": exp.inference.evaluate(test) if len(test) else None,
    }
    if num_samples > 0 and len(test):
        ll = log_likelihood(exp.module, test, num_samples=num_samples)
        summary.update(test_log_likelihood=ll.mean, test_log_likelihood_stderr=ll.stderr,
                       test_log_likelihood_samples=num_samples)
    write_summary(run_dir, summary)
    return summary


@torch.no_grad()
def write_plots(exp: Experiment, history: list[dict], out_dir: str | Path, num_samples: int = 100) -> list[Path]:
    """Samples, reconstructions, ELBO curves, latent scatter and (N_z = 2) the manifold."""
    out_dir, vae, data = Path(out_dir), exp.module, exp.data
    shape, x = data.image_shape, data.test[:10]
    paths = [
        plots.image_grid(vae.sample(num_samples), shape, out_dir / "samples.png", title="samples"),
        plots.reconstructions(x, vae.reconstruct(x), shape, out_dir / "reconstructions.png"),
        plots.latent_scatter(vae.encode(data.test), data.test_labels, out_dir / "latent.png",
                             title="test set, posterior means"),
    ]
    if history:
        paths.append(plots.elbo_curves(history, out_dir / "elbo.png"))
    if vae.z_dim == 2:
        paths.append(plots.manifold(vae.decoder.mean, shape, out_dir / "manifold.png"))
    return paths
