"""IWAE and VIMCO: Pyro's RenyiELBO where it is right, correct minibatch scaling, an
unbiased VIMCO gradient (checked against exact enumeration), and learning on digits."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pyro.infer
import pytest
import torch

from toy_models import BernoulliLatent, fresh_vae, run_steps

from pyro_vae.config import ConfigError
from pyro_vae.inference import IWAE, VIMCO
from pyro_vae.inference.importance import vimco_surrogate
from pyro_vae.traces import particle_traces
from pyro_vae.train import make_inference


def _grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def _iwae_grads(vae, x, index, num_data, k=4, seed=0):
    iwae = IWAE(vae, num_particles=k)
    iwae.optimizer.step = lambda: None  # look at the gradient, leave the parameters
    pyro.set_rng_seed(seed)
    out = iwae.step(x, index, num_data)
    return out, _grads(vae)


def test_iwae_is_pyros_renyi_elbo_on_a_whole_batch(digits):
    vae = fresh_vae()
    x = digits.train[:50]
    out, ours = _iwae_grads(vae, x, None, None)
    vae.zero_grad()
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True)
    renyi._guess_max_plate_nesting(vae.model, vae.guide, (x,), {})  # draws: before seeding
    pyro.set_rng_seed(0)
    loss = renyi.loss_and_grads(vae.model, vae.guide, x)
    assert out["iwae"] == pytest.approx(-loss / 50, rel=1e-5)
    for a, b in zip(ours, _grads(vae)):
        torch.testing.assert_close(a, b)


def test_iwae_warm_up_weighs_the_latent_sites_inside_the_weights_until_its_last_epoch(digits):
    """Under warm-up T, epoch e's bound is RenyiELBO on the story whose latent sites (model
    and guide) weigh β = (e + 1) / T; from epoch T - 1 on it is the plain bound."""
    from pyro_vae.inference.annealing import scale_latents

    x = digits.train[:50]
    for epoch, beta in ((0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)):
        vae = fresh_vae()
        iwae = IWAE(vae, num_particles=4, warmup_epochs=4)
        iwae.optimizer.step = lambda: None
        iwae.start_epoch(epoch)
        pyro.set_rng_seed(0)
        out = iwae.step(x, None, None)
        ours = _grads(vae)
        vae.zero_grad()
        model, guide = scale_latents(beta)(vae.model), scale_latents(beta)(vae.guide)
        renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True)
        renyi._guess_max_plate_nesting(model, guide, (x,), {})
        pyro.set_rng_seed(0)
        loss = renyi.loss_and_grads(model, guide, x)
        assert out["iwae"] == pytest.approx(-loss / 50, rel=1e-5)
        for a, b in zip(ours, _grads(vae)):
            torch.testing.assert_close(a, b)
        vae.zero_grad()
        plain = pyro.infer.RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True)
        plain._guess_max_plate_nesting(vae.model, vae.guide, (x,), {})
        pyro.set_rng_seed(0)
        untilted = -plain.loss_and_grads(vae.model, vae.guide, x) / 50
        assert (abs(out["iwae"] - untilted) > 1e-3) == (beta < 1)


def test_iwae_takes_its_warm_up_from_the_config_and_refuses_a_negative_one(digits):
    iwae = make_inference(fresh_vae(), "iwae", num_particles=2, warmup_epochs=10)
    assert iwae.beta == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup_epochs must be an integer >= 0"):
        make_inference(fresh_vae(), "iwae", num_particles=2, warmup_epochs=-1)


def test_iwae_minibatch_gradient_is_the_scaled_batch_gradient(digits):
    """N/B outside the log-sum-exp: a minibatch of a set of N points weighs N/B times the
    same batch as a data set (same draws); Pyro's RenyiELBO puts N/B inside instead."""
    x, index, n = digits.train[:50], torch.arange(50), len(digits.train)
    vae = fresh_vae()
    _, full = _iwae_grads(vae, x, None, None)
    _, mini = _iwae_grads(vae, x, index, n)
    for a, b in zip(mini, full):
        torch.testing.assert_close(a, b * n / 50, rtol=1e-4, atol=1e-4)
    vae.zero_grad()
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True)
    renyi._guess_max_plate_nesting(vae.model, vae.guide, (x,), {})
    pyro.set_rng_seed(0)
    renyi.loss_and_grads(vae.model, vae.guide, x, index, n)
    gap = max((a - b * n / 50).abs().max().item() for a, b in zip(_grads(vae), full))
    assert gap > 1.0


