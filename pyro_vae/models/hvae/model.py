r"""The stacked two-level VAE ("HVAE"): ``z_2 → z_1 → x``, with ``x`` read from both levels.

The hierarchy the VLAE paper (Zhao, Song & Ermon 2017, section 3) analyses and the
two-level model of VampPrior (Tomczak & Welling 2018, section 3.2) and IWAE (Burda et
al. 2016). The generative story, for each data point::

    z_2 ~ p(z_2)                                the top prior: a component (N(0, I), or the
                                                GAE's exemplar mixture of q(z_2|x_j))
    z_1 ~ N(μ_θ(z_2), diag σ_θ(z_2)²)           the lower level given the top
    x   ~ p_θ(x | z_1, z_2)                      Bernoulli, or Gaussian with a sigmoid mean

and the guide is VampPrior's ``q(z_2|x) q(z_1|x, z_2)``
(:class:`~pyro_vae.guides.hierarchical.TopDownGuide`). The ELBO is

.. math::

    E_q\bigl[\log p(x|z_1, z_2)\bigr] − E_{q(z_2|x)}\bigl[\mathrm{KL}(q(z_1|x,z_2) \,\|\, p(z_1|z_2))\bigr]
    − \mathrm{KL}(q(z_2|x) \,\|\, p(z_2)).

The top prior takes the same component a VAE takes (it emits its sites ``"z"``, and
``"y"`` for the exemplar mixture); the story names its top level ``"z2"``, so the sites
are ``("z2", "z1")``, or ``("y", "z2", "z1")`` under the exemplar prior. With the GAE's
prior it is the two-level GAE (:class:`HierarchicalGAE`), trained by the GAE's own
objective with the lower level's terms added
(:class:`~pyro_vae.models.hvae.objective.HierarchicalExemplarELBO`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn

from pyro_vae.capabilities import Capabilities
from pyro_vae.guides.amortized import GaussianEncoder
from pyro_vae.guides.hierarchical import ConditionalEncoder, TopDownGuide
from pyro_vae.models.gae.kernels import MAX_ELEMENTS
from pyro_vae.models.gae.prior import ExemplarPrior
from pyro_vae.models.vae.model import Decoder, StandardNormal
from pyro_vae.nets import GaussianHead, mlp
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module, story_batch_size

LEVELS = ("z2", "z1")


class _renamed(Messenger):
    """Within it, the sample site ``old`` is named ``new`` (the prior component emits
    ``"z"``; in a hierarchy that is the top level, ``"z2"``)."""

    def __init__(self, old: str, new: str):
        super().__init__()
        self.old, self.new = old, new

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] == self.old:
            msg["name"] = self.new


class ConditionalPrior(nn.Module):
    """``p(z_1 | z_2) = N(μ_θ(z_2), diag σ_θ(z_2)²)``: an MLP ``hidden`` and a Gaussian head."""

    def __init__(self, z2_dim: int, z1_dim: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.body, width = mlp(z2_dim, hidden, activation)
        self.head = GaussianHead(width, z1_dim)

    def forward(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(z2))


class JointDecoder(nn.Module):
    """``(z_1, z_2) -> p_θ(x | z_1, z_2)``: each level through a Linear layer of width
    ``hidden[0]``, concatenated, then a :class:`~pyro_vae.models.vae.Decoder` with layers
    ``hidden[1:]`` (VampPrior's ``p_x_layers_z1``, ``p_x_layers_z2``, ``p_x_layers_joint``)."""

    def __init__(self, z1_dim: int, z2_dim: int, event_shape, hidden: Sequence[int], activation: str,
                 likelihood: str, network: str):
        super().__init__()
        width = hidden[0]
        self.z1_body, _ = mlp(z1_dim, [width], activation)
        self.z2_body, _ = mlp(z2_dim, [width], activation)
        self.out = Decoder(2 * width, event_shape, list(hidden[1:]), activation, likelihood, network=network)

    def features(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.z1_body(z1), self.z2_body(z2)], -1)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> dist.Distribution:
        return self.out(self.features(z1, z2))

    def total_log_prob(self, z1: torch.Tensor, z2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``Σ log p_θ(x|z_1, z_2)`` over every point and draw, a scalar."""
        return self.out.total_log_prob(self.features(z1, z2), x)


class HVAE(nn.Module):
    """The stacked two-level VAE (module docstring).

    Args:
        event_shape: one data point's shape.
        z_dim: dimensions of the top level ``z_2``.
        z1_dim: dimensions of the lower level ``z_1``.
        hidden: widths of every network's layers (VampPrior: ``[300, 300]`` with gated units).
        activation, likelihood, network: as for the VAE (``network`` is the ``x`` side's:
            the encoders' bodies and the decoder's output stack).
        prior: the top prior component (default :class:`StandardNormal`); set by
            :class:`HierarchicalGAE` to the exemplar mixture.
    """

    latent_layers = LEVELS

    def __init__(self, event_shape: Union[int, Sequence[int]], z_dim: int = 2, z1_dim: int = 2,
                 hidden: Sequence[int] = (300, 300), activation: str = "tanh", likelihood: str = "bernoulli",
                 network: str = "mlp", prior: Optional[nn.Module] = None):
        super().__init__()
        for name, value in (("z_dim (the top level z2)", z_dim), ("z1_dim", z1_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (a latent level of no dimension models "
                                 f"nothing), got {value!r}")
        if not hidden:
            raise ValueError("hidden must list at least one width: each level enters the networks through one")
        self.event_shape = as_event_shape(event_shape)
        self.x_dim, self.z_dim, self.z1_dim = math.prod(self.event_shape), z_dim, z1_dim
        top = GaussianEncoder(self.event_shape, z_dim, hidden, activation, network)
        lower = ConditionalEncoder(self.event_shape, z_dim, z1_dim, hidden, activation, network)
        self.guide = TopDownGuide(top, lower)
        self.z1_prior = ConditionalPrior(z_dim, z1_dim, hidden, activation)
        self.decoder = JointDecoder(z1_dim, z_dim, self.event_shape, hidden, activation, likelihood, network)
        self.prior = prior or StandardNormal(z_dim)

    @property
    def layer_sizes(self) -> dict[str, int]:
        return {"z2": self.z_dim, "z1": self.z1_dim}

    @property
    def capabilities(self) -> Capabilities:
        top = tuple("z2" if s == "z" else s for s in self.prior.latent_sites)
        return Capabilities(has_guide=True, enumerated_latents=self.prior.enumerated,
                            collapsible=getattr(self.prior, "collapsible", False),
                            aggregate_prior=getattr(self.prior, "aggregate", False), latent_sites=top + ("z1",),
                            latent_layers=LEVELS, event_shape=self.event_shape)

    @property
    def likelihood(self) -> str:
        return self.decoder.out.likelihood

    # ------------------------------------------------------------------ the story

    def model(self, x: Optional[torch.Tensor] = None, index: Optional[torch.Tensor] = None,
              num_data: Optional[int] = None) -> torch.Tensor:
        """p(x, z_1, z_2) = p(z_2) p_θ(z_1|z_2) p_θ(x|z_1, z_2); with ``x=None`` it generates
        ``num_data`` points."""
        register_module("decoder", self.decoder)
        register_module("z1_prior", self.z1_prior)
        self.prior.register()
        batch = self.batch_size(x, num_data)
        with data_plate(batch, index, num_data):
            with _renamed("z", "z2"):
                z2 = self.prior(batch, index, num_data, generative=x is None)
            z1 = pyro.sample("z1", dist.Normal(*self.z1_prior(z2)).to_event(1))
            return pyro.sample("x", self.decoder(z1, z2), obs=x)

    def batch_size(self, x: Optional[torch.Tensor], num_data: Optional[int]) -> int:
        """``len(x)`` (checked to be ``(batch, *event_shape)``), or ``num_data`` when generating."""
        return story_batch_size(x, num_data, self.event_shape)

    def collapsed(self) -> contextlib.AbstractContextManager:
        """The story with the top prior's discrete latents summed out (see the VAE's)."""
        return self.prior.collapsed()

    # ------------------------------------------------------------------ pictures and codes

    @torch.no_grad()
    def generate(self, num_samples: int) -> dict[str, torch.Tensor]:
        """Every level and ``x`` of ``num_samples`` points from the story."""
        tr = poutine.trace(self.model).get_trace(None, num_data=num_samples)
        return {name: tr.nodes[name]["value"] for name in LEVELS + ("x",)}

    @torch.no_grad()
    def decode(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """E[x | z_1, z_2] for ``latents = {"z2": (..., D2), "z1": (..., D1)}``."""
        return self.decoder(latents["z1"], latents["z2"]).mean

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """E[x|z_1, z_2] at draws from the model: ``(num_samples, *event_shape)``."""
        return self.decode(self.generate(num_samples))

    @torch.no_grad()
    def encode_layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior means per level: ``μ_2(x)`` and ``μ_1(x, z_2 = μ_2(x))``, ``(batch, D_l)``."""
        loc2, _ = self.guide.encoder(x)
        return {"z2": loc2, "z1": self.guide.lower(x, loc2)[0]}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The levels' posterior means side by side, top first: ``(batch, D2 + D1)``."""
        return torch.cat(list(self.encode_layers(x).values()), -1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_layers(x))

    @torch.no_grad()
    def layer_quantiles(self, layer: str, u: torch.Tensor, held: dict[str, torch.Tensor]) -> torch.Tensor:
        """Quantiles at levels ``u (m,)`` of ``layer``'s prior, ``(m, D_l)``: the top prior's
        marginal for ``"z2"``, ``p(z_1 | z_2 = held["z2"])`` (one row) for ``"z1"``."""
        if layer == "z2":
            return self.prior.quantiles(u)
        loc, scale = self.z1_prior(held["z2"].reshape(1, -1))
        return loc + scale * dist.Normal(0.0, 1.0).icdf(u.to(loc)).unsqueeze(-1)


