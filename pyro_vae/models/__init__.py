"""Models: generative stories p_θ(x, z) written as Pyro models."""

from pyro_vae.models.vae import VAE, Decoder

__all__ = ["VAE", "Decoder"]