def test_iwae_raises_the_elbo_and_its_bound_is_above_the_elbo(digits):
    vae = fresh_vae()
    iwae = make_inference(vae, "iwae", num_particles=5, optimizer="adam", lr=3e-3)
    before = iwae.evaluate(digits.valid)["elbo"]
    outs = run_steps(iwae, digits, 25)
    assert iwae.evaluate(digits.valid)["elbo"] > before + 5.0
    assert all(o["iwae"] >= o["elbo"] - 1e-4 for o in outs)
    assert sum(o["iwae"] - o["elbo"] for o in outs) > 0  # K > 1 tightens the bound


def test_vimco_is_iwae_on_a_continuous_model(digits):
    """With only reparameterized sites there is no score-function term: same gradient."""
    x, index, n = digits.train[:40], torch.arange(40), len(digits.train)
    vae = fresh_vae()
    _, iwae = _iwae_grads(vae, x, index, n)
    vimco = VIMCO(vae, num_particles=4)
    vimco.optimizer.step = lambda: None
    pyro.set_rng_seed(0)
    vimco.step(x, index, n)
    for a, b in zip(_grads(vae), iwae):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_vimco_gradient_is_unbiased_against_exact_enumeration():
    """One data point, a 1-bit latent, K = 3: E[log (1/K) Σ w_k] is a sum over the 2^K
    particle draws, so its exact gradient is known; VIMCO's average over many draws of
    the same point must match it."""
    torch.manual_seed(0)
    m = BernoulliLatent(x_dim=3, z_dim=1, hidden=4)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)  # a guide far from the posterior: a large score-function term
    x0 = torch.tensor([[1.0, 0.0, 1.0]])
    k = 3

    m.zero_grad()
    q_logits = m.encoder(x0)[0]
    exact = 0.0
    for zs in itertools.product([0.0, 1.0], repeat=k):
        z = torch.tensor(zs).unsqueeze(-1)  # (K, 1)
        log_q = dist.Bernoulli(logits=q_logits).log_prob(z).sum(-1)
        log_p = math.log(0.5) + dist.Bernoulli(logits=m.decoder(z)).log_prob(x0).sum(-1)
        bound = torch.logsumexp(log_p - log_q, 0) - math.log(k)
        exact = exact + log_q.sum().exp() * bound
    exact.backward()
    exact_grads = _grads(m)

    m.zero_grad()
    pyro.set_rng_seed(1)
    reps = 20000
    tr = particle_traces(m.model, m.guide, x0.expand(reps, 3), None, None, k, nesting=1)
    surrogate, _ = vimco_surrogate(tr.log_w, tr.log_q_score)
    surrogate.mean().backward()
    for name, a, b in zip([n for n, _ in m.named_parameters()], _grads(m), exact_grads):
        tol = 0.05 * max(b.abs().max().item(), 0.1)
        assert (a - b).abs().max().item() < tol, (name, a, b)


def test_vimco_trains_a_model_with_discrete_latents(digits):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    sbn = BernoulliLatent(64, 8, 32)
    vimco = make_inference(sbn, "vimco", num_particles=5, optimizer="adam", lr=1e-2)
    before = vimco.evaluate(digits.valid.flatten(1))["elbo"]
    outs = run_steps(vimco, digits, 30, flat=True)
    assert vimco.evaluate(digits.valid.flatten(1))["elbo"] > before + 5.0
    assert all(math.isfinite(o["iwae"]) for o in outs)


def test_iwae_refuses_discrete_guide_sites_and_vimco_needs_two_particles(digits):
    pyro.clear_param_store()
    iwae = make_inference(BernoulliLatent(64, 4, 8), "iwae", num_particles=3)
    with pytest.raises(ConfigError, match="vimco"):
        iwae.step(digits.train[:10].flatten(1), torch.arange(10), len(digits.train))
    with pytest.raises(ConfigError, match="num_particles >= 2"):
        make_inference(BernoulliLatent(64, 4, 8), "vimco", num_particles=1)
