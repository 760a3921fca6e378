"""The manifold plot spans the model's own prior (issue 17): a VAE's grid is N(0, 1)'s
quantiles exactly as before; a GAE's comes from its exemplar mixture, whose latents may
lie far outside N(0, 1)'s ±1.96."""

from __future__ import annotations

import pyro
import torch

from gae_helpers import shared_bandwidth, small_gae
from pyro_vae import plots, report
from pyro_vae.models.vae import VAE
from pyro_vae.models.vae.model import StandardNormal

N = 20
U = plots.grid_levels(N)


def shifted(gae, loc=(-8.0, 9.0, 0.5)):
    """The GAE with every exemplar's posterior mean moved by ``loc``: its prior sits
    there, far from N(0, I)."""
    with torch.no_grad():
        gae.guide.encoder.head.loc.bias.add_(torch.tensor(loc))
    return gae


def sample_quantiles(module, num=40000, seed=0):
    pyro.set_rng_seed(seed)
    return torch.quantile(module.generate(num)["z"], U, dim=0)


def test_the_vae_grid_is_the_normal_quantile_grid_as_before():
    vae = VAE((1, 8, 8), z_dim=3, hidden=(8,))
    today = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(N) + 0.5) / N)
    assert torch.equal(vae.prior_quantiles(U), today[:, None].expand(N, 3))


def test_the_gae_grid_covers_its_prior(digits):
    gae = shifted(small_gae(digits))
    q = gae.prior_quantiles(U)
    assert q.shape == (N, 3) and (q.diff(dim=0) > 0).all()
    torch.testing.assert_close(q, sample_quantiles(gae), atol=0.1, rtol=0)
    assert q[-1, 0] < -4 and q[0, 1] > 5  # where N(0, 1)'s grid (±1.96) never goes
    # the exact mixture CDF at the quantiles gives back the levels
    loc, scale = gae.prior.exact_components()
    cdf = torch.distributions.Normal(loc, scale).cdf(q.unsqueeze(1)).mean(1)
    torch.testing.assert_close(cdf, U[:, None].expand(N, 3), atol=1e-5, rtol=0)


def test_a_shared_bandwidth_gae_grid_covers_its_prior(digits):
    gae = shifted(shared_bandwidth(small_gae(digits, bandwidth="shared")))
    torch.testing.assert_close(gae.prior_quantiles(U), sample_quantiles(gae), atol=0.1, rtol=0)


class ScaledNormal(StandardNormal):
    """N(3, 2²) per dimension, with no quantiles of its own: the grid comes from samples."""

    quantiles = None

    def __init__(self, z_dim):
        super().__init__(z_dim)
        self.loc.fill_(3.0)
        self.scale.fill_(2.0)


def test_a_prior_without_quantiles_gets_those_of_its_samples():
    pyro.set_rng_seed(0)
    vae = VAE((1, 8, 8), z_dim=2, hidden=(8,), prior=ScaledNormal(2))
    exact = 3.0 + 2.0 * torch.distributions.Normal(0.0, 1.0).icdf(U)
    torch.testing.assert_close(vae.prior_quantiles(U, num_samples=40000), exact[:, None].expand(N, 2),
                               atol=0.1, rtol=0)


def test_the_report_decodes_the_grid_of_the_model_prior(digits, tmp_path, monkeypatch):
    gae = shifted(small_gae(digits))
    gae.prior.encoder.head.loc.weight.data.mul_(0.0)  # every exemplar at the shift: a known prior
    gae.prior.encoder.head.log_var.weight.data.mul_(0.0)
    seen = []
    decode = gae.decoder.mean
    monkeypatch.setattr(gae.decoder, "mean", lambda z: seen.append(z) or decode(z))
    report.manifold(gae, (1, 8, 8), tmp_path / "m.png", n=N, dims=(0, 1))
    (z,) = seen
    scale = torch.exp(0.5 * gae.guide.encoder.head.log_var.bias[:2]).detach()
    loc = gae.guide.encoder.head.loc.bias[:2].detach()
    expected = loc + scale * torch.distributions.Normal(0.0, 1.0).icdf(U)[:, None]  # (N, 2)
    torch.testing.assert_close(z[:N, 0], expected[:, 0], atol=1e-4, rtol=0)  # top row, left to right
    torch.testing.assert_close(z[::N, 1], expected.flip(0)[:, 1], atol=1e-4, rtol=0)  # left column, downward
