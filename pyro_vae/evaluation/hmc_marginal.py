r"""The marginal-likelihood estimator of Kingma & Welling (2014), "Auto-Encoding
Variational Bayes", appendix D: posterior samples by HMC, a density fitted to them, and a
harmonic-mean-style (reciprocal importance sampling) estimate. It needs no guide, so it
scores models trained by any algorithm (MCEM included) the same way, which is what the
paper's figure 3 compares.

For each data point x:

1. draw L samples ``z^(l) ~ p_θ(z|x)`` with HMC (here: several chains, each started
   from the best of a few prior draws, the step size adapted during a warm-up;
   :func:`pyro_vae.inference.hmc.sample_posterior`);
2. fit a density ``q(z)`` to them, in the sampler's unconstrained coordinates: a
   full-covariance Gaussian (the draws' mean and covariance, a small ridge added), or,
   where the chains found separate modes, an equal-weight mixture of one such Gaussian
   per chain. The paper does not say which density; one Gaussian over the draws of
   several modes puts its mass between them, its tails are then heavier than the
   posterior's and the estimate far too high (+2.9 nats on a two-mode test posterior;
   the mixture: within 0.3);
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
from pyro_vae.hmc import LatentSpace, sample_posterior


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
    init_candidates: int = 64,
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
    4 chains of 10 started from single prior draws. On the same VAE trained 6 times
    longer (sharper posteriors), starting each chain from the best of 16 prior draws
    still left all 4 chains of one training point of 50 in a mode 30 nats down; the best
    of 64 left none (every point within 0.5 nats of a 5000-sample importance estimate,
    which is reliable on training points). So each chain starts from the most probable
    of ``init_candidates`` prior draws, several chains run per point, and those more
    than ``mode_gap`` nats below the best are dropped (from the density and from the
    estimate). Chains in modes of comparable mass are kept, and then weigh equally
    whatever their masses (a bias of ``log 4π(1−π)`` for two modes of masses π and 1−π,
    each holding half the chains).
    """
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
        log_q_fn = _fit_density(fit.u, keep, ridge)
        # The chains go on from where the fit's draws ended: L new samples.
        again = sample_posterior(model, x, num_draws=draws, num_warmup=0, num_chains=num_chains,
                                 num_steps=num_steps, target_accept=target_accept,
                                 init=fit.u[:, -1], step_size=fit.step_size.reshape(-1))
        log_q = log_q_fn(again.u)  # (C, S, n)
        log_ratio = (log_q - again.log_joint).masked_fill(~keep.unsqueeze(1), -math.inf)
        kept = keep.sum(0) * draws  # (n,) draws that count
        per_point.append(-(torch.logsumexp(log_ratio.flatten(0, 1), 0) - kept.log()))
    return LogLikelihood.from_per_point(torch.cat(per_point).detach(), num_samples)


def _chains_in_the_main_mode(log_joint: torch.Tensor, gap: float) -> torch.Tensor:
    """``(C, n)``: whether each chain's mean log-density ``log_joint (C, S, n)`` is within
    ``gap`` nats of the best chain's of its point."""
    mean = log_joint.mean(1)
    return mean >= mean.max(0, keepdim=True).values - gap


def _fit_density(u: torch.Tensor, keep: torch.Tensor, ridge: float, separation: float = 3.0):
    """``log q`` of the density fitted per point to the draws ``u (C, S, n, d)`` of the
    kept chains ``keep (C, n)``; returns a function of ``(..., n, d)`` draws.

    Where the kept chains' means lie within ``separation`` within-chain standard
    deviations of each other (one mode: the usual case), q is one Gaussian fitted to
    their pooled draws; where some are farther apart (several modes), q is the
    equal-weight mixture of one Gaussian per chain, so that no mass sits between modes.
    """
    c, s, n, d = u.shape
    eye = torch.eye(d, dtype=u.dtype, device=u.device)
    w = keep.to(u.dtype)  # (C, n)
    chain_mean = u.mean(1)  # (C, n, d)
    centred = u - chain_mean.unsqueeze(1)
    chain_cov = torch.einsum("csni,csnj->cnij", centred, centred) / max(s - 1, 1) + ridge * eye
    kept = w.sum(0)  # (n,)
    within = (w[..., None, None] * chain_cov).sum(0) / kept[:, None, None]  # (n, d, d)
    diff = chain_mean.unsqueeze(1) - chain_mean.unsqueeze(0)  # (C, C, n, d)
    dist2 = torch.einsum("abni,nij,abnj->abn", diff, torch.linalg.inv(within), diff)
    both = keep.unsqueeze(1) & keep.unsqueeze(0)
    several_modes = ((dist2 > separation**2) & both).flatten(0, 1).any(0)  # (n,)

    mean = (w.unsqueeze(-1) * chain_mean).sum(0) / kept.unsqueeze(-1)  # (n, d)
    pooled_centred = (u - mean) * w.unsqueeze(1).unsqueeze(-1).sqrt()
    flat = pooled_centred.flatten(0, 1)
    pooled_cov = torch.einsum("kni,knj->nij", flat, flat) / (kept * s - 1).clamp(min=1)[:, None, None]
    single = MultivariateNormal(mean, covariance_matrix=pooled_cov + ridge * eye)
    logits = u.new_zeros(n, c).masked_fill(~keep.T, -math.inf)
    mixture = MixtureSameFamily(Categorical(logits=logits),
                                MultivariateNormal(chain_mean.transpose(0, 1), covariance_matrix=chain_cov.transpose(0, 1)))
    return lambda z: torch.where(several_modes, mixture.log_prob(z), single.log_prob(z))
