"""Trace utilities at the bottom of the package: per-point log-densities (unscaled,
masked, inner plates summed), the sites an importance weight scores and the errors for
those it cannot, plate nesting with data of the wrong event shape refused, parameter
roles, and rows repeated per chain."""

import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from toy_models import DIGITS_SHAPE, LinearGaussian, fresh_vae

from pyro_vae.evaluation import importance_log_likelihood
from pyro_vae.plates import data_plate
from pyro_vae.traces import (
    DATA_PLATE,
    max_plate_nesting,
    per_point_log_prob,
    repeat_rows,
    scored_sites,
    split_parameters,
)

N, D, K = 4, 3, 5


def traced(fn, *args):
    tr = poutine.trace(fn).get_trace(*args)
    tr.compute_log_prob()
    return tr


def observed_normal(x, index=None, num_data=None):
    """x_i ~ N(0, 1)^D with "data" at dim -2 and the coordinates in a plate at dim -1."""
    with pyro.plate(DATA_PLATE, num_data or len(x), dim=-2, subsample=index):
        with pyro.plate("coords", D, dim=-1):
            pyro.sample("x", dist.Normal(torch.zeros(len(x), D), 1.0), obs=x)


# ----------------------------------------------------------------------------- per-point


def test_per_point_log_prob_sums_inner_plates_and_expands_over_particles():
    x = torch.randn(N, D)
    site = traced(observed_normal, x).nodes["x"]
    out = per_point_log_prob(site, particle_dim=-3, shape=(K, N))
    expected = dist.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert out.shape == (K, N)
    torch.testing.assert_close(out, expected.expand(K, N))


def test_per_point_log_prob_is_unscaled_and_masked():
    """Subsampling (N/B) and poutine.scale change the ELBO's weights, not p(x); a mask
    removes a point's terms."""
    x = torch.randn(N, D)
    expected = dist.Normal(0.0, 1.0).log_prob(x).sum(-1)
    mask = torch.tensor([True, False, True, True]).unsqueeze(-1)
    scaled = poutine.scale(poutine.mask(observed_normal, mask=mask), scale=7.0)
    site = traced(scaled, x, torch.arange(N), 100).nodes["x"]
    assert site["scale"] == pytest.approx(7.0 * 100 / N)
    out = per_point_log_prob(site, particle_dim=-3, shape=(1, N))[0]
    torch.testing.assert_close(out, expected * mask[:, 0])


def test_per_point_log_prob_keeps_the_particles_apart():
    def particles(x):
        with pyro.plate("_particles", K, dim=-2), data_plate(len(x), None, None):
            pyro.sample("z", dist.Normal(torch.zeros(K, len(x), 2), 1.0).to_event(1))

    site = traced(particles, torch.zeros(N, D)).nodes["z"]
    out = per_point_log_prob(site, particle_dim=-2, shape=(K, N))
    torch.testing.assert_close(out, dist.Normal(0.0, 1.0).log_prob(site["value"]).sum(-1))
    assert not torch.equal(out[0], out[1])


def test_per_point_log_prob_refuses_undeclared_batch_dims_and_sites_outside_the_data_plate():
    def extra_dims(x):
        with data_plate(len(x), None, None):
            pyro.sample("z", dist.Normal(torch.zeros(2, K, len(x)), 1.0))  # (2, K) not in any plate

    with pytest.raises(ValueError, match=r"site 'z' has log_prob of shape \(2, 5, 4\), more batch dims than its "
                                         r"plates allow \(1\).*\.to_event\(\)"):
        per_point_log_prob(traced(extra_dims, torch.zeros(N, D)).nodes["z"], particle_dim=-2, shape=(K, N))

    def global_latent(x):
        pyro.sample("shift", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'shift' is outside the 'data' plate.*global latents are not supported"):
        per_point_log_prob(traced(global_latent, None).nodes["shift"], particle_dim=-2, shape=(K, N))

    def sequential(x):
        for i in pyro.plate(DATA_PLATE, 2):
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'x_0' is in a sequential 'data' plate; use a vectorized one"):
        per_point_log_prob(traced(sequential, None).nodes["x_0"], particle_dim=-2, shape=(K, N))


# ----------------------------------------------------------------------------- sites


def _model(x, index=None, num_data=None):
    with data_plate(len(x), index, num_data):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("w", dist.Normal(torch.zeros(len(x)), 1.0))  # not in the guide: from the model
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(x), D), 1.0).to_event(1), obs=x)


def _traces(guide, x, model=_model):
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    return prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)


def test_scored_sites_are_the_observed_and_the_guided_latents():
    def guide(x, index=None, num_data=None):
        with data_plate(len(x), index, num_data):
            pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))

    model_sites, guide_sites = scored_sites(*_traces(guide, torch.zeros(N, D)))
    assert [s["name"] for s in model_sites] == ["z", "x"]  # "w" cancels from the weight
    assert [s["name"] for s in guide_sites] == ["z"]


