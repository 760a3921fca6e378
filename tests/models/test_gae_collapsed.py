"""The GAE with its data index summed out of a training step (``ExemplarELBO.collapsed``):
what IWAE, VIMCO, RWS, wake-sleep and MCEM train it with."""

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from gae_helpers import N, explicit_elbo, objective, small_gae
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

import pyro_vae.models.gae.prior as prior_module
from pyro_vae.inference import IWAE, MCEM, WakeSleep
from pyro_vae.models.gae.kernels import component_features
from pyro_vae.models.gae.estimators import PoolMixture
from pyro_vae.traces import per_point_log_prob

INDEX = torch.tensor([3, 17, 40, 58])


def model_log_joint(gae, x, index, n):
    """Per-point log p(x, z) of the model replayed on one guide draw, and that draw."""
    guide_tr = poutine.trace(gae.guide).get_trace(x, index, n)
    model_tr = prune_subsample_sites(poutine.trace(poutine.replay(gae.model, trace=guide_tr)).get_trace(x, index, n))
    model_tr.compute_log_prob()
    sites = [s for s in model_tr.nodes.values() if s["type"] == "sample"]
    assert [s["name"] for s in sites] == ["z", "x"]  # no y: summed out
    return sum(per_point_log_prob(s, -2, (1, len(x)))[0] for s in sites), guide_tr.nodes["z"]["value"]


def test_the_exact_collapsed_story_is_the_leave_one_out_mixture_with_its_gradients(digits):
    gae = small_gae(digits)
    obj = objective(gae, "exact", lambda1=0.0, lambda2=0.0)
    x = gae.exemplars[INDEX]
    with obj.collapsed(x, INDEX, N) as step:
        log_joint, z = model_log_joint(gae, x, INDEX, N)
        assert isinstance(step.marginal(INDEX), PoolMixture)
        assert step.terms() == 0  # no penalty, no cache
    loc, scale = gae.guide.encoder(x)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    explicit = explicit_elbo(gae, x, z, INDEX) + log_q  # log p(x|z) + log P_{-i}(z)
    torch.testing.assert_close(log_joint, explicit, rtol=1e-5, atol=1e-4)
    params = [p for p in gae.parameters()]
    ours = torch.autograd.grad(log_joint.sum(), params, allow_unused=True, retain_graph=True)
    theirs = torch.autograd.grad(explicit.sum(), params, allow_unused=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a if a is not None else torch.zeros(()), b if b is not None else torch.zeros(()),
                                   rtol=1e-4, atol=1e-5)


def test_copies_of_the_rows_are_scored_as_the_rows(digits):
    """MCEM's chains stack copies of the batch: each copy gets its row's prior."""
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=6, tail=10)
    x = gae.exemplars[INDEX]
    with obj.collapsed(x, INDEX, N) as step, torch.no_grad():
        z = torch.randn(2, len(INDEX), 3)
        one = step.marginal(INDEX)
        two = step.marginal(INDEX.repeat(2))
        torch.testing.assert_close(two.log_prob(z.reshape(-1, 3)), one.log_prob(z).reshape(-1))
        assert two.sample().shape == (2 * len(INDEX), 3)
        with pytest.raises(ValueError, match="its own minibatch's rows"):
            step.marginal(INDEX[:2])


def test_the_fixed_potential_is_the_exact_mixture_over_the_cache(digits):
    """Inside ``fixed()`` (MCEM's E-step) the knn step scores the exact leave-one-out
    mixture over the cache, the same function at every call; outside it, the estimate."""
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=4, tail=5)
    x = gae.exemplars[INDEX]
    z = gae.guide.encoder(x)[0].detach() + 2.0
    with obj.collapsed(x, INDEX, N) as step:  # the first step fills the cache: it is exact
        with step.fixed(), torch.no_grad():
            fixed = [step.marginal(INDEX).log_prob(z) for _ in range(2)]
        estimate = step.marginal(INDEX).log_prob(z)
    exact = gae.log_prior(z, INDEX)
    assert torch.equal(fixed[0], fixed[1]) and not fixed[0].requires_grad
    torch.testing.assert_close(fixed[0], exact, rtol=1e-5, atol=1e-4)
    assert (estimate - exact).abs().max() > 1e-3  # 4 neighbours and 5 tail draws of 59: an estimate
    assert estimate.requires_grad


