"""The VAE as a plain Pyro model and guide: shapes, plates, interop, ELBO estimators."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from pyro_vae import VAE
from pyro_vae.models import StandardNormal


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_shapes_of_model_and_guide_sites(likelihood):
    vae = VAE(64, z_dim=3, hidden=(16, 8), likelihood=likelihood)
    x = torch.rand(5, 64).round()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (5, 3)
    assert model_tr.nodes["x"]["fn"].event_shape == (64,)
    assert model_tr.nodes["x"]["fn"].batch_shape == (5,)
    assert vae.sample(7).shape == (7, 64) and vae.reconstruct(x).shape == (5, 64)
    assert len(list(vae.decoder.body)) == 4  # two hidden layers, each Linear + activation


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_image_event_shapes_are_kept_by_the_sites(network):
    """Data of event shape (C, H, W): x's site has that event shape (one point per row),
    samples and reconstructions come back as images."""
    vae = VAE((1, 8, 8), z_dim=3, hidden=(16,), network=network)
    x = torch.rand(5, 1, 8, 8).round()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (5, 3)
    assert model_tr.nodes["x"]["fn"].event_shape == (1, 8, 8) and model_tr.nodes["x"]["fn"].batch_shape == (5,)
    assert vae.sample(7).shape == (7, 1, 8, 8) and vae.reconstruct(x).shape == (5, 1, 8, 8)
    assert vae.capabilities.event_shape == (1, 8, 8) and vae.capabilities.latent_sites == ("z",)
    with pytest.raises(ValueError, match=r"event_shape \(1, 8, 8\), got shape \(5, 64\)"):
        vae.model(x.flatten(1))


def test_standard_normal_prior_component_scores_and_emits_z():
    prior = StandardNormal(3)
    z = torch.randn(4, 3)
    torch.testing.assert_close(prior.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1))
    assert not prior.enumerated and prior.latent_sites == ("z",)
    assert dict(prior.state_dict()) == {}  # buffers only, not saved: checkpoints hold no prior
    tr = poutine.trace(lambda: prior(4)).get_trace()
    assert tr.nodes["z"]["fn"].event_shape == (3,) and tr.nodes["z"]["value"].shape == (4, 3)


def test_gated_layers_keep_their_widths_and_gate_half_the_linear_output():
    vae = VAE(64, z_dim=3, hidden=(16, 8), activation="glu")
    linear, gate = vae.decoder.body[0], vae.decoder.body[1]
    assert linear.out_features == 32 and vae.decoder.body[2].in_features == 16
    z = torch.randn(5, 3)
    a, b = linear(z).chunk(2, -1)
    torch.testing.assert_close(gate(linear(z)), a * torch.sigmoid(b))
    assert vae.guide.encoder(torch.rand(5, 64).round())[0].shape == (5, 3)


def test_minibatch_plate_scales_log_likelihood_by_data_size():
    vae = VAE(64, z_dim=2, hidden=(8,))
    x = torch.rand(4, 64).round()
    full = poutine.trace(vae.model).get_trace(x)
    mini = poutine.trace(poutine.replay(vae.model, trace=full)).get_trace(x, torch.arange(4), 100)
    full.compute_log_prob()
    mini.compute_log_prob()
    assert mini.nodes["x"]["scale"] == 25.0
    torch.testing.assert_close(mini.nodes["x"]["log_prob_sum"], 25 * full.nodes["x"]["log_prob_sum"])


def test_plain_pyro_svi_and_predictive_work_on_model_and_guide(digits):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(digits.event_shape, z_dim=2, hidden=(64,))
    svi = SVI(vae.model, vae.guide, Adam({"lr": 3e-3}), Trace_ELBO())
    x = digits.train[:256]
    first = sum(svi.step(x) for _ in range(5)) / 5
    for _ in range(40):
        svi.step(x)
    last = sum(svi.step(x) for _ in range(5)) / 5
    assert last < first - 0.05 * abs(first)
    post = Predictive(vae.model, guide=vae.guide, num_samples=3)(x[:10])
    assert post["z"].shape == (3, 10, 2) and post["x"].shape == (3, 10, 1, 8, 8)
    prior = Predictive(vae.model, num_samples=2)(None, num_data=6)
    assert set(prior["x"].unique().tolist()) <= {0.0, 1.0} and prior["x"].shape == (2, 6, 1, 8, 8)


def test_trace_and_meanfield_elbo_agree_in_expectation(digits):
    """Estimators A and B are unbiased for the same ELBO; B has lower variance."""
    pyro.set_rng_seed(1)
    vae = VAE(digits.event_shape, z_dim=4, hidden=(32,))
    x = digits.train[:50]
    with torch.no_grad():
        a = torch.tensor([Trace_ELBO().loss(vae.model, vae.guide, x) for _ in range(400)])
        b = torch.tensor([TraceMeanField_ELBO().loss(vae.model, vae.guide, x) for _ in range(400)])
    stderr = (a.var() / len(a) + b.var() / len(b)).sqrt()
    assert abs(a.mean() - b.mean()) < 4 * stderr
    assert b.var() < a.var()


def test_model_refuses_bad_shapes():
    vae = VAE(64, z_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"\(batch, \*event_shape\)"):
        vae.model(torch.zeros(64))
    with pytest.raises(ValueError, match="num_data"):
        vae.model(None)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(64, likelihood="poisson")
    with pytest.raises(ValueError, match="activation"):
        VAE(64, activation="swish")
