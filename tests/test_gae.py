"""The GAE: enumeration against explicit sums, leave-one-out, responsibilities, EM,
generation, the scalable estimator, evaluation against brute force, bad inputs."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from inference_models import digits, one_thread  # noqa: F401  (fixtures)
from pyro.infer import TraceEnum_ELBO

from pyro_vae.config import Config, ConfigError
from pyro_vae.models import GAE, build_model, fit_em
from pyro_vae.models.exemplars import (
    ExemplarBank,
    ExemplarNormal,
    clustered_neighbours,
    component_features,
    features_to_params,
    log_mixture,
    nearest_exemplars,
)

N = 60  # exemplars in the small data sets


@torch.no_grad()
def own_excluded_log_probs(gae, z, index):
    """``(B, n)``: ``log q(z_b | x_j)`` for every exemplar ``j``, ``-inf`` at ``j = index[b]``."""
    loc, scale = gae.guide.encoder(gae.exemplars)
    table = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))
    table[torch.arange(len(index)), index] = -math.inf
    return table


def small_gae(digits, n=N, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("estimator", "exact")
    return GAE(digits.train[:n], z_dim=3, hidden=(16,), **kw)


def sharpen(gae, log_var=-8.0):
    """Narrow posteriors (σ ≈ 0.02): a point's own component then dominates its mixture."""
    with torch.no_grad():
        gae.guide.encoder.head.log_var.weight.zero_()
        gae.guide.encoder.head.log_var.bias.fill_(log_var)
    return gae


def elbo():
    return TraceEnum_ELBO(max_plate_nesting=1)


def guide_sample(gae, x, *args, seed):
    pyro.set_rng_seed(seed)
    return poutine.trace(gae.guide).get_trace(x, *args).nodes["z"]


def explicit_elbo(gae, x, z, index=None, regularise=True):
    """Σ_b [log p(x|z) + log P(z) − log q(z|x)] − R, with log P by an explicit log-sum-exp."""
    loc_all, scale_all = gae.components(*gae.guide.encoder(gae.exemplars))
    comps = dist.Normal(loc_all, scale_all).to_event(1).log_prob(z.unsqueeze(-2))  # (B, n)
    n = gae.num_exemplars
    if index is not None and gae.leave_one_out:
        comps = comps.masked_fill(torch.nn.functional.one_hot(index, n).bool(), -math.inf)
        log_prior = comps.logsumexp(-1) - math.log(n - 1)
    else:
        log_prior = comps.logsumexp(-1) - math.log(n)
    loc, scale = gae.guide.encoder(x)
    total = gae.decoder(z).log_prob(x) + log_prior - dist.Normal(loc, scale).to_event(1).log_prob(z)
    if regularise and index is not None:
        total = total - gae.regulariser(loc, scale)
    return total


# ----------------------------------------------------------------------------- enumeration


def shared_bandwidth(gae):
    """A GAE with ``bandwidth="shared"`` and scales away from their initial 1."""
    with torch.no_grad():
        gae.bandwidth.log_scale.copy_(torch.tensor([-0.7, 0.2, -1.3]))
    return gae


@pytest.mark.parametrize("lambdas, bandwidth", [((0.0, 0.0), "posterior"), ((0.3, 0.7), "posterior"),
                                                ((0.3, 0.7), "shared")])
def test_enumerated_elbo_and_gradients_equal_explicit_logsumexp(digits, lambdas, bandwidth):
    gae = small_gae(digits, lambda1=lambdas[0], lambda2=lambdas[1], bandwidth=bandwidth)
    if bandwidth == "shared":
        shared_bandwidth(gae)
    index = torch.tensor([3, 17, 42, 5, 59])
    x = gae.exemplars[index]
    pyro.set_rng_seed(1)
    loss = elbo().differentiable_loss(gae.model, gae.guide, x, index, N)
    grads = torch.autograd.grad(loss, list(gae.parameters()))
    z = guide_sample(gae, x, index, N, seed=1)["value"]
    expected = -explicit_elbo(gae, x, z, index).sum() * N / len(x)
    expected_grads = torch.autograd.grad(expected, list(gae.parameters()))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_model_marks_y_for_enumeration_and_elbo_auto_picks_trace_enum(digits):
    gae = small_gae(digits)
    tr = poutine.trace(gae.model).get_trace(digits.train[:4], torch.arange(4), N)
    assert tr.nodes["y"]["infer"].get("enumerate") == "parallel"
    assert gae.has_enumerated_latents
    config = Config.from_dict({"model": {"name": "gae", "z_dim": 2, "hidden": [8]}})
    from pyro_vae.inference import build_inference

    module = build_model(config, digits)
    assert isinstance(build_inference(config, module).elbo, pyro.infer.TraceEnum_ELBO)


