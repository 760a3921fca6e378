"""Importance-sampled log p(x): exact on a linear-Gaussian model, bounded, chunk-free.

The reference model is factor analysis / probabilistic PCA,

    z ~ N(0, I_d),   x | z ~ N(W z + b, σ² I_D)   ⇒   p(x) = N(x; b, W Wᵀ + σ² I_D),

whose posterior is Gaussian too: Σ_post = (I + WᵀW / σ²)⁻¹, μ_post = Σ_post Wᵀ (x − b) / σ².
With q = p(z|x) every importance weight equals p(x), so even one sample is exact.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vae import VAE
from pyro_vae.evaluation import LogLikelihood, elbo_per_point, importance_log_likelihood
from pyro_vae.evaluation.marginal_likelihood import log_weights
from pyro_vae.traces import max_plate_nesting

Z_DIM, X_DIM, SIGMA, N = 2, 5, 0.5, 40


class LinearGaussian:
    """The model, its exact log p(x), its exact posterior guide and a poor diagonal one."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(X_DIM, Z_DIM, generator=g, dtype=torch.float64)
        self.b = torch.randn(X_DIM, generator=g, dtype=torch.float64)
        precision = torch.eye(Z_DIM, dtype=torch.float64) + self.W.T @ self.W / SIGMA**2
        self.post_cov = torch.linalg.inv(precision)
        self.post_tril = torch.linalg.cholesky(self.post_cov)

    def model(self, x, index=None, num_data=None):
        with pyro.plate("data", len(x)):
            loc = x.new_zeros(len(x), Z_DIM)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            return pyro.sample("x", dist.Normal(z @ self.W.T + self.b, SIGMA).to_event(1), obs=x)

    def model_with_inner_plate(self, x, index=None, num_data=None):
        """The same model with "data" at dim -2 and the coordinates of x in a plate at -1."""
        with pyro.plate("data", len(x), dim=-2):
            loc = x.new_zeros(len(x), 1, Z_DIM)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            with pyro.plate("coords", X_DIM, dim=-1):
                mean = (z @ self.W.T).squeeze(-2) + self.b  # (..., data, 1, Z) -> (..., data, X)
                return pyro.sample("x", dist.Normal(mean, SIGMA), obs=x)

    def post_mean(self, x):
        return (x - self.b) @ self.W @ self.post_cov / SIGMA**2  # post_cov is symmetric

    def exact_guide(self, x, index=None, num_data=None):
        with pyro.plate("data", len(x)):
            return pyro.sample("z", dist.MultivariateNormal(self.post_mean(x), scale_tril=self.post_tril))

    def exact_guide_with_inner_plate(self, x, index=None, num_data=None):
        with pyro.plate("data", len(x), dim=-2):
            loc = self.post_mean(x).unsqueeze(-2)
            return pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=self.post_tril))

    def poor_guide(self, x, index=None, num_data=None):
        """Shrunk, shifted mean and too-wide independent scales: an ELBO gap of about 1 nat."""
        with pyro.plate("data", len(x)):
            scale = 1.5 * self.post_cov.diagonal().sqrt()
            return pyro.sample("z", dist.Normal(0.9 * self.post_mean(x) + 0.1, scale).to_event(1))

    def log_marginal(self, x):
        cov = self.W @ self.W.T + SIGMA**2 * torch.eye(X_DIM, dtype=torch.float64)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def sample(self, n: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, Z_DIM, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + SIGMA * torch.randn(n, X_DIM, generator=g, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _seed():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


@pytest.fixture(scope="module")
def x(lg):
    return lg.sample(N)


def _is_stderr(lg, guide, x, k):
    """Delta-method standard error of log p̂_k per point: sd(w) / (mean(w) √k)."""
    log_w = log_weights(lg.model, guide, x, 20000, max_plate_nesting(lg.model, guide, x))
    w = (log_w - log_w.max(0).values).exp()
    return w.std(0) / w.mean(0) / math.sqrt(k)


# --- exactness --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 10])
def test_exact_posterior_guide_is_exact_even_with_one_sample(lg, x, k):
    est = importance_log_likelihood(lg.model, lg.exact_guide, x, num_samples=k, batch_size=16)
    torch.testing.assert_close(est.per_point, lg.log_marginal(x), atol=1e-4, rtol=0)
    assert est.per_point.shape == (N,) and est.num_samples == k


def test_exact_posterior_elbo_is_exact(lg, x):
    elbo = elbo_per_point(lg.model, lg.exact_guide, x, num_samples=3)
    torch.testing.assert_close(elbo, lg.log_marginal(x), atol=1e-4, rtol=0)


def test_inner_plates_are_summed_per_point(lg, x):
    """A plate inside "data" (and "data" at dim -2) gives the same per-point weights."""
    model, guide = lg.model_with_inner_plate, lg.exact_guide_with_inner_plate
    est = importance_log_likelihood(model, guide, x, num_samples=4)
    torch.testing.assert_close(est.per_point, lg.log_marginal(x), atol=1e-4, rtol=0)


def test_poor_guide_converges_with_5000_samples(lg, x):
    exact = lg.log_marginal(x)
    est = importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=5000)
    tol = 5 * _is_stderr(lg, lg.poor_guide, x, 5000) + 1e-3
    assert ((est.per_point - exact).abs() <= tol).all(), (est.per_point - exact, tol)
    assert abs(est.mean - exact.mean().item()) < 0.05


def test_poor_guide_one_sample_is_a_lower_bound_and_more_samples_tighten_it(lg, x):
    exact = lg.log_marginal(x).mean().item()
    k1 = importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=1).mean
    k5000 = importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=5000).mean
    elbo = elbo_per_point(lg.model, lg.poor_guide, x, num_samples=200).mean().item()
    assert elbo < exact - 0.5  # the guide is genuinely poor: a visible ELBO gap
    assert k1 < exact
    assert k1 <= k5000 + 1e-6
    assert elbo <= k5000


