"""Flows inside latent-variable models: the IAF posterior (``[guide] name = "iaf"``) and the
MAF prior (``[model] prior = "maf"``). The IAF's log q is the change of variables, the
objective ``elbo = "auto"`` picks for them is ``Trace_ELBO``'s (values and gradients), both
train from a TOML file on the digits, their importance-sampled log-likelihood bounds their
ELBO from above, and the GAE refuses them with the reason."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.config import Config, ConfigError
from pyro_vae.evaluation import log_likelihood
from pyro_vae.evaluation.marginal_likelihood import elbo_per_point
from pyro_vae.guides import GaussianEncoder, IAFGuide
from pyro_vae.inference.base import PyroELBO
from pyro_vae.models.vae import MAFPrior, MeanFieldELBO, MonteCarloELBO
from pyro_vae.registry import build_inference, build_model
from pyro_vae.train import train

Z = 3
B, N = 12, 500


def _perturbed(module, scale=0.2, seed=1):
    """``module`` with every parameter moved off its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _iaf(steps=3, x_dim=6):
    pyro.set_rng_seed(0)
    return _perturbed(IAFGuide(GaussianEncoder(x_dim, Z, (16,), "tanh"), steps, [8, 8], context_dim=4, act="tanh"))


def _brute_force_log_q(guide, x, eps):
    """log N(ε) − log |det ∂z_T/∂ε| for one row, the Jacobian by autograd through the whole
    map ε -> z_0 -> z_T (encoder at ``x`` fixed)."""
    def z_of(e):
        loc, scale = guide.encoder(x)
        z = loc + scale * e
        h = guide.context(guide.encoder.body(x))
        for step in guide.steps:
            z = step.condition(h)(z)
        return z[0]

    jac = torch.autograd.functional.jacobian(z_of, eps[None])[:, 0, :]
    log_base = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum()
    return z_of(eps[None]), log_base - torch.linalg.slogdet(jac).logabsdet


def test_the_iaf_guides_log_q_is_the_change_of_variables():
    guide = _iaf().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    q = guide.distribution(x)
    z = q.rsample()
    own = q.log_prob(z)  # the draw's own forward pass (cached): what the ELBO scores
    fresh = guide.distribution(x).log_prob(z.clone())  # a z it did not draw: the steps inverted
    loc, scale = guide.encoder(x)
    for i in range(len(x)):
        eps = _recover_eps(guide, x[i:i + 1], z[i])
        z_i, expected = _brute_force_log_q(guide, x[i:i + 1], eps)
        torch.testing.assert_close(z_i, z[i])
        torch.testing.assert_close(own[i], expected)
        torch.testing.assert_close(fresh[i], expected)
    assert loc.shape == scale.shape == (5, Z)
    # three steps of a perturbed network: a real change of volume, not the identity
    base_only = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    assert (own - base_only).abs().max() > 1e-2


def _recover_eps(guide, x, z):
    """ε of the draw ``z``: the steps inverted, then the base standardised."""
    h = guide.context(guide.encoder.body(x))
    u = z[None]
    for step in reversed(guide.steps):
        u = step.condition(h).inv(u.clone())
    loc, scale = guide.encoder(x)
    return ((u - loc) / scale)[0]


def test_the_iaf_guide_draws_particles_in_an_outer_plate_and_zero_steps_is_the_diagonal_guide():
    guide = _iaf()
    x = torch.randn(4, 6)
    q = guide.distribution(x)
    z = q.rsample((7,))
    assert z.shape == (7, 4, Z) and q.log_prob(z).shape == (7, 4)
    plain = IAFGuide(guide.encoder, steps=0)
    loc, scale = guide.encoder(x)
    torch.testing.assert_close(plain.distribution(x).log_prob(loc), torch.distributions.Normal(loc, scale)
                               .log_prob(loc).sum(-1))
    with pytest.raises(ValueError, match="at least as wide as z_dim"):
        IAFGuide(guide.encoder, 2, [2])
    with pytest.raises(ValueError, match="flow_steps must be an integer >= 0"):
        IAFGuide(guide.encoder, -1)


def test_the_maf_prior_scores_z_by_the_change_of_variables_and_emits_z():
    prior = _perturbed(MAFPrior(Z, num_flows=2, hidden=[8])).double()
    z = torch.randn(4, Z, dtype=torch.float64)
    base = torch.distributions.Normal(0.0, 1.0)

    def u_of(v):
        u = v
        for layer in prior.flow.layers:
            u = layer(u)
        return u

    for i in range(4):
        jac = torch.autograd.functional.jacobian(u_of, z[i])
        expected = base.log_prob(u_of(z[i])).sum() + torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(prior.log_prob(z[i:i + 1])[0], expected)
    with pyro.plate("data", 6):
        draws = prior(6)
    assert draws.shape == (6, Z)


