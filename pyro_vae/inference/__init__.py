"""Inference algorithms, chosen by name in the experiment config.

``build_inference(config, module)`` is the one place that maps
``[inference] name = ...`` to an algorithm: adding one is a new entry in
:data:`INFERENCE`. The algorithms:

* ``"svi"`` -- AEVB/SGVB: gradient ascent on the ELBO (``elbo = "meanfield"``,
  ``"trace"``, ``"trace_enum"``, ...); :mod:`pyro_vae.inference.svi`. Its
  ``kl_weight`` (β-VAE) and ``warmup_epochs`` (KL warm-up) weigh the latent terms:
  :mod:`pyro_vae.inference.annealing`.
* ``"wake_sleep"`` -- classic single-sample wake-sleep; ``"rws"`` -- reweighted
  wake-sleep with ``num_particles`` K >= 2 (Pyro's ``ReweightedWakeSleep``, made
  correct for minibatches); :mod:`pyro_vae.inference.wake_sleep`.
* ``"mcem"`` -- Monte Carlo EM with an HMC E-step; :mod:`pyro_vae.inference.mcem`.
* ``"iwae"`` -- the importance-weighted bound with K particles (``RenyiELBO(alpha=0)``);
  ``"vimco"`` -- the same bound with VIMCO gradients for discrete guide sites;
  :mod:`pyro_vae.inference.importance`.

In Python, ``make_inference(module, "mcem", lr=0.02, hmc_steps=2)`` builds one without a
config file (keywords are :class:`~pyro_vae.config.InferenceConfig` and
:class:`~pyro_vae.config.OptimConfig` fields).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from pyro_vae.config import Config, ConfigError, InferenceConfig
from pyro_vae.inference.base import Inference
from pyro_vae.inference.importance import IWAE, VIMCO
from pyro_vae.inference.mcem import MCEM
from pyro_vae.inference.svi import ELBOS, OPTIMIZERS, SVI, make_elbo
from pyro_vae.inference.wake_sleep import RWS, MinibatchRWS, WakeSleep


def _svi(config: Config, module: nn.Module) -> SVI:
    inf, opt = config.inference, config.optim
    elbo = inf.elbo
    if elbo == "auto":
        elbo = "trace_enum" if getattr(module, "has_enumerated_latents", False) else "meanfield"
    return SVI(module, elbo, inf.num_particles, opt.name, opt.lr, inf.kl_weight, inf.warmup_epochs)


def _wake_sleep(config: Config, module: nn.Module) -> WakeSleep:
    inf, opt = config.inference, config.optim
    return WakeSleep(module, opt.name, opt.lr, sleep_batch_size=inf.sleep_batch_size)


def _rws(config: Config, module: nn.Module) -> RWS:
    inf, opt = config.inference, config.optim
    return RWS(module, inf.num_particles, inf.insomnia, opt.name, opt.lr)


def _mcem(config: Config, module: nn.Module) -> MCEM:
    inf, opt = config.inference, config.optim
    return MCEM(module, opt.name, opt.lr, hmc_steps=inf.hmc_steps, leapfrog_steps=inf.hmc_leapfrog_steps,
                step_size=inf.hmc_step_size, target_accept=inf.target_accept, num_chains=inf.num_chains,
                m_steps=inf.m_steps, fit_guide=inf.fit_guide, backend=inf.hmc_backend)


def _iwae(config: Config, module: nn.Module) -> IWAE:
    return IWAE(module, config.inference.num_particles, config.optim.name, config.optim.lr)


def _vimco(config: Config, module: nn.Module) -> VIMCO:
    return VIMCO(module, config.inference.num_particles, config.optim.name, config.optim.lr)


INFERENCE = {
    "svi": _svi,
    "wake_sleep": _wake_sleep,
    "rws": _rws,
    "mcem": _mcem,
    "iwae": _iwae,
    "vimco": _vimco,
}


def build_inference(config: Config, module: nn.Module) -> Inference:
    name = config.inference.name
    if name not in INFERENCE:
        raise ConfigError(f"[inference] name = {name!r} is unknown: choose one of {sorted(INFERENCE)}")
    inf = config.inference
    if name != "svi" and (inf.kl_weight != 1.0 or inf.warmup_epochs):
        raise ConfigError(f"[inference] kl_weight and warmup_epochs weigh the ELBO of \"svi\"; "
                          f"{name!r} does not use them: remove them or use name = \"svi\"")
    try:
        return INFERENCE[name](config, module)
    except ValueError as e:
        raise ConfigError(f"[inference]/[optim]: {e}") from None


def make_inference(module: nn.Module, name: str = "svi", **settings) -> Inference:
    """The algorithm ``name`` on ``module``, configured by keywords: any field of
    :class:`~pyro_vae.config.InferenceConfig` (``num_particles``, ``hmc_steps``, ...) or
    of :class:`~pyro_vae.config.OptimConfig` (``optimizer`` for its ``name``, ``lr``).

    ``make_inference(vae, "wake_sleep", optimizer="adagrad", lr=0.02)`` is what
    ``[inference] name = "wake_sleep"`` with ``[optim] name = "adagrad"`` builds.
    """
    inference_fields = {f.name for f in dataclasses.fields(InferenceConfig)} - {"name"}
    optim = {}
    if "optimizer" in settings:
        optim["name"] = settings.pop("optimizer")
    if "lr" in settings:
        optim["lr"] = settings.pop("lr")
    unknown = sorted(set(settings) - inference_fields)
    if unknown:
        raise ConfigError(f"make_inference: unknown setting(s) {unknown}; known: "
                          f"{sorted(inference_fields | {'optimizer', 'lr'})}")
    config = Config.from_dict({"inference": {"name": name, **settings}, "optim": optim})
    return build_inference(config, module)


__all__ = [
    "ELBOS", "INFERENCE", "IWAE", "MCEM", "OPTIMIZERS", "SVI", "VIMCO", "Inference", "MinibatchRWS",
    "RWS", "WakeSleep", "build_inference", "make_elbo", "make_inference",
]
