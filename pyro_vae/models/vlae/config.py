"""The ``[model]`` settings of ``name = "vlae"``: :class:`~pyro_vae.models.vlae.VLAE`'s
constructor arguments and its objective's warm-up. Every list has one entry per latent
layer, bottom (z1) first."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VLAEConfig:
    name: str = "vlae"
    #: Each latent layer's dimensions, bottom first (the paper's MNIST: three of 2).
    z_dims: list[int] = field(default_factory=lambda: [2, 2, 2])
    #: Each rung's width, bottom first: units, or channels for a conv rung (the paper's
    #: MNIST code: 64 and 128 channels, then 1024 units).
    hidden: list[int] = field(default_factory=lambda: [400, 400, 400])
    #: Network layers per rung, bottom first.
    depths: list[int] = field(default_factory=lambda: [1, 1, 1])
    #: tanh | relu | softplus | elu | sigmoid (not glu: latents are added before it).
    activation: str = "relu"
    #: "bernoulli" or "gaussian" (sigmoid mean, learned variance: a squared error).
    likelihood: str = "bernoulli"
    #: "mlp", or "conv" (the lower rungs stride-2 convolutions, for images).
    network: str = "mlp"
    #: KL warm-up by training steps: the KL weighs 1 − exp(−t/warmup_steps) (the paper's
    #: code: 15000); 0: none.
    warmup_steps: int = 15000