# ----------------------------------------------------------------------------- the objective auto picks

def _vae(overrides, digits):
    config = Config().with_overrides([f"model.z_dim={Z}", "model.hidden=[32]", "guide.flow_hidden=[16]",
                                      "model.prior_hidden=[16]", *overrides])
    pyro.set_rng_seed(0)
    return config, _perturbed(build_model(config, digits), 0.05)


def _loss_and_grads(objective, vae, x, index, beta, seed=5):
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = objective.differentiable_loss(x, index, N, beta=beta)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("flow", [["guide.name=iaf"], ["model.prior=maf"], ["guide.name=iaf", "model.prior=maf"]])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_auto_trains_a_flow_guide_or_prior_with_trace_elbos_value_and_gradients(digits, flow, beta):
    config, vae = _vae(flow, digits)
    objective = build_inference(config, vae).elbo
    assert isinstance(objective, MonteCarloELBO)  # no closed-form KL to a flow
    x, index = digits.train[:B], torch.arange(B)
    ours, our_grads = _loss_and_grads(objective, vae, x, index, beta)
    pyros, pyro_grads = _loss_and_grads(PyroELBO(Trace_ELBO(), vae.model, vae.guide), vae, x, index, beta)
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-2)
    assert set(our_grads) == set(pyro_grads) == {n for n, _ in vae.named_parameters()}
    for name, grad in pyro_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-3, msg=lambda m: f"{name}: {m}")


def test_auto_keeps_the_closed_form_kl_for_the_diagonal_guide_and_n01(digits):
    config, vae = _vae([], digits)
    assert isinstance(build_inference(config, vae).elbo, MeanFieldELBO)
    config, vae = _vae(["guide.name=iaf"], digits)
    with pytest.raises(ValueError, match="closed-form KL"):
        MeanFieldELBO(vae)


# ----------------------------------------------------------------------------- training through the package

VAE_TOML = """
seed = 0
[data]
name = "digits"
binarize = "static"
batch_size = 50
[model]
name = "vae"
z_dim = 4
hidden = [64]
{model}
[guide]
{guide}
[optim]
lr = 0.003
[budget]
epochs = 4
[eval]
num_samples = 0
plots = false
"""

FLOWS = {"iaf guide": ("", 'name = "iaf"\nflow_steps = 2\nflow_hidden = [32]\ncontext_dim = 16'),
         "maf prior": ('prior = "maf"\nprior_flows = 2\nprior_hidden = [32]', "")}


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_a_vae_with_a_flow_trains_from_toml_and_its_log_likelihood_bounds_its_elbo(tmp_path, digits, flow):
    model, guide = FLOWS[flow]
    path = tmp_path / "vae.toml"
    path.write_text(VAE_TOML.format(model=model, guide=guide))
    exp, state = train(Config.from_toml(path), tmp_path / "run", progress=False)
    assert isinstance(exp.inference.elbo, MonteCarloELBO)
    first, last = state.history[0], state.history[-1]
    assert last["valid_elbo"] > first["valid_elbo"] + 1 and math.isfinite(last["train_elbo"])
    x = exp.data.test[:100]
    pyro.set_rng_seed(0)
    ll = log_likelihood(exp.module, x, num_samples=100)
    elbo = elbo_per_point(exp.module.model, exp.module.guide, x, num_samples=20)
    assert ll.mean >= elbo.mean().item()
    assert ll.mean - elbo.mean().item() < 5  # a bound, and a close one after training
    assert exp.module.encode(x).shape == (100, 4) and exp.module.sample(5).shape == (5, 1, 8, 8)


# ----------------------------------------------------------------------------- refusals

def test_the_gae_refuses_the_iaf_guide_and_a_maf_prior_with_the_reason(digits):
    base = ["model.name=gae", "model.z_dim=2", "model.hidden=[16]"]
    with pytest.raises(ConfigError, match=r"cannot be the GAE's guide: its prior is the mixture of its own "
                                          r"posteriors.*inverting.*diagonal_normal"):
        build_model(Config().with_overrides(base + ["guide.name=iaf"]), digits)
    with pytest.raises(ConfigError, match=r"prior = 'maf'.*not a choice.*name = \"vae\""):
        build_model(Config().with_overrides(base + ["model.prior=maf"]), digits)


def test_unknown_guides_and_priors_are_config_errors(digits):
    with pytest.raises(ConfigError, match=r"\[guide\] name = 'nope' is unknown: choose one of \['diagonal_normal', "
                                          r"'iaf'\]"):
        build_model(Config().with_overrides(["guide.name=nope"]), digits)
    with pytest.raises(ConfigError, match=r"prior = 'vamp' is unknown: choose one of \['normal', 'maf'\]"):
        build_model(Config().with_overrides(["model.prior=vamp"]), digits)
