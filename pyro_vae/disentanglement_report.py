"""What ``pyro-vae evaluate RUN --metrics disentanglement`` writes into a run directory
trained on data with ground-truth factors (``[data] name = "dsprites"`` or
``"dsprites_original"``):

* ``disentanglement.json`` -- every metric's scores (:mod:`pyro_vae.evaluation.disentanglement`)
  with its settings, seconds, the epoch and step of the parameters scored;
* ``disentanglement.md`` -- the metric table, one row per figure;
* ``plots/traversals.png`` -- latent traversals, one row per dimension, most KL first
  (:func:`traversal_images`);
* ``plots/kl_per_dimension.png`` -- the KL each dimension carries (:func:`kl_per_dimension`).

Two sizes of the metrics: ``"full"``, disentanglement_lib's defaults (DCI alone fits
11,300 boosted trees on 10,000 points, about 20 minutes on a CPU), and ``"quick"``
(:data:`QUICK`: 300 pair-points for the β-VAE and FactorVAE metrics, 2,000 points for the
others, DCI's classifier cut to 10 trees of depth 3, :func:`small_boosting`), for curves and
smoke runs; its scores are noisier and DCI's not comparable with published numbers. What
a metric costs is mostly encoding: the β-VAE metric encodes ``2 · 64 · (num_train +
num_eval)`` images (1.9 million at full size), about 1 ms each for the conv encoder on
one CPU core, so the full β-VAE metric alone takes about half an hour there.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier

from pyro_vae import disentanglement_plots
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.disentanglement import METRICS, encoder_mean

#: What each metric reports as its headline figure in the table's first column.
HEADLINE = {"beta_vae": "eval_accuracy", "factor_vae": "eval_accuracy", "mig": "mig",
            "dci": "disentanglement", "sap": "sap_score"}
#: Data with factors, by ``[data] name``.
FACTOR_DATA = ("dsprites", "dsprites_original")


def small_boosting(random_state: int, trees: int = 10) -> GradientBoostingClassifier:
    """DCI's quick classifier: scikit-learn's gradient boosting with ``trees`` trees (default
    100) of depth 3; ~10x faster, importances of the same kind."""
    return GradientBoostingClassifier(n_estimators=trees, random_state=random_state)


#: The quick settings by metric (the full ones are the metrics' defaults).
QUICK: dict[str, dict] = {
    # the two pair metrics encode batch_size (64) images per point: 58k and 31k images here
    "beta_vae": {"num_train": 300, "num_eval": 150},
    "factor_vae": {"num_train": 300, "num_eval": 150, "num_variance_estimate": 2000},
    "mig": {"num_train": 2000},
    "dci": {"num_train": 2000, "num_test": 1000, "classifier": small_boosting},
    "sap": {"num_train": 2000, "num_test": 1000},
}
SIZES = ("quick", "full")


def settings_for(size: str, dci_trees: Optional[int] = None) -> dict[str, dict]:
    """The metrics' keyword settings of ``size`` (``"quick"`` or ``"full"``); ``dci_trees``
    replaces DCI's classifier by :func:`small_boosting` with that many trees."""
    if size not in SIZES:
        raise ConfigError(f"metric size {size!r} is unknown: choose one of {list(SIZES)}")
    settings = {m: dict(s) for m, s in QUICK.items()} if size == "quick" else {m: {} for m in METRICS}
    if dci_trees is not None:
        if dci_trees < 1:
            raise ConfigError(f"DCI needs at least one tree, got dci_trees = {dci_trees}")
        settings["dci"]["classifier"] = functools.partial(small_boosting, trees=dci_trees)
    return settings


def factor_data(data):
    """The ground-truth data (:mod:`pyro_vae.data.factors`) behind a run's ``data``
    (:class:`~pyro_vae.data.DataSplits`), or a ConfigError naming those that have one."""
    from pyro_vae.data.dsprites import DSprites

    if data.name == "dsprites":
        return DSprites()
    if data.name == "dsprites_original":
        return DSprites.from_npz(data.sources[0].path)
    raise ConfigError(f"the disentanglement metrics need data with known factors of variation, and "
                      f"[data] name = {data.name!r} has none: train on one of {list(FACTOR_DATA)}")


@torch.no_grad()
def kl_per_dimension(module, x: torch.Tensor, chunk: int = 1000) -> tuple[np.ndarray, str]:
    """The KL each latent dimension carries, mean over the points ``x``: ``(kl (L,), what)``.

    For a prior with a closed-form ``kl`` (N(0, I)): ``KL(q(z_d|x) ‖ p(z_d))``. Otherwise
    (the GAE's exemplar mixture, not a product over dimensions) the KL to the Gaussian
    that matches the aggregate posterior's moments in that dimension, ``N(m_d, s_d²)``
    with ``m_d = E[μ_d]``, ``s_d² = Var[μ_d] + E[σ_d²]``: for a VAE whose aggregate
    posterior is its prior the two agree; ``what`` says which.
    """
    stats = [module.guide.encoder(x[i: i + chunk]) for i in range(0, len(x), chunk)]
    loc, scale = (torch.cat(t).double() for t in zip(*stats))
    if callable(getattr(module.prior, "kl", None)):
        return module.prior.kl(loc.unsqueeze(-1), scale.unsqueeze(-1)).mean(0).cpu().numpy(), "KL to the prior"
    m, var = loc.mean(0), loc.var(0, unbiased=False) + scale.pow(2).mean(0)
    kl = 0.5 * ((scale.pow(2) + (loc - m).pow(2)) / var - 1 - (scale.pow(2) / var).log())
    return kl.mean(0).cpu().numpy(), "KL to the moment-matched aggregate posterior"


