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
3. **generator** (role ``"generator"``: the encoder, and a prior's own parameters): descend
   ``mean softplus(−D(z_code))``, the non-saturating generator loss.

Reported: ``log_px_given_z``, the exact per-image ``log p(x|z)`` in nats at the batch's
codes (higher is better), and the two adversarial losses; ``evaluate`` reports the exact
``log p(x|z)`` at the code of zero noise (a Gaussian encoder's mean). The prior's draws and the encoder's noise come
from the algorithm's own generator for the whole global batch
(:class:`~pyro_vae.inference.adversarial.SharedNoise`): a run resumes exactly, and
several processes take the single-process steps.

**The code and the prior are the model's own programs** (:class:`StoryCode`): the code is
the guide run at ``x`` with every latent drawn from the algorithm's noise
(:mod:`pyro_vae.inference.story`: ``μ(x) + σ(x)·ε`` for a Gaussian encoder, the value of
a Delta, e.g. the PixelGAN's class probabilities), all its latent sites concatenated (a
hierarchy's every layer: the aggregate posterior of the joint code is matched to the
joint prior); the prior's draws are the story run forwards up to ``x``; ``log p(x|z)`` is
the story's ``x`` site with the latents conditioned on the code. So the algorithm trains
any model with an encoder and a prior apart from its codes
(``Capabilities(has_encoder=True, aggregate_prior=False)``): the PixelGAN autoencoder,
the VAE (Makhzani et al.'s own setting), the hierarchies. A prior with parameters of its
own (a hierarchy's ``p(z_1|z_2)``, a MAF prior) is fitted in the generator phase too: it
descends ``mean softplus(D(z_prior))``, towards the codes, while the encoder descends
towards it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pyro
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from pyro_vae.capabilities import capabilities_of
from pyro_vae.errors import ConfigError
from pyro_vae.inference.adversarial import SharedNoise, _device_of
from pyro_vae.inference.base import Inference
from pyro_vae.inference.optim import RoleOptimizers, check_optimizer
from pyro_vae.inference.story import Layout, run_latents
from pyro_vae.nets.critic import Critic
from pyro_vae.plates import module_registration_skipped
from pyro_vae.traces import preserved_rng

@dataclass
class AdversarialAEConfig:
    """``[inference] name = "adversarial_ae"``: the PixelGAN / adversarial autoencoder's training."""

    name: str = "adversarial_ae"
    #: Widths of the discriminator on the code.
    discriminator_hidden: list[int] = field(default_factory=lambda: [500, 500])
    #: Adam's learning rates: reconstruction, and the two adversarial phases.
    lr: float = 1e-3
    adversarial_lr: float = 2e-4
    #: From the 1-based epoch ``late_epoch`` on (0: never) the adversarial phases take
    #: ``late_adversarial_lr``. Why late: started at 1e-3, a PixelGAN's codes collapsed onto
    #: 2-3 classes; raised after 22 epochs at 2e-4, soft codes turned one-hot and the
    #: clustering error fell (benchmarks/README.md, ``pixelgan-clustering``).
    late_adversarial_lr: float = 1e-3
    late_epoch: int = 0
    #: Adam's (β1, β2) for every role.
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])


class StoryCode:
    """The code ``q(z|x)``, the prior's draws and ``log p(x|z)`` of ``module``'s guide and
    story (module docstring), with the parameters each depends on (autograd on a
    2-point run)."""

    def __init__(self, module: nn.Module):
        caps = capabilities_of(module)
        if caps.event_shape is None:
            raise ConfigError(f"{type(module).__name__} declares no event shape: the code's layout needs one")
        self.module = module
        with preserved_rng(), poutine.block():
            x = torch.zeros(2, *caps.event_shape, device=_device_of(module))
            self.code_layout = Layout.of(module.guide, x)
            self.prior_layout = Layout.of(module.model, None, None, 2)
            self.sites = list(self.code_layout.blocks)
            missing = [name for name in self.sites if name not in self.prior_layout.blocks]
            if not self.sites or missing:
                raise ConfigError(f"{type(module).__name__}'s guide draws {self.sites}, which its story's prior does "
                                  f"not draw ({missing}): the code is matched to the prior site by site")
            self.code_dim = self._flat(self.code(x, None)).shape[-1]
            self.parameters = self._roles(x)
        self._validated = False

    def _flat(self, values: dict) -> torch.Tensor:
        return torch.cat([values[name].flatten(1).float() for name in self.sites], -1)

    def code(self, x: torch.Tensor, eps: Optional[torch.Tensor]) -> dict:
        """The guide's latents at ``x`` from ``eps (B, code_layout.size)`` (None: zero noise)."""
        return run_latents(self.module.guide, self.code_layout, eps, x)

    def prior(self, eps: torch.Tensor) -> dict:
        """The prior's latents (the story stopped at ``x``) from ``eps (B, prior_layout.size)``."""
        return run_latents(self.module.model, self.prior_layout, eps, None, None, len(eps))

    def vector(self, values: dict) -> torch.Tensor:
        """The discriminator's input: the code's sites flattened and concatenated, ``(B, code_dim)``."""
        return self._flat(values)

    def log_px_given_z(self, x: torch.Tensor, values: dict) -> torch.Tensor:
        """``log p(x|z)`` per point ``(B,)``: the story's ``x`` site with its latents set to ``values``."""
        trace = poutine.trace(poutine.condition(self.module.model, data=values)).get_trace(x)
        return trace.nodes["x"]["fn"].log_prob(x)

    def _roles(self, x: torch.Tensor) -> dict[str, list]:
        params = [p for p in self.module.parameters() if p.requires_grad]
        eps = torch.randn(2, self.code_layout.size, device=x.device)
        values = self.code(x, eps)
        prior = self.vector(self.prior(torch.randn(2, self.prior_layout.size, device=x.device)))
        roles = {"autoencoder": _used(self.log_px_given_z(x, values).sum(), params),
                 "encoder": _used(self.vector(values).sum(), params), "prior": _used(prior.sum(), params)}
        if not roles["encoder"]:
            raise ConfigError(f"{type(self.module).__name__}'s code depends on none of its parameters: no encoder "
                              "to train")
        return roles

    def fast(self) -> contextlib.AbstractContextManager:
        """Pyro's checks on the first call only; afterwards no param sites are registered
        (the optimizers hold the parameters), as the package's SVI does."""
        stack = contextlib.ExitStack()
        if self._validated:
            stack.enter_context(pyro.validation_enabled(False))
            stack.enter_context(module_registration_skipped())
        self._validated = True
        return stack


def _used(value: torch.Tensor, params: list) -> list:
    if not value.requires_grad:
        return []
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return [p for p, g in zip(params, grads) if g is not None]


class AdversarialAE(Inference):
    """The three phases of the module docstring on ``module``, one optimizer per role.

    Args:
        module: a model with an encoder and a prior apart from its codes (module docstring).
        discriminator_hidden: the discriminator's widths.
        lr, adversarial_lr, betas: Adam's settings (reconstruction; adversarial phases).
        late_adversarial_lr, late_epoch: the adversarial phases' rate from the 1-based
            epoch ``late_epoch`` on (0: never), set by :meth:`start_epoch`.
        batch_size: the global batch size; seed: the seed of the algorithm's noise.
    """

    figures = ("log_px_given_z", "discriminator_loss", "generator_loss")
    valid_figures = ("log_px_given_z",)
    monitor = "valid_log_px_given_z"

    def __init__(self, module: nn.Module, discriminator_hidden: Sequence[int] = (500, 500), lr: float = 1e-3,
                 adversarial_lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999),
                 batch_size: Optional[int] = None, seed: int = 0, late_adversarial_lr: float = 1e-3,
                 late_epoch: int = 0):
        rates = {"lr": lr, "adversarial_lr": adversarial_lr, "late_adversarial_lr": late_adversarial_lr}
        for key, rate in rates.items():
            check_optimizer("adam", rate, f"[inference] {key}")
        if late_epoch < 0:
            raise ConfigError(f"[inference] late_epoch = {late_epoch}: the 1-based epoch from which "
                              "late_adversarial_lr applies, or 0 for never")
        self.adversarial_lr, self.late_adversarial_lr, self.late_epoch = adversarial_lr, late_adversarial_lr, late_epoch
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"[inference] betas = {list(betas)}: Adam's two betas in [0, 1)")
        self.module = module
        device = _device_of(module)
        self.noise = SharedNoise(seed, device, batch_size)
        self.story = StoryCode(module)
        self.discriminator = Critic((self.story.code_dim,), "mlp", discriminator_hidden).to(device)
        params = self.story.parameters
        # The prior's own parameters (if any) play the generator too, from the other side.
        roles = {"autoencoder": params["autoencoder"], "discriminator": self.discriminator.parameters(),
                 "generator": params["encoder"] + [p for p in params["prior"]
                                                   if all(p is not q for q in params["encoder"])]}
        self.optimizers = RoleOptimizers("adam", lr, roles, betas=tuple(float(b) for b in betas))
        for group in self._adversarial_groups():
            group["lr"] = self.scheduled_rate(0)

    def scheduled_rate(self, epoch: int) -> float:
        """The adversarial phases' rate that the schedule gives the 0-based ``epoch``."""
        late = self.late_epoch and epoch + 1 >= self.late_epoch
        return self.late_adversarial_lr if late else self.adversarial_lr

    def start_epoch(self, epoch: int) -> None:
        """Move the adversarial phases to the schedule's rate for the 0-based ``epoch``, by
        its ratio to the previous epoch's rate, so that a rate the training loop has decayed
        (``[budget] lr_decays``) stays decayed across the switch to ``late_adversarial_lr``.
        A resumed run gets here with its saved rates (the end of the previous epoch)."""
        super().start_epoch(epoch)
        if epoch > 0:
            ratio = self.scheduled_rate(epoch) / self.scheduled_rate(epoch - 1)
            for group in self._adversarial_groups():
                group["lr"] *= ratio

    def _adversarial_groups(self) -> list[dict]:
        return [group for role in ("discriminator", "generator") for group in self.optimizers[role].param_groups]

    def _code(self, x: torch.Tensor) -> dict:
        return self.story.code(x, self.noise.normal((self.story.code_layout.size,), x.dtype))

    def _prior(self, x: torch.Tensor) -> torch.Tensor:
        return self.story.vector(self.story.prior(self.noise.normal((self.story.prior_layout.size,), x.dtype)))

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
        with self.story.fast():
            log_px = self.story.log_px_given_z(x, self._code(x))
        self._descend("autoencoder", -log_px.mean())
        return float(log_px.detach().mean())

    def discriminator_step(self, x: torch.Tensor) -> float:
        with torch.no_grad(), self.story.fast():
            fake, real = self.story.vector(self._code(x)), self._prior(x)
        loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
        self._descend("discriminator", loss)
        return float(loss.detach())

    def generator_step(self, x: torch.Tensor) -> float:
        """The encoder descends ``mean softplus(−D(code))``; a prior with parameters of its
        own descends ``mean softplus(D(z_prior))`` with it (the reported loss is the former)."""
        self.discriminator.requires_grad_(False)
        try:
            with self.story.fast():
                loss = F.softplus(-self.discriminator(self.story.vector(self._code(x)))).mean()
                total = loss
                if self.story.parameters["prior"]:
                    total = total + F.softplus(self.discriminator(self._prior(x))).mean()
            self._descend("generator", total)
        finally:
            self.discriminator.requires_grad_(True)
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, chunk: int = 500) -> dict[str, float]:
        """The exact ``log p(x|z)`` per image at the code of zero noise (a Gaussian
        encoder's mean)."""
        if not len(x):
            return {"log_px_given_z": float("nan")}
        total = 0.0
        with self.story.fast():
            for s in range(0, len(x), chunk):
                xb = x[s:s + chunk]
                total += float(self.story.log_px_given_z(xb, self.story.code(xb, None)).double().sum())
        return {"log_px_given_z": total / len(x)}

    def state_dict(self) -> dict:
        return {"optimizers": self.optimizers.state_dict(), "discriminator": self.discriminator.state_dict(),
                "noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizers.load_state_dict(state["optimizers"])
        self.noise.load_state_dict(state["noise"])


__all__ = ["AdversarialAE", "AdversarialAEConfig", "StoryCode"]
