"""The PixelGAN autoencoder family: ``[model] name = "pixelgan"``, trained by
``[inference] name = "adversarial_ae"``."""

from __future__ import annotations

from pyro_vae.data import DataError, check_likelihood
from pyro_vae.models.pixelgan.config import PixelGANConfig
from pyro_vae.models.pixelgan.model import CAPABILITIES, PRIORS, PixelCNNBernoulli, PixelGAN


def build(config, data) -> PixelGAN:
    """The PixelGAN autoencoder ``config`` declares, for data of ``data.event_shape``."""
    m = config.model
    return PixelGAN(data.event_shape, m.prior, m.z_dim, m.num_classes, m.hidden, m.activation, m.network,
                    m.channels, m.layers, m.kernel, m.conditioning)


def check_data(config, data) -> None:
    """The PixelCNN decoder models binary pixels: binarized data only."""
    try:
        check_likelihood(data, "bernoulli")
    except DataError as e:
        raise DataError(f"{str(e).split(': set')[0]}: the PixelGAN autoencoder's PixelCNN models binary pixels; "
                        "set [data] binarize = \"static\" or \"dynamic\"") from None


__all__ = ["CAPABILITIES", "PRIORS", "PixelCNNBernoulli", "PixelGAN", "PixelGANConfig", "build", "check_data"]