def test_the_step_writes_the_cache_and_applies_deferred_gradients_once(digits):
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=6, tail=10)
    x = gae.exemplars[INDEX]
    with obj.collapsed(x, INDEX, N) as step:
        log_joint, _ = model_log_joint(gae, x, INDEX, N)
        (-log_joint.sum() + step.terms()).backward()
    assert int(obj.bank.steps) == 1
    obj._collect_deferred()
    held = obj.bank.grad_w.abs().sum(-1) > 0  # gradients of the pool's cached components, kept
    held[INDEX] = False
    other = held.nonzero().squeeze(-1)[:4]
    assert len(other) == 4
    with obj.collapsed(gae.exemplars[other], other, N) as step:
        first, second = step.terms(), step.terms()
        assert first.requires_grad and step.applied
    assert obj.bank.grad_w[other].abs().sum() == 0  # applied: cleared
    assert float((second - first).detach()) == pytest.approx(0.0, abs=1e-4)  # the deferred term is zero-valued, added once


def test_dreams_come_from_the_cache_without_encoding_every_exemplar(digits, monkeypatch):
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=6, tail=10)
    x = gae.exemplars[INDEX]
    with obj.collapsed(x, INDEX, N):
        pass  # fills the cache
    monkeypatch.setattr(gae.prior, "encode", lambda: (_ for _ in ()).throw(AssertionError("encoded all n")))
    with obj.collapsed(x, INDEX, N), torch.no_grad():
        dreams = gae.generate(7)
    assert dreams["x"].shape == (7, 1, 8, 8) and dreams["y"].shape == (7,)


def test_a_step_that_never_dreams_builds_no_kernel_features_of_all_n_components(digits, monkeypatch):
    """A frozen scope's features of all n components are built on first use: an IWAE step
    opens one for dreams it never has and does not pay for them; a collapsed scope builds
    them once for all its calls."""
    built, build = [], prior_module._Scope.features.func

    def counted(scope):
        built.append(len(scope.loc))
        return build(scope)

    features = functools.cached_property(counted)
    features.__set_name__(prior_module._Scope, "features")
    monkeypatch.setattr(prior_module._Scope, "features", features)
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=6, tail=10)
    iwae = IWAE(gae, num_particles=2, objective=obj)
    x = gae.exemplars[INDEX]
    iwae.step(x, INDEX, N)  # fills the cache (and, once, traces the model for its plates)
    built.clear()
    for _ in range(2):  # inside a dream scope over the cache
        iwae.step(x, INDEX, N)
    assert built == []
    with gae.prior.collapsed(), torch.no_grad():
        for _ in range(2):  # held-out rows: y summed out over all n components
            gae.model(x, None, None)
        scope = prior_module._SCOPE.get()
        expected = component_features(*gae.prior.components(*gae.prior.encode()))
    assert built == [N]  # built once, shared by both calls
    torch.testing.assert_close(scope.features, expected)


def test_iwae_on_the_gae_ascends_the_k_sample_bound_of_the_collapsed_model(digits, monkeypatch):
    """IWAE's gradient on the GAE (exact estimator) is that of
    (n/B) Σ_b [log (1/K) Σ_k p(x_b|z_k) P_{−b}(z_k) / q(z_k|x_b) − R(x_b)] at its particles."""
    gae = small_gae(digits)
    obj = objective(gae, "exact")
    iwae = IWAE(gae, num_particles=3, objective=obj)
    monkeypatch.setattr(iwae.optimizer, "step", lambda *a, **k: None)
    x = gae.exemplars[INDEX]
    out = iwae.step(x, INDEX, N)
    grads = [p.grad.clone() for p in gae.parameters()]
    z = iwae.elbo.last_traces[1].nodes["z"]["value"].detach()  # (K, B, D)
    loc, scale = gae.guide.encoder(x)
    eps = (z - loc.detach()) / scale.detach()
    zk = loc + scale * eps  # the same particles, as functions of the parameters
    log_w = torch.stack([explicit_elbo(gae, x, zk[k], INDEX) for k in range(3)])
    bound = torch.logsumexp(log_w, 0) - math.log(3)
    loss = -(N / len(x)) * (bound.sum() - obj.penalty(loc, scale).sum())
    expected = torch.autograd.grad(loss, list(gae.parameters()), allow_unused=True)
    assert out["iwae"] == pytest.approx(bound.mean().item(), rel=1e-4)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-4)


