"""pyro-vae: deep latent-variable models as Pyro models with amortized guides."""

from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.models import GAE, VAE

__version__ = "0.2.0"
__all__ = ["GAE", "VAE", "DiagonalNormalGuide", "GaussianEncoder"]
