"""The latent-term regularisers (DIP-VAE, capacity annealing): the penalty against a
brute-force covariance, the objectives that take them (VAE, GAE), checkpoints, refusals."""

import numpy as np
import pyro
import pytest
import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config, ConfigError
from pyro_vae.inference.regularisers import Capacity, DIPVAE, make_regulariser
from pyro_vae.loop import Loop
from pyro_vae.models.vae import MeanFieldELBO
from pyro_vae.train import build, train
from tests.models.gae_helpers import objective, small_gae
from tests.toy_models import fresh_vae

B, N, L = 7, 300, 3
FAST = ["model.hidden=[16]", "model.z_dim=3", "eval.num_samples=0", "eval.plots=false", "data.batch_size=50"]


def statistics(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, generator=g, dtype=torch.float64), torch.rand(B, L, generator=g, dtype=torch.float64) + 0.2


def brute_force(loc, scale, kind, lambda_od, lambda_d):
    """The penalty from numpy's covariance (bias: divided by B) and explicit loops."""
    mu, sigma = loc.numpy(), scale.numpy()
    cov = np.cov(mu, rowvar=False, bias=True)
    if kind == "ii":
        cov = cov + np.diag((sigma ** 2).mean(0))
    off = sum(cov[i, j] ** 2 for i in range(L) for j in range(L) if i != j)
    return lambda_od * off + lambda_d * sum((cov[i, i] - 1) ** 2 for i in range(L))


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_penalty_equals_a_brute_force_covariance(kind):
    loc, scale = statistics()
    reg = DIPVAE(kind, lambda_od=2.0, factor=3.0)
    assert reg.lambda_d == 6.0
    expected = brute_force(loc, scale, kind, 2.0, 6.0)
    assert float(reg.penalty(reg.covariance(loc, scale))) == pytest.approx(expected, rel=1e-12)
    kl = torch.tensor(1.5, dtype=torch.float64)
    assert float(reg(kl, loc, scale, beta=0.5)) == pytest.approx(0.75 + expected, rel=1e-12)


def test_dip_factor_defaults_follow_the_kind():
    assert DIPVAE("i", 10.0).lambda_d == 100.0 and DIPVAE("ii", 10.0).lambda_d == 10.0


def test_dip_gradients_reach_loc_and_scale_as_the_moments_say():
    loc, scale = (t.requires_grad_() for t in statistics())
    reg = DIPVAE("ii", 1.0, 1.0)
    reg.penalty(reg.covariance(loc, scale)).backward()
    loc2, scale2 = (t.detach().clone().requires_grad_() for t in (loc, scale))
    mu = loc2 - loc2.mean(0)
    cov = mu.T @ mu / B + torch.diag(scale2.pow(2).mean(0))
    off = cov - torch.diag(torch.diagonal(cov))
    (off.pow(2).sum() + (torch.diagonal(cov) - 1).pow(2).sum()).backward()
    torch.testing.assert_close(loc.grad, loc2.grad)
    torch.testing.assert_close(scale.grad, scale2.grad)


def _loss(objective, x, beta=1.0, seed=1):
    torch.manual_seed(seed)
    return objective.differentiable_loss(x, torch.arange(len(x)), N, beta=beta)


def test_vae_objective_adds_n_times_the_penalty_to_the_beta_weighted_loss(digits):
    vae, x = fresh_vae(z_dim=L), digits.train[:B]
    reg = DIPVAE("i", 5.0)
    loc, scale = vae.guide.encoder(x)
    expected = _loss(MeanFieldELBO(vae), x, beta=2.0) + N * reg.penalty(reg.covariance(loc, scale))
    torch.testing.assert_close(_loss(MeanFieldELBO(vae, regulariser=reg), x, beta=2.0), expected)


def test_capacity_replaces_the_kl_term_and_anneals_with_the_steps(digits):
    vae, x = fresh_vae(z_dim=L), digits.train[:B]
    reg = Capacity(capacity_max=4.0, steps=2, gamma=10.0)
    objective = MeanFieldELBO(vae, regulariser=reg)
    loc, scale = vae.guide.encoder(x)
    kl_mean = vae.prior.kl(loc, scale).mean()
    log_lik = -_loss(MeanFieldELBO(vae), x, beta=1e-30) / (N / B)  # the likelihood term alone, same draws
    for capacity in (0.0, 2.0, 4.0, 4.0):
        assert reg.capacity() == capacity
        expected = -(N / B) * log_lik + N * 10.0 * (kl_mean - capacity).abs()
        torch.testing.assert_close(_loss(objective, x), expected, rtol=1e-5, atol=1e-3)
    with torch.no_grad():  # an evaluation is not a training step
        _loss(objective, x)
    assert int(reg.steps) == 4 and objective.state_dict() == {"regulariser": {"steps": torch.tensor(4)}}
    fresh = MeanFieldELBO(vae, regulariser=Capacity(4.0, 2, 10.0))
    fresh.load_state_dict(objective.state_dict())
    assert fresh.regulariser.capacity() == 4.0