@pytest.mark.parametrize("name", ["aux", "x"])
def test_scored_sites_refuse_guide_sites_that_are_not_latents_of_the_model(name):
    def guide(x, index=None, num_data=None):
        with data_plate(len(x), index, num_data):
            pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample(name, dist.Normal(torch.zeros(len(x), D), 1.0).to_event(1))

    with pytest.raises(ValueError, match=f"guide site '{name}' is not a latent site of the model: every guide sample "
                                         "site must be a latent the model scores"):
        scored_sites(*_traces(guide, torch.zeros(N, D)))


def test_scored_sites_refuse_enumerated_sites():
    def model(x, index=None, num_data=None):
        with data_plate(len(x), index, num_data):
            pyro.sample("c", dist.Bernoulli(torch.full((len(x),), 0.5)), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(torch.zeros(len(x), D), 1.0).to_event(1), obs=x)

    def guide(x, index=None, num_data=None):
        pass

    with pytest.raises(ValueError, match=r"model site 'c' has infer=\{'enumerate': \.\.\.\}: enumerated discrete "
                                         r"latents are not supported; sample them in the guide instead"):
        scored_sites(*_traces(guide, torch.zeros(N, D), model))


# ----------------------------------------------------------------------------- plate nesting


def _guide(x, index=None, num_data=None):
    with data_plate(len(x), index, num_data):
        pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("w", dist.Normal(torch.zeros(len(x)), 1.0))


def test_max_plate_nesting_counts_the_pairs_plates():
    assert max_plate_nesting(_model, _guide, torch.zeros(N, D)) == 1

    def guide(x, index=None, num_data=None):
        pass

    assert max_plate_nesting(observed_normal, guide, torch.zeros(N, D)) == 2
    vae = fresh_vae()
    assert max_plate_nesting(vae.model, vae.guide, torch.zeros(N, *DIGITS_SHAPE)) == 1


@pytest.mark.parametrize("shape", [(N, D + 1), (N, 1, D), (N,)])
def test_max_plate_nesting_refuses_data_of_another_event_shape(shape):
    x = torch.zeros(shape)
    expected = (f"data of shape {tuple(shape)} do not fit the model: its observed site 'x' expects values of "
                f"shape {(N, D)} (one data point per row of the data)")
    with pytest.raises(ValueError, match=re.escape(expected)):
        max_plate_nesting(_model_any_shape, _guide, x)


def _model_any_shape(x, index=None, num_data=None):
    """``_model`` with its observation's shape fixed to (N, D) whatever ``x``'s is."""
    with data_plate(len(x), index, num_data):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("w", dist.Normal(torch.zeros(len(x)), 1.0))
        loc = z.sum(-1, keepdim=True).expand(len(x), D)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def test_the_importance_sampler_refuses_data_of_another_event_shape_before_drawing():
    model = LinearGaussian(x_dim=D, z_dim=2)

    def guide(x, index=None, num_data=None):  # reads nothing of x but its length
        with data_plate(len(x), index, num_data):
            pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))

    with pytest.raises(ValueError, match=rf"data of shape \({N}, 1, {D}\) do not fit the model"):
        importance_log_likelihood(model.model, guide, torch.zeros(N, 1, D), num_samples=2)
    vae = fresh_vae()  # the package's models refuse in their networks, naming both shapes
    with pytest.raises(ValueError, match=r"\(\.\.\., 1, 8, 8\), got \(4, 64\)"):
        importance_log_likelihood(vae.model, vae.guide, torch.zeros(N, 64), num_samples=2)


# ----------------------------------------------------------------------------- roles, rows


def test_split_parameters_finds_the_model_and_guide_roles():
    vae = fresh_vae()
    split = split_parameters(vae, torch.zeros(2, *DIGITS_SHAPE))
    assert {id(p) for p in split.model} == {id(p) for p in vae.decoder.parameters()}
    assert {id(p) for p in split.guide} == {id(p) for p in vae.guide.parameters()}
    assert split.shared == [] and all(n.startswith("decoder$$$") for n in split.model_names)


def test_repeat_rows_stacks_copies_of_the_batch():
    x = torch.arange(2 * 4.0).reshape(2, 1, 2, 2)
    out = repeat_rows(x, 3)
    assert out.shape == (6, 1, 2, 2)
    for c in range(3):  # copy c in rows [c n, (c + 1) n): one chain per copy
        assert torch.equal(out[2 * c:2 * c + 2], x)
    assert torch.equal(repeat_rows(torch.tensor([1.0, 2.0]), 2), torch.tensor([1.0, 2.0, 1.0, 2.0]))
    assert torch.equal(repeat_rows(x, 1), x)
