"""Per-step cost of each inference algorithm on the same model and minibatch, as a ratio
to the SVI step, and the throughput of MCEM's HMC E-step in effective samples per second.

    python benchmarks/inference_step_time.py [--steps 30] [--threads 1] [--out results/benchmarks]
    python benchmarks/inference_step_time.py --n-data 500 --steps 1 --warmup 0 --train-steps 2 --draws 10 \\
        --hmc-warmup 5 --per-point-points 0 --out DIR                    # smoke test, seconds

Model: the VAE of AEVB figure 3 (binarized MNIST, 100 tanh hidden units, N_z = 3) and of
figure 2 (500 hidden units, N_z = 20); one minibatch of 100 points. Each algorithm takes
``--warmup`` untimed steps, then ``--steps`` timed ones; the median is reported.

E-step throughput: a figure-3 VAE first trained briefly with SVI (so that the posterior
is that of a fitted model), then HMC of p(z|x) for 100 test points with 10 leapfrog steps
and the step size tuned to 90% acceptance:

* ``batched``: :class:`pyro_vae.hmc.BatchedHMC`, 4 chains per point, per-point
  accept/reject;
* ``pyro_joint``: :class:`pyro.infer.mcmc.HMC` over the batch's joint potential (one chain,
  one accept/reject for all 100 points);
* ``pyro_per_point``: :class:`pyro.infer.mcmc.MCMC` with an ``HMC`` kernel, one run per point
  (measured on a few points and reported per point).

ESS is ArviZ's bulk ESS of every latent coordinate; "ESS/s" is the sum over points of the
smallest ESS among that point's coordinates, divided by the sampling seconds (warm-up
excluded): effective independent draws of whole z vectors per second.

Every experiment is built from a package config (``pyro_vae.train.build``, the data read
once for all of them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pyro.infer.mcmc
import torch

from common import add_threads, cached_datasets, median_ms, set_threads, write_json
from pyro_vae.config import Config
from pyro_vae.hmc import LatentSpace, PosteriorSamples, sample_posterior, summarize_chains
from pyro_vae.train import build

ALGORITHMS = {
    "svi (meanfield)": ["inference.name=svi", "inference.elbo=meanfield"],
    "svi (trace)": ["inference.name=svi", "inference.elbo=trace"],
    "wake_sleep": ["inference.name=wake_sleep"],
    "rws K=5": ["inference.name=rws", "inference.num_particles=5"],
    "rws K=5 insomnia=0.5": ["inference.name=rws", "inference.num_particles=5", "inference.insomnia=0.5"],
    "iwae K=5": ["inference.name=iwae", "inference.num_particles=5"],
    "vimco K=5": ["inference.name=vimco", "inference.num_particles=5"],
    "mcem (1 HMC x 10 leapfrog, 5 M-steps)": ["inference.name=mcem"],
    "mcem, pyro kernel backend": ["inference.name=mcem", "inference.hmc_backend=pyro"],
    "mcem, no guide fit": ["inference.name=mcem", "inference.fit_guide=false"],
}

MODELS = {
    "fig3: N_z=3, 100 hidden": ["model.z_dim=3", "model.hidden=[100]"],
    "fig2: N_z=20, 500 hidden": ["model.z_dim=20", "model.hidden=[500]"],
}

BASE = ['data.name="binarized_mnist"', 'data.binarize="none"', "data.batch_size=100",
        "optim.name=adagrad", "optim.lr=0.02", "eval.num_samples=0", "eval.plots=false"]


def base_overrides(n_data) -> list[str]:
    """:data:`BASE`, with every split cut to a fixed random subset of ``n_data`` points (None: whole)."""
    sizes = [] if n_data is None else [f"data.{s}_size={n_data}" for s in ("train", "valid", "test")]
    return BASE + sizes


def step_times(steps: int, warmup: int, shared: list[str] = BASE) -> dict:
    out = {}
    for model_name, model_overrides in MODELS.items():
        exp = build(Config().with_overrides(shared + model_overrides))
        x, index, n = exp.data.train[:100], torch.arange(100), len(exp.data.train)
        times = {}
        for name, overrides in ALGORITHMS.items():
            config = Config().with_overrides(shared + model_overrides + overrides)
            exp = build(config)
            inference = exp.inference
            for _ in range(warmup):
                inference.step(x, index, n)
            ts = []
            for _ in range(steps):
                t0 = time.perf_counter()
                inference.step(x, index, n)
                ts.append(time.perf_counter() - t0)
            times[name] = median_ms(ts)
            print(f"  [{model_name}] {name}: {times[name]:.2f} ms", flush=True)
        base = times["svi (meanfield)"]
        out[model_name] = {name: {"ms": round(t, 3), "ratio_to_svi": round(t / base, 2)} for name, t in times.items()}
    return out


def _ess_per_point(idata) -> np.ndarray:
    ess = az.ess(idata, var_names=["z"], method="bulk")["z"].values  # (point, z_dim)
    return ess.min(-1)


def e_step_throughput(train_steps: int, draws: int, warmup: int, per_point_points: int,
                      shared: list[str] = BASE) -> dict:
    config = Config().with_overrides(shared + list(MODELS["fig3: N_z=3, 100 hidden"]) + ALGORITHMS["svi (meanfield)"])
    exp = build(config)
    n = len(exp.data.train)
    loader = exp.data.loader("train", 100, shuffle=True, seed=0, epoch=0, drop_last=True)
    for i, (x, index) in enumerate(loader):
        if i == train_steps:
            break
        exp.inference.step(x, index, n)
    model, x = exp.module.model, exp.data.test[:100]
    out = {"trained_svi_steps": train_steps, "points": len(x), "draws": draws, "warmup": warmup}

    pyro.set_rng_seed(0)
    batched = sample_posterior(model, x, num_draws=draws, num_warmup=warmup, num_chains=4)
    out["batched"] = _report(batched, chains=4)
    pyro.set_rng_seed(0)
    joint = sample_posterior(model, x, num_draws=draws, num_warmup=warmup, num_chains=1, backend="pyro")
    out["pyro_joint"] = _report(joint, chains=1)
    if per_point_points:
        out["pyro_per_point"] = _pyro_per_point(model, x[:per_point_points], draws, warmup)
    return out


def _report(samples: PosteriorSamples, chains: int) -> dict:
    idata = samples.to_inference_data()
    ess = _ess_per_point(idata)
    figures = summarize_chains(idata) if chains > 1 else {}
    return {"chains": chains, "seconds": round(samples.seconds, 2), "warmup_seconds": round(samples.warmup_seconds, 2),
            "accept_prob": round(samples.accept_prob.mean().item(), 3),
            "step_size": round(samples.step_size.mean().item(), 4),
            "ess_min_dim_median": round(float(np.median(ess)), 1),
            "ess_per_second": round(float(ess.sum() / samples.seconds), 1), **figures}


def _pyro_per_point(model, x, draws, warmup) -> dict:
    """pyro.infer.mcmc.MCMC with an HMC kernel, one run per data point."""
    space = LatentSpace(model, x)
    ess, seconds = [], 0.0
    for i in range(len(x)):
        xi = x[i:i + 1]

        def potential(params, xi=xi):
            return -space.log_joint(xi, params["z"]).sum()

        kernel = pyro.infer.mcmc.HMC(potential_fn=potential, num_steps=10, target_accept_prob=0.9,
                                     adapt_mass_matrix=False)
        mcmc = pyro.infer.mcmc.MCMC(kernel, num_samples=draws, warmup_steps=warmup, disable_progbar=True,
                                    initial_params={"z": space.prior_draw(xi)})
        t0 = time.perf_counter()
        mcmc.run()
        elapsed = time.perf_counter() - t0
        seconds += elapsed * draws / (draws + warmup)  # the sampling share, warm-up excluded
        z = mcmc.get_samples()["z"].reshape(1, draws, -1).numpy()
        ess.append(float(np.min(az.ess(az.convert_to_dataset({"z": z}), method="bulk")["z"].values)))
    return {"points_measured": len(x), "seconds_per_point": round(seconds / len(x), 2),
            "ess_min_dim_median": round(float(np.median(ess)), 1),
            "ess_per_second": round(float(np.sum(ess) / seconds), 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    add_threads(p)
    p.add_argument("--train-steps", type=int, default=300, help="SVI steps before the E-step benchmark")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--hmc-warmup", type=int, default=100)
    p.add_argument("--per-point-points", type=int, default=5, help="points of the pyro_per_point runs (0: skip)")
    p.add_argument("--n-data", type=int,
                   help="a fixed random subset of N points (>= 100) of every split (a quick look; default: all)")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-e-step", action="store_true")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = p.parse_args(argv)
    set_threads(args.threads)
    result = {"threads": args.threads, "torch": torch.__version__, "pyro": pyro.__version__}
    with cached_datasets():  # binarized MNIST read once for the 22 experiments
        if not args.skip_steps:
            print("per-step cost (median ms, batch of 100):")
            result["step_ms"] = step_times(args.steps, args.warmup, base_overrides(args.n_data))
        if not args.skip_e_step:
            print("MCEM E-step throughput:")
            result["e_step"] = e_step_throughput(args.train_steps, args.draws, args.hmc_warmup,
                                                 args.per_point_points, base_overrides(args.n_data))
    path = write_json(args.out / "inference_step_time.json", result)
    print(path.read_text(), end="")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
