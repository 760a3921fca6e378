"""Figure 3 of Kingma & Welling (2014), "Auto-Encoding Variational Bayes", scaled to budget.

The paper: the estimated marginal log-likelihood (train and test) against the number of
training samples evaluated, for AEVB, wake-sleep and Monte Carlo EM, on MNIST with
N_train = 1000 and 50000 training points, 100 hidden units and N_z = 3, the
log-likelihood estimated with the HMC estimator of its appendix D.

Here: the same settings (binarized MNIST; Adagrad, minibatches of 100; MCEM with one
HMC transition of 10 leapfrog steps per E-step, step size tuned to 90% acceptance, then
5 M-steps), each run stopping at ``max_samples`` or at its share of ``max_minutes``.
MCEM runs only where feasible: by default on N_train = 1000 (``mcem_max_train``). The
log-likelihoods are :func:`pyro_vae.evaluation.hmc_log_likelihood` (appendix D) on
fixed random subsets of ``eval_points`` training and test points (the ``N_train`` training
points are a fixed random subset too), with the importance-sampling estimate
(guide as proposal; for MCEM the guide fitted on the side) and the ELBO alongside.

Each curve is a training run of the package's loop on ``[data] train_size = N_train``
points, in ``out/runs/n<N_train>-<algorithm>``; ``--resume`` continues the curves there
(unfinished ones train on, finished ones are read back), else they start afresh.

``models = ["vae", "gae"]`` adds the GAE's rows (the same decoder, encoder and settings,
the exemplar prior over the ``N_train`` points with its default "knn" estimator): AEVB is
then its own SVI objective, and wake-sleep and MCEM train it with its data index summed out
(:mod:`pyro_vae.models.gae.collapsed`); its curves are drawn with square markers, its log-
likelihoods estimated on the collapsed story (the exact mixture over the ``N_train``
components). Run directories ``n<N>-gae-<algorithm>``.

Outputs in ``out``: ``aevb_fig3.csv``, ``aevb_fig3.png`` (a panel per N_train) and
``aevb_fig3.json`` (settings, final numbers, AEVB minus each other algorithm)::

    pyro-vae experiment aevb-fig3 --max-minutes 60 --out results/fig3
    pyro-vae experiment aevb-fig3 --n-train 200 --algorithms aevb,mcem --max-samples 200 --num-points 2 \\
        --eval-points 5 --hmc-samples 12 --hmc-warmup 5 --is-samples 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import pyro

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import evaluate_elbo, hmc_log_likelihood, log_likelihood
from pyro_vae.experiments.aevb_fig2 import LABEL, STYLE
from pyro_vae.inference.base import collapsed_story
from pyro_vae.experiments.common import (
    add_curve_run_options,
    finish_panel,
    focus_ylim,
    int_list,
    run_curve,
    save_figure,
    set_threads,
    str_list,
    write_csv,
    write_json,
)

NAME = "aevb-fig3"
N_TRAIN = (1000, 50000)

#: Each algorithm's ``[inference]`` section (MCEM: one HMC transition of 10 leapfrog
#: steps per E-step, step size tuned to 90% acceptance, then 5 M-steps).
ALGORITHMS = {
    "aevb": {"name": "svi", "elbo": "meanfield"},
    "wake_sleep": {"name": "wake_sleep"},
    "mcem": {"name": "mcem", "hmc_steps": 1, "hmc_leapfrog_steps": 10, "target_accept": 0.9, "m_steps": 5},
}


MODELS = ("vae", "gae")


def config_for(algorithm: str, seed: int = 0, lr: float = 0.02, n_train: Optional[int] = None,
               data_dir: Optional[str] = None, model: str = "vae") -> Config:
    """The config of one curve: ``n_train`` training points (a fixed random subset);
    ``model = "gae"``: the same networks with the exemplar prior (AEVB: its own objective)."""
    inference = dict(ALGORITHMS[algorithm])
    if model == "gae" and inference["name"] == "svi":
        inference.pop("elbo")  # "auto": the GAE's exemplar ELBO, the only one that trains it
    return Config.from_dict({
        "seed": seed,
        "data": {"name": "binarized_mnist", "data_dir": data_dir, "binarize": "none", "batch_size": 100,
                 "train_size": n_train},
        "model": {"name": model, "z_dim": 3, "hidden": [100], "activation": "tanh"},
        "inference": inference,
        "optim": {"name": "adagrad", "lr": lr},
        "eval": {"num_samples": 0, "plots": False},
    })


def evaluator(hmc_samples: int, hmc_warmup: int, is_samples: int):
    """``(module, inference, x_train, x_test) -> figures``: appendix-D and IS
    log-likelihoods, ELBOs."""

    def evaluate(module, inference, x_train, x_test) -> dict:
        state = pyro.util.get_rng_state()  # evaluation draws must not shift training's
        out = {}
        for split, x in (("train", x_train), ("test", x_test)):
            with collapsed_story(module):  # HMC needs every latent sampled: the GAE's y summed out
                out[f"{split}_ll"] = hmc_log_likelihood(module.model, x, num_samples=hmc_samples,
                                                        num_warmup=hmc_warmup).mean
            if is_samples:
                out[f"{split}_ll_is"] = log_likelihood(module, x, num_samples=is_samples).mean
            out[f"{split}_bound"] = evaluate_elbo(module, x)
        pyro.util.set_rng_state(state)
        return out

    return evaluate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results/aevb_fig3"), help="output folder")
    p.add_argument("--max-minutes", "--budget", dest="max_minutes", type=float, default=20.0,
                   help="wall-time budget for the whole figure, shared evenly by its runs (default 20)")
    p.add_argument("--max-samples", type=int, default=10_000_000,
                   help="stop each run after this many training samples (default 1e7)")
    p.add_argument("--n-train", type=int_list, default=list(N_TRAIN),
                   help="training-set sizes, fixed random subsets (default 1000,50000)")
    p.add_argument("--mcem-max-train", type=int, default=1000, help="run MCEM only up to this N_train (default 1000)")
    p.add_argument("--algorithms", type=str_list, default=list(ALGORITHMS),
                   help="subset of the figure's algorithms: aevb,wake_sleep,mcem (default all)")
    p.add_argument("--models", type=str_list, default=["vae"],
                   help="vae (the paper's), gae (the exemplar prior), or vae,gae: both on one plot (default vae)")
    p.add_argument("--num-points", type=int, default=8, help="evaluation points per curve (default 8)")
    p.add_argument("--eval-points", type=int, default=100, help="train/test points each evaluation uses (default 100)")
    p.add_argument("--hmc-samples", type=int, default=100,
                   help="posterior draws per point of the appendix-D estimate (default 100)")
    p.add_argument("--hmc-warmup", type=int, default=50, help="their HMC warm-up draws (default 50)")
    p.add_argument("--is-samples", type=int, default=500,
                   help="importance samples per point of the estimate alongside (0: skip; default 500)")
    add_curve_run_options(p)


def run(args: argparse.Namespace) -> dict:
    """The figure for the command line's options; prints and returns the summary."""
    summary = reproduce(out=args.out, max_minutes=args.max_minutes, max_samples=args.max_samples,
                        n_train=args.n_train, algorithms=args.algorithms, mcem_max_train=args.mcem_max_train,
                        num_points=args.num_points, eval_points=args.eval_points, hmc_samples=args.hmc_samples,
                        hmc_warmup=args.hmc_warmup, is_samples=args.is_samples, seed=args.seed,
                        threads=args.threads, resume=args.resume, data_dir=args.data_dir, models=args.models)
    print(json.dumps(summary, indent=2))
    return summary


