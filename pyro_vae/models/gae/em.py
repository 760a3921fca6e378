r"""EM for the GAE's data index: ``[inference] name = "em"``.

The authors treat ``y`` and ``z`` as latents and fit by EM. With ``r_ij = p(y = j | z_i)``
(the responsibilities), Fisher's identity ``∇ log Σ_j p_j q_j(z) = Σ_j r_ij ∇ log q_j(z)``
makes the gradient of the enumerated ELBO *equal* to the EM M-step gradient with the
responsibilities recomputed at the current parameters: plain enumeration (SVI with the
GAE's objective) is EM with one gradient M-step per exact, per-sample E-step. :class:`EM`
implements the other reading. For each minibatch:

* the **E-step** fixes the pool of components the estimator uses and computes
  ``r_i(y) = E_{z∼q(z|x_i)} p(y | z, x_i)`` over it with Pyro's discrete inference
  (``TraceEnum_ELBO.compute_marginals`` on the model, ``num_samples`` draws of ``z``);
* the **M-step** takes ``m_steps`` optimizer steps on
  ``Q = E_q[Σ_j r_ij log(p_j q_j(z)) + log p(x|z) − log q(z|x)] − R`` with ``r`` held fixed.

By Jensen, ``Q + H(r_i) ≤`` the enumerated ELBO, with equality only when ``p(y | z)``
does not vary with ``z`` under ``q``, so EM climbs a looser bound; the two agree in the
limit of narrow posteriors. ``step`` reports ``"em_bound"``, the mean of ``Q + H(r)`` per
point over its M-steps. The cache and neighbour lists of the ``knn`` estimator are the
training objective's (:class:`~pyro_vae.models.gae.objective.ExemplarELBO`), kept fresh
here too; cached components are constants of the M-step (no deferred gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_vae.data import DataSplits
from pyro_vae.inference.base import Inference
from pyro_vae.inference.optim import RoleOptimizers
from pyro_vae.loop import BudgetConfig, Loop
from pyro_vae.models.gae.objective import ExemplarELBO
from pyro_vae.models.gae.prior import summing_out, using_pool
from pyro_vae.traces import subsample_scale


@dataclass
class EMConfig:
    """``[inference] name = "em"`` (a model with an exemplar prior: the GAE, the two-level GAE)."""

    name: str = "em"
    #: Gradient steps on ``Q`` per E-step.
    m_steps: int = 1
    #: Draws of ``z`` averaged in the E-step's responsibilities.
    num_samples: int = 1


class EM(Inference):
    """EM on a GAE (module docstring): E-step responsibilities over the estimator's pool,
    ``m_steps`` gradient steps on the expected complete-data bound.

    Args:
        gae: the model (a VAE whose prior is an exemplar mixture).
        objective: its training objective, whose estimator, cache and penalty EM uses
            (built with ``deferred=False``: EM holds cached components constant).
        optimizer, lr: one optimizer (role ``"all"``) over the module's parameters.
        m_steps, num_samples: as in :class:`EMConfig`.
    """

    figures = ("em_bound",)

    def __init__(self, gae, objective: ExemplarELBO, optimizer: str = "adam", lr: float = 1e-3,
                 m_steps: int = 1, num_samples: int = 1):
        for name, v in (("m_steps", m_steps), ("num_samples", num_samples)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.module, self.objective = gae, objective
        self.m_steps, self.num_samples = m_steps, num_samples
        self.optimizers = RoleOptimizers(optimizer, lr, {"all": gae.parameters()})
        self._e_elbo, self._m_elbo = TraceEnum_ELBO(max_plate_nesting=1), Trace_ELBO()

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers["all"]

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        gae, prior = self.module, self.module.prior
        index = prior.check_index(index, len(x), num_data)
        with torch.no_grad():  # E-step
            loc_x, scale_x = prior.encoder(x)
            pool = self.objective.make_pool(index)
            stats = self.objective.pool_stats(pool, loc_x, scale_x)
            with using_pool(prior, pool, stats):
                resp = sum(self._e_elbo.compute_marginals(gae.model, gae.guide, x, index, num_data)["y"].probs
                           .reshape(len(x), -1) for _ in range(self.num_samples)) / self.num_samples
            entropy = -torch.where(resp > 0, resp * resp.log(), torch.zeros_like(resp)).sum()
        scale = subsample_scale(x, num_data)
        total = 0.0
        for _ in range(self.m_steps):  # M-step
            loss = self._m_elbo.differentiable_loss(self._expected_model(pool, resp), gae.guide, x, index, num_data)
            if self.objective.penalty:
                loss = loss + scale * self.objective.penalty(*prior.encoder(x)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += (-loss.item() + entropy.item() * scale) / num_data
        if self.objective.estimator.uses_cache:
            self.objective.write_back(index, loc_x, scale_x, pool, deferred=False)
        return {"em_bound": total / self.m_steps}

    def _expected_model(self, pool, resp: torch.Tensor):
        """The M-step's complete-data story: the model's own, with its prior site scored by
        ``Σ_j r_ij log(p_ij k_j(z_i))`` (so a two-level GAE keeps its lower level's terms)."""
        gae, objective = self.module, self.objective

        def model(x, index, num_data):
            def expected(_index):
                stats = objective.pool_stats(pool, *gae.prior.encoder(x))
                return ExpectedComponents(stats, pool.logits, resp)

            with summing_out(gae.prior, expected):
                return gae.model(x, index, num_data)

        return model


class ExpectedComponents(TorchDistribution):
    """The M-step's prior term as a site: ``log_prob(z) = Σ_j r_j log(p_j k_j(z))`` per
    row (batch ``(B,)``, event ``(D,)``), the responsibilities ``r`` held fixed. Never
    sampled: the guide's ``z`` is scored."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, stats, logits: torch.Tensor, resp: torch.Tensor):
        self.stats, self.logits, self.resp = stats, logits, resp
        dim = stats.distribution(torch.zeros(1, dtype=torch.long, device=resp.device)).event_shape
        super().__init__(resp.shape[:1], dim, validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        table = self.stats.log_prob_table(z) + self.logits
        return torch.where(self.resp > 0, self.resp * table, torch.zeros_like(table)).sum(-1)


def fit_em(gae, epochs: int = 1, batch_size: int = 100, lr: float = 1e-3, m_steps: int = 1, num_samples: int = 1,
           optimizer: str = "adam", objective: Optional[ExemplarELBO] = None, seed: int = 0,
           progress: bool = False) -> list[dict]:
    """Fit ``gae`` by :class:`EM` over minibatches of its training set ``gae.exemplars``,
    through the package's training loop (:class:`~pyro_vae.loop.Loop`, no run directory).

    ``objective`` supplies the estimator (default: the exact mixture). Returns the loop's
    rows, one per epoch, with ``"train_em_bound"``; the model keeps its final parameters.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    objective = objective or ExemplarELBO(gae, "exact", deferred=False)
    em = EM(gae, objective, optimizer, lr, m_steps=m_steps, num_samples=num_samples)
    x = gae.exemplars
    data = DataSplits("exemplars", x, x[:0], x[:0], tuple(x.shape[1:]))
    budget = BudgetConfig(epochs=epochs, monitor="none")
    return Loop(gae, em, data, batch_size, budget, seed=seed, progress=progress).run().history
