"""Monte Carlo EM: it learns, the M-step touches only θ, the E-step's chains persist per
point and come out as ArviZ data, and discrete latents are refused."""

import copy

import arviz as az
import numpy as np
import pyro
import pytest
import torch

from toy_models import BernoulliLatent, LinearGaussian, changed, fresh_vae, run_steps, snapshot

from pyro_vae.config import ConfigError
from pyro_vae.hmc import summarize_chains
from pyro_vae.inference import MCEM
from pyro_vae.train import make_inference


def test_mcem_raises_the_log_joint_and_the_elbo_in_a_few_steps(digits):
    vae = fresh_vae()
    mcem = make_inference(vae, "mcem", optimizer="adam", lr=3e-3)
    before = mcem.evaluate(digits.valid)["elbo"]
    outs = run_steps(mcem, digits, 24)
    assert np.mean([o["log_joint"] for o in outs[-4:]]) > np.mean([o["log_joint"] for o in outs[:4]]) + 5.0
    assert mcem.evaluate(digits.valid)["elbo"] > before + 5.0  # the guide fitted on the side
    accept = np.mean([o["accept_prob"] for o in outs[-8:]])
    assert 0.75 < accept < 0.99  # the step size is tuned toward 90%


def test_m_step_updates_only_the_model_and_the_guide_is_not_needed(digits):
    vae = fresh_vae()
    mcem = MCEM(vae, "adam", 1e-2, fit_guide=False)
    theta, phi = list(vae.decoder.parameters()), list(vae.guide.parameters())
    t0, p0 = snapshot(theta), snapshot(phi)
    x, index = digits.train[:100], torch.arange(100, 200)
    out = mcem.step(x, index, len(digits.train))
    assert all(changed(t0, theta)) and not any(changed(p0, phi))
    assert np.isfinite(out["elbo"])  # still reported, with the untrained guide
    # One chain per training point, moved only where the batch is.
    assert mcem.visited.sum().item() == 100 and mcem.visited[100:200].all()
    assert (mcem.chains[:, :100] == 0).all() and (mcem.chains[:, 100:200] != 0).any()
    before = mcem.chains.clone()
    mcem.e_step(x, index, len(digits.train))
    moved = (mcem.chains != before).any(-1)
    assert moved[:, 100:200].float().mean() > 0.5 and not moved[:, :100].any()


def test_e_step_samples_the_exact_posterior_of_a_linear_gaussian_model():
    """MCEM's own E-step (persistent chains, step size tracked toward 90%), run without
    M-steps on a conjugate model: its draws have the posterior's moments."""
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    torch.manual_seed(0)
    x = model.decoder(torch.randn(20, 2)).detach() + 0.5 * torch.randn(20, 5)
    mcem = MCEM(model, "adam", 1e-3, num_chains=4, fit_guide=False)
    pyro.set_rng_seed(0)
    index, draws = torch.arange(20), []
    for t in range(250):
        mcem.e_step(x, index, 20)
        if t >= 50:
            draws.append(mcem.chains.clone())  # (4, 20, 2)
    z = torch.cat(draws)  # (4 * 200, 20, 2)
    mu, cov = model.posterior(x)
    assert (z.mean(0) - mu).abs().max() < 0.1
    centred = (z - mu).reshape(-1, 2)
    assert (centred.T @ centred / len(centred) - cov).abs().max() < 0.04
    accept = mcem.e_step_inference_data().sample_stats["accept_prob"].values.mean()
    assert 0.6 < accept <= 1.0 and 0.1 < mcem.sampler.step_size.item() < 2.0


def test_e_step_chains_are_arviz_inference_data(digits):
    vae = fresh_vae()
    mcem = make_inference(vae, "mcem", hmc_steps=3, num_chains=2, optimizer="adam", lr=3e-3)
    assert mcem.e_step_inference_data() is None
    index = torch.arange(10, 60)
    mcem.step(digits.train[10:60], index, len(digits.train))
    idata = mcem.e_step_inference_data()
    assert idata.posterior["z"].shape == (2, 3, 50, 2)
    assert (idata.posterior["point"].values == index.numpy()).all()
    assert set(idata.sample_stats.data_vars) == {"lp", "accept_prob", "diverging", "step_size"}
    assert az.ess(idata)["z"].shape == (50, 2)

    pyro.set_rng_seed(0)
    samples = mcem.sample_posterior(digits.valid[:8], num_draws=60, num_warmup=40, num_chains=3)
    posterior = samples.to_inference_data()
    summary = az.summary(posterior, var_names=["z"])
    assert len(summary) == 8 * 2 and {"r_hat", "ess_bulk"} <= set(summary.columns)
    figures = summarize_chains(posterior)
    assert figures["rhat_max"] < 1.3 and figures["ess_bulk_median"] > 20
    assert figures["divergences"] == 0


def test_pyro_kernel_backend_trains_too(digits):
    vae = fresh_vae()
    mcem = make_inference(vae, "mcem", hmc_backend="pyro", optimizer="adam", lr=3e-3)
    outs = run_steps(mcem, digits, 12)
    assert outs[-1]["log_joint"] > outs[0]["log_joint"]
    with pytest.raises(ConfigError, match="num_chains = 1"):
        make_inference(fresh_vae(), "mcem", hmc_backend="pyro", num_chains=2)
    with pytest.raises(ConfigError, match="hmc_backend"):
        make_inference(fresh_vae(), "mcem", hmc_backend="nuts")


def test_mcem_refuses_discrete_latents():
    pyro.clear_param_store()
    with pytest.raises(ConfigError, match="continuous latents.*'z' is discrete"):
        make_inference(BernoulliLatent(64, 4, 8), "mcem")


class UndeclaredBernoulliLatent(BernoulliLatent):
    capabilities = None  # declares nothing: a plain latent-variable model to the package


def test_mcem_refuses_discrete_latents_of_an_undeclared_model_at_its_first_step(digits):
    """Without a declared event shape there is nothing to probe at construction: the
    first step refuses the discrete latents, with the same sentence."""
    mcem = make_inference(UndeclaredBernoulliLatent(64, 4, 8), "mcem")
    with pytest.raises(ConfigError, match="continuous latents.*'z' is discrete"):
        mcem.step(digits.train[:4].flatten(1), torch.arange(4), len(digits.train))


def test_state_survives_a_checkpoint(digits):
    vae = fresh_vae()
    mcem = MCEM(vae, "adagrad", 0.05)
    run_steps(mcem, digits, 3)
    state, params = copy.deepcopy(mcem.state_dict()), copy.deepcopy(vae.state_dict())
    assert state["chains"].shape == (1, len(digits.train), 2) and state["visited"].sum() == 300
    x, index = digits.train[:100], torch.arange(100)
    pyro.set_rng_seed(3)
    a = mcem.step(x, index, len(digits.train))

    vae2 = fresh_vae(seed=1)  # clears Pyro's param store
    vae2.load_state_dict(params)
    mcem2 = MCEM(vae2, "adagrad", 0.05)
    mcem2.load_state_dict(state)
    pyro.set_rng_seed(3)
    b = mcem2.step(x, index, len(digits.train))
    assert a == b
    torch.testing.assert_close(mcem.chains, mcem2.chains)