@pytest.mark.parametrize("max_enumerated", [10**9, 7 * N])
def test_held_out_elbo_is_the_full_mixture_grouped_or_not(digits, max_enumerated):
    """Without an index the prior is the mixture over all n (no leave-one-out, no R);
    with a small max_enumerated y enumerates groups, which must give the same value."""
    gae = small_gae(digits, lambda1=1.0, max_enumerated=max_enumerated)
    x = digits.valid[:20]
    pyro.set_rng_seed(2)
    with torch.no_grad():
        loss = elbo().loss(gae.model, gae.guide, x)
        z = guide_sample(gae, x, seed=2)["value"]
        expected = -explicit_elbo(gae, x, z).sum().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    if max_enumerated < 10**9:  # 20 rows x 60 exemplars > 7 x 60: groups of ceil(60*20/420) = 3
        tr = poutine.trace(poutine.enum(gae.model, first_available_dim=-2)).get_trace(x)
        assert tr.nodes["y"]["value"].shape[0] == N // 3


# ----------------------------------------------------------------------------- leave-one-out


def test_leave_one_out_excludes_the_points_own_component(digits):
    gae = sharpen(small_gae(digits))
    index = torch.arange(10)
    x = gae.exemplars[index]
    pyro.set_rng_seed(3)
    r = gae.responsibilities(x, index)
    assert (r[torch.arange(10), index] == 0).all()
    # the same points as held-out data: their own component explains them most
    pyro.set_rng_seed(3)
    r_all = gae.responsibilities(x)
    assert (r_all[torch.arange(10), index] > 0).all()
    assert (r_all.argmax(-1) == index).float().mean() >= 0.8
    # the pools of every estimator give the own component no weight
    for estimator in ("exact", "random", "knn"):
        gae.estimator = estimator
        gae.tail = 30
        pool = gae.make_pool(index)
        own_shared = pool.rows.unsqueeze(0) == index.unsqueeze(1)
        assert torch.isinf(pool.logits[:, pool.num_near:][own_shared]).all()
        if pool.near is not None:
            assert not (pool.near == index.unsqueeze(1)).any()
        torch.testing.assert_close(pool.logits.logsumexp(-1), torch.zeros(10), atol=1e-5, rtol=0)


def test_leave_one_out_elbo_stays_finite_when_the_own_component_dominates(digits):
    """Narrow posteriors: a point's own (excluded) component is hundreds of nats more
    likely than any other. Pyro's log-space contraction must still see finite terms."""
    gae = sharpen(small_gae(digits), log_var=-14.0)
    index = torch.arange(12)
    x = gae.exemplars[index]
    for estimator in ("exact", "knn"):
        gae.estimator = estimator
        pyro.set_rng_seed(13)
        loss = elbo().differentiable_loss(gae.model, gae.guide, x, index, N)
        z = guide_sample(gae, x, index, N, seed=13)["value"]
        expected = -explicit_elbo(gae, x, z, index).sum() * N / len(x)
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1.0)


def test_exact_statistics_follow_fused_optimizer_steps(digits):
    """Evaluation re-encodes the exemplars after any parameter update, including the
    in-place updates of fused Adam, which do not bump tensor version counters."""
    gae = small_gae(digits)
    before = gae.exemplar_stats()[0].clone()
    opt = torch.optim.Adam(gae.parameters(), lr=0.1, fused=True)
    loss = elbo().differentiable_loss(gae.model, gae.guide, gae.exemplars[:10], torch.arange(10), N)
    loss.backward()
    opt.step()
    after = gae.exemplar_stats()[0]
    with torch.no_grad():
        torch.testing.assert_close(after, gae.guide.encoder(gae.exemplars)[0])
    assert not torch.allclose(after, before)


