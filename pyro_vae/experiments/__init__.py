"""Reproductions of published experiments, each one ``pyro-vae experiment <name> [options]``.

Every experiment is a module that declares its own command-line options and runs from
them: ``add_arguments(parser)`` and ``run(args) -> result`` (what it prints and writes is
the module docstring's). :data:`EXPERIMENTS` names them; a module is imported only when
its experiment is asked for.

* ``aevb-fig2`` -- :mod:`~pyro_vae.experiments.aevb_fig2`: lower bound against samples,
  AEVB vs wake-sleep (Kingma & Welling 2014, figure 2).
* ``aevb-fig3`` -- :mod:`~pyro_vae.experiments.aevb_fig3`: marginal log-likelihood
  against samples, AEVB vs wake-sleep vs MCEM (figure 3).
* ``mnist-nll`` -- :mod:`~pyro_vae.experiments.mnist_nll`: test NLL of a one-layer VAE on
  binarized MNIST (k = 5000).
* ``frey-face`` -- :mod:`~pyro_vae.experiments.frey_face`: the test ELBO on Frey Face with a
  Gaussian decoder, N_z = 2 and 20.
* ``gae-nll`` -- :mod:`~pyro_vae.experiments.gae_nll`: test NLL of GAE and VAE at 1-4 hidden
  layers (the GAE paper's table).
* ``gae-parzen`` -- :mod:`~pyro_vae.experiments.gae_parzen`: Parzen-window log-likelihood of
  the GAE on real-valued MNIST.
* ``vlae-layers`` -- :mod:`~pyro_vae.experiments.hier_layers`: per-layer KL, active units and
  linear probes of the VLAE and the stacked two-level VAE on MNIST (issue 21).
* ``hier-nll`` -- :mod:`~pyro_vae.experiments.hier_nll`: test NLL of the one- and two-level
  models on binarized MNIST (issue 21).
* ``flow-mnist`` -- :mod:`~pyro_vae.experiments.flow_mnist`: NICE and the MAF family on MNIST
  by exact likelihood, next to the papers' figures (resumable runs).
* ``wgan-curves``, ``wgan-overfit`` -- :mod:`~pyro_vae.experiments.wgan_curves`,
  :mod:`~pyro_vae.experiments.wgan_overfit`: the WGAN and WGAN-GP papers' loss curves.
* ``pixelgan-clustering`` -- :mod:`~pyro_vae.experiments.pixelgan_clustering`: unsupervised
  clustering of MNIST by a PixelGAN autoencoder with a categorical prior.
* ``sample-quality`` -- :mod:`~pyro_vae.experiments.sample_quality`: the sample-quality table.

From Python: ``run_experiment("aevb-fig2", max_minutes=30, out="results/fig2")`` runs
the experiment with its command line's defaults and these options changed.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from types import ModuleType

from pyro_vae.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """An experiment: the module that runs it and its one-line summary."""

    module: str
    summary: str


EXPERIMENTS: dict[str, Entry] = {
    "aevb-fig2": Entry("pyro_vae.experiments.aevb_fig2",
                       "lower bound against samples, AEVB vs wake-sleep (Kingma & Welling 2014, fig. 2)"),
    "aevb-fig3": Entry("pyro_vae.experiments.aevb_fig3",
                       "marginal log-likelihood against samples, AEVB vs wake-sleep vs MCEM (fig. 3)"),
    "mnist-nll": Entry("pyro_vae.experiments.mnist_nll",
                       "test NLL of a one-stochastic-layer VAE on binarized MNIST (k = 5000; target <= 88.0)"),
    "frey-face": Entry("pyro_vae.experiments.frey_face",
                       "test ELBO on Frey Face with a Gaussian decoder, N_z = 2 and 20"),
    "gae-nll": Entry("pyro_vae.experiments.gae_nll",
                     "test NLL of GAE and VAE at 1-4 hidden layers on binarized MNIST (the GAE paper's table)"),
    "gae-parzen": Entry("pyro_vae.experiments.gae_parzen",
                        "Parzen-window log-likelihood of the GAE on real-valued MNIST"),
    "vlae-layers": Entry("pyro_vae.experiments.hier_layers",
                         "what each latent layer learns: VLAE vs the stacked two-level VAE on MNIST (KL, probe)"),
    "hier-nll": Entry("pyro_vae.experiments.hier_nll",
                      "test NLL of VAE, two-level VAE, GAE, two-level GAE, VLAE on binarized MNIST (k = 5000)"),
    "flow-mnist": Entry("pyro_vae.experiments.flow_mnist",
                        "NICE and MADE / MADE MoG / MAF(5) / MAF(10) / MAF MoG(5) on MNIST by exact likelihood"),
    "wgan-curves": Entry("pyro_vae.experiments.wgan_curves",
                         "the critic's Wasserstein estimate against time, with sample grids (WGAN paper)"),
    "wgan-overfit": Entry("pyro_vae.experiments.wgan_overfit",
                          "critic losses on 1000 training vs validation images, with and without the penalty "
                          "(WGAN-GP paper)"),
    "pixelgan-clustering": Entry("pyro_vae.experiments.pixelgan_clustering",
                                 "unsupervised MNIST clustering by a PixelGAN autoencoder (target <= 5.27% error)"),
    "sample-quality": Entry("pyro_vae.experiments.sample_quality",
                            "one table of classifier Fréchet distance, inception-like score, Parzen and "
                            "log-likelihood for every model that samples"),
}


def load(name: str) -> ModuleType:
    """The module of experiment ``name``."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}: choose one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name].module)


def make_parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser of experiment ``name`` (its module's options)."""
    module = load(name)
    doc = (module.__doc__ or "").strip()
    p = argparse.ArgumentParser(prog=prog or f"pyro-vae experiment {name}", description=doc.split("\n\n")[0])
    module.add_arguments(p)
    return p


def listing() -> str:
    """One line per experiment: its name and summary."""
    width = max(map(len, EXPERIMENTS))
    return "\n".join(f"  {name:<{width}}  {e.summary}" for name, e in EXPERIMENTS.items())


def run_experiment(name: str, **options):
    """Run experiment ``name`` with its command line's defaults, ``options`` (the
    options' ``dest`` names: ``max_minutes=30``) changed; returns what ``run`` returns.
    A string value goes through its option's type, as on the command line (``out="x"``
    is a path)."""
    parser = make_parser(name)
    args = parser.parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for experiment {name!r}; known: {sorted(vars(args))}")
    types = {action.dest: action.type for action in parser._actions if callable(action.type)}
    for key, value in options.items():
        setattr(args, key, types[key](value) if isinstance(value, str) and key in types else value)
    return load(name).run(args)


__all__ = ["EXPERIMENTS", "Entry", "listing", "load", "make_parser", "run_experiment"]
