"""The VAE's own objective (estimator B computed directly) against Pyro's
``TraceMeanField_ELBO`` on the story: same values, same gradients, same draws of z."""

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import VAE
from pyro_vae.config import Config
from pyro_vae.inference.base import PyroELBO
from pyro_vae.models.vae import MeanFieldELBO
from pyro_vae.registry import build_inference
from tests.toy_models import fresh_vae

B, N = 12, 500


@pytest.fixture
def fixed_noise(monkeypatch):
    """Every standard-normal draw of ``z`` is ``eps`` (Pyro's rsample and the objective's
    randn alike), so that both estimators score the same ``z``."""
    eps = torch.randn(64, 64, generator=torch.Generator().manual_seed(3))

    def draws(shape):
        return eps.flatten()[: torch.Size(shape).numel()].view(shape)

    monkeypatch.setattr(torch.distributions.Normal, "rsample",
                        lambda self, shape=torch.Size(): self.loc + self.scale * draws(self._extended_shape(shape)))
    monkeypatch.setattr(torch, "randn", lambda *shape, dtype=None, device=None: draws(shape[0] if len(shape) == 1
                                                                                          else shape))


def _loss_and_grads(objective, vae, x, index, beta):
    vae.zero_grad(set_to_none=True)
    loss = objective.differentiable_loss(x, index, N, beta=beta)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in vae.named_parameters()}


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_equals_pyro_trace_meanfield_elbo_in_value_and_gradients(digits, fixed_noise, beta):
    vae = fresh_vae(z_dim=3)
    x, index = digits.train[:B], torch.arange(B)
    ours, our_grads = _loss_and_grads(MeanFieldELBO(vae), vae, x, index, beta)
    pyros, pyro_grads = _loss_and_grads(PyroELBO(TraceMeanField_ELBO(), vae.model, vae.guide), vae, x, index, beta)
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-3)
    for name, grad in pyro_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_particles_average_the_likelihood_term(digits):
    """K draws whose noise is all the same give the 1-draw value; different draws differ."""
    vae = fresh_vae(z_dim=3)
    x, index = digits.train[:B], torch.arange(B)
    pyro.set_rng_seed(0)
    one = MeanFieldELBO(vae).differentiable_loss(x, index, N)
    pyro.set_rng_seed(0)
    eps = torch.randn(B, 3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "randn", lambda shape, dtype=None, device=None: eps.expand(shape))
        same = MeanFieldELBO(vae, num_particles=4).differentiable_loss(x, index, N)
    torch.testing.assert_close(same, one)
    assert MeanFieldELBO(vae, num_particles=4).differentiable_loss(x, index, N) != one


def test_gaussian_likelihood_and_image_batches(fixed_noise):
    vae = VAE((1, 8, 8), z_dim=2, hidden=(16,), likelihood="gaussian", network="conv")
    x = torch.rand(B, 1, 8, 8)
    ours = MeanFieldELBO(vae).differentiable_loss(x, None, None)
    pyros = PyroELBO(TraceMeanField_ELBO(), vae.model, vae.guide).differentiable_loss(x, None, None)
    torch.testing.assert_close(ours, pyros, rtol=1e-5, atol=1e-3)


def test_is_what_auto_trains_the_vae_with_and_refuses_what_it_cannot_score(digits):
    vae = fresh_vae()
    assert isinstance(build_inference(Config(), vae).elbo, MeanFieldELBO)
    with pytest.raises(ValueError, match=r"x must be a \(batch, \*event_shape\) tensor"):
        MeanFieldELBO(vae).differentiable_loss(digits.train[:B].flatten(1), None, None)
    with pytest.raises(ValueError, match="num_particles must be >= 1"):
        MeanFieldELBO(vae, num_particles=0)
    vae.prior = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"closed-form KL.*elbo = \"trace\""):
        MeanFieldELBO(vae)
