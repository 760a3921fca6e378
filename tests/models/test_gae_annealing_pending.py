"""Pending: the GAE's β-weighted ELBO, moved verbatim from ``tests/test_annealing.py`` for
the lead to adapt to the new GAE (``pyro_vae/models/gae``: the exemplars and the cache
now belong to the prior and to the training objective). ``tests/inference/test_annealing.py``
keeps the VAE's case."""

import math

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from test_gae import own_excluded_log_probs, small_gae

from pyro_vae.inference.annealing import scale_latents


def weighted_loss(elbo, module, x, *args, beta, guide=None):
    with scale_latents(beta):
        return elbo.differentiable_loss(module.model, guide or module.guide, x, *args)


def test_gae_loss_weighs_the_enumerated_prior_and_the_entropy_by_beta(digits):
    """−ELBO_β − (−ELBO_1) = (β − 1) Σ_b [log q(z_b|x_b) − log P_{−b}(z_b)] · n/B: the
    enumerated data index shares the weight, the regulariser (a factor) does not."""
    gae = small_gae(digits, lambda1=0.3, lambda2=0.2)
    n = gae.num_exemplars
    index = torch.tensor([3, 17, 42, 5, 59])
    x = gae.exemplars[index]
    pyro.set_rng_seed(3)
    guide_tr = poutine.trace(gae.guide).get_trace(x, index, n)
    replayed = poutine.replay(gae.guide, trace=guide_tr)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss_1 = weighted_loss(elbo, gae, x, index, n, beta=1.0, guide=replayed)
    loss_b = weighted_loss(elbo, gae, x, index, n, beta=0.1, guide=replayed)
    z = guide_tr.nodes["z"]["value"]
    log_q = guide_tr.nodes["z"]["fn"].log_prob(z)
    log_prior = own_excluded_log_probs(gae, z, index).logsumexp(-1) - math.log(n - 1)
    expected = (0.1 - 1) * (log_q - log_prior).sum() * n / len(x)
    torch.testing.assert_close(loss_b - loss_1, expected, rtol=1e-4, atol=1e-3)
