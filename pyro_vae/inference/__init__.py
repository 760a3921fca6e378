"""Inference algorithms, chosen by name in the experiment config.

``build_inference(config, module)`` is the one place that maps
``[inference] name = ...`` to an algorithm: adding one is a new entry in
:data:`INFERENCE`.
"""

from __future__ import annotations

from torch import nn

from pyro_vae.config import Config, ConfigError
from pyro_vae.inference.base import Inference
from pyro_vae.inference.svi import ELBOS, OPTIMIZERS, SVI, make_elbo


def _svi(config: Config, module: nn.Module) -> SVI:
    inf, opt = config.inference, config.optim
    elbo = inf.elbo
    if elbo == "auto":
        elbo = "trace_enum" if getattr(module, "has_enumerated_latents", False) else "meanfield"
    return SVI(module, elbo, inf.num_particles, opt.name, opt.lr)


INFERENCE = {"svi": _svi}


def build_inference(config: Config, module: nn.Module) -> Inference:
    name = config.inference.name
    if name not in INFERENCE:
        raise ConfigError(f"[inference] name = {name!r} is unknown: choose one of {sorted(INFERENCE)}")
    try:
        return INFERENCE[name](config, module)
    except ValueError as e:
        raise ConfigError(f"[inference]/[optim]: {e}") from None


__all__ = ["ELBOS", "INFERENCE", "OPTIMIZERS", "SVI", "Inference", "build_inference", "make_elbo"]
