"""What the GAE tests share: small GAEs on the digits, their training objectives, and
explicit (brute-force) versions of the quantities the package computes."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO

from pyro_vae.models.gae import GAE, ExemplarELBO, MomentPenalty

N = 60  # exemplars in the small data sets
MODEL_KEYS = ("bandwidth", "leave_one_out", "max_enumerated")


def small_gae(digits, n=N, seed=0, **kw) -> GAE:
    """A GAE of z_dim 3 on the first ``n`` digits (its prior's keywords in ``kw``)."""
    torch.manual_seed(seed)
    return GAE(digits.train[:n], z_dim=3, hidden=(16,), **kw)


def objective(gae: GAE, estimator="exact", lambda1=0.05, lambda2=0.05, **kw) -> ExemplarELBO:
    """The GAE's training objective (the exact estimator unless said)."""
    return ExemplarELBO(gae, estimator, penalty=MomentPenalty(lambda1, lambda2), **kw)


def sharpen(gae, log_var=-8.0):
    """Narrow posteriors (σ ≈ 0.02): a point's own component then dominates its mixture."""
    with torch.no_grad():
        gae.guide.encoder.head.log_var.weight.zero_()
        gae.guide.encoder.head.log_var.bias.fill_(log_var)
    return gae


def shared_bandwidth(gae):
    """A GAE with ``bandwidth="shared"`` and scales away from their initial 1."""
    with torch.no_grad():
        gae.bandwidth.log_scale.copy_(torch.tensor([-0.7, 0.2, -1.3]))
    return gae


def elbo():
    return TraceEnum_ELBO(max_plate_nesting=1)


def guide_sample(gae, x, *args, seed):
    pyro.set_rng_seed(seed)
    return poutine.trace(gae.guide).get_trace(x, *args).nodes["z"]


def objective_z(gae, x, seed, particles=1):
    """The ``z`` the objective draws after ``pyro.set_rng_seed(seed)`` with an estimator
    that draws nothing before it (the exact one): ``loc + scale · ε``."""
    pyro.set_rng_seed(seed)
    eps = torch.randn(particles, len(x), gae.z_dim)
    loc, scale = gae.guide.encoder(x)
    return (loc + scale * eps)[0] if particles == 1 else loc + scale * eps


@torch.no_grad()
def own_excluded_log_probs(gae, z, index):
    """``(B, n)``: ``log q(z_b | x_j)`` for every exemplar ``j``, ``-inf`` at ``j = index[b]``."""
    loc, scale = gae.guide.encoder(gae.exemplars)
    table = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))
    table[torch.arange(len(index)), index] = -math.inf
    return table


def explicit_elbo(gae, x, z, index=None, penalty=None):
    """Σ_b [log p(x|z) + log P(z) − log q(z|x)] − R, with log P by an explicit log-sum-exp."""
    loc_all, scale_all = gae.prior.components(*gae.guide.encoder(gae.exemplars))
    comps = dist.Normal(loc_all, scale_all).to_event(1).log_prob(z.unsqueeze(-2))  # (B, n)
    n = gae.num_exemplars
    if index is not None and gae.prior.leave_one_out:
        comps = comps.masked_fill(torch.nn.functional.one_hot(index, n).bool(), -math.inf)
        log_prior = comps.logsumexp(-1) - math.log(n - 1)
    else:
        log_prior = comps.logsumexp(-1) - math.log(n)
    loc, scale = gae.guide.encoder(x)
    total = gae.decoder(z).log_prob(x) + log_prior - dist.Normal(loc, scale).to_event(1).log_prob(z)
    if penalty is not None and index is not None:
        total = total - penalty(loc, scale)
    return total


def train_interrupted(config, run_dir, monkeypatch, algorithm: type, at: int):
    """``train(config, run_dir)`` interrupted at the ``at``-th call of ``algorithm.step``
    (a KeyboardInterrupt), then run again to its end: what a resumed run gives."""
    from pyro_vae.train import train

    real_step, calls = algorithm.step, []

    def step(self, *args):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(algorithm, "step", step)
    try:
        train(config, run_dir, progress=False)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(f"the run ended before step {at}")
    monkeypatch.setattr(algorithm, "step", real_step)
    return train(config, run_dir, progress=False)