@torch.no_grad()
def traversal_images(module, x0: torch.Tensor, order: Sequence[int], num_values: int = 10,
                     levels: tuple[float, float] = (0.02, 0.98)) -> torch.Tensor:
    """Decoded traversals from the code ``μ_φ(x0)`` of one image ``x0 (1, *event_shape)``:
    for each dimension ``d`` of ``order``, ``z_d`` at ``num_values`` quantiles of the prior's
    marginal between ``levels`` (N(0, 1): ±2.05), the others held. ``(len(order) *
    num_values, D)`` on the CPU, row by row."""
    z0 = module.encode(x0).reshape(1, -1)
    u = torch.linspace(*levels, num_values)  # cpu-ok: levels of a plot's grid
    values = module.prior_quantiles(u).to(z0)  # (num_values, L)
    rows = []
    for d in order:
        z = z0.repeat(num_values, 1)
        z[:, d] = values[:, d]
        rows.append(z)
    images = module.decoder.mean(torch.cat(rows))
    return images.reshape(len(images), -1).cpu()


def metrics_table(scores: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of ``{metric: {key: value}}``, the headline figure first."""
    lines = ["| metric | figure | value |", "|---|---|---|"]
    for metric, figures in scores.items():
        first = HEADLINE.get(metric)
        keys = sorted(figures, key=lambda k: (k != first, k))
        lines += [f"| {metric} | {k} | {figures[k]:.4f} |" for k in keys if isinstance(figures[k], (int, float))]
    return "\n".join(lines) + "\n"


def score(module, ground_truth, metrics: Sequence[str] = tuple(METRICS), size: str = "quick",
          seed: int = 0, dci_trees: Optional[int] = None, progress: bool = False) -> tuple[dict, dict]:
    """``(scores, seconds)`` of ``module``'s encoder means on ``ground_truth``, by metric."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown disentanglement metrics {unknown}: choose from {list(METRICS)}")
    settings = settings_for(size, dci_trees)
    representation = encoder_mean(module)
    scores, seconds = {}, {}
    module.eval()
    for m in metrics:
        started = time.perf_counter()
        scores[m] = METRICS[m](representation, ground_truth, seed=seed, progress=progress, **settings[m])
        seconds[m] = round(time.perf_counter() - started, 2)
    return scores, seconds


def write_disentanglement(exp, state, run_dir: str | Path, metrics: Sequence[str] = tuple(METRICS),
                          size: str = "quick", seed: int = 0, dci_trees: Optional[int] = None,
                          progress: bool = False, num_points: int = 1000) -> dict:
    """Score a loaded run (``pyro_vae.train.load_run``) and write the module docstring's
    files into ``run_dir``; the JSON record is returned."""
    run_dir, module = Path(run_dir), exp.module
    ground_truth = factor_data(exp.data)
    scores, seconds = score(module, ground_truth, metrics, size, seed, dci_trees, progress)
    plots = write_pictures(exp, run_dir / "plots", num_points)
    record = {"epoch": state.epoch, "step": state.step, "size": size, "seed": seed, "dci_trees": dci_trees,
              "scores": scores, "seconds": seconds, "plots": [str(p.relative_to(run_dir)) for p in plots]}
    (run_dir / "disentanglement.json").write_text(json.dumps(record, indent=2) + "\n")
    (run_dir / "disentanglement.md").write_text(
        f"Disentanglement of {run_dir.name} (epoch {state.epoch}, step {state.step}; {size} metrics, seed {seed})\n\n"
        + metrics_table(scores))
    return record


@torch.no_grad()
def write_pictures(exp, out_dir: str | Path, num_points: int = 1000, num_values: int = 10) -> list[Path]:
    """``traversals.png`` and ``kl_per_dimension.png`` from the first ``num_points`` test points."""
    out_dir, module = Path(out_dir), exp.module
    x = exp.data.test[:num_points]
    if not len(x):
        raise ConfigError("the run's test split is empty: the traversals start from a test image")
    kl, what = kl_per_dimension(module, x)
    order = [int(d) for d in np.argsort(-kl, kind="stable")]
    images = traversal_images(module, x[:1], order, num_values)
    labels = [f"z{d} ({kl[d]:.2f})" for d in order]
    return [
        disentanglement_plots.latent_traversals(images, exp.data.event_shape, out_dir / "traversals.png", num_values,
                                                labels, title="traversals from a test image (row: z_d, its KL)"),
        disentanglement_plots.kl_per_dimension_bars(kl, out_dir / "kl_per_dimension.png",
                                                    title=f"{what} per dimension (total {kl.sum():.2f})"),
    ]


__all__ = ["FACTOR_DATA", "HEADLINE", "QUICK", "SIZES", "factor_data", "kl_per_dimension", "metrics_table", "score",
           "settings_for", "small_boosting", "traversal_images", "write_disentanglement", "write_pictures"]
