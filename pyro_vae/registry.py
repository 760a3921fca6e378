"""The one place that maps ``[model] name`` to a model family and ``[inference] name`` to
an inference algorithm.

A **family** (:class:`Family`) declares its config dataclass (which ``[model]`` keys it
takes), how it builds a module for a data set, its capabilities
(:class:`~pyro_vae.capabilities.Capabilities`) and, where its training needs terms or
state of its own, the objective SVI ascends for it. An **algorithm** (:class:`Algorithm`)
declares its config dataclass, its builder and the capabilities it needs: a family the
algorithm cannot train is refused by comparing the two declarations, before anything is
built. Adding a family or an algorithm is an entry here (see ``docs/architecture.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from pyro_vae.capabilities import Capabilities, capabilities_of
from pyro_vae.data import check_likelihood
from pyro_vae.errors import ConfigError
from pyro_vae.inference import (
    IWAE,
    WGAN,
    WGANConfig,
    WGANGPConfig,
    MCEM,
    RWS,
    SVI,
    VIMCO,
    IWAEConfig,
    MCEMConfig,
    MLE,
    MLEConfig,
    RWSConfig,
    SVIConfig,
    VIMCOConfig,
    WakeSleep,
    WakeSleepConfig,
)
from pyro_vae.inference.adversarial_ae import AdversarialAE, AdversarialAEConfig
from pyro_vae.inference.regularisers import REGULARISERS
from pyro_vae.models import flow, gae, hvae, pixelgan, vae, vlae


@dataclass(frozen=True)
class Family:
    """A model family: ``build(config, data) -> module``; ``objective(config, module,
    num_particles) -> Objective`` is what ``[inference] elbo = "auto"`` trains it with
    (None: a Pyro ELBO); ``exclusive``: the family trains with that objective only (it
    holds training terms of its own that a Pyro ELBO on the story would leave out);
    ``check_data(config, data)`` refuses data the family cannot model, before training
    (default: the decoder's ``[model] likelihood`` must suit them); ``regularised``: its
    objective takes ``[inference] regulariser`` (:mod:`pyro_vae.inference.regularisers`);
    ``defaults``: ``("section.key", value)`` pairs for the other sections, which
    :meth:`Config.from_dict <pyro_vae.config.Config.from_dict>` fills in where the user
    named no value (a flow: ``inference.name = "mle"``, ``data.binarize = "none"``), so that
    choosing the family is one entry."""

    config: type
    build: Callable
    capabilities: Capabilities
    model_class: type
    objective: Optional[Callable] = None
    exclusive: bool = False
    check_data: Optional[Callable] = None
    regularised: bool = False
    defaults: tuple[tuple[str, Any], ...] = ()


def check_decoder_data(config, data) -> None:
    """The latent-variable families' data check: values their decoder likelihood takes,
    and no ``[data] transform`` (a density model's)."""
    if config.data.transform:
        raise ConfigError(f"[data] transform = {config.data.transform} maps data for a density model, but "
                          f"[model] name = {config.model.name!r} models the data as they are: use transform = [] "
                          f"(or a flow: [model] name = \"nice\" or \"maf\")")
    if ALGORITHMS[config.inference.name].scores_likelihood:
        check_likelihood(data, config.model.likelihood)


@dataclass(frozen=True)
class Algorithm:
    """An inference algorithm: ``build(config, module, family) -> Inference``; ``requires``
    maps :class:`~pyro_vae.capabilities.Capabilities` fields to the values it needs;
    ``scores_likelihood``: it scores data under the decoder's likelihood (so the data must
    suit it; a GAN only generates, e.g. Bernoulli means for grey-level images)."""

    config: type
    build: Callable
    requires: dict = field(default_factory=dict)
    scores_likelihood: bool = True


LATENT_VARIABLE = Capabilities(has_guide=True)
#: A flow scores continuous values by exact maximum likelihood.
FLOW_DEFAULTS = (("inference.name", "mle"), ("data.binarize", "none"))

FAMILIES: dict[str, Family] = {
    "vae": Family(vae.VAEConfig, vae.build, LATENT_VARIABLE, vae.VAE, objective=vae.objective, regularised=True),
    "gae": Family(gae.GAEConfig, gae.build, Capabilities(has_guide=True, enumerated_latents=True, collapsible=True,
                                                         aggregate_prior=True, latent_sites=("y", "z")),
                  gae.GAE, objective=gae.objective, exclusive=True, regularised=True),
    # Hierarchies (issue 21): several latent layers, top first in latent_layers.
    "hvae": Family(hvae.HVAEConfig, hvae.build, Capabilities(has_guide=True, latent_sites=hvae.LEVELS,
                                                            latent_layers=hvae.LEVELS),
                   hvae.HVAE, objective=hvae.objective),
    "gae2": Family(hvae.GAE2Config, hvae.build_gae2,
                   Capabilities(has_guide=True, enumerated_latents=True, collapsible=True, aggregate_prior=True,
                                latent_sites=("y",) + hvae.LEVELS,
                                latent_layers=hvae.LEVELS),
                   hvae.HierarchicalGAE, objective=hvae.gae2_objective, exclusive=True),
    "vlae": Family(vlae.VLAEConfig, vlae.build, Capabilities(has_guide=True, latent_sites=("z3", "z2", "z1"),
                                                            latent_layers=("z3", "z2", "z1")),
                   vlae.VLAE, objective=vlae.objective),
    "nice": Family(flow.NICEConfig, flow.build_nice, flow.DENSITY, flow.NICE, check_data=flow.check_data,
                   defaults=FLOW_DEFAULTS),
    "maf": Family(flow.MAFConfig, flow.build_maf, flow.DENSITY, flow.MAF, check_data=flow.check_data,
                  defaults=FLOW_DEFAULTS),
    "pixelgan": Family(pixelgan.PixelGANConfig, pixelgan.build, pixelgan.CAPABILITIES, pixelgan.PixelGAN,
                       check_data=pixelgan.check_data),
}


def _svi(config, module: nn.Module, family: Optional[Family]) -> SVI:
    inf, opt = config.inference, config.optim
    elbo = inf.elbo
    if family is not None and family.exclusive and elbo != "auto":
        raise ConfigError(
            f"[inference] elbo = {elbo!r} would train the {config.model.name!r} model's story without its "
            "own training terms (its estimator and penalty): use elbo = \"auto\"")
    if inf.regulariser not in REGULARISERS:
        raise ConfigError(f"[inference] regulariser = {inf.regulariser!r} is unknown: choose one of {list(REGULARISERS)}")
    if inf.regulariser != "none" and not (elbo == "auto" and family is not None and family.regularised):
        raise ConfigError(
            f"[inference] regulariser = {inf.regulariser!r} is a term of the VAE's and the GAE's own objectives: "
            f"use elbo = \"auto\" with [model] name = \"vae\" or \"gae\" (here elbo = {elbo!r}, "
            f"[model] name = {config.model.name!r})")
    if elbo == "auto" and family is not None and family.objective is not None:
        elbo = family.objective(config, module, num_particles=inf.num_particles)
    elif elbo == "auto":
        elbo = "trace_enum" if capabilities_of(module).enumerated_latents else "meanfield"
    return SVI(module, elbo, inf.num_particles, opt.name, opt.lr, inf.kl_weight, inf.warmup_epochs)


def _summing_out(config, module, family: Optional[Family]):
    """For an algorithm that samples every latent: the family's objective, which sums the
    model's enumerated latents out of each training step (its estimator, penalty and
    cache), or None for a model without them (nothing to sum out)."""
    if not capabilities_of(module).enumerated_latents:
        return None
    if family is None or family.objective is None or not family.capabilities.collapsible:
        return None  # refused by the algorithm, naming what is missing
    return family.objective(config, module)


def _wake_sleep(config, module, family) -> WakeSleep:
    return WakeSleep(module, config.optim.name, config.optim.lr, sleep_batch_size=config.inference.sleep_batch_size,
                     objective=_summing_out(config, module, family))


def _rws(config, module, family) -> RWS:
    inf, opt = config.inference, config.optim
    return RWS(module, inf.num_particles, inf.insomnia, opt.name, opt.lr, objective=_summing_out(config, module, family))


def _mcem(config, module, family) -> MCEM:
    inf, opt = config.inference, config.optim
    return MCEM(module, opt.name, opt.lr, hmc_steps=inf.hmc_steps, leapfrog_steps=inf.hmc_leapfrog_steps,
                step_size=inf.hmc_step_size, target_accept=inf.target_accept, num_chains=inf.num_chains,
                m_steps=inf.m_steps, fit_guide=inf.fit_guide, backend=inf.hmc_backend,
                objective=_summing_out(config, module, family))


def _iwae(config, module, family) -> IWAE:
    return IWAE(module, config.inference.num_particles, config.optim.name, config.optim.lr,
                objective=_summing_out(config, module, family), warmup_epochs=config.inference.warmup_epochs)


def _vimco(config, module, family) -> VIMCO:
    return VIMCO(module, config.inference.num_particles, config.optim.name, config.optim.lr,
                 objective=_summing_out(config, module, family))


def _em(config, module, family) -> gae.EM:
    if family is None or family.objective is None:
        raise ConfigError("[inference] name = \"em\" uses the exemplar prior's estimator and cache: build the model "
                          "from a [model] family (\"gae\" or \"gae2\")")
    inf = config.inference
    return gae.EM(module, family.objective(config, module, deferred=False), config.optim.name, config.optim.lr,
                  m_steps=inf.m_steps, num_samples=inf.num_samples)


def _mle(config, module, family) -> MLE:
    return MLE(module, config.optim.name, config.optim.lr, eval_chunk=config.inference.eval_chunk)


def _wgan(config, module, family) -> WGAN:
    inf = config.inference
    return WGAN(module, inf.critic, inf.critic_hidden, inf.n_critic, clip=inf.clip, optimizer=inf.optimizer,
                lr=inf.lr, output=inf.output, temperature=inf.temperature, batch_size=config.data.batch_size,
                seed=config.seed)


def _wgan_gp(config, module, family) -> WGAN:
    inf = config.inference
    return WGAN(module, inf.critic, inf.critic_hidden, inf.n_critic, clip=None, gp_weight=inf.gp_weight,
                optimizer=inf.optimizer, lr=inf.lr, betas=inf.betas, output=inf.output, temperature=inf.temperature,
                batch_size=config.data.batch_size, seed=config.seed)


def _adversarial_ae(config, module, family) -> AdversarialAE:
    inf = config.inference
    return AdversarialAE(module, inf.discriminator_hidden, inf.lr, inf.adversarial_lr, inf.betas,
                         batch_size=config.data.batch_size, seed=config.seed,
                         late_adversarial_lr=inf.late_adversarial_lr, late_epoch=inf.late_epoch)


#: Every latent sampled (importance weights, wake phases, HMC): a model with enumerated
#: latents qualifies when its family sums them out (Capabilities.collapsible).
_SAMPLED = {"has_guide": True, "sampled_story": True}
#: A GAN's generator: the story run forwards as a differentiable function of noise.
_GENERATOR = {"can_sample": True, "exact_log_prob": False, "reparameterized_story": True}
#: The adversarial autoencoder: a code from an encoder, matched to a prior of its own.
_ADVERSARIAL_CODE = {"has_encoder": True, "aggregate_prior": False}

ALGORITHMS: dict[str, Algorithm] = {
    "svi": Algorithm(SVIConfig, _svi, {"has_guide": True}),
    "wake_sleep": Algorithm(WakeSleepConfig, _wake_sleep, _SAMPLED),
    "rws": Algorithm(RWSConfig, _rws, _SAMPLED),
    "mcem": Algorithm(MCEMConfig, _mcem, _SAMPLED),
    "iwae": Algorithm(IWAEConfig, _iwae, _SAMPLED),
    "vimco": Algorithm(VIMCOConfig, _vimco, _SAMPLED),
    "em": Algorithm(gae.EMConfig, _em, {"has_guide": True, "enumerated_latents": True}),
    "mle": Algorithm(MLEConfig, _mle, {"exact_log_prob": True}),
    "wgan": Algorithm(WGANConfig, _wgan, _GENERATOR, scores_likelihood=False),
    "wgan_gp": Algorithm(WGANGPConfig, _wgan_gp, _GENERATOR, scores_likelihood=False),
    "adversarial_ae": Algorithm(AdversarialAEConfig, _adversarial_ae, _ADVERSARIAL_CODE),
}


def check_compatible(capabilities: Capabilities, algorithm: str, what: str) -> None:
    """A :class:`ConfigError` when ``algorithm`` needs capabilities ``what`` lacks."""
    needs = missing_capabilities(capabilities, algorithm)
    if needs is not None:
        raise ConfigError(f"[inference] name = {algorithm!r} cannot train {what}: it needs {needs}")


def missing_capabilities(capabilities: Capabilities, algorithm: str, hint: bool = True) -> Optional[str]:
    """What ``algorithm`` needs that ``capabilities`` lack, in words (None: nothing);
    ``hint``: with the algorithm to use instead, where there is one."""
    missing = {k: v for k, v in ALGORITHMS[algorithm].requires.items() if getattr(capabilities, k) != v}
    if not missing:
        return None
    why = {("has_guide", True): "a guide to propose latents",
           ("sampled_story", True): "every latent sampled (enumerated discrete latents only where the family "
                                    "sums them out of its story: Capabilities(collapsible=True))",
           ("enumerated_latents", True): "enumerated discrete latents (an exemplar prior)",
           ("exact_log_prob", True): "an exact log-density (a normalizing flow)",
           ("can_sample", True): "a model that can sample x given z, to be the generator",
           ("exact_log_prob", False): "a latent z that generates x (a flow is trained by \"mle\")",
           ("reparameterized_story", True):
               "a story that is a differentiable function of noise, to be the generator (an autoregressive "
               "decoder draws each pixel given those drawn before it: train it with \"adversarial_ae\")",
           ("has_encoder", True): "an encoder q(z|x) whose code the discriminator matches to the prior",
           ("aggregate_prior", False):
               "a prior apart from the encoder's codes (the exemplar prior is the aggregate posterior "
               "E_x q(z|x) itself, so the discriminator has nothing to tell apart: train it with \"svi\")"}
    needs = "; ".join(why.get((k, v), f"{k} = {v}") for k, v in missing.items())
    if hint and ("exact_log_prob", True) in missing.items():
        needs += "; a latent-variable model trains with \"svi\" and the others"
    if hint and capabilities.exact_log_prob and not capabilities.has_guide:
        needs += " (a normalizing flow has none: train it with [inference] name = \"mle\")"
    return needs


def build_model(config, data) -> nn.Module:
    """The module ``[model]`` declares, for ``data`` (a :class:`~pyro_vae.data.DataSplits`)."""
    family = FAMILIES[config.model.name]
    z_dim = getattr(config.model, "z_dim", None)  # a flow has none
    if z_dim is not None and z_dim < 1:
        raise ConfigError(f"[model] z_dim must be >= 1, got {z_dim}")
    try:
        return family.build(config, data)
    except ValueError as e:
        raise ConfigError(f"[model]/[guide]: {e}") from None


def build_inference(config, module: nn.Module) -> object:
    """The algorithm ``[inference]`` declares, on ``module``."""
    name = config.inference.name
    family = FAMILIES.get(config.model.name)
    if family is not None and type(module) is not family.model_class:
        family = family_of(module)
    caps = family.capabilities if family is not None else capabilities_of(module)
    check_compatible(caps, name, f"[model] name = {config.model.name!r}" if family else type(module).__name__)
    try:
        return ALGORITHMS[name].build(config, module, family)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"[inference]/[optim]: {e}") from None


def check_data(config, data) -> None:
    """Refuse (a :class:`ConfigError` or :class:`~pyro_vae.data.DataError` naming the
    fix) data that ``[model]``'s family cannot model."""
    family = FAMILIES[config.model.name]
    (family.check_data or check_decoder_data)(config, data)


def family_of(module: nn.Module) -> Optional[Family]:
    """The family whose model class ``module`` is an instance of (exactly), if any."""
    for family in FAMILIES.values():
        if type(module) is family.model_class:
            return family
    return None


__all__ = ["ALGORITHMS", "FAMILIES", "Algorithm", "Family", "build_inference", "build_model", "check_compatible",
           "check_decoder_data", "check_data", "family_of", "missing_capabilities"]
