"""Figure 2 of Kingma & Welling (2014), "Auto-Encoding Variational Bayes", scaled to budget.

The paper: the average variational lower bound per data point, on the training set and
the test set, against the number of training samples evaluated, for AEVB and wake-sleep,
on MNIST with N_z ∈ {3, 5, 10, 20, 200} (500 hidden units) and on Frey Face with
N_z ∈ {2, 5, 10, 20} (200 hidden units, Gaussian decoder); Adagrad, minibatches of
M = 100, L = 1 sample per point; the same encoder for both algorithms.

Here: the same grid and settings (tanh MLPs of one hidden layer, AEVB with the
analytic-KL estimator of the paper's eq. 10, i.e. ``elbo = "meanfield"``; binarized MNIST
with its fixed binarization), each run stopping at ``max_samples`` or at its share of
``max_minutes``. The paper's weight decay (a prior on the parameters) and its step-size
search over {0.01, 0.02, 0.1} are left out: one Adagrad rate per data set. The bounds
are the ELBO with the analytic KL on fixed random subsets of ``eval_points`` training and test
points.

Each curve is a training run of the package's loop in ``out/runs/<data>-nz<N_z>-<algorithm>``
(:func:`pyro_vae.experiments.common.run_curve`): ``--resume`` continues the curves there
(unfinished ones train on, finished ones are read back), else they start afresh.

Outputs in ``out``: ``aevb_fig2.csv`` (one row per evaluation point), ``aevb_fig2.png``
(a panel per data set and N_z, as in the paper) and ``aevb_fig2.json`` (settings and
the final numbers: AEVB minus wake-sleep per panel).

    pyro-vae experiment aevb-fig2 --max-minutes 30 --out results/fig2
    pyro-vae experiment aevb-fig2 --datasets frey_face --z-dims 2 --max-samples 300 --num-points 2 --eval-points 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import evaluate_elbo
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

NAME = "aevb-fig2"

DATASETS = {
    "mnist": dict(data="binarized_mnist", binarize="none", likelihood="bernoulli", hidden=500,
                  z_dims=(3, 5, 10, 20, 200), lr=0.02),
    "frey_face": dict(data="frey_face", binarize="none", likelihood="gaussian", hidden=200,
                      z_dims=(2, 5, 10, 20), lr=0.01),
}

#: Each algorithm's ``[inference]`` section.
ALGORITHMS = {
    "aevb": {"name": "svi", "elbo": "meanfield", "num_particles": 1},
    "wake_sleep": {"name": "wake_sleep"},
}


def config_for(dataset: str, z_dim: int, algorithm: str, seed: int = 0, lr: Optional[float] = None,
               data_dir: Optional[str] = None) -> Config:
    """The config of one curve of the figure."""
    s = DATASETS[dataset]
    return Config.from_dict({
        "seed": seed,
        "data": {"name": s["data"], "data_dir": data_dir, "binarize": s["binarize"], "batch_size": 100},
        "model": {"name": "vae", "z_dim": z_dim, "hidden": [s["hidden"]], "likelihood": s["likelihood"],
                  "activation": "tanh"},
        "inference": dict(ALGORITHMS[algorithm]),
        "optim": {"name": "adagrad", "lr": lr or s["lr"]},
        "eval": {"num_samples": 0, "plots": False},
    })


def _bounds(module, inference, x_train, x_test) -> dict:
    """The ELBO per point (analytic KL), on the training and the test subset."""
    return {"train_bound": evaluate_elbo(module, x_train), "test_bound": evaluate_elbo(module, x_test)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results/aevb_fig2"), help="output folder")
    p.add_argument("--max-minutes", "--budget", dest="max_minutes", type=float, default=20.0,
                   help="wall-time budget for the whole figure, shared evenly by its runs (default 20)")
    p.add_argument("--max-samples", type=int, default=10_000_000,
                   help="stop each run after this many training samples (default 1e7)")
    p.add_argument("--z-dims", type=int_list, help="only these N_z values, e.g. 3,20 (default: the paper's)")
    p.add_argument("--datasets", type=str_list, default=list(DATASETS), help="mnist,frey_face (default both)")
    p.add_argument("--algorithms", type=str_list, default=list(ALGORITHMS),
                   help="subset of the figure's algorithms: aevb,wake_sleep (default both)")
    p.add_argument("--num-points", type=int, default=10, help="evaluation points per curve (default 10)")
    p.add_argument("--eval-points", type=int, default=1000,
                   help="train/test points each evaluation uses (default 1000)")
    add_curve_run_options(p)


def run(args: argparse.Namespace) -> dict:
    """The figure for the command line's options; prints and returns the summary."""
    summary = reproduce(out=args.out, max_minutes=args.max_minutes, max_samples=args.max_samples,
                        datasets=args.datasets, z_dims=args.z_dims, algorithms=args.algorithms,
                        num_points=args.num_points, eval_points=args.eval_points, seed=args.seed,
                        threads=args.threads, resume=args.resume, data_dir=args.data_dir)
    print(json.dumps(summary, indent=2))
    return summary


