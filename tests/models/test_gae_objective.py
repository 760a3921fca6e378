"""The GAE's training objective: its ELBO is the story's under each estimator, the
penalty and β; the knn estimator (unbiased, exact when its strata cover everything),
deferred gradients, the cache and its schedule, checkpoints, the config and the CLI."""

import math

import pyro
import pytest
import torch
from gae_helpers import (
    N,
    elbo,
    explicit_elbo,
    guide_sample,
    objective,
    objective_z,
    own_excluded_log_probs,
    shared_bandwidth,
    sharpen,
    small_gae,
    train_interrupted,
)
from pyro import poutine

from pyro_vae.config import Config, ConfigError
from pyro_vae.models.gae import ExemplarELBO, MomentPenalty
from pyro_vae.models.gae.cache import ExemplarBank
from pyro_vae.models.gae.kernels import component_features
from pyro_vae.models.gae.prior import using_pool
from pyro_vae.models.gae.search import nearest_exemplars
from pyro_vae import checkpoint
from pyro_vae.cli import main
from pyro_vae.inference.svi import SVI
from pyro_vae.models.gae import cache
from pyro_vae.train import build, train


@pytest.mark.parametrize("lambdas, bandwidth", [((0.0, 0.0), "posterior"), ((0.3, 0.7), "posterior"),
                                                ((0.3, 0.7), "shared")])
def test_objective_and_gradients_equal_the_explicit_logsumexp_with_the_penalty(digits, lambdas, bandwidth):
    gae = small_gae(digits, bandwidth=bandwidth)
    if bandwidth == "shared":
        shared_bandwidth(gae)
    obj = objective(gae, "exact", *lambdas)
    index = torch.tensor([3, 17, 42, 5, 59])
    x = gae.exemplars[index]
    pyro.set_rng_seed(1)
    loss = obj.differentiable_loss(x, index, N)
    grads = torch.autograd.grad(loss, list(gae.parameters()))
    z = objective_z(gae, x, seed=1)
    expected = -explicit_elbo(gae, x, z, index, penalty=obj.penalty).sum() * N / len(x)
    expected_grads = torch.autograd.grad(expected, list(gae.parameters()))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("estimator", ["exact", "random", "knn"])
def test_objective_is_pyros_trace_enum_elbo_on_the_story_over_the_estimators_pool(digits, estimator):
    """The objective computes the story's ELBO directly: TraceEnum_ELBO on the model with
    y enumerated over the same pool (same z) gives the same value, plus the penalty."""
    gae = small_gae(digits, n=120)
    obj = objective(gae, estimator, 0.2, 0.1, neighbours=6, tail=25)
    index = torch.arange(7, 47, 4)
    x = gae.exemplars[index]
    obj.make_pool(index)  # the knn cache and lists, built before the compared calls
    pyro.set_rng_seed(2)
    pool = obj.make_pool(index)
    with torch.no_grad():
        loc_x, scale_x = gae.guide.encoder(x)
        stats = obj.pool_stats(pool, loc_x, scale_x)
        guide_tr = poutine.trace(gae.guide).get_trace(x, index, 120)
        with using_pool(gae.prior, pool, stats):
            story = elbo().loss(gae.model, poutine.replay(gae.guide, trace=guide_tr), x, index, 120)
        z = guide_tr.nodes["z"]["value"]
        direct = -(gae.decoder(z).log_prob(x) - guide_tr.nodes["z"]["fn"].log_prob(z)
                   + (stats.log_prob_table(z) + pool.logits).logsumexp(-1)).sum().item() * 120 / len(x)
        penalty = obj.penalty(loc_x, scale_x).sum().item() * 120 / len(x)
    assert story == pytest.approx(direct, rel=1e-5)
    # and the objective itself: its own draw of z through the same pool
    if estimator == "exact":
        pyro.set_rng_seed(3)
        with torch.no_grad():
            loss = obj.differentiable_loss(x, index, 120).item()
        z = objective_z(gae, x, seed=3)
        expected = -explicit_elbo(gae, x, z, index).sum().item() * 120 / len(x) + penalty
        assert loss == pytest.approx(expected, rel=1e-5)


def test_objective_weighs_the_enumerated_prior_and_the_entropy_by_beta(digits):
    """−ELBO_β − (−ELBO_1) = (β − 1) Σ_b [log q(z_b|x_b) − log P_{−b}(z_b)] · n/B: the
    enumerated data index shares the weight, the penalty does not."""
    gae = small_gae(digits)
    obj = objective(gae, "exact", 0.3, 0.2)
    index = torch.tensor([3, 17, 42, 5, 59])
    x = gae.exemplars[index]
    losses = {}
    for beta in (1.0, 0.1):
        pyro.set_rng_seed(3)
        losses[beta] = obj.differentiable_loss(x, index, N, beta=beta)
    z = objective_z(gae, x, seed=3)
    loc, scale = gae.guide.encoder(x)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    log_prior = own_excluded_log_probs(gae, z, index).logsumexp(-1) - math.log(N - 1)
    expected = (0.1 - 1) * (log_q - log_prior).sum() * N / len(x)
    torch.testing.assert_close(losses[0.1] - losses[1.0], expected, rtol=1e-4, atol=1e-3)


