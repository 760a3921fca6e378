r"""Normalizing flows as Pyro models: NICE and MAF.

A flow is an invertible map ``f`` from data to a base space with a simple density
``p_U``; by the change of variables,

.. math::

    \log p(x) = \log p_U(f(x)) + \log \lvert \det \partial f(x) / \partial x \rvert,

exactly: a flow has no latent variables and no guide. Its story, for each point ``i``::

    u_i ~ p_U                       (the base: N(0, I), the logistic, or MADE MoG)
    x_i = f⁻¹(u_i)                  (Pyro's TransformedDistribution(p_U, transforms))

``flow.model(x)`` is ``pyro.sample("x", TransformedDistribution(base, transforms), obs=x)``
inside the ``"data"`` plate, usable in a user's own script; training it by the package's
loop is exact maximum likelihood (``[inference] name = "mle"``).

The map ends with the inverse of the ``[data] transform`` (rescale or logit,
:class:`~pyro_vae.data.transforms.DataTransform`), so ``x`` lives in data space ([0, 1]
pixels), the story's samples are images, and the papers' figures (logit space for MAF)
are ``log p(x)`` minus the transform's log-Jacobian.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import BatchNorm
from torch import nn
from torch.distributions.transforms import ReshapeTransform, Transform, _InverseTransform

from pyro_vae.capabilities import Capabilities
from pyro_vae.data.transforms import DataTransform
from pyro_vae.models.flow.bases import AutoregressiveMixture, StandardBase
from pyro_vae.models.flow.transforms import AffineAutoregressiveLayer, Coupling, DiagonalScaling
from pyro_vae.nets.made import made
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module, story_batch_size

#: What a flow offers: an exact log-density and samples; no guide, no latent sites.
DENSITY = Capabilities(has_guide=False, exact_log_prob=True, has_encoder=False, latent_sites=())
COUPLINGS = ("additive", "affine")
BASES = ("normal", "made_mog")


class Flow(nn.Module):
    """A normalizing flow over data of ``event_shape``.

    Args:
        event_shape: the shape of one data point (``(D,)``, or ``(C, H, W)`` images,
            flattened to ``D`` values for the layers).
        layers: the map ``f``, data -> base, as transforms applied in this order (the
            papers' ``f = f_L ∘ … ∘ f_1`` is ``[f_1, …, f_L]``); Pyro transform modules or
            their ``.inv``.
        base: a module whose ``forward()`` is the base distribution (event shape ``(D,)``).
        data_transform: the ``[data]`` transform whose inverse ends the story.

    Layers with batch normalisation normalise by the batch in training mode and by their
    running averages in eval mode, as torch's ``BatchNorm``; the training algorithm sets
    the mode, and :meth:`sample`, :meth:`to_base` and :meth:`log_density` run in eval mode.
    """

    def __init__(self, event_shape: Union[int, Sequence[int]], layers: Sequence[Transform], base: nn.Module,
                 data_transform: Optional[DataTransform] = None):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.x_dim = math.prod(self.event_shape)
        self.layers = list(layers)  # data -> base
        # the modules behind the layers (a layer may be a module's .inv), for parameters and devices
        self.steps = nn.ModuleList(_module_of(t) for t in self.layers if isinstance(_module_of(t), nn.Module))
        self.base = base
        self.data_transform = data_transform or DataTransform()

    @property
    def capabilities(self) -> Capabilities:
        return DENSITY.with_event_shape(self.event_shape)

    def transforms(self) -> list[Transform]:
        """The story's transforms, base -> data: the layers' inverses in reverse order, the
        inverse of the data transform, and a reshape to the event shape (which also gives
        the first transform that scores ``x`` a fresh tensor: Pyro's cached transforms key
        their cache on the input's identity, and a parameter step between two calls on the
        same tensor would return the first call's result)."""
        return (self._layer_transforms() + self.data_transform.to_data_space()
                + [ReshapeTransform(torch.Size([self.x_dim]), torch.Size(self.event_shape))])

    def _layer_transforms(self) -> list[Transform]:
        return [t.inv for t in reversed(self.layers)]

    def distribution(self) -> dist.TransformedDistribution:
        """``p(x)`` of one point: ``TransformedDistribution(base, transforms)``."""
        return dist.TransformedDistribution(self.base(), self.transforms())

    def model_space_distribution(self) -> dist.TransformedDistribution:
        """``p_z(z)`` of one point ``z (D,)`` in the model's space (after the data transform):
        the base pushed through the layers alone."""
        return dist.TransformedDistribution(self.base(), self._layer_transforms())

    def model(self, x: Optional[torch.Tensor] = None, index: Optional[torch.Tensor] = None,
              num_data: Optional[int] = None) -> torch.Tensor:
        """``x ~ p(x)`` for each point of the batch ``x (b, *event_shape)``; with ``x=None``
        it generates ``num_data`` points."""
        register_module("flow", self)
        batch = self.batch_size(x, num_data)
        with data_plate(batch, index, num_data):
            return pyro.sample("x", self.distribution().expand([batch]), obs=x)

    def batch_size(self, x: Optional[torch.Tensor], num_data: Optional[int]) -> int:
        """``len(x)`` (checked to be ``(batch, *event_shape)`` and, under Pyro's validation,
        inside the data transform's domain), or ``num_data`` when it generates."""
        batch = story_batch_size(x, num_data, self.event_shape)
        if x is not None and pyro.poutine.util.is_validation_enabled():
            self.data_transform.check(x, "x")
        return batch

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` of each point of ``x (b, *event_shape)``, ``(b,)``, exact."""
        return self.score(x)[0]

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x), J(x))`` per point, each ``(b,)``: the story's density of ``x (b,
        *event_shape)`` and the data transform's log-Jacobian ``J = log |det ∂g/∂x|``, by

            log p(x) = log p_z(g(x)) + J(x)

        the same value as ``distribution().log_prob(x)``, with ``g`` and ``J`` computed once
        in one pass (:meth:`DataTransform.to_model_space`), where the story's inverse would
        compute ``g`` and then its log-Jacobian apart; ``J`` is what the model-space figure
        subtracts again (:meth:`DataTransform.figures`)."""
        self.batch_size(x, None)
        # z is a new tensor (a reshape at least), so Pyro's transform caches, keyed on the
        # input's identity, never return a result from before a parameter step
        z, jacobian = self.data_transform.to_model_space(x.reshape(len(x), self.x_dim), 1)
        return self.model_space_distribution().log_prob(z) + jacobian, jacobian

    @torch.no_grad()
    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`log_prob` in eval mode, without gradients (what a density plot draws)."""
        with self.evaluating():
            return self.log_prob(x)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """``(num_samples, *event_shape)`` draws of the story, in eval mode; clamped into
        [0, 1] when the data are pixels (a ``[data] transform`` is declared: the
        dequantized density puts a little mass outside [0, 1])."""
        with self.evaluating():
            x = self.distribution().sample((num_samples,))
        return x.clamp(0, 1) if self.data_transform.bounded else x

    def to_base(self, x: torch.Tensor) -> torch.Tensor:
        """``u = f(x)``, the points ``x (b, *event_shape)`` in the base space, ``(b, D)``,
        in eval mode (differentiable): the flow's picture of the data (no encoder: a
        deterministic map)."""
        with self.evaluating():
            u = self.data_transform.forward(x.reshape(len(x), self.x_dim))
            for t in self.layers:
                u = t(u)
        return u

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"this model has no encoder: {type(self).__name__} is a normalizing flow, with no latent "
                         "variables and no guide, so it has no posterior to scatter; its picture of the data is "
                         "the base space, flow.to_base(x) (the density plots of `pyro-vae plot` draw it for 2-D data)")

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode (batch normalisation by running averages) within, the mode restored after."""
        was = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)


def _module_of(t: Transform):
    return t._inv if isinstance(t, _InverseTransform) else t


class NICE(Flow):
    r"""NICE (Dinh, Krueger & Bengio 2014): ``h = exp(s) ⊙ (c_L ∘ … ∘ c_1)(x)``, couplings
    ``c_l`` that alternately change the odd and the even dimensions by ``x_C + m_l(x_K)``
    (:class:`~pyro_vae.models.flow.transforms.Coupling`), a final diagonal scaling, and a
    standard logistic prior on ``h``. ``log p(x) = Σ_d log p_H(h_d) + Σ_d s_d``: the
    couplings preserve volume. The paper's MNIST model has 4 couplings of 5 ReLU layers of
    1000 units. ``coupling = "affine"`` gives RealNVP's coupling ``x_C ⊙ exp(s(x_K)) + m(x_K)``.
    Sampling and scoring are each one pass through the couplings.
    """

    def __init__(self, event_shape, couplings: int = 4, hidden: Sequence[int] = (1000,) * 5, activation: str = "relu",
                 coupling: str = "additive", scaling: bool = True, prior: str = "logistic",
                 data_transform: Optional[DataTransform] = None):
        if coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {coupling!r}: choose one of {list(COUPLINGS)}")
        if couplings < 1:
            raise ValueError(f"couplings must be >= 1, got {couplings}")
        d = math.prod(as_event_shape(event_shape))
        layers: list[Transform] = [Coupling(d, parity=l % 2, hidden=hidden, act=activation, affine=coupling == "affine")
                                   for l in range(couplings)]
        if scaling:
            layers.append(DiagonalScaling(d))
        super().__init__(event_shape, layers, StandardBase(d, prior), data_transform)


class MAF(Flow):
    r"""Masked Autoregressive Flow (Papamakarios, Pavlakou & Murray 2017).

    Each layer is an autoregressive map with Gaussian conditionals, conditioned by a MADE
    (:func:`pyro_vae.nets.made.made`): data ``x`` to ``u`` by

    .. math::

        u_i = μ_i(x_{<i}) + σ_i(x_{<i})\, x_i, \qquad
        \log \lvert \det \partial u / \partial x \rvert = Σ_i \log σ_i(x_{<i}),

    (MAF's ``u_i = (x_i − μ_i) \exp(−α_i)``, reparameterized), the order of the variables
    reversed from layer to layer, batch normalisation after each layer (Pyro's
    ``BatchNorm`` transform), and a base ``N(0, I)`` or MADE MoG
    (:class:`~pyro_vae.models.flow.bases.AutoregressiveMixture`).

    **Directions and their costs.** Pyro's ``AffineAutoregressive`` is written in the IAF
    direction: its forward call computes ``μ, σ`` from its *input*, one parallel pass of
    the MADE, and its inverse is sequential. A MAF scores data, so each layer is that
    transform's forward applied to the data, and the story (base -> data) uses its
    inverse: **scoring** ``log p(x)`` (training, evaluation) is one MADE pass per layer
    for a whole batch; **sampling** is ``D`` MADE passes per layer, one per dimension
    (784 per layer for MNIST), as is sampling from MADE MoG. An IAF has the opposite costs.

    Settings of the paper: MAF(5) and MAF(10) (``num_flows``); MADE is ``num_flows = 1,
    batch_norm = False``; MADE MoG is ``num_flows = 0, base = "made_mog"``; MAF MoG is
    ``num_flows = 5, base = "made_mog"`` (``components = 10``).
    """

    def __init__(self, event_shape, num_flows: int = 5, hidden: Sequence[int] = (1024,), activation: str = "relu",
                 batch_norm: bool = True, base: str = "normal", components: int = 10,
                 data_transform: Optional[DataTransform] = None):
        if base not in BASES:
            raise ValueError(f"unknown base {base!r}: choose one of {list(BASES)}")
        if num_flows < 0 or (num_flows == 0 and base == "normal"):
            raise ValueError(f"num_flows = {num_flows}: give at least one layer, or base = \"made_mog\" for MADE MoG")
        d = math.prod(as_event_shape(event_shape))
        orders = [torch.arange(d) if k % 2 == 0 else torch.arange(d - 1, -1, -1)  # cpu-ok: MADE masks, buffers
                  for k in range(num_flows + 1)]
        layers: list[Transform] = []
        for k in range(num_flows):
            layers.append(AffineAutoregressiveLayer(made(d, hidden, (1, 1), orders[k], activation)))
            if batch_norm:
                layers.append(BatchNorm(d).inv)  # its inverse normalises data-side inputs (Pyro's convention)
        if base == "normal":
            density: nn.Module = StandardBase(d, "normal")
        else:
            density = AutoregressiveMixture(d, hidden, components, activation, order=orders[num_flows])
        super().__init__(event_shape, layers, density, data_transform)
