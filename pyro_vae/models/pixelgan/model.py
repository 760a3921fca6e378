r"""The PixelGAN autoencoder (Makhzani & Frey 2017, "PixelGAN Autoencoders", NeurIPS).

The generative story, for each image i:

    z_i ~ p(z)                               N(0, I) of z_dim, or OneHotCategorical of K equal classes
    x_i ~ Π_j Bernoulli(x_ij | σ(l_j(x_i,<j, z_i)))   a PixelCNN conditioned on z_i

The recognition path is an encoder ``q(z|x)`` (a Gaussian ``N(μ(x), diag σ(x)²)``, or the
softmax of K logits for the categorical prior: a point of the simplex, as the paper's
clustering encoder) trained to reconstruct through the PixelCNN and, by a GAN on the
code, to make the *aggregate* posterior ``q(z) = E_x q(z|x)`` match ``p(z)``
(``[inference] name = "adversarial_ae"``, :mod:`pyro_vae.inference.adversarial_ae`).
With a categorical prior the code carries the discrete content (the class: an
unsupervised clustering, each cluster an argmax) and the PixelCNN the style.

The decoder's ``log p(x|z)`` is exact (one masked pass, :meth:`PixelGAN.log_px_given_z`).
Sampling draws ``z ~ p(z)`` and ``x`` pixel by pixel (:meth:`~pyro_vae.nets.masked.PixelCNN.sample`,
strips of rows and the conditioning computed once).
"""

from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.nn import functional as F

from pyro_vae.capabilities import Capabilities
from pyro_vae.nets import encoder_body
from pyro_vae.nets.masked import PixelCNN
from pyro_vae.nets.shapes import as_event_shape
from pyro_vae.plates import data_plate, register_module

PRIORS = ("gaussian", "categorical")
#: No ELBO guide (the code is matched adversarially, its categorical code is a point of the
#: simplex, not a draw); the PixelCNN draws pixel by pixel, so its images carry no gradient.
CAPABILITIES = Capabilities(has_guide=False, can_sample=True, reparameterized_story=False, latent_sites=("z",))


