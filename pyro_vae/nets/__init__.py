"""Networks shared by models and guides.

* :mod:`pyro_vae.nets.mlp`: the activations, :func:`mlp` and :class:`GaussianHead`;
* :mod:`pyro_vae.nets.bodies`: :func:`encoder_body` and :func:`decoder_body`, networks
  for data of any event shape, ``network="mlp"`` or ``"conv"``;
* :mod:`pyro_vae.nets.conv`: the convolutional stacks, their rule and channel schedule;
* :mod:`pyro_vae.nets.shapes`: event-shape helpers.

``pyro_vae.nets.mlp`` as an attribute is the function :func:`mlp` (as it was before
``nets`` became a package); import the module's other names with
``from pyro_vae.nets.mlp import ...`` or from here.
"""

from pyro_vae.nets.bodies import (
    NETWORKS,
    DecoderBody,
    FlatMLP,
    GaussianPair,
    LinearToShape,
    decoder_body,
    encoder_body,
)
from pyro_vae.nets.conv import (
    ConvDecoderBody,
    ConvEncoder,
    channel_activation,
    conv_channels,
    conv_sizes,
)
from pyro_vae.nets.mlp import ACTIVATIONS, GATED, GaussianHead, activation, mlp

__all__ = [
    "ACTIVATIONS",
    "GATED",
    "NETWORKS",
    "ConvDecoderBody",
    "ConvEncoder",
    "DecoderBody",
    "FlatMLP",
    "GaussianHead",
    "GaussianPair",
    "LinearToShape",
    "activation",
    "channel_activation",
    "conv_channels",
    "conv_sizes",
    "decoder_body",
    "encoder_body",
    "mlp",
]