def test_leave_one_out_objective_stays_finite_when_the_own_component_dominates(digits):
    """Narrow posteriors: a point's own (excluded) component is hundreds of nats more
    likely than any other. The log-sum-exp over the pool must still see finite terms."""
    gae = sharpen(small_gae(digits), log_var=-14.0)
    index = torch.arange(12)
    x = gae.exemplars[index]
    for estimator in ("exact", "knn"):
        obj = objective(gae, estimator)
        obj.make_pool(index)
        pyro.set_rng_seed(13)
        loss = obj.differentiable_loss(x, index, N)
        z = objective_z(gae, x, seed=13)
        expected = -explicit_elbo(gae, x, z, index, penalty=obj.penalty).sum() * N / len(x)
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1.0)
        # the story (TraceEnum over all n) too
        pyro.set_rng_seed(13)
        story = elbo().differentiable_loss(gae.model, gae.guide, x, index, N)
        z = guide_sample(gae, x, index, N, seed=13)["value"]
        assert torch.isfinite(story)
        torch.testing.assert_close(story, -explicit_elbo(gae, x, z, index).sum() * N / len(x), rtol=1e-4, atol=1.0)


# ----------------------------------------------------------------------------- the estimator


def test_knn_estimator_is_exact_when_its_strata_cover_everything(digits):
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=N - 1, tail=0)
    obj.refresh()
    err = obj.prior_estimate_error(torch.arange(0, N, 7), num_draws=2)
    assert err["max_abs_error"] < 1e-4 and err["neighbour_mass"] == pytest.approx(1.0)