def test_without_leave_one_out_a_training_point_can_explain_itself(digits):
    gae = sharpen(small_gae(digits, leave_one_out=False))
    index = torch.arange(8)
    pyro.set_rng_seed(4)
    r = gae.responsibilities(gae.exemplars[index], index)
    assert (r[torch.arange(8), index] > 0.2).all()


# ----------------------------------------------------------------------------- responsibilities


def test_responsibilities_sum_to_one_and_match_the_explicit_formula(digits):
    gae = small_gae(digits)
    index = torch.tensor([1, 7, 30])
    x = gae.exemplars[index]
    pyro.set_rng_seed(5)
    r = gae.responsibilities(x, index, num_samples=1)
    torch.testing.assert_close(r.sum(-1), torch.ones(3))
    # p(y = j | z) ∝ q(z | x_j) over j ≠ i, at the guide's sample z
    pyro.set_rng_seed(5)
    z = poutine.trace(gae.guide).get_trace(x, index, N).nodes["z"]["value"]
    with torch.no_grad():
        loc, scale = gae.guide.encoder(gae.exemplars)
        logits = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))
        logits[torch.arange(3), index] = -math.inf
    torch.testing.assert_close(r, logits.softmax(-1), atol=1e-5, rtol=1e-4)
    # several draws, weighted or not, are still distributions
    for weighted in (True, False):
        r3 = gae.responsibilities(x, index, num_samples=3, weighted=weighted)
        torch.testing.assert_close(r3.sum(-1), torch.ones(3))


def test_infer_discrete_gives_the_most_responsible_exemplar(digits):
    gae = small_gae(digits)
    index = torch.arange(8)
    x = gae.exemplars[index]
    z = guide_sample(gae, x, index, N, seed=12)["value"].detach()
    logits = own_excluded_log_probs(gae, z, index)
    assert torch.equal(gae.explain(x, index, z=z), logits.argmax(-1))
    pyro.set_rng_seed(12)
    draws = torch.stack([gae.explain(x, index, temperature=1, z=z) for _ in range(40)])
    assert not (draws == index).any()  # never the point itself
    freq = (draws == logits.argmax(-1)).float().mean(0)
    torch.testing.assert_close(freq, logits.softmax(-1).max(-1).values, atol=0.25, rtol=0)


def test_em_alternates_responsibilities_and_gradient_steps(digits):
    gae = small_gae(digits, n=80, lambda2=0.1)
    pyro.set_rng_seed(6)
    history = fit_em(gae, epochs=3, batch_size=40, lr=3e-3, m_steps=2)
    bounds = [h["em_bound"] for h in history]
    assert all(math.isfinite(b) for b in bounds)
    assert bounds[-1] > bounds[0] + 1.0
    gae.estimator, gae.tail = "knn", 30  # the scalable pool works under EM too
    assert math.isfinite(fit_em(gae, epochs=1, batch_size=40)[0]["em_bound"])


