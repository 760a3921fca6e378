"""The ``[model]`` settings of the flow families: ``name = "nice"``
(:class:`~pyro_vae.models.flow.NICE`) and ``name = "maf"``
(:class:`~pyro_vae.models.flow.MAF`), their constructors' arguments (the data set
supplies the event shape; ``[data] transform`` the data-space transform)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NICEConfig:
    name: str = "nice"
    #: Coupling layers, alternating which half (odd or even dimensions) they change (the paper: 4).
    couplings: int = 4
    #: Widths of each coupling network's hidden layers (the paper's MNIST: 5 of 1000).
    hidden: list[int] = field(default_factory=lambda: [1000] * 5)
    #: relu (the paper's) | tanh | softplus | elu | sigmoid.
    activation: str = "relu"
    #: "additive" (NICE: y = x + m(x')) or "affine" (RealNVP: y = x ⊙ exp(s(x')) + m(x')).
    coupling: str = "additive"
    #: The final diagonal scaling h = exp(s) ⊙ f(x).
    scaling: bool = True
    #: The base distribution: "logistic" (the paper's) or "normal".
    prior: str = "logistic"


@dataclass
class MAFConfig:
    name: str = "maf"
    #: Autoregressive layers K: MAF(5), MAF(10). MADE is num_flows = 1 with batch_norm = false;
    #: MADE MoG is num_flows = 0 with base = "made_mog"; MAF MoG is num_flows = 5 with it.
    num_flows: int = 5
    #: Widths of each MADE's hidden layers (the paper's MNIST: one of 1024).
    hidden: list[int] = field(default_factory=lambda: [1024])
    #: relu | tanh | softplus | elu | sigmoid.
    activation: str = "relu"
    #: Batch normalisation after each autoregressive layer (Pyro's BatchNorm transform).
    batch_norm: bool = True
    #: "normal" (N(0, I)) or "made_mog" (a MADE whose conditionals are mixtures of Gaussians).
    base: str = "normal"
    #: Gaussians per conditional of the "made_mog" base (the paper: 10).
    components: int = 10
