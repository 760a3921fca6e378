"""The ``[model]`` settings of ``name = "pixelgan"``: :class:`~pyro_vae.models.pixelgan.PixelGAN`'s
constructor arguments (the data set supplies the event shape)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PixelGANConfig:
    name: str = "pixelgan"
    #: "gaussian" (z ~ N(0, I): a global/local split) or "categorical" (z one-hot of K
    #: classes: the clustering setting, content in z and style in the PixelCNN).
    prior: str = "gaussian"
    #: Gaussian prior: latent dimensions.
    z_dim: int = 8
    #: Categorical prior: K >= 2 classes.
    num_classes: int = 10
    #: The encoder (the decoder is the PixelCNN): widths of its dense layers, activation, "mlp" or "conv".
    hidden: list[int] = field(default_factory=lambda: [500, 500])
    activation: str = "relu"
    network: str = "mlp"
    #: The PixelCNN decoder: channels, gated layers, kernel, "global" or "local" conditioning.
    channels: int = 32
    layers: int = 5
    kernel: int = 3
    conditioning: str = "global"