# --- chunking, batching, seeding ----------------------------------------------------------


def test_chunk_size_does_not_change_exact_case(lg, x):
    small = importance_log_likelihood(lg.model, lg.exact_guide, x, num_samples=5000, chunk_size=7)
    whole = importance_log_likelihood(lg.model, lg.exact_guide, x, num_samples=5000, chunk_size=5000)
    torch.testing.assert_close(small.per_point, whole.per_point, atol=1e-6, rtol=0)


def test_chunk_size_agrees_within_monte_carlo_error(lg, x):
    a = importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=1000, chunk_size=100)
    b = importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=1000, chunk_size=1000)
    tol = 5 * math.sqrt(2) * _is_stderr(lg, lg.poor_guide, x, 1000) + 1e-3
    assert ((a.per_point - b.per_point).abs() <= tol).all()


def test_batch_size_and_uneven_chunks(lg, x):
    """Batches that do not divide n and chunks that do not divide k cover every point."""
    est = importance_log_likelihood(lg.model, lg.exact_guide, x, num_samples=11, batch_size=7, chunk_size=4)
    torch.testing.assert_close(est.per_point, lg.log_marginal(x), atol=1e-4, rtol=0)


def test_seeded_runs_repeat_and_k1_equals_elbo(lg, x):
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(3)
        runs.append(importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=50).per_point)
    torch.testing.assert_close(runs[0], runs[1])
    pyro.set_rng_seed(4)
    k1 = importance_log_likelihood(lg.model, lg.poor_guide, x, num_samples=1, batch_size=1000).per_point
    pyro.set_rng_seed(4)
    torch.testing.assert_close(k1, elbo_per_point(lg.model, lg.poor_guide, x, num_samples=1))


def test_minibatch_scale_is_ignored(lg, x):
    """poutine.scale (KL annealing, subsampling) does not change the density p(x)."""
    scaled_model = poutine.scale(lg.model, scale=10.0)
    est = importance_log_likelihood(scaled_model, lg.exact_guide, x, num_samples=2)
    torch.testing.assert_close(est.per_point, lg.log_marginal(x), atol=1e-4, rtol=0)


# --- the package's VAE --------------------------------------------------------------------


