r"""An inverse autoregressive flow posterior q_φ(z|x) (Kingma, Salimans, Jozefowicz, Chen,
Sutskever & Welling 2016, "Improved Variational Inference with Inverse Autoregressive
Flow", section 4 and algorithm 1).

The encoder gives a diagonal Gaussian and a context ``h``; ``T`` IAF steps, each an
autoregressive network fed ``z_{t−1}`` and ``h``, reshape it::

    (μ_0, σ_0, h) = encoder(x)
    z_0 = μ_0 + σ_0 ⊙ ε,                    ε ~ N(0, I)
    (m_t, s_t) = AR_t(z_{t−1}, h),            σ_t = sigmoid(s_t + b)
    z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t     (t = 1..T, the order reversed step to step)

Each step's Jacobian is triangular with diagonal ``σ_t``, so

.. math::

    \log q(z_T|x) = −\sum_i \bigl(\tfrac12 ε_i^2 + \tfrac12 \log 2π + \log σ_{0,i}\bigr)
                    − \sum_{t=1}^{T} \sum_i \log σ_{t,i},

exact, at the cost of the sample's own forward pass: that is what the ELBO and the
importance sampler ask of a guide (they score its own draws). Scoring a ``z`` the guide
did not draw inverts each step, ``z_dim`` sequential passes (wake-sleep's sleep phase).

Pyro's :class:`~pyro.distributions.transforms.ConditionalAffineAutoregressive` with
``stable=True`` is the step (the paper's numerically stable update, gate bias ``b = 2``),
and :class:`~pyro.nn.ConditionalAutoRegressiveNN` its network: the story is
``pyro.sample("z", TransformedDistribution(Normal(μ_0, σ_0), [step_t.condition(h)]))``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from pyro_vae.guides.amortized import GaussianEncoder
from pyro_vae.nets.mlp import GATED, activation
from pyro_vae.plates import data_plate, register_module


def default_flow_hidden(z_dim: int) -> list[int]:
    """The autoregressive networks' hidden widths when the config leaves them unset: one
    layer, wide enough for every output to see every input before it (a MADE needs at
    least ``z_dim`` units) and no narrower than 64."""
    return [max(64, 2 * z_dim)]


class IAFGuide(nn.Module):
    """The IAF posterior (module docstring): ``z ~ q_φ(z|x)`` for each data point, called
    like :class:`~pyro_vae.guides.DiagonalNormalGuide` (``guide(x, index, num_data)``,
    the ``"data"`` plate).

    Args:
        encoder: the Gaussian encoder ``x -> (μ_0, σ_0)``; its body's features also feed
            the context ``h`` (a linear map, the paper's extra encoder output).
        steps: ``T``, the IAF steps (0: the diagonal Gaussian itself).
        hidden: hidden widths of each step's autoregressive network (at least ``z_dim``).
        context_dim: the width of ``h``.
        act: the networks' activation (not gated: a MADE's masks need whole units).
    """

    def __init__(self, encoder: GaussianEncoder, steps: int = 2, hidden: Optional[Sequence[int]] = None,
                 context_dim: int = 32, act: str = "relu", name: str = "encoder"):
        super().__init__()
        z = encoder.z_dim
        hidden = list(hidden) if hidden is not None else default_flow_hidden(z)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"[guide] flow_steps must be an integer >= 0, got {steps!r}")
        if context_dim < 1:
            raise ValueError(f"[guide] context_dim must be >= 1, got {context_dim}")
        if not hidden or min(hidden) < z:
            raise ValueError(f"[guide] flow_hidden = {hidden}: an IAF step's autoregressive network needs hidden "
                             f"layers at least as wide as z_dim = {z}")
        if act in GATED:
            raise ValueError(f"activation {act!r} halves its input, which an autoregressive network's masks do not "
                             "allow: set [guide] activation to relu, tanh, softplus, elu or sigmoid")
        self.encoder, self.name, self.z_dim = encoder, name, z
        self.context = nn.Linear(encoder.head.loc.in_features, context_dim)
        self.steps = nn.ModuleList(
            ConditionalAffineAutoregressive(
                ConditionalAutoRegressiveNN(z, context_dim, hidden, param_dims=[1, 1], nonlinearity=activation(act),
                                            permutation=_order(z, t)),
                stable=True)
            for t in range(steps))

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        """``q_φ(z|x)`` of each row of ``x (B, *event_shape)``: batch shape ``(B,)``, event
        ``(z_dim,)``; ``rsample`` and ``log_prob`` of its own samples are one pass."""
        features = self.encoder.body(x)
        loc, scale = self.encoder.head(features)
        base = dist.Normal(loc, scale).to_event(1)
        if not self.steps:
            return base
        h = self.context(features)
        return dist.TransformedDistribution(base, [step.condition(h) for step in self.steps])

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
                num_data: Optional[int] = None) -> torch.Tensor:
        register_module(self.name, self)
        with data_plate(len(x), index, num_data):
            return pyro.sample("z", self.distribution(x))

    @torch.no_grad()
    def location(self, x: torch.Tensor) -> torch.Tensor:
        """``z_T`` at ``ε = 0`` (the flow applied to ``μ_0``), ``(B, z_dim)``: the point a
        latent scatter shows for each row (the mean of ``q`` has no closed form)."""
        features = self.encoder.body(x)
        z, _ = self.encoder.head(features)
        h = self.context(features)
        for step in self.steps:
            z = step.condition(h)(z)
        return z


def _order(z_dim: int, t: int) -> torch.Tensor:
    """Step ``t``'s autoregressive order: ``0..z_dim−1``, reversed at every other step (the
    paper reverses the variables between steps)."""
    order = torch.arange(z_dim)
    return order if t % 2 == 0 else order.flip(0)