def test_em_bound_is_below_the_enumerated_elbo(digits):
    """Q + H(r) with r = E_z p(y|z) is the ELBO of a guide q(y) = r: Jensen puts it below
    the enumerated ELBO at the same z, equal when r is the exact p(y | z)."""
    gae = small_gae(digits)
    index = torch.arange(6)
    x = gae.exemplars[index]
    z = guide_sample(gae, x, index, N, seed=7)["value"].detach()
    with torch.no_grad():
        table = own_excluded_log_probs(gae, z, index) - math.log(N - 1)
        enumerated = table.logsumexp(-1)
        exact_r = table.softmax(-1)
        other_r = (exact_r + 0.5 * torch.rand_like(exact_r)).masked_fill(torch.isinf(table), 0)
        other_r = other_r / other_r.sum(-1, keepdim=True)
        for r, tight in ((exact_r, True), (other_r, False)):
            safe = torch.where(r > 0, r, torch.ones_like(r))
            bound = torch.where(r > 0, r * (table - safe.log()), torch.zeros_like(r)).sum(-1)
            assert (bound <= enumerated + 1e-4).all()
            assert torch.allclose(bound, enumerated, atol=1e-4) == tight


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_generation_follows_the_three_steps(digits, bandwidth):
    gae = small_gae(digits, n=3, bandwidth=bandwidth)
    if bandwidth == "shared":  # z | y = j ~ N(μ(x_j), diag s²)
        shared_bandwidth(gae)
    with torch.no_grad():
        for p in gae.guide.encoder.head.loc.parameters():  # three well separated posteriors
            p.zero_()
        gae.guide.encoder.head.loc.bias.copy_(torch.tensor([4.0, 0.0, 0.0]))
        gae.guide.encoder.head.loc.weight[0, :].fill_(0.0)
    with torch.no_grad():
        loc, scale = gae.guide.encoder(gae.exemplars)
    if bandwidth == "shared":
        scale = gae.bandwidth.log_scale.detach().exp().expand_as(scale)
    pyro.set_rng_seed(8)
    tr = poutine.trace(gae.model).get_trace(None, num_data=6000)
    y, z, x = (tr.nodes[k]["value"] for k in ("y", "z", "x"))
    torch.testing.assert_close(tr.nodes["y"]["fn"].probs, torch.full((6000, 3), 1 / 3))
    counts = torch.bincount(y, minlength=3).float()
    assert ((counts - 2000).abs() < 5 * math.sqrt(6000 * 2 / 9)).all()  # y uniform
    for j in range(3):  # z | y = j ~ the component of x_j
        zj = z[y == j]
        assert torch.allclose(zj.mean(0), loc[j], atol=5 * scale[j].max().item() / math.sqrt(len(zj)))
        assert torch.allclose(zj.std(0), scale[j], rtol=0.1)
    assert set(x.unique().tolist()) <= {0.0, 1.0}  # x ~ Bernoulli(decoder(z))
    pyro.set_rng_seed(8)
    out = gae.generate(5)
    assert out["y"].shape == (5,) and out["z"].shape == (5, 3) and out["x"].shape == (5, 64)
    pyro.set_rng_seed(8)
    torch.testing.assert_close(gae.sample(5), gae.decoder.mean(out["z"]))


