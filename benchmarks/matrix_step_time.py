"""Step cost of every (model, algorithm) cell of the inference matrix that trains, as a
ratio to SVI on the same model: what summing the GAE's data index out costs each algorithm.

    python benchmarks/matrix_step_time.py [--n-train 5000] [--steps 20] [--out results/benchmarks]
    python benchmarks/matrix_step_time.py --n-train 300 --steps 2 --warmup 1 --hidden-size 32 --out DIR   # seconds

Models: the VAE and the GAE of ``gae-nll`` (static binarized MNIST, ``[hidden]`` ReLU
layers, ``z_dim`` 40; the GAE with its default "knn" estimator over ``--n-train``
exemplars). Each cell is built from a package config (``pyro_vae.train.build``) and
steps over the same real minibatches of 100 (``index`` their training-set positions:
the GAE's leave-one-out prior and cache need them): ``--warmup`` untimed steps (the
first builds the GAE's cache and neighbour lists), then ``--steps`` timed ones; the
median is reported, with its ratio to the same model's SVI step. Written to
``<out>/matrix_step_time.json`` and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import add_gae_model, add_threads, cached_datasets, machine, median_ms, set_threads, write_json

#: The algorithms' [inference] entries (their paper settings, small K).
CELLS = {
    "svi": ["inference.name=svi"],
    "iwae K=5": ["inference.name=iwae", "inference.num_particles=5"],
    "vimco K=5": ["inference.name=vimco", "inference.num_particles=5"],
    "rws K=5": ["inference.name=rws", "inference.num_particles=5"],
    "wake_sleep": ["inference.name=wake_sleep"],
    "mcem (1 HMC x 10 leapfrog, 5 M-steps)": ["inference.name=mcem"],
    "em": ["inference.name=em"],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_gae_model(p)
    p.set_defaults(n_train=5000)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", nargs="+", default=["vae", "gae"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    add_threads(p)


def overrides(args, model: str) -> list[str]:
    return [f"seed={args.seed}", 'data.name="binarized_mnist"', 'data.binarize="none"',
            f"data.batch_size={args.batch_size}", f"data.train_size={args.n_train}", "data.valid_size=100",
            "data.test_size=100", *([f'data.data_dir="{args.data_dir}"'] if args.data_dir else []),
            f"model.name={model}", f"model.z_dim={args.z_dim}", f"model.hidden={[args.hidden_size] * args.layers}",
            f'model.activation="{args.activation}"', "eval.num_samples=0", "eval.plots=false"]


def time_cell(exp, steps: int, warmup: int) -> float:
    """Median seconds of an algorithm's step over real minibatches (after ``warmup``)."""
    n = len(exp.data.train)
    batches = iter(exp.data.loader("train", exp.config.data.batch_size, shuffle=True, seed=0, drop_last=True))
    times = []
    for i in range(warmup + steps):
        try:
            x, index = next(batches)
        except StopIteration:
            batches = iter(exp.data.loader("train", exp.config.data.batch_size, shuffle=True, seed=i, drop_last=True))
            x, index = next(batches)
        t0 = time.perf_counter()
        exp.inference.step(x, index, n)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return median_ms(times) / 1000


def run(args) -> dict:
    from pyro_vae import matrix
    from pyro_vae.config import Config
    from pyro_vae.train import build

    set_threads(args.threads)
    table = {}
    with cached_datasets():
        for model in args.models:
            row = {}
            for name, entries in CELLS.items():
                algorithm = entries[0].split("=", 1)[1]
                if matrix.cell(model, algorithm) is not None:
                    continue  # a refusal: nothing to time
                exp = build(Config().with_overrides(overrides(args, model) + entries))
                row[name] = time_cell(exp, args.steps, args.warmup) * 1000
                print(f"  [{model}] {name}: {row[name]:.1f} ms", flush=True)
            base = row["svi"]
            table[model] = {k: {"ms": round(v, 2), "ratio_to_svi": round(v / base, 2)} for k, v in row.items()}
    summary = {"machine": machine(), "n_train": args.n_train, "hidden": [args.hidden_size] * args.layers,
               "z_dim": args.z_dim, "batch_size": args.batch_size, "steps": args.steps, "table": table}
    write_json(args.out / "matrix_step_time.json", summary)
    print_table(table)
    return summary


def print_table(table: dict) -> None:
    names = list(dict.fromkeys(k for row in table.values() for k in row))
    print("\n| algorithm | " + " | ".join(f"{m}: ms/step (x SVI)" for m in table) + " |")
    print("|---" * (len(table) + 1) + "|")
    for name in names:
        cells = [f"{r[name]['ms']:.1f} ({r[name]['ratio_to_svi']:.2f}x)" if name in r else "-" for r in table.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
