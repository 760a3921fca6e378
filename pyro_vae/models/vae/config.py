"""The ``[model]`` settings of ``name = "vae"``: :class:`~pyro_vae.models.vae.VAE`'s
constructor arguments (the data set supplies the event shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class VAEConfig:
    name: str = "vae"
    #: Latent dimensions N_z.
    z_dim: int = 2
    #: Widths of the decoder's hidden layers (and of the encoder's, unless [guide] says).
    hidden: list[int] = field(default_factory=lambda: [200])
    #: tanh | relu | softplus | elu | sigmoid | glu (gated layers, as VampPrior's).
    activation: str = "tanh"
    #: "bernoulli" (binary data) or "gaussian" (sigmoid mean, learned variance).
    likelihood: str = "bernoulli"
    #: "mlp", or "conv" (stride-2 convolutions for image data, e.g. 28x28 and 64x64).
    network: str = "mlp"
    #: The prior on z: "normal" (N(0, I)) or "maf" (a MAF over z with base N(0, I), learned).
    prior: str = "normal"
    #: prior = "maf": its autoregressive layers, and each MADE's hidden widths (at least
    #: z_dim; None: [max(64, 2 z_dim)]).
    prior_flows: int = 2
    prior_hidden: Optional[list[int]] = None
