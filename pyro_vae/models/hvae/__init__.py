"""The stacked two-level VAE (``[model] name = "hvae"``) and the two-level GAE
(``name = "gae2"``): ``z_2 → z_1 → x`` with the guide ``q(z_2|x) q(z_1|x, z_2)``, the top
prior N(0, I) or the GAE's exemplar mixture (see :mod:`pyro_vae.models.hvae.model`)."""

from __future__ import annotations

from pyro_vae.data.binarize import bernoulli_sample
from pyro_vae.models.gae import MomentPenalty
from pyro_vae.models.hvae.config import GAE2Config, HVAEConfig
from pyro_vae.models.hvae.model import HVAE, LEVELS, HierarchicalGAE
from pyro_vae.models.hvae.objective import HierarchicalELBO, HierarchicalExemplarELBO, lower_level_terms, normal_kl


def build(config, data) -> HVAE:
    """The two-level VAE ``config`` declares, for data of ``data.event_shape``."""
    m = config.model
    _refuse_guide_settings(config)
    return HVAE(data.event_shape, m.z_dim, m.z1_dim, m.hidden, m.activation, m.likelihood, m.network)


def build_gae2(config, data) -> HierarchicalGAE:
    """The two-level GAE over ``data.train`` (static binarization of it under dynamic
    binarization, as the GAE's exemplars)."""
    m = config.model
    _refuse_guide_settings(config)
    if len(data.train) == 0:
        raise ValueError(f"the two-level GAE's top prior is a mixture over the training set, and {data.name}'s is empty")
    exemplars = bernoulli_sample(data.train, config.seed, "train") if data.binarize == "dynamic" else data.train
    return HierarchicalGAE(exemplars, m.z_dim, m.z1_dim, m.hidden, m.activation, m.likelihood, m.network,
                           bandwidth=m.bandwidth, leave_one_out=m.leave_one_out)


def _refuse_guide_settings(config) -> None:
    """The VAE's guide and prior settings, which the two-level models inherit in their
    config but do not take."""
    g = config.guide
    if g.name != "diagonal_normal" or g.hidden is not None or g.activation is not None:
        raise ValueError("the two-level models build their own guide q(z2|x) q(z1|x, z2) with the [model]'s "
                         "hidden widths and activation: leave [guide] at its defaults")
    if config.model.prior != "normal":
        raise ValueError(f"[model] prior = {config.model.prior!r}: the two-level models' top prior is N(0, I) "
                         "(\"hvae\") or the exemplar mixture (\"gae2\"), not a choice: leave prior = \"normal\", "
                         "or use [model] name = \"vae\" for a MAF prior")


def objective(config, hvae: HVAE, num_particles: int = 1) -> HierarchicalELBO:
    """``elbo = "auto"`` for ``hvae``: the closed-form two-level ELBO."""
    return HierarchicalELBO(hvae, num_particles)


def gae2_objective(config, gae2: HierarchicalGAE, deferred: bool = True,
                   num_particles: int = 1) -> HierarchicalExemplarELBO:
    """``elbo = "auto"`` for ``gae2``: the GAE's objective (estimator, cache, penalty) with
    the lower level's terms."""
    m = config.model
    return HierarchicalExemplarELBO(gae2, m.estimator, m.neighbours, m.tail, m.fresh, m.refresh_every,
                                    deferred=deferred, penalty=MomentPenalty(m.lambda1, m.lambda2),
                                    num_particles=num_particles)


__all__ = ["GAE2Config", "HVAE", "HVAEConfig", "HierarchicalELBO", "HierarchicalExemplarELBO", "HierarchicalGAE",
           "LEVELS", "build", "build_gae2", "gae2_objective", "lower_level_terms", "normal_kl", "objective"]
