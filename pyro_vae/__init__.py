"""pyro-vae: deep latent-variable models as Pyro models, trained, evaluated and compared
through one declarative package (``docs/architecture.md`` shows its seams)."""

__version__ = "0.3.0"  # first: modules below read it (run directories record the release)

from pyro_vae.capabilities import Capabilities  # noqa: E402
from pyro_vae.guides import DiagonalNormalGuide, GaussianEncoder  # noqa: E402
from pyro_vae.models import GAE, VAE  # noqa: E402

__all__ = ["GAE", "VAE", "Capabilities", "DiagonalNormalGuide", "GaussianEncoder"]
