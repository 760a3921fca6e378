"""Inference algorithms, each in its own module with its own ``[inference]`` settings.

* ``"svi"`` -- AEVB/SGVB: gradient ascent on the ELBO (``elbo = "meanfield"``,
  ``"trace"``, ``"trace_enum"``, ...) or on a model family's own objective;
  :mod:`pyro_vae.inference.svi`. Its ``kl_weight`` (β-VAE) and ``warmup_epochs`` (KL
  warm-up) weigh the latent terms: :mod:`pyro_vae.inference.annealing`.
* ``"wake_sleep"`` -- classic single-sample wake-sleep; ``"rws"`` -- reweighted
  wake-sleep with ``num_particles`` K >= 2 (Pyro's ``ReweightedWakeSleep``, made
  correct for minibatches); :mod:`pyro_vae.inference.wake_sleep`.
* ``"mcem"`` -- Monte Carlo EM with an HMC E-step; :mod:`pyro_vae.inference.mcem`.
* ``"iwae"`` -- the importance-weighted bound with K particles (``RenyiELBO(alpha=0)``);
  ``"vimco"`` -- the same bound with VIMCO gradients for discrete guide sites;
  :mod:`pyro_vae.inference.importance`.
* ``"em"`` -- EM for the GAE's enumerated data index; :mod:`pyro_vae.models.gae.em`.
* ``"wgan"``, ``"wgan_gp"`` -- Wasserstein GANs (weight clipping, gradient penalty) with the
  model's story as the generator and a critic of its own; :mod:`pyro_vae.inference.adversarial`.
* ``"mle"`` -- exact maximum likelihood for a model with an exact log-density (a
  normalizing flow); :mod:`pyro_vae.inference.mle`.

The algorithms that sample every latent (wake-sleep, RWS, MCEM, IWAE, VIMCO) train a model
with enumerated latents when its family sums them out (``Capabilities.collapsible``, the
GAE): :class:`pyro_vae.inference.base.Collapsing`; ``docs/inference_matrix.md``.

The registry mapping names to algorithms, their settings and the model capabilities
they need is :data:`pyro_vae.registry.ALGORITHMS`; :func:`pyro_vae.train.make_inference`
builds one from keywords.
"""

from pyro_vae.inference.adversarial import WGAN, WGANConfig, WGANGPConfig
from pyro_vae.inference.base import Inference, Objective, PyroELBO
from pyro_vae.inference.importance import IWAE, VIMCO, IWAEConfig, VIMCOConfig
from pyro_vae.inference.mcem import MCEM, MCEMConfig
from pyro_vae.inference.mle import MLE, MLEConfig
from pyro_vae.inference.optim import OPTIMIZERS, RoleOptimizers, make_optimizer
from pyro_vae.inference.svi import ELBOS, SVI, SVIConfig, make_elbo
from pyro_vae.inference.wake_sleep import RWS, MinibatchRWS, RWSConfig, WakeSleep, WakeSleepConfig

__all__ = [
    "ELBOS", "IWAE", "IWAEConfig", "MCEM", "MCEMConfig", "MLE", "MLEConfig", "OPTIMIZERS", "RWS", "RWSConfig", "SVI",
    "SVIConfig", "VIMCO", "VIMCOConfig", "WGAN", "WGANConfig", "WGANGPConfig", "Inference", "MinibatchRWS", "Objective", "PyroELBO", "RoleOptimizers", "WakeSleep",
    "WakeSleepConfig", "make_elbo", "make_optimizer",
]
