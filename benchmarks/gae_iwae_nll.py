"""The GAE trained with IWAE (K = 5, K = 50) against the GAE trained with SVI: same
architecture, data and budget; test NLL by importance sampling on static binarized MNIST.

IWAE training usually buys the VAE about a nat (Burda et al. 2016); the target here is an
IWAE-trained GAE at <= 84.5 nats on all 10000 test images (the SVI-trained GAE of
``gae-nll``: 85.47). IWAE trains the GAE with its data index summed out of each step
(:mod:`pyro_vae.models.gae.collapsed`): the K weights share the knn estimator's pool,
whose density estimate is unbiased, so the bound stays a lower bound in expectation.

    python benchmarks/gae_iwae_nll.py --max-minutes 600                     # the real runs: many hours
    python benchmarks/gae_iwae_nll.py --max-minutes 600 --resume            # continue them
    python benchmarks/gae_iwae_nll.py --variants iwae5 --max-minutes 2 --eval-samples 100 --eval-points 200
    python benchmarks/gae_iwae_nll.py --epochs 1 --n-train 300 --n-valid 100 --eval-samples 5 --eval-points 10 \\
        --out DIR                                                           # seconds

Each variant is one run of the package's loop (``pyro_vae.experiments.gae_runs``: the
``gae-nll`` settings, ``[500] * L`` ReLU layers, ``z_dim`` 40, Adam 1e-3, batch 100,
early stopping on the validation ELBO, the GAE's default "knn" estimator and λ = 0.05),
in ``<out>/<variant>-L<layers>``; only ``[inference]`` differs. ``--resume`` continues
interrupted runs and evaluations (the test log-likelihood is saved 100 images at a time);
a run that ``--max-minutes`` stops is carried on, not scored. ``--warmup-epochs T`` warms
up every variant (IWAE's weights tilt their latent terms by β as SVI's ELBO does:
:mod:`pyro_vae.inference.importance`).
The table is printed and written to ``<out>/summary.json`` from every ``result.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: [inference] of each variant.
VARIANTS = {
    "svi": ["inference.name=svi"],
    "iwae5": ["inference.name=iwae", "inference.num_particles=5"],
    "iwae50": ["inference.name=iwae", "inference.num_particles=50"],
}
TARGET, TEST_SIZE = 84.5, 10000


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pyro_vae.experiments.gae_runs import add_run_arguments

    add_run_arguments(p, layers=[1], models=["gae"], out="results/gae_iwae_nll")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--eval-samples", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--eval-points", type=int, default=None, help="score a seeded random N of the test images")


def run_one(args, variant: str, layers: int) -> dict:
    import torch

    from pyro_vae import checkpoint
    from pyro_vae.evaluation import checkpointed_log_likelihood, evaluation_seconds
    from pyro_vae.experiments.common import seeded_subset
    from pyro_vae.experiments.gae_runs import make_config, run_facts, save_result, train_run, unscored

    run_dir = args.out / f"{variant}-L{layers}"
    config = make_config(args, "gae", layers, "binarized_mnist", "none").with_overrides(VARIANTS[variant])
    exp, state, train_s = train_run(args, config, run_dir)
    if (stopped := unscored(run_dir, state, train_s)) is not None:
        return stopped
    test = seeded_subset(exp.data.test, args.eval_points, args.seed)
    progress = run_dir / f"test_ll-{len(test)}points-k{args.eval_samples}-epoch{state.epoch}"
    ll = checkpointed_log_likelihood(exp.module, test, progress, num_samples=args.eval_samples, seed=args.seed,
                                     progress=False)
    checkpoint.save({"per_point": ll.per_point}, run_dir / "test_ll.pt")
    row = {"variant": variant, "layers": layers, "test_nll": -ll.mean, "stderr": ll.stderr,
           "eval_samples": args.eval_samples, "test_points": len(test), **run_facts(state, train_s),
           "eval_s": evaluation_seconds(progress), "steps_per_s": _steps_per_second(state)}
    idx = torch.randperm(exp.module.num_exemplars)[:200]
    row["estimator"] = exp.inference.objective.prior_estimate_error(idx, num_draws=2)
    save_result(run_dir, row)
    return row


def _steps_per_second(state) -> float:
    seconds = sum(r.get("seconds", 0.0) for r in state.history)
    return round(state.step / seconds, 2) if seconds else float("nan")


def collect(out: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-L*/result.json"))]
    return sorted(rows, key=lambda r: (r["layers"], list(VARIANTS).index(r["variant"])))


def print_table(rows: list[dict], out: Path) -> None:
    from pyro_vae import checkpoint
    from pyro_vae.experiments.common import paired

    print("\nGAE test NLL by training algorithm (nats, lower is better)\n")
    print("| layers | training | test NLL | − SVI's (paired) | epochs | steps/s | best valid ELBO |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = out / f"svi-L{r['layers']}" / "test_ll.pt"
        mine = out / f"{r['variant']}-L{r['layers']}" / "test_ll.pt"
        diff = "-"
        if r["variant"] != "svi" and base.exists() and mine.exists():
            a, b = checkpoint.load(base)["per_point"], checkpoint.load(mine)["per_point"]
            if a.shape == b.shape:
                mean, stderr = paired(a - b)  # log p_SVI − log p_IWAE = NLL_IWAE − NLL_SVI
                diff = f"{mean:+.2f} ± {stderr:.2f}"
        print(f"| {r['layers']} | {r['variant']} | {r['test_nll']:.2f} ± {r['stderr']:.2f} (k={r['eval_samples']}, "
              f"n={r['test_points']}) | {diff} | {r['epochs']} ({r['stopped'] or 'running'}) | {r['steps_per_s']} | "
              f"{r['best_valid_elbo']:.2f} |")
    iwae = [r for r in rows if r["variant"] != "svi"]
    if iwae:
        best = min(iwae, key=lambda r: r["test_nll"])
        verdict = ("only a subset was evaluated" if best["test_points"] < TEST_SIZE or best["eval_samples"] < 5000
                   else "reached" if best["test_nll"] <= TARGET else "not reached")
        print(f"\nbest IWAE-trained GAE: {best['test_nll']:.2f} nats (target <= {TARGET} on all {TEST_SIZE}: {verdict})")


def run(args) -> list[dict]:
    import torch

    from pyro_vae import checkpoint

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for layers in args.layers:
        for variant in args.variants:
            print(json.dumps(run_one(args, variant, layers)), flush=True)
    rows = collect(args.out)
    checkpoint.write_text(args.out / "summary.json", json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2) + "\n")
    print_table(rows, args.out)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
