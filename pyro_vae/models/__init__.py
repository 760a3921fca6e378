"""Model families: generative stories p_θ(x, z) written as Pyro models, one folder each.

A family's folder holds its config dataclass (``config.py``: the ``[model]`` keys it
takes, under its constructor's names), its model (``model.py``) and whatever else is
its own (the GAE's prior, estimators and training objective); its entry in
:data:`pyro_vae.registry.FAMILIES` declares how it is built and what it can do.

A model module has ``model(x=None, index=None, num_data=None)`` and
``guide(x, index=None, num_data=None)``, plain Pyro callables over the ``"data"`` plate
(:func:`pyro_vae.plates.data_plate`), with ``x`` of shape ``(batch, *event_shape)``;
``capabilities`` (:class:`pyro_vae.capabilities.Capabilities`); and, for generation and
plots, ``sample(n)``, ``encode(x)``, ``reconstruct(x)``, ``decoder.mean(z)``, ``z_dim``
and ``prior_quantiles(u)`` (where its prior puts each latent dimension: the span of the
manifold plot). A normalizing flow (:mod:`pyro_vae.models.flow`) has a model and no guide:
its capability is an exact ``log_prob(x)``, and ``to_base(x)`` is its picture of the data.
"""

from pyro_vae.models.flow import MAF, NICE, Flow, MAFConfig, NICEConfig
from pyro_vae.models.gae import GAE, ExemplarELBO, ExemplarPrior, GAEConfig
from pyro_vae.models.vae import VAE, Decoder, StandardNormal, VAEConfig

__all__ = ["GAE", "MAF", "NICE", "VAE", "Decoder", "ExemplarELBO", "ExemplarPrior", "Flow", "GAEConfig", "MAFConfig",
           "NICEConfig", "StandardNormal", "VAEConfig"]
