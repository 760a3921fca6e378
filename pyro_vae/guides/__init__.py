"""Guides: amortized approximate posteriors q_φ(z|x)."""

from pyro_vae.guides.amortized import DiagonalNormalGuide, GaussianEncoder

__all__ = ["DiagonalNormalGuide", "GaussianEncoder"]