def test_gae_objective_takes_the_regulariser_through_the_same_hook(digits):
    gae = small_gae(digits)
    x, index = digits.train[:B], torch.arange(B)
    reg = DIPVAE("ii", 3.0)
    plain, regularised = objective(gae), objective(gae, regulariser=reg)
    loc, scale = gae.guide.encoder(x)
    losses = []
    for o in (plain, regularised):
        torch.manual_seed(2)
        losses.append(o.differentiable_loss(x, index, 60, beta=0.7))
    torch.testing.assert_close(losses[1], losses[0] + 60 * reg.penalty(reg.covariance(loc, scale)))


@pytest.mark.parametrize("regulariser", ["dip_vae_i", "dip_vae_ii", "capacity"])
def test_config_builds_the_regulariser_for_the_vae_and_the_gae(regulariser):
    for model in (["model.name=vae"], ["model.name=gae", "model.neighbours=4", "data.binarize=static"]):
        exp = build(Config().with_overrides(FAST + model + [f"inference.regulariser={regulariser}"]))
        assert type(exp.inference.objective.regulariser) is (Capacity if regulariser == "capacity" else DIPVAE)


def test_an_interrupted_capacity_run_resumes_exactly(tmp_path, monkeypatch):
    """The capacity's step count is checkpointed with the objective: a run interrupted
    after an epoch resumes to the uninterrupted run's parameters, bit for bit."""
    cfg = Config().with_overrides(FAST + ["inference.regulariser=capacity", "inference.capacity_steps=30",
                                          "inference.capacity_max=5.0", "budget.epochs=3"])
    whole_exp, _ = train(cfg, tmp_path / "whole", progress=False)
    saves, real_save = [], Loop._save

    def save_then_stop(self):
        real_save(self)
        saves.append(1)
        if len(saves) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Loop, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(Loop, "_save", real_save)
    cut_exp, _ = train(cfg, tmp_path / "cut", progress=False)
    for name, t in whole_exp.module.state_dict().items():
        assert torch.equal(t, cut_exp.module.state_dict()[name]), name
    state = checkpoint.load(tmp_path / "cut" / "checkpoint.pt")
    assert int(state["inference"]["objective"]["regulariser"]["steps"]) == state["state"]["step"]


@pytest.mark.parametrize("override,match", [
    ("inference.kl_weight=-1.0", r"kl_weight \(β\) must be a finite number > 0"),
    ("inference.dip_lambda_od=-0.5", r"dip_lambda_od \(λ_od\) must be a finite number >= 0"),
    ("inference.dip_factor=-2.0", r"dip_factor \(λ_d / λ_od\) must be a finite number >= 0"),
    ("inference.capacity_steps=0", r"capacity_steps \(T\) must be an integer >= 1"),
    ("inference.capacity_gamma=-1.0", r"capacity_gamma \(γ\) must be a finite number >= 0"),
    ("model.z_dim=0", "z_dim must be >= 1"),
])
def test_bad_settings_are_refused_with_their_name(override, match):
    reg = "capacity" if "capacity" in override else "dip_vae_i"
    with pytest.raises(ConfigError, match=match):
        build(Config().with_overrides(FAST + [f"inference.regulariser={reg}", override]))


@pytest.mark.parametrize("overrides,match", [
    (["inference.regulariser=dip_vae_iii"], "unknown: choose one of"),
    (["inference.regulariser=dip_vae_i", "inference.elbo=meanfield"], 'use elbo = "auto"'),
    (["inference.regulariser=dip_vae_i", "model.name=hvae"], 'name = "vae" or "gae"'),
    (["inference.regulariser=capacity", "inference.kl_weight=4.0"], "leave kl_weight = 1"),
    (["inference.regulariser=capacity", "inference.warmup_epochs=3"], "warmup_epochs = 0"),
])
def test_regularisers_are_refused_where_they_do_not_apply(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build(Config().with_overrides(FAST + overrides))


def test_a_latent_of_size_0_or_an_empty_batch_gets_a_clear_error():
    with pytest.raises(ValueError, match="latent has size 0"):
        DIPVAE("i", 1.0).covariance(torch.zeros(4, 0), torch.ones(4, 0))
    with pytest.raises(ValueError, match="empty minibatch"):
        DIPVAE("ii", 1.0).covariance(torch.zeros(0, 2), torch.ones(0, 2))
    with pytest.raises(ValueError, match="kind must be 'i' or 'ii'"):
        DIPVAE("iii", 1.0)
    assert make_regulariser(object()) is None  # an algorithm without the setting
