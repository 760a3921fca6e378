r"""Adversarial autoencoder training (Makhzani et al. 2016, "Adversarial Autoencoders";
the PixelGAN autoencoder's, Makhzani & Frey 2017, section 2): reconstruction through the
decoder's exact likelihood, and a GAN on the code that matches the aggregate posterior
``q(z) = E_{p_data(x)} q(z|x)`` to the prior ``p(z)``.

Each step, on the minibatch ``x``:

1. **reconstruction** (role ``"autoencoder"``: encoder and decoder): descend
   ``−(1/b) Σ_i log p(x_i | z_i)``, ``z_i ~ q(z|x_i)`` (reparameterized);
2. **discriminator** (role ``"discriminator"``): descend the logistic loss of telling
   ``z ~ p(z)`` (label 1) from ``z ~ q(z|x)`` (label 0):
   ``mean softplus(−D(z_prior)) + mean softplus(D(z_code))``;
3. **generator** (role ``"generator"``: the encoder): descend ``mean softplus(−D(z_code))``,
   the non-saturating generator loss.

Reported: ``log_px_given_z``, the exact per-image ``log p(x|z)`` in nats at the batch's
codes (higher is better), and the two adversarial losses; ``evaluate`` reports the exact
``log p(x|z)`` at the encoder's mean code. The prior's draws and the encoder's noise come
from the algorithm's own generator for the whole global batch
(:class:`~pyro_vae.inference.adversarial.SharedNoise`): a run resumes exactly, and
several processes take the single-process steps.

The model provides (the PixelGAN autoencoder does, :class:`~pyro_vae.models.pixelgan.PixelGAN`):
``code(x, eps) -> (b, code_dim)``, ``code_dim``, ``prior_code(u) -> (b, code_dim)`` from
uniform noise, ``log_px_given_z(x, z) -> (b,)``, and ``encoder`` / ``decoder`` modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError
from pyro_vae.inference.adversarial import SharedNoise, _device_of
from pyro_vae.inference.base import Inference
from pyro_vae.inference.optim import RoleOptimizers, check_optimizer
from pyro_vae.nets.critic import Critic

PROTOCOL = ("code", "code_dim", "prior_code", "log_px_given_z", "encoder", "decoder")


@dataclass
class AdversarialAEConfig:
    """``[inference] name = "adversarial_ae"``: the PixelGAN / adversarial autoencoder's training."""

    name: str = "adversarial_ae"
    #: Widths of the discriminator on the code.
    discriminator_hidden: list[int] = field(default_factory=lambda: [500, 500])
    #: Adam's learning rates: reconstruction, and the two adversarial phases.
    lr: float = 1e-3
    adversarial_lr: float = 2e-4
    #: Adam's (β1, β2) for every role.
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])


class AdversarialAE(Inference):
    """The three phases of the module docstring on ``module``, one optimizer per role.

    Args:
        module: a model with the protocol of the module docstring.
        discriminator_hidden: the discriminator's widths.
        lr, adversarial_lr, betas: Adam's settings (reconstruction; adversarial phases).
        batch_size: the global batch size; seed: the seed of the algorithm's noise.
    """

    figures = ("log_px_given_z", "discriminator_loss", "generator_loss")
    valid_figures = ("log_px_given_z",)
    monitor = "valid_log_px_given_z"

    def __init__(self, module: nn.Module, discriminator_hidden: Sequence[int] = (500, 500), lr: float = 1e-3,
                 adversarial_lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999),
                 batch_size: Optional[int] = None, seed: int = 0):
        missing = [name for name in PROTOCOL if not hasattr(module, name)]
        if missing:
            raise ConfigError(f"[inference] name = \"adversarial_ae\" trains a model whose code is matched to its "
                              f"prior by a discriminator (the PixelGAN autoencoder); {type(module).__name__} lacks "
                              f"{missing}: use [model] name = \"pixelgan\"")
        check_optimizer("adam", lr)
        check_optimizer("adam", adversarial_lr)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"[inference] betas = {list(betas)}: Adam's two betas in [0, 1)")
        self.module = module
        device = _device_of(module)
        self.noise = SharedNoise(seed, device, batch_size)
        self.discriminator = Critic((module.code_dim,), "mlp", discriminator_hidden).to(device)
        roles = {"autoencoder": list(module.encoder.parameters()) + list(module.decoder.parameters()),
                 "discriminator": self.discriminator.parameters(), "generator": module.encoder.parameters()}
        self.optimizers = RoleOptimizers("adam", lr, roles, betas=tuple(float(b) for b in betas))
        for role in ("discriminator", "generator"):
            for group in self.optimizers[role].param_groups:
                group["lr"] = adversarial_lr

    def _eps(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise.normal((self.module.code_dim,), x.dtype)

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """The three phases on the minibatch ``x (b, *event_shape)``; figures per image."""
        self.noise.rows(len(x), num_data)
        log_px = self.reconstruction_step(x)
        d_loss = self.discriminator_step(x)
        g_loss = self.generator_step(x)
        return {"log_px_given_z": log_px, "discriminator_loss": d_loss, "generator_loss": g_loss}

    def _descend(self, role: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def reconstruction_step(self, x: torch.Tensor) -> float:
        log_px = self.module.log_px_given_z(x, self.module.code(x, self._eps(x)))
        self._descend("autoencoder", -log_px.mean())
        return float(log_px.detach().mean())

    def discriminator_step(self, x: torch.Tensor) -> float:
        with torch.no_grad():
            fake = self.module.code(x, self._eps(x))
        real = self.module.prior_code(self.noise.uniform((self.module.code_dim,), x.dtype))
        loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
        self._descend("discriminator", loss)
        return float(loss.detach())

    def generator_step(self, x: torch.Tensor) -> float:
        self.discriminator.requires_grad_(False)
        try:
            loss = F.softplus(-self.discriminator(self.module.code(x, self._eps(x)))).mean()
            self._descend("generator", loss)
        finally:
            self.discriminator.requires_grad_(True)
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, chunk: int = 500) -> dict[str, float]:
        """The exact ``log p(x|z)`` per image at the encoder's mean code."""
        if not len(x):
            return {"log_px_given_z": float("nan")}
        total = sum(float(self.module.log_px_given_z(x[s:s + chunk]).double().sum()) for s in range(0, len(x), chunk))
        return {"log_px_given_z": total / len(x)}

    def state_dict(self) -> dict:
        return {"optimizers": self.optimizers.state_dict(), "discriminator": self.discriminator.state_dict(),
                "noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizers.load_state_dict(state["optimizers"])
        self.noise.load_state_dict(state["noise"])


__all__ = ["AdversarialAE", "AdversarialAEConfig"]
