"""The Variational Ladder Autoencoder (``[model] name = "vlae"``; Zhao, Song & Ermon 2017):
``L`` latent layers, each injected at its own depth of one decoder and read off the
matching depth of one encoder (see :mod:`pyro_vae.models.vlae.model`)."""

from __future__ import annotations

from pyro_vae.models.vlae.config import VLAEConfig
from pyro_vae.models.vlae.model import VLAE, LadderDecoder, check_layers
from pyro_vae.models.vlae.objective import LadderELBO


def build(config, data) -> VLAE:
    """The VLAE ``config`` declares, for data of ``data.event_shape``."""
    m, g = config.model, config.guide
    if g.name != "diagonal_normal" or g.hidden is not None or g.activation is not None:
        raise ValueError("the VLAE's ladder guide mirrors its decoder's rungs ([model] hidden, depths): "
                         "leave [guide] at its defaults")
    return VLAE(data.event_shape, m.z_dims, m.hidden, m.depths, m.activation, m.likelihood, m.network)


def objective(config, vlae: VLAE, num_particles: int = 1) -> LadderELBO:
    """``elbo = "auto"``: every layer's KL in closed form, warmed up over ``warmup_steps``."""
    return LadderELBO(vlae, config.model.warmup_steps, num_particles)


__all__ = ["LadderDecoder", "LadderELBO", "VLAE", "VLAEConfig", "build", "check_layers", "objective"]
