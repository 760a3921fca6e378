r"""Wasserstein GANs as an inference algorithm for the package's generative stories.

**WGAN** (Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN", algorithm 1) and
**WGAN-GP** (Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville 2017, "Improved Training
of Wasserstein GANs", algorithm 1). A critic ``f_w`` estimates the Wasserstein-1
distance between the data and the generator's distribution by the Kantorovich-Rubinstein
duality,

.. math::

    W(P_r, P_θ) = \sup_{\lVert f \rVert_L \le 1} E_{x \sim P_r}[f(x)] − E_{z \sim p(z)}[f(g_θ(z))],

and the generator ``g_θ`` descends the estimate. The critic is kept (roughly) 1-Lipschitz
by **weight clipping** to ``[−c, c]`` after each of its steps (WGAN: c = 0.01, RMSProp
5e-5, n_critic = 5) or by the **gradient penalty**
``λ E_{x̂}[(‖∇_{x̂} f(x̂)‖₂ − 1)²]`` at ``x̂ = u x + (1 − u) x̃``, ``u ~ U[0, 1]`` per point
(WGAN-GP: λ = 10, Adam 1e-4 with β = (0, 0.9), n_critic = 5).

**The generator is the model's story.** Any package model whose story is a
differentiable function of parameter-free noise (``Capabilities.reparameterized_story``:
the VAE, the hierarchies, the GAE, and any user model of that shape) is a generator:
:class:`StoryGenerator` runs ``module.model(None, None, B)`` with every latent drawn from
its block of ``ε`` (:mod:`pyro_vae.inference.story`; ε drawn by the algorithm, so that
gradients flow to whatever the prior's and decoder's parameters are): a Normal latent as
``loc + scale · ε`` given the layers above it (a hierarchy's every layer from its prior,
top first), the GAE's data index ``y`` from its fixed uniform and then ``z | y`` as
``μ_y + σ_y · ε`` (so the GAE's encoder, which makes its prior, is a generator parameter
too). At the ``x`` site it takes the generated image from the site's distribution ``p_θ(x|z)``:

* ``output = "mean"`` (default): ``E[x|z]``, the Bernoulli probabilities or the
  Gaussian mean. It is a smooth function of θ, so the critic's gradient reaches the
  decoder without a gradient estimator, and it is what the package's sample grids and
  sample-quality scores already show for a VAE (``VAE.sample``): the VAE and its
  decoder trained as a GAN are compared on the same kind of images.
* ``output = "relaxed"``: a reparameterized sample at ``temperature`` T: for a Bernoulli
  decoder the Concrete / relaxed Bernoulli ``σ((l + log u − log(1 − u)) / T)``
  (Maddison et al. 2017), for a Gaussian one ``loc + T·scale·ε``. Use it when the data
  are binary (dynamic binarization): a critic sees at once that means are not binary.

So the VAE's decoder trained as a GAN is one config entry: ``[inference] name = "wgan"``
(or ``"wgan_gp"``) on ``[model] name = "vae"`` (its guide is left untrained).

**One loop step is one critic step** (a fresh real minibatch each, as in algorithm 1's
inner loop); every ``n_critic``-th step is followed by one generator step. Each step
reports ``wasserstein`` (the critic's estimate ``mean f(x) − mean f(x̃)`` on the batch,
before its update: the curve the WGAN paper plots against time), ``critic_loss``
(−wasserstein, plus λ·penalty) and ``gradient_penalty``. ``evaluate`` reports the
estimate on held-out data against generated points of a fixed seed.

**Parameter roles**: ``"critic"`` (the critic network, owned and checkpointed by this
algorithm) and ``"generator"`` (the module's parameters that the generated x depends
on), each with its optimizer: a critic step updates only the critic, a generator step
only the generator.

**Noise, processes and resuming**: the generator's ε, the penalty's u and the relaxed
sample's noise are drawn by the algorithm's own random generator for the whole *global*
batch, each process keeping its rows (:class:`SharedNoise`); its state is checkpointed.
So a run resumes exactly, and under several processes every rank takes the
single-process steps (the losses are means over the rank's rows, which the gradient
all-reduce weighs by ``b_r / B``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae import distributed
from pyro_vae.capabilities import capabilities_of
from pyro_vae.errors import ConfigError
from pyro_vae.inference.base import Inference
from pyro_vae.inference.optim import RoleOptimizers, check_optimizer
from pyro_vae.inference.story import Layout, Reparameterized
from pyro_vae.nets.critic import CRITICS, Critic
from pyro_vae.plates import module_registration_skipped
from pyro_vae.traces import preserved_rng

OUTPUTS = ("mean", "relaxed")


@dataclass
class WGANConfig:
    """``[inference] name = "wgan"``: WGAN with weight clipping (the paper's defaults).
    The optimizer is set here, not in ``[optim]``: the papers' choices differ from it."""

    name: str = "wgan"
    #: "mlp" or "conv" (images), and the widths of its dense layers.
    critic: str = "mlp"
    critic_hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    #: Critic steps per generator step.
    n_critic: int = 5
    #: Every critic weight is clipped to [-clip, clip] after each critic step.
    clip: float = 0.01
    #: "rmsprop" (the paper's), "adam" or "adagrad", and its learning rate.
    optimizer: str = "rmsprop"
    lr: float = 5e-5
    #: The generated x: "mean" (E[x|z]) or "relaxed" (a reparameterized sample at temperature).
    output: str = "mean"
    temperature: float = 0.5


@dataclass
class WGANGPConfig:
    """``[inference] name = "wgan_gp"``: WGAN with the gradient penalty (the paper's defaults)."""

    name: str = "wgan_gp"
    critic: str = "mlp"
    critic_hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    n_critic: int = 5
    #: λ, the weight of the gradient penalty.
    gp_weight: float = 10.0
    optimizer: str = "adam"
    lr: float = 1e-4
    #: Adam's (β1, β2).
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    output: str = "mean"
    temperature: float = 0.5


# ----------------------------------------------------------------------------- noise


class SharedNoise:
    """Random draws for the rows of a global batch, identical on every process.

    :meth:`rows` fixes the current batch (``local`` rows here, of a global batch of
    ``batch_size`` rows of a set of ``num_data``); :meth:`normal` and :meth:`uniform`
    then draw ``(B, *tail)`` for the whole global batch from this object's own generator
    and return this process's rows. One process: ``B`` is ``local``.
    """

    def __init__(self, seed: int, device: torch.device, batch_size: Optional[int] = None):
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self.device, self.batch_size = torch.device(device), batch_size
        self._rows = (0, 0, 0)

    def rows(self, local: int, num_data: Optional[int]) -> None:
        if not distributed.is_active():
            self._rows = (local, 0, local)
            return
        if self.batch_size is None:
            raise RuntimeError("SharedNoise under several processes needs the global batch size")
        batch = min(self.batch_size, num_data or self.batch_size)
        lo, hi = distributed.shard_range(batch)
        if hi - lo != local:
            raise RuntimeError(f"this process has {local} rows, but its shard of a global batch of {batch} is "
                               f"{hi - lo}: step on the training loop's batches")
        self._rows = (batch, lo, hi)

    def _draw(self, fn, tail: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        batch, lo, hi = self._rows
        return fn((batch, *tail), generator=self.generator, device=self.device, dtype=dtype)[lo:hi]

    def normal(self, tail: Sequence[int] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._draw(torch.randn, tail, dtype)

    def uniform(self, tail: Sequence[int] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._draw(torch.rand, tail, dtype)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())


# ----------------------------------------------------------------------------- the generator


def generated_x(fn, output: str, temperature: float, noise) -> torch.Tensor:
    """The generated image of ``p(x|z) = fn`` (a Bernoulli or Normal, possibly under
    ``Independent``): its mean, or a relaxed sample whose noise ``noise(tail)`` draws."""
    if output == "mean":
        return fn.mean
    base = fn
    while hasattr(base, "base_dist"):
        base = base.base_dist
    shape = tuple(fn.batch_shape + fn.event_shape)[1:]
    if isinstance(base, torch.distributions.Bernoulli):
        u = noise(shape).clamp(1e-6, 1 - 1e-6)
        return torch.sigmoid((base.logits + u.log() - (-u).log1p()) / temperature)
    if isinstance(base, torch.distributions.Normal):
        return base.loc + temperature * base.scale * noise(shape)
    raise ConfigError(f"output = \"relaxed\" needs a Bernoulli or Normal p(x|z), not {type(base).__name__}: "
                      "use output = \"mean\"")


class StoryGenerator:
    """``ε (B, D) -> x (B, *event_shape)``: the module's story run forwards with every
    latent drawn from its block of ``ε`` (:mod:`pyro_vae.inference.story`: each layer of a
    hierarchy given the ones above, the GAE's index from its fixed uniform) and ``x`` the
    image of ``p(x|z)`` (see the module docstring); :attr:`z_shape` is ``(D,)``;
    :attr:`parameters` are the module's parameters that ``x`` depends on, found by
    autograd on a 2-point run."""

    def __init__(self, module: nn.Module, output: str = "mean", temperature: float = 0.5,
                 noise: Optional[SharedNoise] = None):
        if not capabilities_of(module).can_sample:
            raise ConfigError(f"{type(module).__name__} cannot sample, so it cannot be a generator: train it with an "
                              "algorithm that does not generate")
        if output not in OUTPUTS:
            raise ConfigError(f"[inference] output = {output!r}: choose one of {list(OUTPUTS)}")
        if output == "relaxed" and not temperature > 0:
            raise ConfigError(f"[inference] temperature must be positive, got {temperature}")
        self.module, self.output, self.temperature = module, output, temperature
        self.noise = noise
        with preserved_rng(), poutine.block():
            self.layout = self._layout()
            self.z_shape = (self.layout.size,)
            self.parameters = self._parameters()
        self._validated = False

    def _layout(self) -> Layout:
        layout = Layout.of(self.module.model, None, None, 2)
        if not layout.blocks or "x" not in poutine.trace(self.module.model).get_trace(None, None, 2).nodes:
            raise ConfigError(f"a generator's story has latent sites and an observed site \"x\"; "
                              f"{type(self.module).__name__}'s has latents {list(layout.blocks)}")
        return layout

    def _parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.module.parameters() if p.requires_grad]
        eps = torch.randn(2, *self.z_shape, device=params[0].device if params else None)
        noise = lambda tail: torch.rand(2, *tail, device=eps.device)  # noqa: E731
        x = self._run(eps, noise)
        grads = torch.autograd.grad(x.sum(), params, allow_unused=True)
        used = [p for p, g in zip(params, grads) if g is not None]
        if not used:
            raise ConfigError(f"{type(self.module).__name__}'s generated x depends on none of its parameters: "
                              "nothing to train")
        return used

    def _run(self, eps: torch.Tensor, noise) -> torch.Tensor:
        image = {}

        def at_x(fn):
            image["x"] = generated_x(fn, self.output, self.temperature, noise)
            return image["x"]

        with Reparameterized(self.layout, eps, at_x):
            self.module.model(None, None, len(eps))
        return image["x"]

    def __call__(self, eps: torch.Tensor) -> torch.Tensor:
        """``x`` for the noise ``eps``; the relaxed output's noise comes from :attr:`noise`."""
        # Pyro's checks on the first call only; afterwards no param sites are registered
        # (the optimizers hold the parameters), as the package's SVI does.
        fast = contextlib.ExitStack()
        if self._validated:
            fast.enter_context(pyro.validation_enabled(False))
            fast.enter_context(module_registration_skipped())
        noise = self.noise.uniform if self.noise is not None else _Uniform(None, eps).uniform
        with fast:
            x = self._run(eps, noise)
        self._validated = True
        return x


# ----------------------------------------------------------------------------- the critic's terms


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(‖∇_{x̂} f(x̂)‖₂ − 1)²`` per point at ``x̂ = u x + (1 − u) x̃``: ``(B,)``.

    ``real``, ``fake``: ``(B, *event_shape)``; ``u``: ``(B,)`` in [0, 1]. The graph is kept
    (``create_graph``), so the penalty's gradient reaches the critic's weights.
    """
    u = u.reshape((-1,) + (1,) * (real.dim() - 1))
    x_hat = (u * real + (1 - u) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[inference] {name} must be a positive integer, got {value!r} (the critic steps per "
                          "generator step; both papers use 5)")
    return value


class WGAN(Inference):
    """WGAN (``clip``) or WGAN-GP (``gp_weight``) on ``module``'s story (module docstring).

    Args:
        module: a model whose story is reparameterised (module docstring) and has an ``"x"`` site.
        critic, critic_hidden: the critic network (:class:`~pyro_vae.nets.critic.Critic`).
        n_critic: critic steps per generator step (>= 1).
        clip: clip every critic weight to [-clip, clip] (None: no clipping).
        gp_weight: λ of the gradient penalty (0: none).
        optimizer, lr, betas: one optimizer of this kind per role (``betas``: Adam's).
        output, temperature: the generated x (:class:`StoryGenerator`).
        batch_size: the global batch size (what each process's noise rows are cut from).
        seed: the seed of the algorithm's noise.
    """

    figures = ("wasserstein", "critic_loss", "gradient_penalty")
    valid_figures = ("wasserstein",)
    #: A critic's estimate is no model-selection criterion: keep the latest parameters.
    monitor = "none"
    #: The seed of the generated points held-out data are compared with.
    eval_seed = 0

    def __init__(self, module: nn.Module, critic: str = "mlp", critic_hidden: Sequence[int] = (512, 512, 512),
                 n_critic: int = 5, clip: Optional[float] = 0.01, gp_weight: float = 0.0, optimizer: str = "rmsprop",
                 lr: float = 5e-5, betas: Optional[Sequence[float]] = None, output: str = "mean",
                 temperature: float = 0.5, batch_size: Optional[int] = None, seed: int = 0):
        self.n_critic = _positive_int("n_critic", n_critic)
        if clip is not None and not clip > 0:
            raise ConfigError(f"[inference] clip must be positive, got {clip}: WGAN clips every critic weight to "
                              "[-clip, clip] (the paper: 0.01)")
        if not gp_weight >= 0:
            raise ConfigError(f"[inference] gp_weight (λ) must be >= 0, got {gp_weight} (the paper: 10)")
        if critic not in CRITICS:
            raise ConfigError(f"[inference] critic = {critic!r}: choose one of {list(CRITICS)}")
        check_optimizer(optimizer, lr)
        options = {}
        if betas is not None:
            if optimizer != "adam" or len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                raise ConfigError(f"[inference] betas = {list(betas)}: Adam's two betas in [0, 1)")
            options["betas"] = tuple(float(b) for b in betas)
        self.module, self.clip, self.gp_weight = module, clip, float(gp_weight)
        device = _device_of(module)
        self.noise = SharedNoise(seed, device, batch_size)
        self.generator = StoryGenerator(module, output, temperature, self.noise)
        event_shape = capabilities_of(module).event_shape
        if event_shape is None:
            raise ConfigError(f"{type(module).__name__} declares no event shape: the critic needs one")
        try:
            self.critic = Critic(event_shape, critic, critic_hidden).to(device)
        except ValueError as e:
            raise ConfigError(f"[inference] critic: {e}") from None
        self._clip_critic()
        self.optimizers = RoleOptimizers(optimizer, lr, {"critic": self.critic.parameters(),
                                                         "generator": self.generator.parameters}, **options)
        self.critic_steps = 0

    # ------------------------------------------------------------------ steps

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """One critic step on the real minibatch ``x (b, *event_shape)``; a generator step
        after every ``n_critic``-th. Figures per point of the batch."""
        figures = self.critic_step(x, num_data)
        if self.critic_steps % self.n_critic == 0:
            self.generator_step(len(x), num_data)
        return figures

    def critic_step(self, x: torch.Tensor, num_data: Optional[int] = None) -> dict[str, float]:
        """Ascend ``mean f(x) − mean f(g(ε))`` (− λ·penalty) in the critic's weights alone."""
        self.noise.rows(len(x), num_data)
        eps = self.noise.normal(self.generator.z_shape, x.dtype)
        with torch.no_grad():
            fake = self.generator(eps)
        w = self.critic(x).mean() - self.critic(fake).mean()
        loss, penalty = -w, torch.zeros((), device=x.device)
        if self.gp_weight > 0:
            penalty = gradient_penalty(self.critic, x, fake, self.noise.uniform((), x.dtype)).mean()
            loss = loss + self.gp_weight * penalty
        opt = self.optimizers["critic"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self._clip_critic()
        self.critic_steps += 1
        return {"wasserstein": float(w.detach()), "critic_loss": float(loss.detach()),
                "gradient_penalty": float(penalty.detach())}

    def generator_step(self, batch: int, num_data: Optional[int] = None) -> float:
        """Descend ``−mean f(g(ε))`` over ``batch`` fresh points in the generator's
        parameters alone; returns that loss."""
        self.noise.rows(batch, num_data)
        eps = self.noise.normal(self.generator.z_shape)
        self.critic.requires_grad_(False)  # no gradient is needed for the critic here
        try:
            loss = -self.critic(self.generator(eps)).mean()
            opt = self.optimizers["generator"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            self.critic.requires_grad_(True)
        return float(loss.detach())

    @torch.no_grad()
    def _clip_critic(self) -> None:
        if self.clip is not None:
            for p in self.critic.parameters():
                p.clamp_(-self.clip, self.clip)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, chunk: int = 1000) -> dict[str, float]:
        """The critic's estimate ``mean f(x) − mean f(x̃)`` on ``x`` against ``len(x)``
        generated points of a fixed seed (the same at every evaluation)."""
        if not len(x):
            return {"wasserstein": float("nan")}
        gen = torch.Generator(device=x.device).manual_seed(self.eval_seed)
        real = fake = 0.0
        for start in range(0, len(x), chunk):
            xb = x[start:start + chunk]
            eps = torch.randn((len(xb), *self.generator.z_shape), generator=gen, device=x.device, dtype=x.dtype)
            real += float(self.critic(xb).double().sum())
            fake += float(self.critic(self.generate(eps, gen)).double().sum())
        return {"wasserstein": (real - fake) / len(x)}

    def generate(self, eps: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The generated x for ``eps``, any relaxed noise from ``generator`` (default: fresh)."""
        noise = self.generator.noise
        self.generator.noise = _Uniform(generator, eps)
        try:
            return self.generator(eps)
        finally:
            self.generator.noise = noise

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {"optimizers": self.optimizers.state_dict(), "critic": self.critic.state_dict(),
                "noise": self.noise.state_dict(), "critic_steps": self.critic_steps}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizers.load_state_dict(state["optimizers"])
        self.noise.load_state_dict(state["noise"])
        self.critic_steps = int(state["critic_steps"])


class _Uniform:
    """``uniform(tail)`` of the rows of ``like``, drawn from ``generator`` (None: torch's global one)."""

    def __init__(self, generator: torch.Generator, like: torch.Tensor):
        self.generator, self.like = generator, like

    def uniform(self, tail, dtype=torch.float32):
        return torch.rand((len(self.like), *tail), generator=self.generator, device=self.like.device, dtype=dtype)


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


__all__ = ["OUTPUTS", "SharedNoise", "StoryGenerator", "WGAN", "WGANConfig", "WGANGPConfig", "generated_x",
           "gradient_penalty"]
