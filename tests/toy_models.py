"""Small models for the tests: a conjugate linear-Gaussian model (known posterior and
evidence), a model with discrete latents (for VIMCO and the refusals), a VAE that records
how it was called, and helpers to step and compare parameters."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pyro_vae.capabilities import Capabilities
from pyro_vae.models import VAE
from pyro_vae.plates import data_plate


def _n(x, num_data):
    return len(x) if x is not None else num_data


class LinearGaussian(nn.Module):
    """z ~ N(0, I_d), x | z ~ N(W z + b, σ² I): the posterior and the evidence are Gaussian."""

    def __init__(self, x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5, seed: int = 1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.decoder = nn.Linear(z_dim, x_dim)
        with torch.no_grad():
            self.decoder.weight.copy_(torch.randn(x_dim, z_dim, generator=g))
            self.decoder.bias.copy_(0.5 * torch.randn(x_dim, generator=g))
        self.encoder = nn.Linear(x_dim, 2 * z_dim)
        self.x_dim, self.z_dim, self.sigma = x_dim, z_dim, sigma

    def model(self, x=None, index=None, num_data=None):
        pyro.module("decoder", self.decoder)
        n = _n(x, num_data)
        with data_plate(n, index, num_data):
            z = pyro.sample("z", dist.Normal(torch.zeros(n, self.z_dim), 1.0).to_event(1))
            return pyro.sample("x", dist.Normal(self.decoder(z), self.sigma).to_event(1), obs=x)

    def guide(self, x, index=None, num_data=None):
        pyro.module("encoder", self.encoder)
        with data_plate(len(x), index, num_data):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            return pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def posterior(self, x):
        """Exact p(z|x): means ``(n, d)`` and the shared covariance ``(d, d)``."""
        W, b = self.decoder.weight.detach(), self.decoder.bias.detach()
        cov = torch.linalg.inv(torch.eye(self.z_dim) + W.T @ W / self.sigma**2)
        return (x - b) @ W @ cov / self.sigma**2, cov

    def log_evidence(self, x):
        W, b = self.decoder.weight.detach(), self.decoder.bias.detach()
        return dist.MultivariateNormal(b, W @ W.T + self.sigma**2 * torch.eye(self.x_dim)).log_prob(x)


class BernoulliLatent(nn.Module):
    """A one-layer sigmoid belief net: z ~ Bernoulli(½)^d, x | z ~ Bernoulli(logits = f(z)),
    with an amortized Bernoulli guide (discrete latents sampled in the guide)."""

    def __init__(self, x_dim: int = 64, z_dim: int = 8, hidden: int = 32):
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, z_dim))
        self.x_dim, self.z_dim = x_dim, z_dim

    @property
    def capabilities(self) -> Capabilities:
        """Declared, so that algorithms check its latents when they are built (MCEM probes
        a model of a known event shape at construction)."""
        return Capabilities(event_shape=(self.x_dim,))

    def model(self, x=None, index=None, num_data=None):
        pyro.module("decoder", self.decoder)
        n = _n(x, num_data)
        with data_plate(n, index, num_data):
            z = pyro.sample("z", dist.Bernoulli(torch.full((n, self.z_dim), 0.5)).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x, index=None, num_data=None):
        pyro.module("encoder", self.encoder)
        with data_plate(len(x), index, num_data):
            return pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


class SpyVAE(VAE):
    """A VAE that records, at each call of its model and guide, what its ``z`` site was:
    its shape, whether it was observed (conditioned) and whether it carried a gradient,
    and whether the model ran generatively (``x=None``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[dict] = []

    def _record(self, program: str, fn, x, index, num_data):
        tm = poutine.trace(fn)
        out = tm(x, index, num_data)
        z = tm.trace.nodes["z"]
        self.calls.append({
            "program": program, "generative": x is None, "z_shape": tuple(z["value"].shape),
            "z_observed": bool(z["is_observed"]), "z_requires_grad": bool(z["value"].requires_grad),
            "x_shape": tuple(x.shape) if x is not None else None,
        })
        return out

    def model(self, x=None, index=None, num_data=None):
        return self._record("model", super().model, x, index, num_data)

    def guide(self, x, index=None, num_data=None):
        # VAE's guide is a submodule (this method shadows the attribute): call it directly.
        return self._record("guide", self._modules["guide"], x, index, num_data)


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before, params) -> list[bool]:
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def run_steps(inference, data, steps: int, batch_size: int = 100, seed: int = 0, flat: bool = False):
    """``steps`` minibatch steps on digits' train split; returns the step outputs.
    ``flat``: the batches as ``(b, D)`` vectors, for the toy models' ``nn.Linear`` layers
    (the splits keep their event shape, ``(b, 1, 8, 8)`` for digits)."""
    outs, epoch = [], 0
    n = len(data.train)
    while len(outs) < steps:
        for x, index in data.loader("train", batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=True):
            outs.append(inference.step(x.flatten(1) if flat else x, index, n))
            if len(outs) == steps:
                break
        epoch += 1
    return outs


#: The event shape of the embedded digits: one 8x8 grey-level image per row.
DIGITS_SHAPE = (1, 8, 8)


def fresh_vae(seed: int = 0, z_dim: int = 2, hidden=(32,), cls=VAE):
    """A VAE for digits (event shape ``(1, 8, 8)``), from a fresh param store and ``seed``."""
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    return cls(DIGITS_SHAPE, z_dim, hidden)
