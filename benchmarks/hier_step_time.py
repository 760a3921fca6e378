"""Step time of the hierarchical models against the one-level VAE's, same run (issue 21).

Each model of ``pyro-vae experiment hier-nll`` (same settings: z of 40 per level, hidden
[300, 300], glu; the VLAE three layers of 20 with ReLU rungs; the GAEs' default "knn"
estimator over the training set) takes ``--steps`` SVI steps with its ``elbo = "auto"``
objective (or steps of ``--inference``'s algorithm, as in ``hier-nll``) on minibatches of 100
static binarized MNIST images; the median of ``--repeats`` timings per model, interleaved, is
printed with its ratio to the VAE's.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/hier_step_time.py --data-dir /work/shared/data
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/hier_step_time.py --data-dir /work/shared/data \
        --models vae gae2 --inference name=iwae num_particles=5
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from pyro_vae.experiments.hier_nll import MODELS, add_arguments, make_config
from pyro_vae.train import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    exps = {m: build(make_config(args, m)) for m in args.models}
    times = {m: [] for m in exps}
    for _ in range(args.repeats):
        for m, exp in exps.items():
            n = len(exp.data.train)
            # cycled: a small --n-train has fewer batches than steps
            loader = itertools.cycle(exp.data.loader("train", 100, shuffle=True, seed=0))
            batches = list(itertools.islice(loader, args.steps + 1))
            x, index = batches[0]
            exp.inference.step(x, index, n)  # warm: first-step validation, the GAE's cache and lists
            t0 = time.perf_counter()
            for x, index in batches[1:]:
                exp.inference.step(x, index, n)
            times[m].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["vae"]) if "vae" in times else None
    print(f"| model | ms / step (median of {args.repeats}) | / VAE |")
    print("|---|---|---|")
    for m, ts in times.items():
        med = statistics.median(ts)
        print(f"| {m} | {1000 * med:.1f} | {med / base:.2f} |" if base else f"| {m} | {1000 * med:.1f} | - |")


if __name__ == "__main__":
    main()