class PixelCNNBernoulli(TorchDistribution):
    """``p(x | h)`` of a :class:`~pyro_vae.nets.masked.PixelCNN` as a distribution: batch
    shape ``h.shape[:-1]`` (one code per image), event shape the image's ``(C, H, W)``.
    ``log_prob`` is exact; ``sample`` draws pixel by pixel."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 3)
    has_rsample = False

    def __init__(self, net: PixelCNN, h: torch.Tensor, validate_args: Optional[bool] = False):
        self.net, self.h = net, h
        super().__init__(h.shape[:-1], torch.Size(net.event_shape), validate_args=validate_args)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.log_prob(x, self.h)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if tuple(sample_shape):
            raise NotImplementedError("PixelCNNBernoulli draws one image per code: sample_shape = ()")
        return self.net.sample(self.h)

    def expand(self, batch_shape, _instance=None):
        if tuple(batch_shape) != tuple(self.batch_shape):
            raise NotImplementedError(f"a PixelCNN likelihood has one code per image: batch shape "
                                      f"{tuple(self.batch_shape)}, not {tuple(batch_shape)}")
        return self


class PixelGAN(nn.Module):
    """The PixelGAN autoencoder: an encoder, a prior, a PixelCNN decoder (module docstring).

    Args:
        event_shape: ``(C, H, W)``.
        prior: ``"gaussian"`` or ``"categorical"``.
        z_dim: the Gaussian code's size.
        num_classes: K >= 2, the categorical code's classes.
        hidden, activation, network: the encoder (``"mlp"`` or ``"conv"``).
        channels, layers, kernel, conditioning: the PixelCNN (``"global"`` or ``"local"``).
    """

    def __init__(self, event_shape, prior: str = "gaussian", z_dim: int = 8, num_classes: int = 10,
                 hidden: Sequence[int] = (500, 500), activation: str = "relu", network: str = "mlp",
                 channels: int = 32, layers: int = 5, kernel: int = 3, conditioning: str = "global"):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"[model] prior = {prior!r}: choose one of {list(PRIORS)}")
        if prior == "categorical" and (isinstance(num_classes, bool) or num_classes < 2):
            raise ValueError(f"[model] num_classes = {num_classes}: a categorical prior needs K >= 2 classes")
        self.event_shape = as_event_shape(event_shape)
        self.prior_name = prior
        self.code_dim = z_dim if prior == "gaussian" else num_classes
        self.z_dim = self.code_dim
        body, width = encoder_body(self.event_shape, hidden, activation, network)
        head = nn.Linear(width, 2 * self.code_dim if prior == "gaussian" else self.code_dim)
        self.encoder = nn.Sequential(body, head)
        self.decoder = PixelCNN(self.event_shape, self.code_dim, channels, layers, kernel, conditioning)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)  # follows the module's device

    @property
    def capabilities(self) -> Capabilities:
        """Samples, no guide for the ELBO (the code is matched adversarially), no exact p(x)."""
        return CAPABILITIES.with_event_shape(self.event_shape)

    # ------------------------------------------------------------------ the story

    def prior(self, batch: int) -> dist.Distribution:
        """``p(z)`` for ``batch`` points."""
        if self.prior_name == "gaussian":
            return dist.Normal(self._zero, 1.0).expand([batch, self.code_dim]).to_event(1)
        probs = self._zero.new_full((self.code_dim,), 1.0 / self.code_dim)
        return dist.OneHotCategorical(probs=probs).expand([batch])

    def model(self, x: Optional[torch.Tensor] = None, index: Optional[torch.Tensor] = None,
              num_data: Optional[int] = None) -> torch.Tensor:
        """p(x, z) = p(z) Π_j p(x_j | x_<j, z); with ``x=None`` it generates ``num_data`` images."""
        register_module("decoder", self.decoder)
        batch = len(x) if x is not None else num_data
        if batch is None:
            raise ValueError("model(x=None) generates data: give num_data, the number of images")
        with data_plate(batch, index, num_data):
            z = pyro.sample("z", self.prior(batch))
            return pyro.sample("x", PixelCNNBernoulli(self.decoder, z), obs=x)

    def guide(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, num_data: Optional[int] = None):
        """The encoder's code as a Pyro program: ``z ~ q(z|x)`` (a Delta at the softmax for
        the categorical prior)."""
        register_module("encoder", self.encoder)
        with data_plate(len(x), index, num_data):
            loc, scale = self._posterior(x)
            q = dist.Normal(loc, scale).to_event(1) if scale is not None else dist.Delta(loc, event_dim=1)
            return pyro.sample("z", q)

    # ------------------------------------------------------------------ the encoder

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.encoder(x)
        if self.prior_name == "gaussian":
            loc, log_var = out.chunk(2, dim=-1)
            return loc, torch.exp(0.5 * log_var)
        return torch.softmax(out, -1), None

    def code(self, x: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The code of ``x (B, C, H, W)``: ``(B, code_dim)``; ``μ + σ·eps`` for the Gaussian
        encoder (``eps=None``: its mean), the class probabilities for the categorical one."""
        loc, scale = self._posterior(x)
        return loc if scale is None or eps is None else loc + scale * eps

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior means (Gaussian) or class probabilities (categorical), ``(B, code_dim)``."""
        return self.code(x)

    @torch.no_grad()
    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of each image, ``(B,)`` (categorical prior)."""
        if self.prior_name != "categorical":
            raise ValueError("clusters come from a categorical prior: [model] prior = \"categorical\"")
        return self.code(x).argmax(-1)

    def prior_code(self, u: torch.Tensor) -> torch.Tensor:
        """A draw of ``p(z)`` from uniform noise ``u (B, code_dim)`` in (0, 1): the Gaussian
        by its inverse CDF, the categorical's class as ``⌊u_0 K⌋``; ``(B, code_dim)``."""
        if self.prior_name == "gaussian":
            return torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))
        k = (u[:, 0] * self.code_dim).long().clamp(max=self.code_dim - 1)
        return F.one_hot(k, self.code_dim).to(u.dtype)

    # ------------------------------------------------------------------ likelihood and sampling

    def log_px_given_z(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact ``log p(x|z)`` per image, ``(B,)`` nats, at the encoder's code (mean) unless ``z`` is given."""
        return self.decoder.log_prob(x, self.code(x) if z is None else z)

    @torch.no_grad()
    def sample(self, num_samples: int, classes: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``x ~ p(x)``: ``z ~ p(z)`` (or the one-hot codes of ``classes (n,)``), then pixel by
        pixel; ``(num_samples, C, H, W)`` binary images."""
        if classes is not None:
            z = F.one_hot(classes.to(self._zero.device).long(), self.code_dim).to(self._zero.dtype)
        else:
            u = torch.rand(num_samples, self.code_dim, generator=generator, device=self._zero.device)
            z = self.prior_code(u)
        return self.decoder.sample(z, generator)


__all__ = ["CAPABILITIES", "PRIORS", "PixelCNNBernoulli", "PixelGAN"]