@pytest.mark.parametrize("bandwidth", [None, "shared"])
def test_cli_sample_works_for_a_trained_gae(digits, tmp_path, bandwidth):
    from pyro_vae.cli import main
    from pyro_vae.train import train

    config = Config.from_dict({
        "data": {"name": "digits", "binarize": "static", "batch_size": 200},
        "model": {"name": "gae", "z_dim": 2, "hidden": [32], "lambda2": 0.1, "exemplar_neighbours": 8,
                  "exemplar_tail": 50, "exemplar_bandwidth": bandwidth},
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


# ----------------------------------------------------------------------------- the estimator


def test_knn_estimator_is_exact_when_its_strata_cover_everything(digits):
    gae = small_gae(digits, estimator="knn", neighbours=N - 1, tail=0)
    gae.refresh()
    index = torch.arange(0, N, 7)
    err = gae.prior_estimate_error(index, num_draws=2)
    assert err["max_abs_error"] < 1e-4 and err["neighbour_mass"] == pytest.approx(1.0)


def test_knn_estimator_is_unbiased_for_the_mixture_density(digits):
    """E[P̂_i(z)] = P_{-i}(z): the tail's mass on a uniform sample of the tail. (One
    point per call: in training the rest of a shuffled minibatch is part of that sample.)"""
    gae = small_gae(digits, n=150, estimator="knn", neighbours=5, tail=20)
    gae.refresh()
    for i in (0, 99):
        index = torch.tensor([i])
        loc_x, scale_x = (t.detach() for t in gae.guide.encoder(gae.exemplars[index]))
        z = loc_x + 3 * scale_x * torch.randn_like(loc_x)  # away from the mode: the tail matters
        exact = gae.log_prior(z, index).exp()
        with torch.no_grad():
            draws = torch.cat([
                (gae.pool_stats(pool := gae.make_pool(index), loc_x, scale_x).log_prob_table(z) + pool.logits)
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
    gae = small_gae(digits, n=40, estimator="knn", neighbours=39, tail=0, bandwidth=bandwidth)
    if bandwidth == "shared":
        shared_bandwidth(gae)
    gae.refresh()
    index = torch.tensor([2, 9, 33])
    x = gae.exemplars[index]
    params = list(gae.parameters())
    gae.estimator = "exact"
    pyro.set_rng_seed(9)
    exact = torch.autograd.grad(elbo().differentiable_loss(gae.model, gae.guide, x, index, 40), params,
                                allow_unused=True)
    gae.estimator = "knn"
    pyro.set_rng_seed(9)
    loss = elbo().differentiable_loss(gae.model, gae.guide, x, index, 40)
    loss.backward()
    first = [p.grad.clone() for p in params]
    gae.zero_grad()
    gae._collect_deferred()
    tables = gae.bank.deferred_tables  # w.r.t. the features, or the means with a shared bandwidth
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
    # 200 exemplars in minibatches of 50: 4 calls an epoch, a rebuild every 2 epochs by
    # default, and sooner (1/8, 1/4, 1/2 of the period) while the cache moves fast
    gae = small_gae(digits, n=200, estimator="knn", neighbours=5, tail=10, refresh_every=refresh_every)
    assert gae.rebuild_period(50) == (8 if refresh_every is None else refresh_every)
    seen = []
    rebuild = gae.bank.rebuild_neighbours
    gae.bank.rebuild_neighbours = lambda *a, **k: (seen.append(int(gae.bank.steps)), rebuild(*a, **k))
    for step in range(17):
        index = torch.arange(50) + 50 * (step % 4)
        with torch.no_grad():
            elbo().loss(gae.model, gae.guide, gae.exemplars[index], index, 200)
    assert seen == rebuilt_at


@pytest.mark.parametrize("improve", [False, True])
def test_knn_training_step_writes_back_and_is_applied_to_the_minibatch(digits, improve):
    gae = small_gae(digits, n=200, estimator="knn", neighbours=10, tail=20, improve=improve)
    opt = torch.optim.Adam(gae.parameters(), lr=1e-3)
    for step in range(3):
        index = torch.arange(step * 50, step * 50 + 50)
        loss = elbo().differentiable_loss(gae.model, gae.guide, gae.exemplars[index], index, 200)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(gae.bank.steps) == 3 and bool(gae.bank.listed)
    with torch.no_grad():  # the last minibatch's statistics are in the cache
        loc, _ = gae.guide.encoder(gae.exemplars[100:150])
    assert gae.bank.loc[100:150].sub(loc).abs().max() < 0.1
    lists = gae.bank.neighbours
    assert not (lists == torch.arange(200).unsqueeze(1)).any()
    assert all(len(set(row.tolist())) == 10 for row in lists)


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_log_likelihood_agrees_with_brute_force_integration(bandwidth):
    """1-D latent: log P(x) = log ∫ p(x|z) (1/n) Σ_j q(z|x_j) dz by quadrature (with a
    shared bandwidth s: the components N(μ(x_j), s²))."""
    torch.manual_seed(10)
    exemplars = (torch.rand(5, 6) < 0.5).float()
    gae = GAE(exemplars, z_dim=1, hidden=(8,), estimator="exact", bandwidth=bandwidth)
    if bandwidth == "shared":
        with torch.no_grad():
            gae.bandwidth.log_scale.fill_(-0.6)
    x = (torch.rand(4, 6) < 0.5).float()
    grid = torch.linspace(-12, 12, 48001).unsqueeze(-1)
    with torch.no_grad():
        log_joint = gae.decoder(grid.unsqueeze(-2)).log_prob(x) + gae.log_prior(grid).unsqueeze(-1)
        brute = log_joint.logsumexp(0) + math.log(grid[1, 0] - grid[0, 0])
    pyro.set_rng_seed(10)
    ll = gae.log_likelihood(x, num_samples=20000, chunk_size=5000)
    torch.testing.assert_close(ll.per_point, brute, atol=0.03, rtol=0)
    # the module's log_prior is the explicit mixture; leave-one-out drops the own component
    with torch.no_grad():
        loc, scale = gae.guide.encoder(exemplars)
    if bandwidth == "shared":
        scale = torch.full_like(scale, math.exp(-0.6))
    comps = dist.Normal(loc, scale).to_event(1).log_prob(grid[:5].unsqueeze(-2))
    torch.testing.assert_close(gae.log_prior(grid[:5]), comps.logsumexp(-1) - math.log(5))
    loo = gae.log_prior(grid[:5], torch.arange(5))
    torch.testing.assert_close(loo, comps.masked_fill(torch.eye(5).bool(), -math.inf).logsumexp(-1) - math.log(4))


def test_log_likelihood_dispatch_and_bound(digits):
    from pyro_vae.evaluation import log_likelihood

    gae = small_gae(digits)
    x = digits.test[:10]
    pyro.set_rng_seed(11)
    ll = log_likelihood(gae, x, num_samples=200)
    assert ll.num_samples == 200 and ll.per_point.shape == (10,)
    pyro.set_rng_seed(11)
    with torch.no_grad():
        elbo_value = -elbo().loss(gae.model, gae.guide, x) / 10
    assert ll.mean > elbo_value - 1.0  # K = 200 beats K = 1 up to noise


def test_log_mixture_is_blocked_exactly():
    torch.manual_seed(12)
    z, loc, scale = torch.randn(37, 4), torch.randn(101, 4), torch.rand(101, 4) + 0.2
    full = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))
    torch.testing.assert_close(log_mixture(z, loc, scale, max_elements=50), full.logsumexp(-1) - math.log(101))
    ex = torch.randint(0, 101, (37,))
    dropped = full.masked_fill(torch.nn.functional.one_hot(ex, 101).bool(), -math.inf).logsumexp(-1)
    torch.testing.assert_close(log_mixture(z, loc, scale, exclude=ex, max_elements=50), dropped - math.log(101))


def test_exemplar_normal_paths_agree():
    torch.manual_seed(13)
    loc, scale = torch.randn(12, 3), torch.rand(12, 3) + 0.3
    row_loc, row_scale = torch.randn(5, 4, 3), torch.rand(5, 4, 3) + 0.3
    z = torch.randn(5, 3)
    d = ExemplarNormal(loc, scale, torch.arange(16).unsqueeze(-1), row_loc=row_loc, row_scale=row_scale)
    table = d.log_prob(z)  # (16, 5): enumerated path
    for y in range(16):
        yy = torch.full((5,), y)
        torch.testing.assert_close(ExemplarNormal(loc, scale, yy, row_loc=row_loc, row_scale=row_scale).log_prob(z),
                                   table[y], rtol=1e-5, atol=1e-4)
    draws = torch.randn(2, 5, 3)  # several z per row (e.g. vectorised particles): the einsum path
    tables = ExemplarNormal(loc, scale, torch.arange(16).view(16, 1, 1), row_loc=row_loc,
                            row_scale=row_scale).log_prob(draws)
    for i in range(2):
        torch.testing.assert_close(tables[:, i], ExemplarNormal(loc, scale, torch.arange(16).unsqueeze(-1), row_loc=row_loc,
                                                                row_scale=row_scale).log_prob(draws[i]))
    w, c = component_features(loc, scale)
    back = features_to_params(w)
    torch.testing.assert_close(back[0], loc) and torch.testing.assert_close(back[1], scale)
    shared = torch.rand(3) + 0.3  # a shared bandwidth broadcasts: same features as expanded
    for got, want in zip(component_features(row_loc, shared), component_features(row_loc, shared.expand(5, 4, 3))):
        torch.testing.assert_close(got, want)
    log_w = torch.full((12,), -math.log(4))
    g = ExemplarNormal(loc, scale, torch.arange(3).unsqueeze(-1), group_size=4, log_weights=log_w)
    comps = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2)).view(5, 3, 4)
    torch.testing.assert_close(g.log_prob(z), (comps.logsumexp(-1) - math.log(4)).T, rtol=1e-5, atol=1e-4)
    assert g.rsample().shape == (3, 1, 3)
    sampled = ExemplarNormal(loc, scale * 1e-4, torch.tensor([0, 3, 4, 15, 7]), row_loc=row_loc,
                             row_scale=row_scale * 1e-4).rsample((2,))
    assert sampled.shape == (2, 5, 3)
    torch.testing.assert_close(sampled[0, :2], torch.stack([row_loc[0, 0], row_loc[1, 3]]), atol=1e-2, rtol=0)
    torch.testing.assert_close(sampled[0, 2:], loc[[0, 11, 3]], atol=1e-2, rtol=0)


