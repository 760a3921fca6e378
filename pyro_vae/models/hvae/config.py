"""The ``[model]`` settings of ``name = "hvae"`` (the stacked two-level VAE) and ``name =
"gae2"`` (the same model with the GAE's exemplar prior on its top level)."""

from __future__ import annotations

from dataclasses import dataclass

from pyro_vae.models.gae.config import GAEConfig
from pyro_vae.models.vae.config import VAEConfig


@dataclass
class HVAEConfig(VAEConfig):
    name: str = "hvae"
    #: (z_dim is the top level z2's dimensions.) The lower level z1's dimensions.
    z1_dim: int = 2


@dataclass
class GAE2Config(GAEConfig):
    name: str = "gae2"
    #: (z_dim is the top level z2's, whose prior is the exemplar mixture.) The lower level z1's dimensions.
    z1_dim: int = 2
