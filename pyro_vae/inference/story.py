r"""A Pyro program (a model or a guide) run on noise the algorithm draws itself.

The adversarial algorithms differentiate through draws: a GAN's generator is the story
run forwards at prior noise, an adversarial autoencoder's code is the guide run at
encoder noise. Every latent site then takes its value from one row block of a standard
normal draw ``ε (B, D)`` (the algorithm's :class:`~pyro_vae.inference.adversarial.SharedNoise`,
so that a run resumes exactly and several processes take the single-process steps):

* a **Normal** (under ``Independent`` / ``expand``), given its parents: ``loc + scale·ε``;
* a **transformed** distribution (an IAF guide, a MAF prior): its base's draw pushed
  through its transforms;
* a **Delta** (a deterministic code): its value, no noise;
* a **Categorical** or **OneHotCategorical** of fixed probabilities (the GAE's data
  index): the class whose cumulative probability first exceeds ``u = Φ(ε)``. Fixed
  probabilities have no parameter to differentiate, so the draw needs no estimator.

:class:`Layout` traces a program once and records each latent site's block of ``ε``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import ConfigError


def _unwrapped(fn):
    """``fn`` without ``Independent`` / ``expand`` / ``mask`` wrappers (a TransformedDistribution is kept)."""
    while isinstance(fn, (torch.distributions.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


def noise_size(fn) -> int:
    """Entries of ``ε`` per point (past the data plate's dimension) a draw of ``fn`` takes,
    or a :class:`ConfigError`."""
    base = _unwrapped(fn)
    while isinstance(base, torch.distributions.TransformedDistribution):
        base = _unwrapped(base.base_dist)
    if isinstance(base, torch.distributions.Normal):
        return math.prod(fn.shape()[1:])
    if isinstance(base, dist.Delta):
        return 0
    if isinstance(base, (torch.distributions.Categorical, torch.distributions.OneHotCategorical)):
        return 1
    raise ConfigError(f"a {type(base).__name__} latent cannot be drawn as a differentiable function of noise "
                      "(only Normal ones given their parents, their transforms, and discrete ones of fixed "
                      "probabilities): train this model with \"svi\"")


def draw(fn, eps: Optional[torch.Tensor], shape: Optional[torch.Size] = None) -> torch.Tensor:
    """A draw of ``fn`` (batch ``(B,)``) from ``eps (B, noise_size(fn))``; ``eps=None``:
    the draw at zero noise (a Normal's mean, the encoder's mean code). ``shape``: the
    draw's shape (default ``fn``'s; a transformed distribution's base takes its outer one)."""
    shape = fn.shape() if shape is None else shape
    base = _unwrapped(fn)
    if isinstance(base, torch.distributions.TransformedDistribution):
        value = draw(base.base_dist, eps, shape)
        for t in base.transforms:
            value = t(value)
        return value
    if isinstance(base, dist.Delta):
        return base.v
    if isinstance(base, torch.distributions.Normal):
        if eps is None:
            return base.loc.expand(shape)
        return base.loc + base.scale * eps.reshape(shape)
    return _discrete(fn, base, eps)


def _discrete(fn, base, eps: Optional[torch.Tensor]) -> torch.Tensor:
    """The inverse-CDF draw of a Categorical / OneHotCategorical of fixed probabilities."""
    if base.probs.requires_grad:
        raise ConfigError(f"a {type(base).__name__} latent with learned probabilities has no reparameterised draw "
                          "(its gradient needs a score-function estimator): train this model with \"svi\"")
    batch = fn.batch_shape
    probs = base.probs.expand(batch + base.probs.shape[-1:])
    u = probs.new_full(batch, 0.5) if eps is None else torch.special.ndtr(eps.reshape(batch).to(probs.dtype))
    k = torch.searchsorted(probs.cumsum(-1).contiguous(), u.unsqueeze(-1)).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    if isinstance(base, torch.distributions.OneHotCategorical):
        return torch.nn.functional.one_hot(k, probs.shape[-1]).to(probs.dtype)
    return k


class _Stop(Exception):
    """Raised at the observed site when only the latents are wanted."""


class Reparameterized(Messenger):
    """Run a program with every latent site (in ``layout``) drawn from ``eps`` by :func:`draw`;
    ``at_x(fn) -> value`` sets the site ``"x"`` (None: stop the program there, for its
    latents alone). :attr:`values`: the latents drawn, by site."""

    def __init__(self, layout: "Layout", eps: Optional[torch.Tensor], at_x: Optional[Callable] = None):
        super().__init__()
        self.layout, self.eps, self.at_x = layout, eps, at_x
        self.values: dict[str, torch.Tensor] = {}

    def _pyro_sample(self, msg) -> None:
        name = msg["name"]
        if name == "x":
            if self.at_x is None:
                raise _Stop()
            msg["value"], msg["done"] = self.at_x(msg["fn"]), True
        elif name in self.layout.blocks and not msg["is_observed"]:
            lo, hi = self.layout.blocks[name]
            msg["value"] = draw(msg["fn"], None if self.eps is None else self.eps[:, lo:hi])
            msg["done"] = True
            self.values[name] = msg["value"]


def run_latents(program: Callable, layout: "Layout", eps: Optional[torch.Tensor], *args) -> dict[str, torch.Tensor]:
    """The latents of ``program(*args)`` drawn from ``eps``, the program stopped at ``"x"``."""
    handler = Reparameterized(layout, eps)
    try:
        with handler:
            program(*args)
    except _Stop:
        pass
    return handler.values


@dataclass(frozen=True)
class Layout:
    """Each latent site's columns ``(lo, hi)`` of ``ε``, in the order the program draws them."""

    blocks: dict
    size: int

    @classmethod
    def of(cls, program: Callable, *args) -> "Layout":
        """Trace ``program(*args)`` stopped at ``"x"`` and lay out its unobserved sample sites
        (the caller keeps the RNG, e.g. under :func:`~pyro_vae.traces.preserved_rng`)."""
        tracer = poutine.trace(_stopped_at_x(program))
        tracer(*args)
        blocks, size = {}, 0
        for name, node in tracer.trace.nodes.items():
            if node["type"] == "sample" and not node["is_observed"] and name != "x" and not site_is_subsample(node):
                n = noise_size(node["fn"])
                blocks[name], size = (size, size + n), size + n
        return cls(blocks, size)


def _stopped_at_x(program: Callable) -> Callable:
    def stopped(*args):
        with _StopAtX():
            try:
                program(*args)
            except _Stop:
                pass
    return stopped


class _StopAtX(Messenger):
    def _pyro_sample(self, msg) -> None:
        if msg["name"] == "x":
            raise _Stop()


__all__ = ["Layout", "Reparameterized", "draw", "noise_size", "run_latents"]
