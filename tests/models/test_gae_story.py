"""The GAE's generative story: enumeration against explicit sums, leave-one-out,
responsibilities, generation, exact evaluation against brute force, a plain story that
leaves the training state alone, and bad inputs."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from gae_helpers import (
    N,
    elbo,
    explicit_elbo,
    guide_sample,
    objective,
    own_excluded_log_probs,
    shared_bandwidth,
    sharpen,
    small_gae,
)
from pyro.infer import Predictive, Trace_ELBO

from pyro_vae.evaluation import log_likelihood
from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.inference.annealing import scale_latents
from pyro_vae.models import GAE


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_story_elbo_and_gradients_are_the_explicit_leave_one_out_logsumexp(digits, bandwidth):
    """Training rows (an index): TraceEnum_ELBO on the plain story sums y over the other
    n − 1 exemplars, encoded with gradients: the explicit log-sum-exp, no penalty."""
    gae = small_gae(digits, bandwidth=bandwidth)
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


def test_model_marks_y_for_enumeration_and_declares_it(digits):
    gae = small_gae(digits)
    tr = poutine.trace(gae.model).get_trace(digits.train[:4], torch.arange(4), N)
    assert tr.nodes["y"]["infer"].get("enumerate") == "parallel"
    caps = gae.capabilities
    assert caps.enumerated_latents and caps.has_guide and caps.latent_sites == ("y", "z")
    assert caps.event_shape == (1, 8, 8)


@pytest.mark.parametrize("max_enumerated", [10**9, 7 * N])
def test_held_out_elbo_is_the_full_mixture_grouped_or_not(digits, max_enumerated):
    """Without an index the prior is the mixture over all n (no leave-one-out); with a
    small max_enumerated y enumerates groups, which must give the same value."""
    gae = small_gae(digits, max_enumerated=max_enumerated)
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


def test_collapsed_story_scores_the_same_elbo(digits):
    """y summed out of the story (what the evaluations score): Trace_ELBO on the collapsed
    model is the enumerated ELBO, held out and leave-one-out."""
    gae = small_gae(digits)
    x, index = digits.train[:12], torch.arange(12)
    for args in ((x,), (x, index, N)):
        pyro.set_rng_seed(3)
        enumerated = elbo().loss(gae.model, gae.guide, *args)
        pyro.set_rng_seed(3)
        with torch.no_grad(), gae.collapsed():
            collapsed = Trace_ELBO().loss(gae.model, gae.guide, *args)
        assert collapsed == pytest.approx(enumerated, rel=1e-5)


def test_running_the_story_leaves_the_training_state_unchanged(digits):
    """A plain Trace_ELBO step or Predictive on gae.model: the objective's cache, lists
    and every counter stay as they were (the model holds no training state)."""
    gae = small_gae(digits, n=120)
    obj = objective(gae, "knn", neighbours=5, tail=20)
    opt = torch.optim.Adam(gae.parameters(), lr=1e-3)
    for step in range(3):  # a trained state: cache, lists, deferred gradients, steps
        index = torch.arange(step * 40, step * 40 + 40)
        loss = obj.differentiable_loss(gae.exemplars[index], index, 120)
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = {k: v.clone() for k, v in obj.state_dict().items()}
    pending = len(obj._pending)
    x, index = gae.exemplars[:10], torch.arange(10)
    svi = pyro.infer.SVI(gae.model, gae.guide, pyro.optim.Adam({"lr": 1e-3}), elbo())
    for args in ((x,), (x, index, 120)):
        svi.step(*args)  # Pyro's own SVI step on the enumerated story
        with gae.collapsed():
            Trace_ELBO().differentiable_loss(gae.model, gae.guide, *args)
    Predictive(gae.model, num_samples=3)(None, num_data=4)
    gae.sample(5)
    log_likelihood(gae, x, num_samples=5)
    after = obj.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert len(obj._pending) == pending


def test_story_loss_weighs_the_enumerated_prior_and_the_entropy_by_beta(digits):
    """Under scale_latents(β) (KL warm-up, β-VAE): −ELBO_β − (−ELBO_1) =
    (β − 1) Σ_b [log q(z_b|x_b) − log P_{−b}(z_b)] · n/B: the enumerated data index shares
    the weight with z. (The objective's own β: tests/models/test_gae_objective.py.)"""
    gae = small_gae(digits)
    n = gae.num_exemplars
    index = torch.tensor([3, 17, 42, 5, 59])
    x = gae.exemplars[index]
    pyro.set_rng_seed(3)
    guide_tr = poutine.trace(gae.guide).get_trace(x, index, n)
    replayed = poutine.replay(gae.guide, trace=guide_tr)
    losses = {}
    for beta in (1.0, 0.1):
        with scale_latents(beta):
            losses[beta] = elbo().differentiable_loss(gae.model, replayed, x, index, n)
    z = guide_tr.nodes["z"]["value"]
    log_q = guide_tr.nodes["z"]["fn"].log_prob(z)
    log_prior = own_excluded_log_probs(gae, z, index).logsumexp(-1) - math.log(n - 1)
    expected = (0.1 - 1) * (log_q - log_prior).sum() * n / len(x)
    torch.testing.assert_close(losses[0.1] - losses[1.0], expected, rtol=1e-4, atol=1e-3)


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
        pool = objective(gae, estimator, tail=30).make_pool(index)
        own_shared = pool.rows.unsqueeze(0) == index.unsqueeze(1)
        assert torch.isinf(pool.logits[:, pool.num_near:][own_shared]).all()
        if pool.near is not None:
            assert not (pool.near == index.unsqueeze(1)).any()
        torch.testing.assert_close(pool.logits.logsumexp(-1), torch.zeros(10), atol=1e-5, rtol=0)


def test_exact_components_follow_fused_optimizer_steps(digits):
    """The story encodes the exemplars with the current parameters, also after the
    in-place updates of fused Adam, which do not bump tensor version counters."""
    gae = small_gae(digits)
    with torch.no_grad():
        before = gae.prior.exact_components()[0].clone()
    opt = torch.optim.Adam(gae.parameters(), lr=0.1, fused=True)
    loss = objective(gae).differentiable_loss(gae.exemplars[:10], torch.arange(10), N)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = gae.prior.exact_components()[0]
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
    assert out["y"].shape == (5,) and out["z"].shape == (5, 3) and out["x"].shape == (5, 1, 8, 8)
    pyro.set_rng_seed(8)
    torch.testing.assert_close(gae.sample(5), gae.decoder.mean(out["z"]))


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_log_likelihood_agrees_with_brute_force_integration(bandwidth):
    """1-D latent: log P(x) = log ∫ p(x|z) (1/n) Σ_j q(z|x_j) dz by quadrature (with a
    shared bandwidth s: the components N(μ(x_j), s²)); the one importance sampler scores
    the GAE through its collapsed story."""
    torch.manual_seed(10)
    exemplars = (torch.rand(5, 6) < 0.5).float()
    gae = GAE(exemplars, z_dim=1, hidden=(8,), bandwidth=bandwidth)
    if bandwidth == "shared":
        with torch.no_grad():
            gae.bandwidth.log_scale.fill_(-0.6)
    x = (torch.rand(4, 6) < 0.5).float()
    grid = torch.linspace(-12, 12, 48001).unsqueeze(-1)
    with torch.no_grad():
        log_joint = gae.decoder(grid.unsqueeze(-2)).log_prob(x) + gae.log_prior(grid).unsqueeze(-1)
        brute = log_joint.logsumexp(0) + math.log(grid[1, 0] - grid[0, 0])
    pyro.set_rng_seed(10)
    ll = log_likelihood(gae, x, num_samples=20000, chunk_size=5000)
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
    gae = small_gae(digits)
    x = digits.test[:10]
    pyro.set_rng_seed(11)
    ll = log_likelihood(gae, x, num_samples=200)
    assert ll.num_samples == 200 and ll.per_point.shape == (10,)
    pyro.set_rng_seed(11)
    with torch.no_grad():
        elbo_value = -elbo().loss(gae.model, gae.guide, x) / 10
    assert ll.mean > elbo_value - 1.0  # K = 200 beats K = 1 up to noise


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_give_clear_errors(digits):
    x = digits.train[:20]
    with pytest.raises(ValueError, match="training set, which has 0"):
        GAE(x[:0])
    with pytest.raises(ValueError, match="training set, which has 1 point"):
        GAE(x[:1])
    with pytest.raises(ValueError, match=r"\(n, \*event_shape\)"):
        GAE(x[0, 0, 0])
    with pytest.raises(ValueError, match=r"unknown exemplar bandwidth 'fixed': choose one of \['posterior'"):
        GAE(x, bandwidth="fixed")
    gae = GAE(x, z_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"event_shape \(1, 8, 8\).*\(1, 8, 7\)"):
        gae.model(x[..., :7])
    with pytest.raises(ValueError, match=r"index must have shape \(4,\)"):
        gae.model(x[:4], torch.arange(3), 20)
    with pytest.raises(ValueError, match="num_data = 50"):
        gae.model(x[:4], torch.arange(4), 50)
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        gae.model(x[:4], torch.tensor([0, 1, 2, 20]), 20)
    with pytest.raises(ValueError, match="encoder maps"):
        GAE(x, z_dim=3, guide=DiagonalNormalGuide(GaussianEncoder(64, 2)))
    with pytest.raises(ValueError, match="data must be an"):
        log_likelihood(gae, x[0, 0, 0])


# ----------------------------------------------------------------------------- figures


def test_gae_figures(digits, tmp_path):
    from pyro_vae import plots

    gae = small_gae(digits)
    gae2 = GAE(digits.train[:N], z_dim=2, hidden=(8, 8))
    torch.manual_seed(15)
    p = plots.latent_kde({"prior": lambda z: gae2.log_prior(z), "codes": torch.randn(300, 2)},
                         tmp_path / "kde.png", points={"codes": torch.randn(20, 2)}, resolution=40)
    assert p.stat().st_size > 0
    p = plots.samples_side_by_side({"GAE": gae.sample(16).reshape(16, 64), "VAE": torch.rand(16, 64)}, (8, 8),
                                   tmp_path / "s.png")
    assert p.stat().st_size > 0
    with pytest.raises(ValueError, match="panels is empty"):
        plots.latent_kde({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"finite \(n >= 2, 2\)"):
        plots.latent_kde({"bad": torch.randn(10, 3)}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="returned"):
        plots.latent_kde({"bad": lambda z: z}, tmp_path / "x.png", resolution=5)
    with pytest.raises(ValueError, match="lie in"):
        plots.samples_side_by_side({"bad": torch.full((4, 64), 2.0)}, (8, 8), tmp_path / "x.png")
