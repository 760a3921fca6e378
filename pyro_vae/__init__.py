"""pyro-vae: deep latent-variable models as Pyro models, trained, evaluated and compared
through one declarative package (``docs/architecture.md`` shows its seams)."""

from pyro_vae.capabilities import Capabilities
from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.models import GAE, VAE

__version__ = "0.2.0"
__all__ = ["GAE", "VAE", "Capabilities", "DiagonalNormalGuide", "GaussianEncoder"]
