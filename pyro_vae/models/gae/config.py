"""The ``[model]`` settings of ``name = "gae"``: the VAE's, the prior's and those of its
training objective (:class:`~pyro_vae.models.gae.objective.ExemplarELBO`), under their
constructors' names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pyro_vae.models.vae.config import VAEConfig


@dataclass
class GAEConfig(VAEConfig):
    name: str = "gae"
    #: The prior's components: "posterior" (the GAE's) or "shared" (one learned scale
    #: per dimension for all, the Exemplar VAE's).
    bandwidth: str = "posterior"
    #: A training point's own component is not in its prior.
    leave_one_out: bool = True
    #: The penalty λ1 Σμ² − λ2 Σ(1 + log σ² − σ²), both >= 0.
    lambda1: float = 0.05
    lambda2: float = 0.05
    #: How training forms the prior: "knn" (scales to 50000 exemplars), "exact" or "random".
    estimator: str = "knn"
    #: "knn": neighbours listed per training point.
    neighbours: int = 32
    #: Random exemplars per step ("knn": the tail sample; "random": the subset).
    tail: int = 300
    #: "knn": nearest neighbours per point re-encoded with gradients each step.
    fresh: int = 0
    #: "knn": neighbour lists rebuilt from the cache every this many steps (None: every
    #: two epochs; 0: only at the first step).
    refresh_every: Optional[int] = None
