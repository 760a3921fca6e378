"""IAF posterior against the diagonal Gaussian, and a MAF prior against N(0, I): the
importance-sampled test NLL of VAEs on binarized MNIST that differ only there.

Every variant is the same VAE (the fixed binarization of Larochelle & Murray, a
784-H-H-N_z tanh encoder body and decoder, Bernoulli decoder, Adam 1e-3, batch 100) trained
by the package (``[inference] elbo = "auto"``: the closed-form KL for the diagonal guide
with N(0, I), the Monte Carlo KL where a flow is involved) for the same number of epochs on
the same images, and scored on the same seeded test subset by the same importance sampler
(``pyro_vae.evaluation.log_likelihood``, ``k`` samples per image; the guide is the proposal,
and an IAF gives its own draws' log q exactly). Variants (``--variants``):

* ``diagonal`` -- ``[guide] name = "diagonal_normal"``, N(0, I) (the reference);
* ``iaf`` -- ``[guide] name = "iaf"``, ``--flow-steps`` steps, context width ``--context``;
* ``maf-prior`` -- the diagonal guide, ``[model] prior = "maf"`` with ``--prior-flows`` layers;
* ``iaf+maf-prior`` -- both.

Runs live in ``--out/<variant>`` (``--resume`` continues them: the epoch budget is the
total). The table: test ELBO, test NLL, its paired difference to the diagonal guide's on the
same images (± the paired standard error: far tighter than either NLL's own, which is
mostly the spread between images), the gap between them (the KL from q to the true
posterior, which a better guide closes), and seconds per epoch.

    python benchmarks/iaf_guide.py --epochs 10 --eval-points 1000 --eval-samples 1000
    python benchmarks/iaf_guide.py --epochs 20 --resume                 # carry on (total 20 epochs)
    python benchmarks/iaf_guide.py --epochs 1 --n-train 300 --eval-points 20 --eval-samples 10 --hidden 64  # smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pyro
import torch

from common import add_data_dir, add_threads, load_average, machine, set_threads, write_json
from pyro_vae.config import Config
from pyro_vae.evaluation import elbo_per_point, log_likelihood
from pyro_vae.experiments.common import paired, seeded_subset
from pyro_vae.train import train

VARIANTS = {"diagonal": ({}, {}), "iaf": ({}, {"name": "iaf"}), "maf-prior": ({"prior": "maf"}, {}),
            "iaf+maf-prior": ({"prior": "maf"}, {"name": "iaf"})}


def make_config(args, variant: str) -> Config:
    model, guide = VARIANTS[variant]
    return Config.from_dict({
        "seed": args.seed,
        "data": {"name": "binarized_mnist", "data_dir": args.data_dir, "binarize": "none", "batch_size": 100,
                 "train_size": args.n_train, "valid_size": args.n_valid},
        "model": {"name": "vae", "z_dim": args.z_dim, "hidden": [args.hidden] * 2, "activation": "tanh",
                  "likelihood": "bernoulli", "prior_flows": args.prior_flows, **model},
        "guide": {"flow_steps": args.flow_steps, "context_dim": args.context, **guide},
        "inference": {"name": "svi", "elbo": "auto"},
        "optim": {"name": "adam", "lr": 1e-3},
        "budget": {"epochs": args.epochs},
        "eval": {"num_samples": 0, "plots": False},
    })


def run_variant(args, variant: str, test: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Train (or resume) one variant and score it: its table row, and its per-image log p(x)."""
    run_dir = args.out / variant
    if not args.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    exp, state = train(make_config(args, variant), run_dir, progress=False)
    module = exp.module
    test = test.to(exp.device)
    pyro.set_rng_seed(args.seed)
    started = time.perf_counter()
    elbo = elbo_per_point(module.model, module.guide, test, num_samples=10).mean().item()
    ll = log_likelihood(module, test, num_samples=args.eval_samples)
    row = {"variant": variant, "test_elbo": elbo, "test_nll": -ll.mean, "test_nll_stderr": ll.stderr,
           "gap": ll.mean - elbo, "epochs": state.epoch, "best_valid_elbo": state.best_score,
           "seconds_per_epoch": sum(r["seconds"] for r in state.history) / max(1, len(state.history)),
           "eval_seconds": time.perf_counter() - started, "parameters": sum(p.numel() for p in module.parameters())}
    return row, ll.per_point.cpu()


def versus_diagonal(rows: list[dict], per_point: dict[str, torch.Tensor]) -> None:
    """Each row's test NLL minus the diagonal guide's, paired over the same images."""
    if "diagonal" not in per_point:
        return
    for r in rows:
        r["nll_minus_diagonal"], r["paired_stderr"] = paired(per_point["diagonal"] - per_point[r["variant"]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=10, help="the epoch budget of every variant (default 10)")
    p.add_argument("--z-dim", type=int, default=32)
    p.add_argument("--hidden", type=int, default=300, help="width of the two hidden layers (default 300)")
    p.add_argument("--flow-steps", type=int, default=2, help="IAF steps (default 2)")
    p.add_argument("--context", type=int, default=32, help="the IAF's context width (default 32)")
    p.add_argument("--prior-flows", type=int, default=2, help="the MAF prior's layers (default 2)")
    p.add_argument("--n-train", type=int, help="a fixed random subset of N training images")
    p.add_argument("--n-valid", type=int, default=1000, help="validation images (default 1000)")
    p.add_argument("--eval-points", type=int, default=1000, help="seeded random test images scored (default 1000)")
    p.add_argument("--eval-samples", type=int, default=1000, help="importance samples k per image (default 1000)")
    p.add_argument("--out", type=Path, default=Path("results/iaf_guide"))
    p.add_argument("--resume", action="store_true", help="continue the runs in --out")
    p.add_argument("--seed", type=int, default=0)
    add_threads(p)
    add_data_dir(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    from pyro_vae.data import load_dataset

    test = seeded_subset(load_dataset("binarized_mnist", args.data_dir).test, args.eval_points, args.seed)
    print(f"iaf guide: {machine()}; threads {args.threads}; load average {load_average()}")
    print(f"binarized MNIST, 784-{args.hidden}-{args.hidden}-{args.z_dim} tanh, {args.epochs} epochs, "
          f"{len(test)} test images, k = {args.eval_samples}", flush=True)
    rows, per_point = [], {}
    for variant in args.variants:
        row, per_point[variant] = run_variant(args, variant, test)
        rows.append(row)
        print(json.dumps(row), flush=True)
    versus_diagonal(rows, per_point)
    write_json(args.out / "summary.json", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    print()
    print(f"| variant | test ELBO | test NLL (k={args.eval_samples}) | − diagonal's (paired) | log p - ELBO | "
          "s / epoch | parameters |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        vs = f"{r['nll_minus_diagonal']:+.2f} ± {r['paired_stderr']:.2f}" if "nll_minus_diagonal" in r else "-"
        print(f"| {r['variant']} | {r['test_elbo']:.2f} | {r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} | {vs} | "
              f"{r['gap']:.2f} | {r['seconds_per_epoch']:.1f} | {r['parameters']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