def reproduce(
    out: str | Path = "results/aevb_fig2",
    max_minutes: float = 20.0,
    max_samples: int = 10_000_000,
    datasets: Sequence[str] = ("mnist", "frey_face"),
    z_dims: Optional[Sequence[int]] = None,
    algorithms: Sequence[str] = ("aevb", "wake_sleep"),
    num_points: int = 10,
    eval_points: int = 1000,
    seed: int = 0,
    threads: Optional[int] = 1,
    resume: bool = False,
    data_dir: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the figure's curves; ``max_minutes`` is shared evenly by the runs.

    ``z_dims`` restricts every data set's N_z values to those listed (None: the paper's);
    ``resume`` continues the curves in ``out/runs``. Returns the summary also written to
    ``out/aevb_fig2.json``.
    """
    out = Path(out)
    set_threads(threads)
    _check(datasets, algorithms)
    runs = [(ds, nz, alg) for ds in datasets for nz in DATASETS[ds]["z_dims"]
            if z_dims is None or nz in z_dims for alg in algorithms]
    if not runs:
        raise ConfigError(f"no runs: z_dims {list(z_dims or [])} match none of the data sets' N_z values")
    per_run = max_minutes * 60 / len(runs)
    log(f"{NAME}: {len(runs)} runs, {per_run:.0f} s and at most {max_samples} samples each -> {out}")
    rows, started = [], time.perf_counter()
    curves = []
    for ds, nz, alg in runs:
        labels = {"dataset": ds, "z_dim": nz, "algorithm": alg}
        curve = run_curve(config_for(ds, nz, alg, seed, data_dir=data_dir), _bounds, labels, max_samples, per_run,
                          out / "runs" / f"{ds}-nz{nz}-{alg}", num_points=num_points, eval_points=eval_points,
                          resume=resume, log=log)
        curves.append(curve)
        rows += curve.rows
        write_csv(rows, out / "aevb_fig2.csv")  # partial results survive an interruption
    png = plot(rows, out / "aevb_fig2.png")
    summary = {
        "figure": NAME, "max_minutes": max_minutes, "max_samples": max_samples, "seed": seed,
        "eval_points": eval_points, "seconds": round(time.perf_counter() - started, 1),
        "runs": [{**c.labels, "stopped": c.stopped, "steps": c.steps, "train_seconds": round(c.train_seconds, 1),
                  **({k: c.rows[-1][k] for k in ("samples", "train_bound", "test_bound")} if c.rows else {})}
                 for c in curves],
        "comparison": compare(rows), "csv": str(out / "aevb_fig2.csv"), "png": str(png),
    }
    write_json(summary, out / "aevb_fig2.json")
    return summary


def _check(datasets: Sequence[str], algorithms: Sequence[str]) -> None:
    for ds in datasets:
        if ds not in DATASETS:
            raise ConfigError(f"unknown data set {ds!r} for {NAME}: choose from {sorted(DATASETS)}")
    for a in algorithms:
        if a not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {a!r} for {NAME}: choose from {sorted(ALGORITHMS)}")

def compare(rows: list[dict]) -> list[dict]:
    """Per (data set, N_z): each algorithm's final bounds (equal wall time: each run had
    the same budget) and AEVB − wake-sleep (nats per point; positive means AEVB is
    better) at equal training samples, the largest count both curves were evaluated at."""
    out = []
    for ds, nz in dict.fromkeys((r["dataset"], r["z_dim"]) for r in rows):
        finals = {}
        for alg in ALGORITHMS:
            rs = [r for r in rows if r["dataset"] == ds and r["z_dim"] == nz and r["algorithm"] == alg]
            if rs:
                finals[alg] = rs
        entry = {"dataset": ds, "z_dim": nz}
        for alg, rs in finals.items():
            entry[f"{alg}_samples"] = rs[-1]["samples"]
            entry[f"{alg}_train_bound"] = rs[-1]["train_bound"]
            entry[f"{alg}_test_bound"] = rs[-1]["test_bound"]
        # The largest sample count at which both curves were evaluated (the shared
        # log-spaced marks): equal training samples.
        shared = set.intersection(*({r["samples"] for r in rs} for rs in finals.values())) if finals else set()
        if len(finals) == 2 and shared:
            common = max(shared)
            at = {alg: next(r for r in rs if r["samples"] == common) for alg, rs in finals.items()}
            entry["common_samples"] = common
            entry["aevb_minus_wake_sleep_train"] = at["aevb"]["train_bound"] - at["wake_sleep"]["train_bound"]
            entry["aevb_minus_wake_sleep_test"] = at["aevb"]["test_bound"] - at["wake_sleep"]["test_bound"]
        out.append(entry)
    return out


STYLE = {"aevb": "tab:red", "wake_sleep": "tab:blue", "mcem": "tab:green"}
LABEL = {"aevb": "AEVB", "wake_sleep": "Wake-Sleep", "mcem": "MCEM"}


def plot(rows: list[dict], path: Path) -> Path:
    """A panel per (data set, N_z): train (solid) and test (dashed) bound against samples."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(dict.fromkeys((r["dataset"], r["z_dim"]) for r in rows))
    ncol = min(5, max(len(panels), 1))
    nrow = max(1, -(-len(panels) // ncol))
    fig = Figure(figsize=(3.2 * ncol, 2.8 * nrow), dpi=100)
    FigureCanvasAgg(fig)
    for i, (ds, nz) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for alg in ALGORITHMS:
            rs = [r for r in rows if r["dataset"] == ds and r["z_dim"] == nz and r["algorithm"] == alg]
            if not rs:
                continue
            xs = [r["samples"] for r in rs]
            ax.plot(xs, [r["train_bound"] for r in rs], color=STYLE[alg], label=f"{LABEL[alg]} train")
            ax.plot(xs, [r["test_bound"] for r in rs], color=STYLE[alg], ls="--", label=f"{LABEL[alg]} test")
        focus_ylim(ax, [r for r in rows if r["dataset"] == ds and r["z_dim"] == nz], ("train_bound", "test_bound"))
        finish_panel(ax, f"{'MNIST' if ds == 'mnist' else 'Frey Face'}, $N_z$ = {nz}", "lower bound (nats)", i == 0)
    return save_figure(fig, path)