def test_vae_untrained_on_binary_data():
    vae = VAE(20, z_dim=3, hidden=(16,))
    data = torch.bernoulli(torch.full((30, 20), 0.3))
    est = importance_log_likelihood(vae.model, vae.guide, data, num_samples=500, batch_size=8, chunk_size=128)
    assert est.per_point.shape == (30,)
    assert torch.isfinite(est.per_point).all()
    assert (est.per_point < 0).all()  # Bernoulli likelihood: p(x) < 1
    elbo = elbo_per_point(vae.model, vae.guide, data, num_samples=100)
    assert elbo.shape == (30,)
    assert elbo.mean() <= est.mean


def test_summary_and_str():
    ll = LogLikelihood.from_per_point(torch.tensor([-90.0, -88.0, -86.5, -89.98]), 5000)
    assert ll.mean == pytest.approx(-88.62, abs=1e-2)
    assert ll.stderr == pytest.approx(ll.per_point.std().item() / 2)
    assert str(ll) == f"{ll.mean:.2f} ± {ll.stderr:.2f} nats (k=5000, n=4)"
    assert str(ll).endswith("nats (k=5000, n=4)")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_samples=0), "num_samples must be a positive integer"),
        (dict(num_samples=2.5), "num_samples must be a positive integer"),
        (dict(chunk_size=0), "chunk_size must be a positive integer"),
        (dict(batch_size=-1), "batch_size must be a positive integer"),
    ],
)
def test_bad_counts(lg, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        importance_log_likelihood(lg.model, lg.exact_guide, x, **kwargs)


@pytest.mark.parametrize("data", [torch.zeros(5), torch.zeros(2, 3, 5), torch.zeros(0, 5)])
def test_bad_data(lg, data):
    with pytest.raises(ValueError, match="data"):
        importance_log_likelihood(lg.model, lg.exact_guide, data)
    with pytest.raises(ValueError, match="data"):
        elbo_per_point(lg.model, lg.exact_guide, data)


def test_elbo_bad_num_samples(lg, x):
    with pytest.raises(ValueError, match="num_samples"):
        elbo_per_point(lg.model, lg.exact_guide, x, num_samples=0)


def test_global_latent_is_an_error(x):
    def model(x, index=None, num_data=None):
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(shift.unsqueeze(-1) + x.new_zeros(X_DIM), 1.0).to_event(1), obs=x)

    def guide(x, index=None, num_data=None):
        pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ValueError, match="'shift' is outside the 'data' plate"):
        importance_log_likelihood(model, guide, x, num_samples=3)


def test_enumerated_site_is_an_error(x):
    def model(x, index=None, num_data=None):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(x.new_full((len(x),), 0.5)), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(c.unsqueeze(-1).expand(c.shape + (X_DIM,)), 1.0).to_event(1), obs=x)

    def guide(x, index=None, num_data=None):
        pass

    with pytest.raises(ValueError, match="enumerate"):
        importance_log_likelihood(model, guide, x, num_samples=3)


def test_auxiliary_guide_site_is_an_error(lg, x):
    def guide(x, index=None, num_data=None):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(lg.post_mean(x), scale_tril=lg.post_tril))
            pyro.sample("aux", dist.Normal(x.new_zeros(len(x)), 1.0))

    with pytest.raises(ValueError, match="guide site 'aux'"):
        importance_log_likelihood(lg.model, guide, x, num_samples=3)


def test_discrete_latent_sampled_by_the_guide_is_plain_importance_sampling(x):
    """A non-reparameterizable guide site is fine: p(x) = Σ_c p(c) N(x; c, I)."""
    def model(x, index=None, num_data=None):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(x.new_full((len(x),), 0.3)))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1).expand(c.shape + (X_DIM,)), 1.0).to_event(1), obs=x)

    def guide(x, index=None, num_data=None):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(x.new_full((len(x),), 0.5)))

    def component(c):
        return dist.Normal(torch.full((X_DIM,), c, dtype=x.dtype), 1.0).to_event(1).log_prob(x)

    comp = torch.stack([component(0.0), component(1.0)])
    exact = torch.logsumexp(comp + torch.tensor([[math.log(0.7)], [math.log(0.3)]], dtype=x.dtype), 0)
    est = importance_log_likelihood(model, guide, x, num_samples=4000)
    assert (est.per_point - exact).abs().max() < 0.1
