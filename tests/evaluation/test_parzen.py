"""Parzen-window (KDE) log-likelihood: formula, closed-form Gaussian case, bandwidth
selection, the protocol on a model, bad inputs."""

import math

import numpy as np
import pyro
import pytest
import torch

from pyro_vae.evaluation import (
    DEFAULT_SIGMAS,
    parzen_evaluate,
    parzen_log_density,
    parzen_log_likelihood,
    select_bandwidth,
)


def test_log_density_is_the_kde_formula():
    torch.manual_seed(0)
    samples, x, sigma = torch.rand(7, 5), torch.rand(4, 5), 0.3
    comps = torch.distributions.Normal(samples.double(), sigma).log_prob(x.double().unsqueeze(1)).sum(-1)
    expected = comps.logsumexp(-1) - math.log(7)
    torch.testing.assert_close(parzen_log_density(x, samples, sigma, batch_size=3), expected)
    assert parzen_log_density(x, samples, sigma).dtype == torch.float64


def test_kde_of_gaussian_samples_matches_the_closed_form_convolution():
    """Samples of N(μ, τ²I) smoothed with N(0, σ²I): the KDE tends to N(μ, (τ² + σ²)I)."""
    torch.manual_seed(1)
    mu, tau, sigma = torch.tensor([0.3, -0.2]), 0.5, 0.25
    samples = mu + tau * torch.randn(200000, 2)
    x = mu + 0.4 * torch.randn(40, 2)  # where the samples are dense
    var = tau**2 + sigma**2
    exact = (-0.5 * (x - mu).pow(2).sum(-1) / var - math.log(2 * math.pi * var)).double()
    torch.testing.assert_close(parzen_log_density(x, samples, sigma), exact, atol=0.03, rtol=0)
    # 1-D, a single sample: the KDE is the kernel itself
    one = parzen_log_density(torch.tensor([[0.7]]), torch.tensor([[0.2]]), 0.5)
    assert one.item() == pytest.approx(torch.distributions.Normal(0.2, 0.5).log_prob(torch.tensor(0.7)).item())


def test_bandwidth_is_the_validation_argmax_and_the_result_reports_it():
    torch.manual_seed(2)
    samples, valid, test = torch.rand(500, 3), torch.rand(300, 3), torch.rand(100, 3)
    sigma, scores = select_bandwidth(samples, valid)
    assert set(scores) == set(DEFAULT_SIGMAS) and len(scores) == 10
    assert scores[sigma] == max(scores.values())
    for s in (min(DEFAULT_SIGMAS), max(DEFAULT_SIGMAS)):  # the scores are the mean log-likelihoods
        assert scores[s] == pytest.approx(parzen_log_density(valid, samples, s).mean().item())
    result = parzen_log_likelihood(samples, test, valid=valid)
    assert result.sigma == sigma and result.validation == scores and result.num_samples == 500
    per_point = parzen_log_density(test, samples, sigma)
    torch.testing.assert_close(result.per_point, per_point)
    assert result.mean == pytest.approx(per_point.mean().item())
    assert result.stderr == pytest.approx(per_point.std().item() / 10)
    assert "Parzen" in str(result) and "±" in str(result)
    # a wider data spread wants a wider kernel
    wide, _ = select_bandwidth(samples * 5, valid * 5, sigmas=np.logspace(-1, 1, 9))
    assert wide > sigma


def test_fixed_sigma_and_the_protocol_on_any_sampler():
    torch.manual_seed(3)
    test, valid = torch.rand(50, 4), torch.rand(50, 4)
    fixed = parzen_log_likelihood(torch.rand(100, 4), test, sigma=0.2)
    assert fixed.sigma == 0.2 and fixed.validation == {}

    class Sampler:
        def sample(self, n):
            return torch.rand(n, 4)

    pyro.set_rng_seed(0)
    result = parzen_evaluate(Sampler(), test, valid, num_samples=250, sample_batch=100)
    assert result.num_samples == 250 and result.n == 50
    # a sampler that matches the data scores higher than one that does not
    good = parzen_evaluate(lambda n: torch.rand(n, 4), test, valid, num_samples=500)
    bad = parzen_evaluate(lambda n: torch.rand(n, 4) + 2.0, test, valid, num_samples=500)
    assert good.mean > bad.mean + 5


def test_package_models_work_with_the_protocol():
    from pyro_vae.data import load_dataset
    from pyro_vae.models import GAE, VAE

    d = load_dataset("digits")
    torch.manual_seed(4)
    for model in (VAE(d.event_shape, z_dim=2, hidden=(16,)), GAE(d.train[:100], z_dim=2, hidden=(16,))):
        pyro.set_rng_seed(0)
        result = parzen_evaluate(model, d.test[:40], d.valid[:40], num_samples=300)
        assert math.isfinite(result.mean) and result.n == 40


def test_bad_inputs_give_clear_errors():
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match="positive finite"):
        parzen_log_density(x, x, 0.0)
    with pytest.raises(ValueError, match="positive finite"):
        select_bandwidth(x, x, sigmas=[0.1, -1.0])
    with pytest.raises(ValueError, match="D = 3 but the samples have D = 4"):
        parzen_log_density(x, torch.rand(5, 4), 0.1)
    with pytest.raises(ValueError, match="samples is empty"):
        parzen_log_density(x, torch.rand(0, 3), 0.1)
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        parzen_log_density(torch.rand(3), x, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        parzen_log_density(x, torch.full((2, 3), float("nan")), 0.1)
    with pytest.raises(ValueError, match="exactly one of sigma"):
        parzen_log_likelihood(x, x)
    with pytest.raises(ValueError, match="exactly one of sigma"):
        parzen_log_likelihood(x, x, valid=x, sigma=0.1)
    with pytest.raises(ValueError, match="num_samples"):
        parzen_evaluate(lambda n: torch.rand(n, 3), x, x, num_samples=0)