def test_knn_estimator_is_unbiased_for_the_mixture_density(digits):
    """E[P̂_i(z)] = P_{-i}(z): the tail's mass on a uniform sample of the tail. (One
    point per call: in training the rest of a shuffled minibatch is part of that sample.)"""
    gae = small_gae(digits, n=150)
    obj = objective(gae, "knn", neighbours=5, tail=20)
    obj.refresh()
    for i in (0, 99):
        index = torch.tensor([i])
        loc_x, scale_x = (t.detach() for t in gae.guide.encoder(gae.exemplars[index]))
        z = loc_x + 3 * scale_x * torch.randn_like(loc_x)  # away from the mode: the tail matters
        exact = gae.log_prior(z, index).exp()
        with torch.no_grad():
            draws = torch.cat([
                (obj.pool_stats(pool := obj.make_pool(index), loc_x, scale_x).log_prob_table(z) + pool.logits)
                .logsumexp(-1).exp()
                for _ in range(1500)
            ])
        stderr = draws.std() / math.sqrt(len(draws))
        assert draws.std() > 0  # it is random: the test can fail
        assert (draws.mean() - exact).abs() < 4 * stderr


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_deferred_gradients_complete_the_exact_gradient(digits, bandwidth):
    """With an exact cache, the knn step's gradient plus the deferred gradients of its
    cached components, routed through the encoder later, is the exact gradient (a
    shared bandwidth's wholly in the step)."""
    gae = small_gae(digits, n=40, bandwidth=bandwidth)
    if bandwidth == "shared":
        shared_bandwidth(gae)
    knn = objective(gae, "knn", neighbours=39, tail=0)
    knn.refresh()
    index = torch.tensor([2, 9, 33])
    x = gae.exemplars[index]
    params = list(gae.parameters())
    pyro.set_rng_seed(9)
    exact = torch.autograd.grad(objective(gae, "exact").differentiable_loss(x, index, 40), params,
                                allow_unused=True)
    pyro.set_rng_seed(9)
    loss = knn.differentiable_loss(x, index, 40)
    loss.backward()
    first = [p.grad.clone() for p in params]
    gae.zero_grad()
    knn._collect_deferred()
    tables = knn.bank.deferred_tables  # w.r.t. the features, or the means with a shared bandwidth
    assert len(tables) == (1 if bandwidth == "shared" else 2) and tables[0].abs().sum() > 0
    loc, scale = gae.guide.encoder(gae.exemplars)
    fresh = (loc,) if bandwidth == "shared" else component_features(loc, scale)
    later = sum((t * f).sum() for t, f in zip(tables, fresh))
    second = torch.autograd.grad(later, params, allow_unused=True)
    for e, f, s in zip(exact, first, second):
        e = torch.zeros_like(f) if e is None else e
        s = torch.zeros_like(f) if s is None else s
        torch.testing.assert_close(f + s, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("refresh_every, rebuilt_at", [(None, [0, 1, 2, 4, 8, 16]), (5, [0, 1, 2, 5, 10, 15])])
def test_neighbour_lists_are_rebuilt_on_schedule(digits, refresh_every, rebuilt_at):
    # 200 exemplars in minibatches of 50: 4 steps an epoch, a rebuild every 2 epochs by
    # default, and sooner (1/8, 1/4, 1/2 of the period) while the cache moves fast
    gae = small_gae(digits, n=200)
    obj = objective(gae, "knn", neighbours=5, tail=10, refresh_every=refresh_every)
    assert obj.rebuild_period(50) == (8 if refresh_every is None else refresh_every)
    seen = []
    rebuild = obj.bank.rebuild_neighbours
    obj.bank.rebuild_neighbours = lambda *a, **k: (seen.append(int(obj.bank.steps)), rebuild(*a, **k))
    for step in range(17):
        index = torch.arange(50) + 50 * (step % 4)
        with torch.no_grad():
            obj.differentiable_loss(gae.exemplars[index], index, 200)
    assert seen == rebuilt_at


@pytest.mark.parametrize("improve", [False, True])
def test_knn_training_step_writes_back_and_is_applied_to_the_minibatch(digits, improve):
    gae = small_gae(digits, n=200)
    obj = objective(gae, "knn", neighbours=10, tail=20, improve=improve)
    opt = torch.optim.Adam(gae.parameters(), lr=1e-3)
    for step in range(3):
        index = torch.arange(step * 50, step * 50 + 50)
        loss = obj.differentiable_loss(gae.exemplars[index], index, 200)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(obj.bank.steps) == 3 and bool(obj.bank.listed)
    with torch.no_grad():  # the last minibatch's statistics are in the cache
        loc, _ = gae.guide.encoder(gae.exemplars[100:150])
    assert obj.bank.loc[100:150].sub(loc).abs().max() < 0.1
    lists = obj.bank.neighbours
    assert not (lists == torch.arange(200).unsqueeze(1)).any()
    assert all(len(set(row.tolist())) == 10 for row in lists)


def test_start_epoch_re_encodes_the_whole_cache(digits):
    gae = small_gae(digits, n=100)
    obj = objective(gae, "knn", neighbours=5, tail=10)
    obj.differentiable_loss(gae.exemplars[:20], torch.arange(20), 100).backward()
    torch.optim.SGD(gae.parameters(), lr=0.5).step()
    with torch.no_grad():
        fresh = gae.guide.encoder(gae.exemplars)[0]
    assert not torch.allclose(obj.bank.loc, fresh)
    obj.start_epoch(1)
    torch.testing.assert_close(obj.bank.loc, fresh)


def test_shared_bandwidth_lists_rank_by_distance_in_bandwidth_units(digits):
    # components N(mu_j, s^2): the best neighbours of i are the nearest means in units of s,
    # whatever the posteriors' own scales (which the cache keeps)
    gae = small_gae(digits, n=200, bandwidth="shared")
    obj = objective(gae, "knn", neighbours=6, tail=10)
    with torch.no_grad():
        gae.bandwidth.log_scale.copy_(torch.tensor([-1.0, 0.0, 1.5]))
    obj.refresh(exact=True)
    loc, s = obj.bank.loc, gae.bandwidth.scale.detach()
    dist2 = torch.cdist(loc / s, loc / s).pow(2).fill_diagonal_(math.inf)
    expected = dist2.topk(6, largest=False).indices
    assert torch.equal(obj.bank.neighbours, expected)
    # the per-step improvement ranks the same way: it keeps the exact lists as they are
    index = torch.arange(0, 200, 7)
    kept = obj.bank.improved_neighbours(index, torch.arange(200), gae.bandwidth.scale.detach())
    assert torch.equal(kept, expected[index])
    # ranked by the posteriors instead, the lists differ (the test can tell them apart)
    assert not torch.equal(nearest_exemplars(loc, obj.bank.scale, loc, obj.bank.scale, 6,
                                             exclude=torch.arange(200)), expected)


def test_state_dict_round_trip_restores_the_cache(digits):
    gae = small_gae(digits)
    obj = objective(gae, "knn", neighbours=8, tail=10)
    obj.refresh()
    other_gae = small_gae(digits, seed=1)
    other = objective(other_gae, "knn", neighbours=8, tail=10)
    other.load_state_dict(obj.state_dict())
    assert torch.equal(other.bank.neighbours, obj.bank.neighbours) and bool(other.bank.listed)
    torch.testing.assert_close(other.bank.w, obj.bank.w)  # derived features rebuilt on load
    assert not any(k.startswith("bank.") for k in gae.state_dict())  # the model holds no cache
    bank = ExemplarBank(5, 2, 2)
    assert "w" not in bank.state_dict() and "grad_w" in bank.state_dict()
    # a shared-scale bank keeps gradients w.r.t. the means; one saved with feature
    # gradients (before that) still loads, its deferred gradients dropped
    shared = ExemplarBank(5, 2, 2, shared_scale=True)
    assert "grad_loc" in shared.state_dict() and "grad_w" not in shared.state_dict()
    old = {**bank.state_dict(), "grad_w": torch.ones(5, 4), "loc": torch.full((5, 2), 3.0)}
    shared.grad_loc.fill_(1.0)
    shared.load_state_dict(old)
    assert not shared.grad_loc.any() and bool((shared.loc == 3.0).all())


# ----------------------------------------------------------------------------- settings


def test_bad_objective_settings_give_clear_errors(digits):
    gae = small_gae(digits)
    with pytest.raises(ValueError, match="lambda1 must be a finite number >= 0"):
        MomentPenalty(lambda1=-0.1)
    with pytest.raises(ValueError, match="lambda2"):
        MomentPenalty(lambda2=float("nan"))
    with pytest.raises(ValueError, match="unknown exemplar estimator"):
        ExemplarELBO(gae, "all")
    with pytest.raises(ValueError, match="neighbours must be an integer >= 0"):
        ExemplarELBO(gae, "knn", neighbours=-1)


def test_config_errors(digits):
    with pytest.raises(ConfigError, match="lambda1"):
        build(Config.from_dict({"model": {"name": "gae", "lambda1": -1.0}}))
    with pytest.raises(ConfigError, match=r"'lambda2' belongs to 'gae'"):
        Config.from_dict({"model": {"name": "vae", "lambda2": 0.5}})
    assert "lambda1" not in Config().to_toml()  # a VAE's TOML holds the VAE's keys only
    exp = build(Config.from_dict({"model": {"name": "gae", "neighbours": 4, "estimator": "random"}}))
    assert exp.inference.objective.estimator.name == "random" and exp.inference.objective.bank.num_neighbours == 4
    with pytest.raises(ConfigError, match="unknown exemplar bandwidth"):
        build(Config.from_dict({"model": {"name": "gae", "bandwidth": "isotropic"}}))
    with pytest.raises(ConfigError, match="elbo = \"auto\""):
        build(Config.from_dict({"model": {"name": "gae"}, "inference": {"elbo": "trace_enum"}}))


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_cli_sample_works_for_a_trained_gae(digits, tmp_path, bandwidth):
    config = Config.from_dict({
        "data": {"name": "digits", "binarize": "static", "batch_size": 200},
        "model": {"name": "gae", "z_dim": 2, "hidden": [32], "lambda2": 0.1, "neighbours": 8, "tail": 50,
                  "bandwidth": bandwidth},
        "budget": {"epochs": 2}, "eval": {"num_samples": 0, "plots": False},
    })
    exp, state = train(config, tmp_path / "run", progress=False)
    elbos = [h["train_elbo"] for h in state.history]
    assert all(math.isfinite(e) for e in elbos) and elbos[-1] > elbos[0]
    if bandwidth == "shared":  # the bandwidth is one of the parameters trained
        assert exp.module.bandwidth.log_scale.abs().min() > 0
    assert math.isfinite(state.history[-1]["valid_elbo"])
    assert main(["sample", str(tmp_path / "run"), "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_interrupted_gae_run_resumes_to_the_same_parameters(tmp_path, monkeypatch, bandwidth):
    """The cache, neighbour lists, k-means cells and deferred gradients are saved with
    the objective: a run interrupted mid-epoch and resumed ends bit for bit where an
    uninterrupted one does."""
    monkeypatch.setattr(cache, "EXACT_SEARCH", 100)  # exercise the clustered search
    config = Config.from_dict({
        "data": {"name": "digits", "binarize": "static", "batch_size": 200},
        "model": {"name": "gae", "z_dim": 2, "hidden": [16], "neighbours": 6, "tail": 40,
                  "refresh_every": 4, "bandwidth": bandwidth},
        "budget": {"epochs": 2}, "eval": {"num_samples": 0, "plots": False},
    })
    train(config, tmp_path / "whole", progress=False)
    train_interrupted(config, tmp_path / "cut", monkeypatch, SVI, at=9)  # in the second epoch (6 steps each)
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "cut"))
    assert a["state"]["step"] == b["state"]["step"] == 12
    for name, tensor in a["module"].items():
        assert torch.equal(tensor, b["module"][name]), name
    bank_a, bank_b = a["inference"]["objective"], b["inference"]["objective"]
    for name, tensor in bank_a.items():
        assert torch.equal(tensor, bank_b[name]), name
    grads = bank_a["bank.grad_loc" if bandwidth == "shared" else "bank.grad_w"]
    assert bank_a["bank.clustered"] and grads.abs().sum() > 0
