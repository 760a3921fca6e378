r"""The GAE family (Kim, Kim & Hwang 2018): ``[model] name = "gae"``, a VAE whose prior is
the mixture of its own posteriors over the training points.

The VAE fixes ``p(z) = N(0, I)``. The GAE lets the marginal of ``z`` be the encoder's
posteriors averaged over the ``n`` training points ("exemplars")::

    P(z; φ)    = (1/n) Σ_j q_φ(z | x_j),        q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²)
    P(x; θ, φ) = (1/n) Σ_j ∫ p_θ(x|z) q_φ(z|x_j) dz

The folder, by concern:

* :mod:`~pyro_vae.models.gae.model` -- :class:`GAE`, the VAE with the exemplar prior, and
  responsibilities (which training points explain an input);
* :mod:`~pyro_vae.models.gae.prior` -- the prior component: ``y ~ U{exemplars}`` (enumerated),
  ``z ~ q_φ(z|x_y)``, leave-one-out for training points, a shared bandwidth as an option;
* :mod:`~pyro_vae.models.gae.kernels`, :mod:`~pyro_vae.models.gae.distribution`,
  :mod:`~pyro_vae.models.gae.search` -- mixture kernels, the distributions of ``z``, and
  neighbour search;
* :mod:`~pyro_vae.models.gae.estimators`, :mod:`~pyro_vae.models.gae.cache`,
  :mod:`~pyro_vae.models.gae.objective` -- training: the scalable prior estimators, the
  cache of all ``n`` encoder statistics, and the objective that owns it (with the λ
  penalty and the deferred gradients);
* :mod:`~pyro_vae.models.gae.em` -- EM as an inference algorithm (``name = "em"``).

**Leave-one-out.** A training point's own component is excluded from its prior, else the
prior can put a spike on each training point and the model memorises (the Exemplar VAE,
Norouzi et al. 2020, does the same). Held-out points use the mixture over all ``n``.

**The penalty.** Training maximises ``Σ_i [ELBO(x_i) − R(x_i)]`` with
``R = λ_1 Σ_d μ_d² − λ_2 Σ_d (1 + log σ_d² − σ_d²)`` (:class:`MomentPenalty`). The GAE
objective alone is invariant to any invertible affine map of the latent space (the
components, the posteriors and the decoder's first layer absorb it), so nothing fixes the
latent scale and it drifts (posterior scales of 6 to 20 after a few epochs on MNIST
without it). With ``λ_1 = λ_2 = λ`` the penalty of a global scale ``c`` is minimised where
the aggregate posterior has ``E[μ_d² + σ_d²] ≈ 1`` per dimension, whatever ``λ``; a small
``λ`` (default 0.05) pins the scale while costing little. It is a training term, so held-out
ELBOs and log-likelihoods stay bounds on ``log P(x)``.

**Bandwidth.** With ``bandwidth = "shared"`` the components are ``N(μ_φ(x_j), diag s²)``
with ``s`` one learned scale per latent dimension (the Exemplar VAE's Parzen window,
there isotropic), fitted leave-one-out by the objective itself. The posteriors keep their
own ``σ_φ(x)``; only the prior's components change.

Evaluation (held-out ELBO, log-likelihood, sampling) always uses the exact mixture over
all ``n`` components, encoded with the current parameters.
"""

from __future__ import annotations

from pyro_vae.data.binarize import bernoulli_sample
from pyro_vae.inference.regularisers import make_regulariser
from pyro_vae.models.gae.config import GAEConfig
from pyro_vae.models.gae.em import EM, EMConfig
from pyro_vae.models.gae.estimators import ESTIMATORS
from pyro_vae.models.gae.model import GAE
from pyro_vae.models.gae.objective import ExemplarELBO, MomentPenalty
from pyro_vae.models.gae.prior import BANDWIDTHS, ExemplarPrior, SharedBandwidth
from pyro_vae.models.vae import DiagonalNormalGuide, encoder_for


def build(config, data) -> GAE:
    """The GAE over ``data.train``. Under dynamic binarization its exemplars are the
    static binarization of the training split, so that the encoder sees binary inputs
    for its components as it does for the minibatches."""
    m = config.model
    refuse_flows(config)
    if len(data.train) == 0:
        raise ValueError(f"the GAE's prior is a mixture over the training set, and {data.name}'s is empty")
    exemplars = data.train
    if data.binarize == "dynamic":
        exemplars = bernoulli_sample(data.train, config.seed, "train")
    guide = DiagonalNormalGuide(encoder_for(config, data.event_shape))
    return GAE(exemplars, m.z_dim, m.hidden, m.activation, m.likelihood, guide=guide, bandwidth=m.bandwidth,
               leave_one_out=m.leave_one_out, network=m.network)


def refuse_flows(config) -> None:
    """The GAE takes neither the IAF guide nor a flow prior, for the reasons named.

    Its prior *is* its guide: ``P(z) = (1/n) Σ_j q_φ(z|x_j)``. With an IAF posterior every
    component is an IAF density, and scoring a point's ``z`` under exemplar ``j``'s
    posterior inverts each IAF step at that ``z`` under ``x_j``'s context: ``z_dim``
    sequential network passes per (point, exemplar) pair, ``n · z_dim`` per point for the
    exact mixture the evaluation uses. Its training estimators also cache each component
    as ``(μ, σ)`` and rank neighbours by the Gaussians' closed-form expected log-density.
    The model is well defined, but not at a cost this package can train or evaluate.
    """
    if config.guide.name != "diagonal_normal":
        raise ValueError(
            f"[guide] name = {config.guide.name!r} cannot be the GAE's guide: its prior is the mixture of its own "
            "posteriors, so every point's prior scores its z under every exemplar's posterior, which an IAF does "
            "only by inverting its steps (z_dim sequential passes per point and exemplar), and its estimators cache "
            "the components as diagonal Gaussians: use [guide] name = \"diagonal_normal\" with the GAE, or the "
            "IAF guide with [model] name = \"vae\"")
    if config.model.prior != "normal":
        raise ValueError(f"[model] prior = {config.model.prior!r}: the GAE's prior is the mixture of its posteriors "
                         "over the training set, not a choice: leave prior = \"normal\", or use [model] name = "
                         "\"vae\" for a MAF prior")


def objective(config, gae: GAE, deferred: bool = True, num_particles: int = 1) -> ExemplarELBO:
    """The GAE's training objective ``config`` declares (the estimator and the penalty)."""
    m = config.model
    return ExemplarELBO(gae, m.estimator, m.neighbours, m.tail, m.fresh, m.refresh_every, deferred=deferred,
                        penalty=MomentPenalty(m.lambda1, m.lambda2), num_particles=num_particles,
                        regulariser=make_regulariser(config.inference))


__all__ = [
    "BANDWIDTHS", "EM", "EMConfig", "ESTIMATORS", "ExemplarELBO", "ExemplarPrior", "GAE", "GAEConfig",
    "MomentPenalty", "SharedBandwidth", "build", "objective", "refuse_flows",
]