class HierarchicalGAE(HVAE):
    """The two-level GAE: the HVAE whose top prior is the GAE's exemplar mixture
    ``P(z_2) = (1/n) Σ_j q(z_2|x_j)`` over the training points (leave-one-out for
    training rows), with ``q(z_2|x)`` the guide's top encoder.

    Args:
        exemplars: ``(n, *event_shape)`` training points.
        bandwidth, leave_one_out, max_enumerated: the prior's
            (:class:`~pyro_vae.models.gae.prior.ExemplarPrior`); the rest as for :class:`HVAE`.
    """

    def __init__(self, exemplars: torch.Tensor, z_dim: int = 2, z1_dim: int = 2, hidden: Sequence[int] = (300, 300),
                 activation: str = "tanh", likelihood: str = "bernoulli", network: str = "mlp",
                 bandwidth: str = "posterior", leave_one_out: bool = True, max_enumerated: int = MAX_ELEMENTS):
        if not torch.is_tensor(exemplars) or exemplars.dim() < 2:
            shape = tuple(exemplars.shape) if torch.is_tensor(exemplars) else type(exemplars).__name__
            raise ValueError(f"exemplars must be an (n, *event_shape) tensor of training points, got {shape}")
        super().__init__(tuple(exemplars.shape[1:]), z_dim, z1_dim, hidden, activation, likelihood, network)
        self.prior = ExemplarPrior(exemplars, self.guide.encoder, bandwidth, leave_one_out, max_enumerated)

    @property
    def num_exemplars(self) -> int:
        return self.prior.num_exemplars


__all__ = ["HVAE", "ConditionalPrior", "HierarchicalGAE", "JointDecoder", "LEVELS"]
