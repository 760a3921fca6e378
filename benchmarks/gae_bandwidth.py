r"""Is a trained GAE's prior too peaked for held-out data? Widen its components and see.

The prior that maximises the training ELBO is the aggregate posterior
``(1/n) Σ_j q(z|x_j)`` (Hoffman & Johnson 2016), and the GAE's prior is exactly that
(leave-one-out in training): a kernel density over the training codes whose bandwidths are
the encoder's own posterior scales (with ``[model] bandwidth = "shared"``, the learned ``s``:
then ``σ_j`` below is ``s``). A held-out point's codes may fall between those narrow
components. This diagnostic scores a trained GAE with every component's scale multiplied
by ``c``,

    P_c(z) = (1/n) Σ_j N(z; μ_j, c² σ_j²)      (c = 1: the model as trained),

on test images and on training images (leave-one-out prior), by the importance-sampled
log-likelihood with the exact mixture over all ``n`` components (the package's
``log_likelihood`` through the prior's collapsed story; for training rows the same
sampler with their index, so that each leaves its own component out) on the same images
and samples for every ``c``. If widening
lowers the test NLL while raising the training one, the prior overfits the training set
the way a kernel density with too small a bandwidth does: the gap a learned bandwidth
(the Exemplar VAE's shared prior scale) is meant to close.

Given a trained *VAE* run, it scores the VAE's encoder and decoder with that exemplar
prior, the VAE's own aggregate posterior, and adds the VAE as trained (``N(0, I)``) on
the same images, paired: does the GAE's prior help an encoder that was not trained for it?

    python benchmarks/gae_bandwidth.py results/gae_nll_glu/gae-L2 --scales 1 1.5 2 3
    python benchmarks/gae_bandwidth.py results/gae_nll_glu/vae-L2
    python benchmarks/gae_bandwidth.py RUN_DIR --scales 1 2 --points 10 --samples 5    # smoke test
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock

import pyro
import torch

from common import add_threads, set_threads
from pyro_vae.evaluation import importance_log_likelihood, log_likelihood
from pyro_vae.experiments.common import paired, seeded_subset
from pyro_vae.models import GAE, VAE
from pyro_vae.train import build, load_run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a trained GAE (or VAE) run directory")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    p.add_argument("--points", type=int, default=300, help="test and training images scored per scale")
    p.add_argument("--samples", type=int, default=200, help="importance samples per image")
    p.add_argument("--seed", type=int, default=0)
    add_threads(p)
    return p.parse_args(argv)


def scores(gae: GAE, x: torch.Tensor, index, scale: float, args) -> torch.Tensor:
    """Per-image ``log P_c(x)`` with every component's scale times ``scale``."""
    components = gae.prior.components

    def widened(loc, sigma):
        loc, sigma = components(loc, sigma)
        return loc, sigma * scale

    pyro.set_rng_seed(args.seed)  # the same importance samples for every scale
    with mock.patch.object(gae.prior, "components", widened):
        if index is None:
            return log_likelihood(gae, x, num_samples=args.samples).per_point
        return leave_one_out(gae, x, index, args.samples)


def leave_one_out(gae: GAE, x: torch.Tensor, index: torch.Tensor, num_samples: int, batch: int = 100):
    """``log P(x_i)`` of training rows ``x = exemplars[index]`` under the prior without their
    own components: the importance sampler on the collapsed story, told the rows' index."""
    n, out = gae.num_exemplars, []
    with gae.collapsed():
        for xb, ib in zip(x.split(batch), index.split(batch)):
            out.append(importance_log_likelihood(lambda v, *_, ib=ib: gae.model(v, ib, n),
                                                 lambda v, *_, ib=ib: gae.guide(v, ib, n),
                                                 xb, num_samples=num_samples, batch_size=len(xb)).per_point)
    return torch.cat(out)


def as_gae(exp) -> GAE:
    """The run's GAE, or a GAE carrying a VAE run's encoder and decoder."""
    if isinstance(exp.module, GAE):
        return exp.module
    if not isinstance(exp.module, VAE):
        raise SystemExit(f"the run holds a {type(exp.module).__name__}: give a GAE or VAE run")
    gae = build(exp.config.with_overrides(['model.name="gae"']), device=str(exp.device)).module
    missing, unexpected = gae.load_state_dict(exp.module.state_dict(), strict=False)
    if missing or unexpected:
        raise SystemExit(f"the VAE's parameters do not fit a GAE: missing {missing}, unexpected {unexpected}")
    return gae


def cell(ll: torch.Tensor, base: torch.Tensor) -> str:
    mean, stderr = paired(base - ll)  # NLL − the first row's NLL, per image
    return f"{-ll.mean().item():.2f} ({mean:+.2f} ± {stderr:.2f})"


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    exp, state = load_run(args.run_dir)
    gae = as_gae(exp)
    test = seeded_subset(exp.data.test, args.points, args.seed)
    rows = torch.randperm(gae.num_exemplars, generator=torch.Generator().manual_seed(args.seed))[: args.points]
    rows = rows.to(gae.exemplars.device)
    sets = {"test": (test, None), "train (leave-one-out)": (gae.exemplars[rows], rows)}
    print(f"{args.run_dir}: epoch {state.epoch}, {args.points} images per set, k = {args.samples}\n")
    print("| prior | " + " | ".join(f"{name} NLL (vs the first row)" for name in sets) + " |")
    print("|---|" + "---|" * len(sets))
    base = {}
    if gae is not exp.module:  # the VAE as trained, on the same images and samples
        for name, (x, _) in sets.items():
            pyro.set_rng_seed(args.seed)
            base[name] = log_likelihood(exp.module, x, num_samples=args.samples).per_point
        print("| N(0, I) (the VAE) | " + " | ".join(cell(ll, ll) for ll in base.values()) + " |", flush=True)
    for c in args.scales:
        lls = {name: scores(gae, x, index, c, args) for name, (x, index) in sets.items()}
        print(f"| exemplars, scale x {c:g} | "
              + " | ".join(cell(ll, base.setdefault(name, ll)) for name, ll in lls.items()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
