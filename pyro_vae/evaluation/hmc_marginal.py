r"""The marginal-likelihood estimator of Kingma & Welling (2014), "Auto-Encoding
Variational Bayes", appendix D: posterior samples by HMC, a density fitted to them, and a
harmonic-mean-style (reciprocal importance sampling) estimate. It needs no guide, so it
scores models trained by any algorithm (MCEM included) the same way, which is what the
paper's figure 3 compares.

For each data point x:

1. draw L samples ``z^(l) ~ p_θ(z|x)`` with HMC (here: several chains, each started
   from the best of a few prior draws, the step size adapted during a warm-up;
   :func:`pyro_vae.inference.hmc.sample_posterior`);
2. fit a density ``q(z)`` to them: here an equal-weight mixture of full-covariance
   Gaussians, one per chain (its draws' mean and covariance, a small ridge added), in
   the sampler's unconstrained coordinates. The paper does not say which density; one
   Gaussian over all draws fails when the posterior has several modes: it spreads mass
   between them, its tails are then heavier than the posterior's and the estimate is
   far too high (+2.9 nats on a two-mode test posterior; the mixture: within 0.3);
3. draw L *new* posterior samples (the chains continue) and estimate

.. math::

    p_θ(x) \simeq \Big( \frac1L \sum_{l=1}^{L}
        \frac{q(z^{(l)})}{p_θ(z^{(l)})\, p_θ(x|z^{(l)})} \Big)^{-1},

which is consistent because ``E_{p(z|x)}[q(z) / p(x, z)] = 1 / p(x)`` for any
normalized q. The estimate is biased (the reciprocal of an unbiased estimate) and its
variance is finite only when q has lighter tails than the posterior, so it is meant for
*low-dimensional* latents (the paper used it with N_z = 3): ``max_latent_dim`` refuses
larger ones. Compare :func:`~pyro_vae.evaluation.importance_log_likelihood`, the
importance-sampling estimate with the guide as proposal (a stochastic lower bound).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from pyro_vae.evaluation.marginal_likelihood import LogLikelihood, _check_args


def hmc_log_likelihood(
    model: Callable,
    data: torch.Tensor,
    num_samples: int = 200,
    num_warmup: int = 100,
    num_chains: int = 4,
    batch_size: int = 100,
    num_steps: int = 10,
    target_accept: float = 0.9,
    ridge: float = 1e-4,
    max_latent_dim: int = 10,
    mode_gap: float = 20.0,
    init_candidates: int = 16,
) -> LogLikelihood:
    """Appendix-D estimates of log p(x_i) for every row of ``data``.

    Args:
        model: ``model(x)``, a package model with continuous per-point latents.
        data: ``(n, D)`` data set.
        num_samples: L, posterior draws for the fit and again for the estimate (per
            point, over all chains).
        num_warmup: HMC warm-up transitions (step size adaptation) per chain.
        num_chains: chains per point.
        init_candidates: each chain starts from the most probable of this many prior
            draws (see below).
        batch_size: points sampled together.
        num_steps, target_accept: leapfrog steps and the adaptation target of the HMC.
        ridge: added to the fitted covariances' diagonals.
        max_latent_dim: refuse models with more latent dimensions than this.
        mode_gap: a chain whose mean log p(x, z) over the fit's draws is more than this
            many nats below the best chain's of the same point is in a mode without
            posterior mass, and is left out (see below).

    Random draws use the global torch RNG: seed with ``pyro.set_rng_seed``.

    **Trapped chains.** The estimator needs draws of the whole posterior. A chain that
    settles in a local mode holding a fraction π of the mass turns the estimate into
    ``log p(x) + log π``: on a VAE trained on 1000 MNIST digits (N_z = 3), one test point
    of 50 had a local mode 150 nats below its main one, a single chain from the prior
    fell in it, and that point's estimate was 151 nats low (the other 49 agreed with
    importance sampling within 0.2 nats); another point's trap, 93 nats down, caught
    4 chains of 10 started from single prior draws. So each chain starts from the most
    probable of ``init_candidates`` prior draws, several chains run per point, those
    more than ``mode_gap`` nats below the best are dropped (from the density and from
    the estimate). Chains in modes of comparable mass are kept, and then weigh equally
    whatever their masses (a bias of ``log 4π(1−π)`` for two modes of masses π and 1−π,
    each holding half the chains).
    """
    from pyro_vae.inference.hmc import LatentSpace, sample_posterior  # evaluation imports first

    _check_args(data, num_samples=num_samples, batch_size=batch_size, num_chains=num_chains)
    if num_samples % num_chains:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of num_chains ({num_chains})")
    dim = LatentSpace(model, data[:2], what="the appendix-D estimator").dim
    if dim > max_latent_dim:
        raise ValueError(
            f"the HMC/density-fit estimator is for low-dimensional latents: the model has {dim} "
            f"latent dimensions, more than max_latent_dim={max_latent_dim}; use the importance "
            "sampling estimator (pyro_vae.evaluation.log_likelihood) instead"
        )
    draws = num_samples // num_chains
    per_point = []
    for x in data.split(batch_size):
        fit = sample_posterior(model, x, num_draws=draws, num_warmup=num_warmup, num_chains=num_chains,
                               num_steps=num_steps, target_accept=target_accept,
                               init_candidates=init_candidates)
        keep = _chains_in_the_main_mode(fit.log_joint, mode_gap)  # (C, n)
        q = _fit_mixture(fit.u, keep, ridge)
        # The chains go on from where the fit's draws ended: L new samples.
        again = sample_posterior(model, x, num_draws=draws, num_warmup=0, num_chains=num_chains,
                                 num_steps=num_steps, target_accept=target_accept,
                                 init=fit.u[:, -1], step_size=fit.step_size.reshape(-1))
        log_q = q.log_prob(again.u)  # (C, S, n)
        log_ratio = (log_q - again.log_joint).masked_fill(~keep.unsqueeze(1), -math.inf)
        kept = keep.sum(0) * draws  # (n,) draws that count
        per_point.append(-(torch.logsumexp(log_ratio.flatten(0, 1), 0) - kept.log()))
    return LogLikelihood.from_per_point(torch.cat(per_point).detach(), num_samples)


def _chains_in_the_main_mode(log_joint: torch.Tensor, gap: float) -> torch.Tensor:
    """``(C, n)``: whether each chain's mean log-density ``log_joint (C, S, n)`` is within
    ``gap`` nats of the best chain's of its point."""
    mean = log_joint.mean(1)
    return mean >= mean.max(0, keepdim=True).values - gap


def _fit_mixture(u: torch.Tensor, keep: torch.Tensor, ridge: float) -> MixtureSameFamily:
    """Per point (batch shape ``(n,)``), an equal-weight mixture of one Gaussian per kept
    chain (``keep (C, n)``), each fitted to its chain's draws ``u (C, S, n, d)``."""
    c, s, n, d = u.shape
    mean = u.mean(1)  # (C, n, d)
    centred = u - mean.unsqueeze(1)
    cov = torch.einsum("csni,csnj->cnij", centred, centred) / max(s - 1, 1) + ridge * torch.eye(d)
    logits = torch.zeros(n, c).masked_fill(~keep.T, -math.inf)
    components = MultivariateNormal(mean.transpose(0, 1), covariance_matrix=cov.transpose(0, 1))
    return MixtureSameFamily(Categorical(logits=logits), components)