def reproduce(
    out: str | Path = "results/aevb_fig3",
    max_minutes: float = 20.0,
    max_samples: int = 10_000_000,
    n_train: Sequence[int] = N_TRAIN,
    algorithms: Sequence[str] = ("aevb", "wake_sleep", "mcem"),
    mcem_max_train: int = 1000,
    num_points: int = 8,
    eval_points: int = 100,
    hmc_samples: int = 100,
    hmc_warmup: int = 50,
    is_samples: int = 500,
    seed: int = 0,
    threads: Optional[int] = 1,
    resume: bool = False,
    data_dir: Optional[str] = None,
    log: Callable[[str], None] = print,
    models: Sequence[str] = ("vae",),
) -> dict:
    """Run the figure's curves; ``max_minutes`` is shared evenly by the runs; ``resume``
    continues the curves in ``out/runs``; ``models``: the VAE's rows, the GAE's, or both."""
    out = Path(out)
    set_threads(threads)
    for a in algorithms:
        if a not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {a!r} for {NAME}: choose from {sorted(ALGORITHMS)}")
    for m in models:
        if m not in MODELS:
            raise ConfigError(f"unknown model {m!r} for {NAME}: choose from {list(MODELS)}")
    runs = [(n, m, a) for n in n_train for m in models for a in algorithms if a != "mcem" or n <= mcem_max_train]
    if not runs:
        raise ConfigError("no runs: check n_train, algorithms and mcem_max_train")
    per_run = max_minutes * 60 / len(runs)
    log(f"{NAME}: {len(runs)} runs, {per_run:.0f} s and at most {max_samples} samples each -> {out}")
    evaluate = evaluator(hmc_samples, hmc_warmup, is_samples)
    settings = {"hmc_samples": hmc_samples, "hmc_warmup": hmc_warmup, "is_samples": is_samples}
    rows, curves, started = [], [], time.perf_counter()
    for n, model, alg in runs:
        labels = {"n_train": n, "algorithm": curve_name(model, alg)}
        curve = run_curve(config_for(alg, seed, n_train=n, data_dir=data_dir, model=model), evaluate, labels,
                          max_samples, per_run, out / "runs" / f"n{n}-{curve_name(model, alg, '-')}",
                          num_points=num_points, eval_points=eval_points, settings=settings, resume=resume, log=log)
        curves.append(curve)
        rows += curve.rows
        write_csv(rows, out / "aevb_fig3.csv")
    png = plot(rows, out / "aevb_fig3.png")
    summary = {
        "figure": NAME, "max_minutes": max_minutes, "max_samples": max_samples, "seed": seed,
        "eval_points": eval_points, "hmc_samples": hmc_samples, "hmc_warmup": hmc_warmup,
        "is_samples": is_samples, "seconds": round(time.perf_counter() - started, 1),
        "runs": [{**c.labels, "stopped": c.stopped, "steps": c.steps, "train_seconds": round(c.train_seconds, 1),
                  **({k: c.rows[-1][k] for k in ("samples", "train_ll", "test_ll", "train_bound", "test_bound")}
                     if c.rows else {})}
                 for c in curves],
        "comparison": compare(rows), "csv": str(out / "aevb_fig3.csv"), "png": str(png),
    }
    write_json(summary, out / "aevb_fig3.json")
    return summary


