r"""KL annealing ("warm-up") and the β-weighted ELBO, for any model and guide.

The β-weighted ELBO of a latent-variable model weighs every latent site's log-densities,
in the model and in the guide, by ``β``; observed sites (the likelihood, ``pyro.factor``
terms) keep weight 1:

.. math::

    \mathcal{L}_β(x) = E_{q(z|x)}\bigl[\log p(x|z)\bigr] − β\,E_{q(z|x)}\bigl[\log q(z|x) − \log p(z)\bigr].

For the VAE this is ``E log p(x|z) − β KL(q(z|x) ‖ p(z))`` (analytic under
``TraceMeanField_ELBO``, which requires the model's and guide's sites to carry the same
scale, as they do here). For the GAE the enumerated data index ``y`` and ``z`` share the
weight, so ``TraceEnum_ELBO`` sums ``y`` out inside it: ``β log P(z)`` with ``P`` the
exemplar mixture; its regulariser (a ``pyro.factor``) is left unweighted.

* **Warm-up** (Bowman et al. 2016; Sønderby et al. 2016, "Ladder Variational
  Autoencoders", section 2.4): ``β`` rises linearly from ``1/T`` to 1 over the first ``T``
  epochs, so that the decoder learns to use ``z`` before the KL term pulls the posteriors
  onto the prior (fewer inactive latent units). VampPrior (Tomczak & Welling 2018) trains
  all its models with ``T = 100``.
* **β-VAE** (Higgins et al. 2017): a constant ``β ≠ 1`` (``kl_weight``).

Validation ELBOs, log-likelihoods and checkpoints' best scores are always computed at
``β = 1``: the weight changes the training objective, never what is reported.
"""

from __future__ import annotations

import math

from pyro.poutine.messenger import Messenger


class scale_latents(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``weight``.

    ``pyro.poutine.scale`` scales every site; the β-weighted ELBO needs the latent ones
    only. Apply it to the model and to the guide alike::

        with scale_latents(0.1):
            loss = elbo.differentiable_loss(model, guide, x)
    """

    def __init__(self, weight: float):
        _check_weight("the latent sites' weight", weight)
        super().__init__()
        self.weight = float(weight)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


def kl_weight_at(epoch: int, kl_weight: float = 1.0, warmup_epochs: int = 0) -> float:
    """``β`` for the 0-based ``epoch``: ``kl_weight · min(1, (epoch + 1) / warmup_epochs)``
    (``kl_weight`` throughout without warm-up). Never 0, so the first epoch trains too."""
    if warmup_epochs <= 0:
        return kl_weight
    return kl_weight * min(1.0, (epoch + 1) / warmup_epochs)


def check_annealing(kl_weight: float, warmup_epochs: int) -> None:
    """Clear errors for a β or a warm-up length that cannot be used."""
    _check_weight("kl_weight (β)", kl_weight)
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an integer >= 0 (0: no warm-up), got {warmup_epochs!r}")


def _check_weight(name: str, weight) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {weight!r}")