def test_neighbour_search():
    torch.manual_seed(14)
    loc = torch.cat([torch.randn(300, 4) + 6 * torch.randn(1, 4) for _ in range(10)])
    scale = torch.rand(3000, 4) * 0.5 + 0.2
    exact = nearest_exemplars(loc, scale, loc, scale, 10, exclude=torch.arange(3000))
    assert not (exact == torch.arange(3000).unsqueeze(1)).any()
    approx, _ = clustered_neighbours(loc, scale, 10)
    recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, approx)) / exact.numel()
    assert recall > 0.7
    assert not (approx == torch.arange(3000).unsqueeze(1)).any()
    # a warm start whose cells the cache has left (all but 3 far from every mean): the
    # empty cells restart at exemplars, so the cells end up populated and the search as good
    stale = torch.cat([loc[:3], torch.full((52, 4), 100.0)])
    lists, centroids = clustered_neighbours(loc, scale, 10, centroids=stale)
    cells = torch.cdist(loc, centroids).argmin(-1).unique()
    assert len(cells) > 40
    again = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, lists)) / exact.numel()
    assert again > 0.7


def test_shared_bandwidth_lists_rank_by_distance_in_bandwidth_units(digits):
    # components N(mu_j, s^2): the best neighbours of i are the nearest means in units of s,
    # whatever the posteriors' own scales (which the cache keeps)
    gae = small_gae(digits, n=200, estimator="knn", neighbours=6, tail=10, bandwidth="shared")
    with torch.no_grad():
        gae.bandwidth.log_scale.copy_(torch.tensor([-1.0, 0.0, 1.5]))
    gae.refresh(exact=True)
    loc, s = gae.bank.loc, gae.bandwidth.scale.detach()
    dist2 = torch.cdist(loc / s, loc / s).pow(2).fill_diagonal_(math.inf)
    expected = dist2.topk(6, largest=False).indices
    assert torch.equal(gae.bank.neighbours, expected)
    # the per-step improvement ranks the same way: it keeps the exact lists as they are
    index = torch.arange(0, 200, 7)
    kept = gae.bank.improved_neighbours(index, torch.arange(200), gae.bandwidth.scale.detach())
    assert torch.equal(kept, expected[index])
    # ranked by the posteriors instead, the lists differ (the test can tell them apart)
    assert not torch.equal(nearest_exemplars(loc, gae.bank.scale, loc, gae.bank.scale, 6,
                                             exclude=torch.arange(200)), expected)


