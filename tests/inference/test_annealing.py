"""The β-weighted ELBO and its warm-up: exact against hand-computed terms for the VAE
(analytic KL; the GAE's case, with its enumerated mixture prior, waits in
``tests/models/test_gae_annealing_pending.py``), the schedule through the training loop
and resume, and the settings that are refused."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from toy_models import DIGITS_SHAPE

from pyro_vae.config import Config, ConfigError
from pyro_vae.inference.annealing import kl_weight_at, scale_latents
from pyro_vae.models import VAE
from pyro_vae.registry import build_inference
from pyro_vae.train import train

FAST = ["model.hidden=[32]", "eval.num_samples=0", "eval.plots=false"]


def weighted_loss(elbo, module, x, *args, beta, guide=None):
    with scale_latents(beta):
        return elbo.differentiable_loss(module.model, guide or module.guide, x, *args)


def test_vae_loss_weighs_the_analytic_kl_by_beta(digits):
    torch.manual_seed(0)
    vae = VAE(DIGITS_SHAPE, 3, (16,), "tanh")
    x, index, n = digits.train[:20], torch.arange(20), len(digits.train)
    elbo = TraceMeanField_ELBO()
    losses = {}
    for beta in (1.0, 0.25, 3.0):
        pyro.set_rng_seed(7)  # the same z for every β
        losses[beta] = weighted_loss(elbo, vae, x, index, n, beta=beta)
    loc, scale = vae.guide.encoder(x)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum() * n / len(x)
    for beta in (0.25, 3.0):  # −ELBO_β = −E log p(x|z) + β KL
        torch.testing.assert_close(losses[beta] - losses[1.0], (beta - 1) * kl, rtol=1e-4, atol=1e-3)


def test_schedule_rises_linearly_to_the_weight_and_never_starts_at_zero():
    assert [kl_weight_at(e, 1.0, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [kl_weight_at(e, 2.0, 0) for e in range(3)] == [2.0, 2.0, 2.0]
    assert kl_weight_at(0, 0.5, 2) == 0.25


def test_training_loop_follows_the_schedule_across_a_resume(tmp_path):
    cfg = Config().with_overrides(FAST + ["budget.epochs=2", "inference.warmup_epochs=4"])
    exp, state = train(cfg, tmp_path, progress=False)
    assert exp.inference.beta == 0.5  # epoch 2 of 4 (the last one trained)
    exp, state = train(cfg.with_overrides(["budget.epochs=3"]), tmp_path, progress=False)
    assert state.epoch == 3 and exp.inference.beta == 0.75
    # the validation ELBO is the plain ELBO: the same parameters score the same at any β
    x = exp.data.valid
    torch.testing.assert_close(torch.tensor(exp.inference.evaluate(x)["elbo"]),
                               torch.tensor(build_inference(cfg, exp.module).evaluate(x)["elbo"]), rtol=1e-3, atol=0.2)


def test_beta_vae_training_trades_reconstruction_for_a_smaller_kl(tmp_path):
    """β = 8 (a β-VAE) ends with posteriors far closer to the prior than β = 1."""
    kls = {}
    for beta in (1.0, 8.0):
        cfg = Config().with_overrides(FAST + ["model.z_dim=4", "budget.epochs=5", f"inference.kl_weight={beta}"])
        exp, _ = train(cfg, tmp_path / str(beta), progress=False)
        with torch.no_grad():
            loc, scale = exp.module.guide.encoder(exp.data.valid)
        kls[beta] = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum(-1).mean()
    assert kls[8.0] < 0.5 * kls[1.0]


@pytest.mark.parametrize("overrides,match", [
    (["inference.kl_weight=0"], r"kl_weight \(β\) must be a finite number > 0"),
    (["inference.warmup_epochs=-1"], "warmup_epochs must be an integer >= 0"),
    (["inference.warmup_epochs=5", "inference.elbo=jit_meanfield"], "use elbo = 'meanfield'"),
    (["inference.warmup_epochs=5", "inference.name=wake_sleep"],
     r"unknown key\(s\) \['warmup_epochs'\] for name = 'wake_sleep' \('warmup_epochs' belongs to 'iwae', 'svi'\)"),
])
def test_bad_annealing_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        train(Config().with_overrides(FAST + overrides), tmp_path, progress=False)


def test_scale_latents_refuses_a_non_positive_weight():
    with pytest.raises(ValueError, match="finite number > 0"):
        scale_latents(0.0)
