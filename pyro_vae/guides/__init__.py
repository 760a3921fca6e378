"""Guides: amortized approximate posteriors q_φ(z|x): the diagonal Gaussian and the IAF posterior."""

from pyro_vae.guides.amortized import DiagonalNormalGuide, GaussianEncoder
from pyro_vae.guides.iaf import IAFGuide

__all__ = ["DiagonalNormalGuide", "GaussianEncoder", "IAFGuide"]