def test_state_dict_round_trip_restores_the_cache(digits):
    gae = small_gae(digits, estimator="knn", neighbours=8, tail=10)
    gae.refresh()
    other = small_gae(digits, seed=1, estimator="knn", neighbours=8, tail=10)
    other.load_state_dict(gae.state_dict())
    assert torch.equal(other.bank.neighbours, gae.bank.neighbours) and bool(other.bank.listed)
    torch.testing.assert_close(other.bank.w, gae.bank.w)  # derived features rebuilt on load
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


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_give_clear_errors(digits):
    x = digits.train[:20]
    with pytest.raises(ValueError, match="lambda1 must be a finite number >= 0"):
        GAE(x, lambda1=-0.1)
    with pytest.raises(ValueError, match="lambda2"):
        GAE(x, lambda2=float("nan"))
    with pytest.raises(ValueError, match="training set, which has 0"):
        GAE(x[:0])
    with pytest.raises(ValueError, match=r"\(n, x_dim\)"):
        GAE(x[0])
    with pytest.raises(ValueError, match="unknown exemplar estimator"):
        GAE(x, estimator="all")
    with pytest.raises(ValueError, match=r"unknown exemplar bandwidth 'fixed': choose one of \['posterior'"):
        GAE(x, bandwidth="fixed")
    gae = GAE(x, z_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="63 columns"):
        gae.model(x[:, :63])
    with pytest.raises(ValueError, match=r"index must have shape \(4,\)"):
        gae.model(x[:4], torch.arange(3), 20)
    with pytest.raises(ValueError, match="num_data = 50"):
        gae.model(x[:4], torch.arange(4), 50)
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        gae.model(x[:4], torch.tensor([0, 1, 2, 20]), 20)
    from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder

    with pytest.raises(ValueError, match="encoder maps"):
        GAE(x, z_dim=3, guide=DiagonalNormalGuide(GaussianEncoder(64, 2)))
    with pytest.raises(ValueError, match="data must be an"):
        gae.log_likelihood(x[0])