def curve_name(model: str, algorithm: str, sep: str = "_") -> str:
    """A curve's algorithm label: the algorithm for the VAE (the paper's rows), else
    ``<model><sep><algorithm>``."""
    return algorithm if model == "vae" else f"{model}{sep}{algorithm}"


#: Every curve label, the paper's first.
CURVES = [curve_name(m, a) for m in MODELS for a in ALGORITHMS]


def compare(rows: list[dict]) -> list[dict]:
    """Per N_train: final log-likelihoods (equal wall time) and AEVB minus each other
    algorithm at equal training samples, the largest count every curve was evaluated at
    (positive: AEVB is better)."""
    out = []
    for n in dict.fromkeys(r["n_train"] for r in rows):
        by_alg = {a: [r for r in rows if r["n_train"] == n and r["algorithm"] == a] for a in CURVES}
        by_alg = {a: rs for a, rs in by_alg.items() if rs}
        entry = {"n_train": n}
        for a, rs in by_alg.items():
            entry[f"{a}_samples"] = rs[-1]["samples"]
            entry[f"{a}_train_ll"] = rs[-1]["train_ll"]
            entry[f"{a}_test_ll"] = rs[-1]["test_ll"]
        shared = set.intersection(*({r["samples"] for r in rs} for rs in by_alg.values())) if by_alg else set()
        if "aevb" in by_alg and len(by_alg) > 1 and shared:
            common = max(shared)
            at = {a: next(r for r in rs if r["samples"] == common) for a, rs in by_alg.items()}
            entry["common_samples"] = common
            for a in by_alg:
                if a != "aevb":
                    entry[f"aevb_minus_{a}_train"] = at["aevb"]["train_ll"] - at[a]["train_ll"]
                    entry[f"aevb_minus_{a}_test"] = at["aevb"]["test_ll"] - at[a]["test_ll"]
        out.append(entry)
    return out


def plot(rows: list[dict], path: Path) -> Path:
    """A panel per N_train: marginal log-likelihood, train (solid) and test (dashed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(dict.fromkeys(r["n_train"] for r in rows))
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, n in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for curve in CURVES:
            rs = [r for r in rows if r["n_train"] == n and r["algorithm"] == curve]
            if not rs:
                continue
            gae, alg = curve.startswith("gae_"), curve.removeprefix("gae_")
            label, marker = ("GAE " if gae else "") + LABEL[alg], "s" if gae else "o"
            xs = [r["samples"] for r in rs]
            ax.plot(xs, [r["train_ll"] for r in rs], color=STYLE[alg], marker=marker, ms=3, label=f"{label} train",
                    alpha=0.7 if gae else 1.0)
            ax.plot(xs, [r["test_ll"] for r in rs], color=STYLE[alg], ls="--", marker=marker, ms=3,
                    label=f"{label} test", alpha=0.7 if gae else 1.0)
        focus_ylim(ax, [r for r in rows if r["n_train"] == n], ("train_ll", "test_ll"))
        finish_panel(ax, f"MNIST, $N_{{train}}$ = {n}", "marginal log-likelihood (nats)", i == 0, fontsize=10)
    return save_figure(fig, path)
