"""Reproductions of published experiments, each a ``run(out, max_minutes, ...)`` that
writes its figure as PNG, its numbers as CSV and a JSON summary under ``out``.

* ``"aevb-fig2"`` -- :mod:`pyro_vae.experiments.aevb_fig2`: lower bound against samples,
  AEVB vs wake-sleep (Kingma & Welling 2014, figure 2).
* ``"aevb-fig3"`` -- :mod:`pyro_vae.experiments.aevb_fig3`: marginal log-likelihood
  against samples, AEVB vs wake-sleep vs MCEM (figure 3).

From the command line: ``pyro-vae experiment aevb-fig2 --max-minutes 30 --out results/fig2``.
"""

from __future__ import annotations

from pyro_vae.experiments import aevb_fig2, aevb_fig3

EXPERIMENTS = {aevb_fig2.NAME: aevb_fig2, aevb_fig3.NAME: aevb_fig3}


def run_experiment(name: str, **kwargs) -> dict:
    """Run experiment ``name`` (a key of :data:`EXPERIMENTS`) with ``run``'s keywords."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: choose one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name].run(**kwargs)


__all__ = ["EXPERIMENTS", "aevb_fig2", "aevb_fig3", "run_experiment"]
