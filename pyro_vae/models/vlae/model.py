r"""The Variational Ladder Autoencoder (Zhao, Song & Ermon 2017, "Learning Hierarchical
Features from Generative Models", ICML; section 4).

The paper shows that a Markov hierarchy ``z_L → ... → z_1 → x`` can put everything into
``z_1`` (its upper layers then go unused), and proposes instead to give each layer its own
depth in *one* decoder: abstract factors enter early and pass through many layers, simple
ones enter near the data. The generative story, for each data point:

    z_l ~ N(0, I)                                 l = 1..L, independently
    u_L = act(e_L(z_L))                           the top latent through the most layers
    u_l = act(f_{l+1}(u_{l+1}) + e_l(z_l))        l = L−1..1: each latent joins at its rung
    x   ~ Bernoulli(logits = f_1(u_1))            or N(sigmoid(f_1(u_1)), σ²): squared error

with ``f_l`` the decoder's rungs (:func:`pyro_vae.nets.ladder.down_rung`) and ``e_l`` a
Linear map of ``z_l`` to the rung's features (the paper concatenates; a Linear map of a
concatenation is this sum). The ladder guide reads ``q(z_l|x)`` off the matching depth of
the encoder (:class:`~pyro_vae.guides.ladder.LadderGuide`). The ELBO is
``E_q log p(x|z_{1:L}) − Σ_l KL(q(z_l|x) ‖ N(0, I))``; the paper's MNIST setting is
``L = 3`` layers of 2-D latents with a conv encoder and decoder.

The sites are ``"z1"`` (bottom) to ``"z<L>"`` (top) and ``"x"``. With ``L = 1`` and MLP
rungs of one layer the model is the VAE with one hidden layer, parameter for parameter.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from pyro_vae.capabilities import Capabilities
from pyro_vae.guides.ladder import LadderEncoder, LadderGuide, layer_names
from pyro_vae.models.vae.model import LIKELIHOODS, StandardNormal
from pyro_vae.nets.ladder import Embedding, Rung, down_rung, plan
from pyro_vae.nets.mlp import GATED, activation as make_activation
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module, story_batch_size


def check_layers(z_dims: Sequence[int], hidden: Sequence[int], depths: Sequence[int]) -> None:
    """A ValueError naming the entry for a layer of size 0 or lists of different lengths."""
    lists = {"z_dims": list(z_dims), "hidden": list(hidden), "depths": list(depths)}
    if not lists["z_dims"]:
        raise ValueError("z_dims is empty: give each latent layer's dimensions, bottom first, e.g. [2, 2, 2]")
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} has {n} ({lists[k]})" for k, n in lengths.items())
        raise ValueError(f"the per-layer lists differ in length: {listed}; give one entry per latent layer "
                         f"in each (z_dims: dimensions, hidden: rung widths, depths: network layers per rung)")
    for key, values in lists.items():
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                what = {"z_dims": "every latent layer needs at least one dimension",
                        "hidden": "every rung needs at least one unit or channel",
                        "depths": "every rung needs at least one network layer"}[key]
                raise ValueError(f"{key}[{i}] = {v!r} (layer z{i + 1}): {what}")


class LadderDecoder(nn.Module):
    """``[z_1, ..., z_L] -> p_θ(x | z_{1:L})`` (module docstring), each ``z_l: (..., d_l)``."""

    def __init__(self, rungs: Sequence[Rung], z_dims: Sequence[int], activation: str = "tanh",
                 likelihood: str = "bernoulli", min_scale: float = 1e-3):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}: choose one of {list(LIKELIHOODS)}")
        self.event_shape, self.likelihood, self.min_scale = rungs[0].in_shape, likelihood, min_scale
        self.embed = nn.ModuleList(Embedding(d, r.out_shape) for r, d in zip(rungs, z_dims))
        self.down = nn.ModuleList(down_rung(r, activation) for r in rungs)  # down[0] gives x's loc / logits
        self.log_var = down_rung(rungs[0], activation) if likelihood == "gaussian" else None
        self.act = make_activation(activation)

    def features(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``u_1``, the bottom rung's features, from ``zs = [z_1, ..., z_L]``."""
        u = self.act(self.embed[-1](zs[-1]))
        for l in range(len(zs) - 2, -1, -1):  # 0-based: the rung of z_{l+1}
            u = self.act(self.down[l + 1](u) + self.embed[l](zs[l]))
        return u

    def forward(self, zs: Sequence[torch.Tensor]) -> dist.Distribution:
        u = self.features(zs)
        out, dims = self.down[0](u), len(self.event_shape)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(dims)
        scale = torch.exp(0.5 * self.log_var(u))
        return dist.Normal(torch.sigmoid(out), scale + self.min_scale).to_event(dims)

    def total_log_prob(self, zs: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``Σ log p_θ(x|z_{1:L})`` over every point and draw, a scalar (a Bernoulli in one fused kernel)."""
        if self.likelihood == "bernoulli":
            logits = self.down[0](self.features(zs))
            return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="sum")
        return self(zs).log_prob(x).sum()


class VLAE(nn.Module):
    """The VLAE as a Pyro model and its ladder guide.

    Args:
        event_shape: one data point's shape.
        z_dims: each latent layer's dimensions, bottom (``z_1``) first; ``L = len(z_dims)``.
        hidden: each rung's width, bottom first (units, or channels for a conv rung).
        depths: each rung's network layers, bottom first (default 1 each).
        activation: hidden layers' non-linearity (not a gated one: a latent is added to a
            rung's features before the activation).
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        network: ``"mlp"`` or ``"conv"`` (the lower rungs strided convolutions, for images).
    """

    def __init__(self, event_shape: Union[int, Sequence[int]], z_dims: Sequence[int] = (2, 2, 2),
                 hidden: Sequence[int] = (400, 400, 400), depths: Optional[Sequence[int]] = None,
                 activation: str = "tanh", likelihood: str = "bernoulli", network: str = "mlp"):
        super().__init__()
        depths = [1] * len(z_dims) if depths is None else list(depths)
        check_layers(z_dims, hidden, depths)
        if activation in GATED:
            raise ValueError(f"activation {activation!r} gates (halves) its input, but a VLAE adds each latent to "
                             "its rung's features before the activation: choose one of tanh, relu, elu, softplus")
        self.event_shape = as_event_shape(event_shape)
        self.z_dims = tuple(z_dims)
        self.x_dim, self.z_dim = math.prod(self.event_shape), sum(self.z_dims)
        rungs = plan(self.event_shape, hidden, depths, network)
        self.rungs = rungs
        self.guide = LadderGuide(LadderEncoder(rungs, z_dims, activation))
        self.decoder = LadderDecoder(rungs, z_dims, activation, likelihood)
        self.prior = StandardNormal(self.z_dim)  # every layer's N(0, I): one per layer in the story

    @property
    def num_layers(self) -> int:
        return len(self.z_dims)

    @property
    def latent_layers(self) -> tuple[str, ...]:
        return layer_names(self.num_layers)

    @property
    def layer_sizes(self) -> dict[str, int]:
        """Each layer's dimensions by site, top first."""
        return {name: self.z_dims[int(name[1:]) - 1] for name in self.latent_layers}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(has_guide=True, latent_sites=self.latent_layers, latent_layers=self.latent_layers,
                            event_shape=self.event_shape)

    @property
    def likelihood(self) -> str:
        return self.decoder.likelihood

    # ------------------------------------------------------------------ the story

    def model(self, x: Optional[torch.Tensor] = None, index: Optional[torch.Tensor] = None,
              num_data: Optional[int] = None) -> torch.Tensor:
        """p(x, z_{1:L}) = Π_l N(z_l; 0, I) · p_θ(x | z_{1:L}); with ``x=None`` it generates."""
        register_module("decoder", self.decoder)
        batch = self.batch_size(x, num_data)
        loc, scale = self.prior.loc, self.prior.scale
        with data_plate(batch, index, num_data):
            zs = {}
            for name in self.latent_layers:  # top first, as the decoder reads them
                d = self.layer_sizes[name]
                zs[name] = pyro.sample(name, dist.Normal(loc[:d], scale[:d]).expand([batch, d]).to_event(1))
            return pyro.sample("x", self.decoder(self._bottom_first(zs)), obs=x)

    def _bottom_first(self, zs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [zs[f"z{l}"] for l in range(1, self.num_layers + 1)]

    def batch_size(self, x: Optional[torch.Tensor], num_data: Optional[int]) -> int:
        return story_batch_size(x, num_data, self.event_shape)

    def collapsed(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ pictures and codes

    @torch.no_grad()
    def generate(self, num_samples: int) -> dict[str, torch.Tensor]:
        tr = poutine.trace(self.model).get_trace(None, num_data=num_samples)
        return {name: tr.nodes[name]["value"] for name in self.latent_layers + ("x",)}

    @torch.no_grad()
    def decode(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """E[x | z_{1:L}] for ``latents`` by site name, each ``(..., d_l)``."""
        return self.decoder(self._bottom_first(latents)).mean

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        return self.decode(self.generate(num_samples))

    @torch.no_grad()
    def encode_layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior means per layer, top first, ``(batch, d_l)``."""
        means = [loc for loc, _ in self.guide.encoder(x)]
        return {f"z{l}": means[l - 1] for l in range(self.num_layers, 0, -1)}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Every layer's posterior means side by side, top first: ``(batch, Σ d_l)``."""
        return torch.cat(list(self.encode_layers(x).values()), -1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_layers(x))

    @torch.no_grad()
    def layer_quantiles(self, layer: str, u: torch.Tensor, held: dict[str, torch.Tensor]) -> torch.Tensor:
        """N(0, 1)'s quantiles at levels ``u (m,)`` in each of ``layer``'s dimensions: ``(m, d_l)``."""
        d = self.layer_sizes[layer]
        return self.prior.quantiles(u)[:, :d]

    @torch.no_grad()
    def prior_quantiles(self, u: torch.Tensor) -> torch.Tensor:
        return self.prior.quantiles(u)


__all__ = ["LadderDecoder", "VLAE", "check_layers"]
