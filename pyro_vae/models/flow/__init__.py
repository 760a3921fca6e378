"""The flow families: ``[model] name = "nice"`` and ``name = "maf"``, normalizing flows
with an exact log-density and no guide, trained by ``[inference] name = "mle"``.

* :mod:`~pyro_vae.models.flow.model` -- :class:`Flow` (the story:
  ``pyro.sample("x", TransformedDistribution(base, transforms), obs=x)``), :class:`NICE`
  and :class:`MAF`;
* :mod:`~pyro_vae.models.flow.transforms` -- NICE's coupling (additive or affine) and
  diagonal scaling as Pyro transform modules;
* :mod:`~pyro_vae.models.flow.bases` -- the base densities: standard Normal or logistic,
  MADE MoG.

The ``[data] transform`` (dequantization, rescaling, logit;
:mod:`pyro_vae.data.transforms`) is part of the flow's story (its deterministic steps)
and of its training (the dequantization noise).
"""

from __future__ import annotations

from pyro_vae.data import SPLITS
from pyro_vae.data.transforms import DataTransform
from pyro_vae.errors import ConfigError
from pyro_vae.models.flow.bases import AutoregressiveMixture, StandardBase
from pyro_vae.models.flow.config import MAFConfig, NICEConfig
from pyro_vae.models.flow.model import DENSITY, MAF, NICE, Flow
from pyro_vae.models.flow.transforms import AffineAutoregressiveLayer, Coupling, DiagonalScaling


def build_nice(config, data) -> NICE:
    """The NICE ``config`` declares, for data of ``data.event_shape``."""
    m = config.model
    return NICE(data.event_shape, m.couplings, m.hidden, m.activation, m.coupling, m.scaling, m.prior,
                data_transform=DataTransform.from_config(config.data))


def build_maf(config, data) -> MAF:
    """The MAF ``config`` declares, for data of ``data.event_shape``."""
    m = config.model
    return MAF(data.event_shape, m.num_flows, m.hidden, m.activation, m.batch_norm, m.base, m.components,
               data_transform=DataTransform.from_config(config.data))


def check_data(config, data) -> None:
    """Refuse data a flow cannot model: binarized values (a continuous density on {0, 1}
    grows without bound), and values outside the ``[data] transform``'s domain (NaN,
    grey levels outside [0, 1]), naming the value and the fix."""
    if data.binarize is not None:
        raise ConfigError(f"[data] binarize = {data.binarize!r}, but a flow models continuous values: set "
                          "[data] binarize = \"none\" (and transform = [\"dequantize\"] for 8-bit pixels)")
    transform = DataTransform.from_config(config.data)
    for split in SPLITS:
        transform.check(data.split(split), f"data set {data.name!r} ({split} split)")


__all__ = ["DENSITY", "MAF", "NICE", "AffineAutoregressiveLayer", "AutoregressiveMixture", "Coupling", "DiagonalScaling",
           "Flow", "MAFConfig", "NICEConfig", "StandardBase", "build_maf", "build_nice", "check_data"]