def test_iwae_gives_the_knn_pools_cached_components_the_gradient_of_the_bound(digits, monkeypatch):
    """With the knn estimator IWAE's step applies, at once and through the deferred
    gradients of the pool's cached components (applied when each is next in a minibatch),
    the gradient of (n/B) Σ_b [log (1/K) Σ_k p(x_b|z_k) P̂_b(z_k) / q(z_k|x_b) − R(x_b)]
    with every component of the step's pool a live function of the parameters (the cache
    is exact at the first step): the cached components' share at the bound's scale n/B
    too, not only the parameters' (issue 23: they had B/n of it)."""
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=6, tail=10)
    iwae = IWAE(gae, num_particles=3, objective=obj)
    monkeypatch.setattr(iwae.optimizer, "step", lambda *a, **k: None)
    pools, make_pool = [], obj.make_pool
    monkeypatch.setattr(obj, "make_pool", lambda index: pools.append(make_pool(index)) or pools[-1])
    x = gae.exemplars[INDEX]
    iwae.step(x, INDEX, N)
    params = list(gae.parameters())
    now = [p.grad.clone() for p in params]
    obj._collect_deferred()
    later = torch.autograd.grad(obj._deferred_term(torch.arange(N), *gae.guide.encoder(gae.exemplars)), params,
                                allow_unused=True)
    (pool,) = pools
    z = iwae.elbo.last_traces[1].nodes["z"]["value"].detach()  # (K, B, D)
    loc, scale = gae.guide.encoder(x)
    zk = loc + scale * (z - loc.detach()) / scale.detach()  # the same particles, live
    loc_all, scale_all = gae.guide.encoder(gae.exemplars)
    near = dist.Normal(loc_all[pool.near], scale_all[pool.near]).to_event(1).log_prob(zk.unsqueeze(-2))
    shared = dist.Normal(loc_all[pool.rows], scale_all[pool.rows]).to_event(1).log_prob(zk.unsqueeze(-2))
    log_prior = (torch.cat([near, shared], -1) + pool.logits).logsumexp(-1)  # (K, B): log P̂_b(z_k)
    log_w = gae.decoder(zk).log_prob(x) + log_prior - dist.Normal(loc, scale).to_event(1).log_prob(zk)
    bound = torch.logsumexp(log_w, 0) - math.log(3)
    loss = -(N / len(x)) * (bound.sum() - obj.penalty(loc, scale).sum())
    expected = torch.autograd.grad(loss, params, allow_unused=True)
    for g, d, e in zip(now, later, expected):
        torch.testing.assert_close(g + (0 if d is None else d), e, rtol=1e-3, atol=1e-4)


def test_wake_sleep_carries_the_priors_wake_gradient_into_the_guides_step(digits):
    """The GAE's prior is made of the guide's encodings: the encoder is in the guide's
    role, and its wake-phase gradient joins the sleep phase's step."""
    gae = small_gae(digits)
    ws = WakeSleep(gae, "adam", 1e-3, objective=objective(gae, "knn", neighbours=6, tail=10))
    x = gae.exemplars[INDEX]
    ws.wake(x, INDEX, N)
    encoder = {id(p) for p in gae.guide.encoder.parameters()}
    assert {id(p) for p in ws.optimizers["guide"].param_groups[0]["params"]} == encoder
    assert not encoder & {id(p) for p in ws.optimizers["model"].param_groups[0]["params"]}
    assert {id(p) for p, _ in ws._carried} == encoder
    before = [p.detach().clone() for p in gae.guide.encoder.parameters()]
    ws.sleep(5, N)
    assert not ws._carried and all(not torch.equal(a, b) for a, b in zip(before, gae.guide.encoder.parameters()))


def test_mcem_on_the_gae_trains_the_prior_as_the_models_parameters(digits):
    gae = small_gae(digits)
    mcem = MCEM(gae, "adam", 1e-3, leapfrog_steps=3, m_steps=2, num_chains=2,
                objective=objective(gae, "knn", neighbours=6, tail=10))
    pyro.set_rng_seed(1)
    out = mcem.step(gae.exemplars[INDEX], INDEX, N)
    assert 0 < out["accept_prob"] <= 1 and math.isfinite(out["log_joint"])
    assert list(mcem.optimizers.roles) == ["model"]  # the guide is the prior's encoder: trained by the M-step
    assert bool(mcem.visited[INDEX].all()) and int(mcem.visited.sum()) == len(INDEX)
    assert "objective" in mcem.state_dict()
