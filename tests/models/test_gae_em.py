"""EM for the GAE's data index: the loop-driven fit climbs its bound, the bound is below
the enumerated ELBO, and ``[inference] name = "em"`` trains, checkpoints and resumes."""

import math

import pyro
import torch
from gae_helpers import N, guide_sample, objective, own_excluded_log_probs, small_gae, train_interrupted

from pyro_vae import checkpoint
from pyro_vae.config import Config
from pyro_vae.models.gae.em import EM, fit_em
from pyro_vae.train import train


def test_em_alternates_responsibilities_and_gradient_steps(digits):
    gae = small_gae(digits, n=80)
    pyro.set_rng_seed(6)
    history = fit_em(gae, epochs=3, batch_size=40, lr=3e-3, m_steps=2,
                     objective=objective(gae, "exact", lambda2=0.1, deferred=False))
    bounds = [h["train_em_bound"] for h in history]
    assert all(math.isfinite(b) for b in bounds)
    assert bounds[-1] > bounds[0] + 1.0
    # the scalable pool works under EM too
    knn = objective(gae, "knn", lambda2=0.1, tail=30, deferred=False)
    assert math.isfinite(fit_em(gae, epochs=1, batch_size=40, objective=knn)[0]["train_em_bound"])
    assert int(knn.bank.steps) == 2  # EM keeps the objective's cache fresh


def test_em_bound_is_below_the_enumerated_elbo(digits):
    """Q + H(r) with r = E_z p(y|z) is the ELBO of a guide q(y) = r: Jensen puts it below
    the enumerated ELBO at the same z, equal when r is the exact p(y | z)."""
    gae = small_gae(digits)
    index = torch.arange(6)
    x = gae.exemplars[index]
    z = guide_sample(gae, x, index, N, seed=7)["value"].detach()
    with torch.no_grad():
        table = own_excluded_log_probs(gae, z, index) - math.log(N - 1)
        enumerated = table.logsumexp(-1)
        exact_r = table.softmax(-1)
        other_r = (exact_r + 0.5 * torch.rand_like(exact_r)).masked_fill(torch.isinf(table), 0)
        other_r = other_r / other_r.sum(-1, keepdim=True)
        for r, tight in ((exact_r, True), (other_r, False)):
            safe = torch.where(r > 0, r, torch.ones_like(r))
            bound = torch.where(r > 0, r * (table - safe.log()), torch.zeros_like(r)).sum(-1)
            assert (bound <= enumerated + 1e-4).all()
            assert torch.allclose(bound, enumerated, atol=1e-4) == tight


def test_em_is_an_inference_algorithm_of_the_loop_and_resumes(tmp_path, monkeypatch):
    config = Config.from_dict({
        "data": {"name": "digits", "binarize": "static", "batch_size": 200},
        "model": {"name": "gae", "z_dim": 2, "hidden": [16], "neighbours": 6, "tail": 40},
        "inference": {"name": "em", "m_steps": 2},
        "budget": {"epochs": 2, "monitor": "train_em_bound"}, "eval": {"num_samples": 0, "plots": False},
    })
    exp, state = train(config, tmp_path / "whole", progress=False)
    bounds = [row["train_em_bound"] for row in state.history]
    assert bounds[-1] > bounds[0] and all(math.isfinite(row["valid_elbo"]) for row in state.history)
    train_interrupted(config, tmp_path / "cut", monkeypatch, EM, at=8)  # in the second epoch (6 steps each)
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "cut"))
    for name, tensor in a["module"].items():
        assert torch.equal(tensor, b["module"][name]), name
    for name, tensor in a["inference"]["objective"].items():
        assert torch.equal(tensor, b["inference"]["objective"][name]), name
