"""The ELBO every algorithm reports on held-out data, so that their curves compare."""

from __future__ import annotations

import contextlib

import pyro.infer
import torch

from pyro_vae.capabilities import capabilities_of


@torch.no_grad()
def evaluate_elbo(module, x: torch.Tensor) -> float:
    """The ELBO per data point of ``module`` on ``x`` (the whole batch is the data set).

    :class:`~pyro.infer.TraceMeanField_ELBO`: the KL of each latent site analytically
    where torch has it, else sampled. A model with enumerated discrete latents is scored
    through its collapsed story (``module.collapsed()``: the GAE's ``z`` from the exact
    mixture, ``y`` summed out), which is the enumerated ELBO. A guide with
    non-reparameterized (discrete) sites, which that estimator refuses, gets the plain
    Monte Carlo ELBO (:class:`~pyro.infer.Trace_ELBO`).
    """
    enumerated = capabilities_of(module).enumerated_latents
    with module.collapsed() if enumerated else contextlib.nullcontext():
        try:
            return -pyro.infer.TraceMeanField_ELBO().loss(module.model, module.guide, x) / len(x)
        except NotImplementedError:
            return -pyro.infer.Trace_ELBO().loss(module.model, module.guide, x) / len(x)