def test_config_errors(digits):
    bad = Config.from_dict({"model": {"name": "gae", "lambda1": -1.0}})
    with pytest.raises(ConfigError, match="lambda1"):
        build_model(bad, digits)
    with pytest.raises(ConfigError, match="GAE settings"):
        build_model(Config.from_dict({"model": {"name": "vae", "lambda2": 0.5}}), digits)
    # GAE settings left at None stay out of a VAE's TOML
    assert "lambda1" not in Config().to_toml()
    gae = build_model(Config.from_dict({"model": {"name": "gae", "exemplar_neighbours": 4,
                                                  "exemplar_estimator": "random"}}), digits)
    assert gae.estimator == "random" and gae.bank.num_neighbours == 4
    with pytest.raises(ConfigError, match="unknown exemplar bandwidth"):
        build_model(Config.from_dict({"model": {"name": "gae", "exemplar_bandwidth": "isotropic"}}), digits)


# ----------------------------------------------------------------------------- figures


def test_gae_figures(digits, tmp_path):
    from pyro_vae import plots

    gae = small_gae(digits, estimator="exact")
    gae2 = GAE(digits.train[:N], z_dim=2, hidden=(8, 8))
    torch.manual_seed(15)
    p = plots.latent_kde({"prior": lambda z: gae2.log_prior(z), "codes": torch.randn(300, 2)},
                         tmp_path / "kde.png", points={"codes": torch.randn(20, 2)}, resolution=40)
    assert p.stat().st_size > 0
    p = plots.samples_side_by_side({"GAE": gae.sample(16), "VAE": torch.rand(16, 64)}, (8, 8), tmp_path / "s.png")
    assert p.stat().st_size > 0
    with pytest.raises(ValueError, match="panels is empty"):
        plots.latent_kde({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"finite \(n >= 2, 2\)"):
        plots.latent_kde({"bad": torch.randn(10, 3)}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="returned"):
        plots.latent_kde({"bad": lambda z: z}, tmp_path / "x.png", resolution=5)
    with pytest.raises(ValueError, match="lie in"):
        plots.samples_side_by_side({"bad": torch.full((4, 64), 2.0)}, (8, 8), tmp_path / "x.png")


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_interrupted_gae_run_resumes_to_the_same_parameters(tmp_path, monkeypatch, bandwidth):
    """The cache, neighbour lists, k-means cells and deferred gradients are saved with
    the module: a run interrupted mid-epoch and resumed ends bit for bit where an
    uninterrupted one does."""
    from pyro_vae import checkpoint
    from pyro_vae.inference.svi import SVI
    from pyro_vae.models import exemplars
    from pyro_vae.train import train

    monkeypatch.setattr(exemplars, "EXACT_SEARCH", 100)  # exercise the clustered search
    config = Config.from_dict({
        "data": {"name": "digits", "binarize": "static", "batch_size": 200},
        "model": {"name": "gae", "z_dim": 2, "hidden": [16], "exemplar_neighbours": 6, "exemplar_tail": 40,
                  "exemplar_refresh": 4, "exemplar_bandwidth": bandwidth},
        "budget": {"epochs": 2}, "eval": {"num_samples": 0, "plots": False},
    })
    train(config, tmp_path / "whole", progress=False)
    real_step, calls = SVI.step, []

    def step(self, *args):
        calls.append(1)
        if len(calls) == 9:  # in the second epoch (6 steps per epoch)
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(SVI, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(SVI, "step", real_step)
    train(config, tmp_path / "cut", progress=False)
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "cut"))
    assert a["state"]["step"] == b["state"]["step"] == 12
    for name, tensor in a["module"].items():
        assert torch.equal(tensor, b["module"][name]), name
    grads = a["module"]["bank.grad_loc" if bandwidth == "shared" else "bank.grad_w"]
    assert a["module"]["bank.clustered"] and grads.abs().sum() > 0
