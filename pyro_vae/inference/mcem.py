r"""Monte Carlo EM, as in Kingma & Welling (2014), "Auto-Encoding Variational Bayes",
section 5 and figure 3.

For each minibatch:

* **E-step**: draw ``z_i ~ p_θ(z|x_i)`` for every point of the batch with HMC
  (:mod:`pyro_vae.inference.hmc`): ``hmc_steps`` transitions of ``hmc_leapfrog_steps``
  (10) leapfrog steps, the step size adapted toward ``target_accept`` (90%). The
  chains are *persistent*: each training point keeps its chain state between visits
  (the first visit starts from a prior draw), so the E-step continues a chain rather
  than restarting one, and ``num_chains`` chains may run per point.
* **M-step**: ``m_steps`` (5) gradient steps on θ alone, ascending
  ``(N/B) Σ_i log p_θ(x_i, z_i)`` at the E-step's samples.

The guide plays no part in either step. Its only use is the ELBO that the training
loop logs and :meth:`MCEM.evaluate` returns, so that curves compare across algorithms:
with ``fit_guide = True`` (the default) one ELBO gradient step on φ alone follows each
M-step, keeping q_φ fitted to the current θ; with ``fit_guide = False`` the guide is
never trained and the reported ELBO is that of an untrained guide (the key
``"log_joint"``, the mean log p(x, z) at the samples, is MCEM's own objective).

The latest E-step's chains are kept: :meth:`MCEM.e_step_inference_data` returns them
as ArviZ ``InferenceData`` (posterior ``z`` of dims ``(chain, draw, point, z_dim_0)``
and ``accept_prob``/``diverging``/``lp``/``step_size`` statistics), and
:meth:`MCEM.sample_posterior` runs longer multi-chain HMC at the current θ, with
warm-up, for R-hat and ESS (:func:`~pyro_vae.inference.hmc.summarize_chains`).

MCEM needs continuous per-point latents: a model with discrete latents is refused with a
:class:`~pyro_vae.config.ConfigError`. A model whose enumerated latents its family sums out
(the GAE's data index, ``objective``: its :class:`~pyro_vae.inference.base.Collapsing`
training objective) is trained on its collapsed story: the E-step's potential is one fixed
function of z per step (``fixed()``: the exact leave-one-out mixture over the cache frozen
at the step's start, computed once without gradients; a potential re-estimated between
leapfrog steps would break detailed balance), the M-step ascends the estimator's
``log p(x|z) + log P̂(z)`` with the family's penalty, and the prior's parameters (the GAE's
encoder) are model parameters the M-step trains (see ``docs/inference_matrix.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro.infer
import torch
from torch import nn

from pyro_vae import distributed, hmc
from pyro_vae.capabilities import capabilities_of
from pyro_vae.errors import ConfigError
from pyro_vae.inference.base import Inference, collapsed_story, collapsing_objective
from pyro_vae.inference.optim import RoleOptimizers, check_optimizer
from pyro_vae.traces import preserved_rng, repeat_rows, split_parameters, subsample_scale, zero_grad


@dataclass
class MCEMConfig:
    """``[inference] name = "mcem"``: Monte Carlo EM with an HMC E-step."""

    name: str = "mcem"
    #: HMC transitions per E-step, leapfrog steps per transition, the initial step size
    #: and the acceptance rate it is tuned to (AEVB appendix: 10 and 90%).
    hmc_steps: int = 1
    hmc_leapfrog_steps: int = 10
    hmc_step_size: float = 0.1
    target_accept: float = 0.9
    #: "batched" (per-point chains, one leapfrog for the batch) or "pyro"
    #: (pyro.infer.mcmc.HMC over the batch's joint potential).
    hmc_backend: str = "batched"
    #: HMC chains per data point.
    num_chains: int = 1
    #: Gradient steps on θ per E-step (AEVB appendix: 5).
    m_steps: int = 5
    #: Also fit the guide (ELBO on φ only) so the logged ELBO is meaningful.
    fit_guide: bool = True


class MCEM(Inference):
    """Monte Carlo EM on ``module.model`` (HMC E-step, gradient M-step on θ).

    Args:
        module: the model module; only its model's parameters θ are trained by EM.
        optimizer, lr: the M-step's optimizer (and the guide's, when ``fit_guide``).
        hmc_steps: HMC transitions per E-step.
        leapfrog_steps: leapfrog steps per transition.
        step_size: the initial HMC step size (then adapted).
        target_accept: the acceptance rate the step size is tuned to.
        num_chains: chains per data point.
        m_steps: gradient steps on θ per E-step.
        fit_guide: also fit the guide (for the reported ELBO only).
        backend: ``"batched"`` (per-point accept/reject) or ``"pyro"``
            (:class:`pyro.infer.mcmc.HMC` over the batch's joint potential).

    Parameter roles: ``"model"`` (θ, the M-step's optimizer) and, with ``fit_guide``,
    ``"guide"`` (φ).
    """

    figures = ("log_joint", "accept_prob", "step_size", "elbo")

    def __init__(self, module: nn.Module, optimizer: str = "adagrad", lr: float = 0.01, hmc_steps: int = 1,
                 leapfrog_steps: int = 10, step_size: float = 0.1, target_accept: float = 0.9,
                 num_chains: int = 1, m_steps: int = 5, fit_guide: bool = True, backend: str = "batched",
                 objective=None):
        self.objective = collapsing_objective(module, "mcem", objective)
        for name, v in (("hmc_steps", hmc_steps), ("num_chains", num_chains), ("m_steps", m_steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"[inference] {name} must be a positive integer, got {v!r}")
        self.module, self.model, self.guide = module, module.model, module.guide
        self.optimizer_name, self.lr = optimizer, lr
        check_optimizer(optimizer, lr)
        self.hmc_steps, self.num_chains, self.m_steps = hmc_steps, num_chains, m_steps
        self.leapfrog_steps, self.target_accept, self.backend = leapfrog_steps, target_accept, backend
        self.fit_guide = fit_guide
        self.sampler = hmc.make_sampler(backend, num_steps=leapfrog_steps, step_size=step_size,
                                        target_accept=target_accept)
        if backend == "pyro" and num_chains != 1:
            raise ConfigError("[inference] hmc_backend = \"pyro\" runs one joint chain per batch: use num_chains = 1")
        self._probe_latents()
        self.space: Optional[hmc.LatentSpace] = None
        self.chains: Optional[torch.Tensor] = None  # (C, N, dim) unconstrained
        self.visited: Optional[torch.Tensor] = None  # (N,) bool
        self._last: Optional[dict] = None
        self._pending: Optional[dict] = None

    def _probe_latents(self) -> None:
        """Refuse discrete latents at construction when the module declares its event
        shape (:mod:`pyro_vae.capabilities`); otherwise the first step checks."""
        event_shape = capabilities_of(self.module).event_shape
        if event_shape is not None:
            like = next(self.module.parameters(), None)
            x = torch.zeros((2,) + tuple(event_shape), device=None if like is None else like.device)
            with preserved_rng(), collapsed_story(self.module):
                hmc.LatentSpace(self.model, x, what="MCEM")

    # ------------------------------------------------------------------------ setup

    def _setup(self, x: torch.Tensor, num_data: int) -> None:
        if self.space is None:
            with preserved_rng(), collapsed_story(self.module):
                self.space = hmc.LatentSpace(self.model, x[:2], what="MCEM")
                split = split_parameters(self.module, x[:2])
            if not split.model:
                raise ConfigError("MCEM's M-step trains the model's parameters, and the model has none")
            self.theta, self.phi = split.model, split.guide
            roles = {"model": self.theta, **({"guide": self.phi} if self.fit_guide and self.phi else {})}
            self.optimizers = RoleOptimizers(self.optimizer_name, self.lr, roles)
            self._elbo = pyro.infer.TraceMeanField_ELBO()
        if distributed.is_active() and self.backend == "pyro":
            raise ConfigError("[inference] hmc_backend = \"pyro\" adapts its step size inside Pyro's kernel, "
                              "per process: train MCEM data-parallel with hmc_backend = \"batched\"")
        if self.chains is None:
            self.chains = x.new_zeros(self.num_chains, num_data, self.space.dim)
            self.visited = torch.zeros(num_data, dtype=torch.bool, device=x.device)
        elif self.chains.shape[1] != num_data:
            raise ValueError(f"MCEM keeps one chain per training point of a data set of "
                             f"{self.chains.shape[1]} points; got a batch of a set of {num_data}")
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None

    # ------------------------------------------------------------------------ steps

    def e_step(self, x: torch.Tensor, index: Optional[torch.Tensor] = None,
               num_data: Optional[int] = None) -> torch.Tensor:
        """Advance the chains of the batch's points; returns the samples ``(C·B, dim)``
        (unconstrained, chain-major rows) and records the draws."""
        index, num_data = _full(x, index, num_data)
        self._setup(x, num_data)
        C, B = self.num_chains, len(x)
        x_rep = repeat_rows(x, C)
        fn = self.space.log_prob_fn(x_rep, repeat_rows(index, C), num_data)
        z = self.chains[:, index].clone()  # (C, B, dim)
        new = ~self.visited[index]
        if new.any():
            z[:, new] = self.space.prior_draw(repeat_rows(x[new], C)).reshape(C, int(new.sum()), -1)
        z = z.reshape(C * B, -1)
        lp, grad = hmc.log_prob_and_grad(fn, z)
        us, lps, accs, divs = [], [], [], []
        for _ in range(self.hmc_steps):
            tr = self._transition(fn, z, lp, grad)
            z, lp, grad = tr.z, tr.log_prob, tr.grad
            us.append(z)
            lps.append(lp)
            accs.append(tr.accept_prob)
            divs.append(tr.diverging)
        self._write_chains(index, z.reshape(C, B, -1))

        def stack(ts, *tail):
            return torch.stack(ts).reshape(len(ts), C, B, *tail).transpose(0, 1)

        self._last = {"u": stack(us, self.space.dim), "lp": stack(lps), "accept_prob": stack(accs),
                      "diverging": stack(divs), "step_size": self.sampler.step_size.clone(), "index": index}
        return z

    def _transition(self, fn, z, lp, grad) -> hmc.Transition:
        """One HMC transition, the step size then adapted toward ``target_accept``: under
        several processes, to the acceptance rate over every process's rows, so that it
        stays the same on all (and equals one process's on the global batch)."""
        if not distributed.is_active():
            return self.sampler.transition(fn, z, lp, grad, adapt="track")
        tr = self.sampler.transition(fn, z, lp, grad)
        self.sampler.adapt(tr.accept_prob, "track", average=distributed.global_mean)
        return tr

    @torch.no_grad()
    def _write_chains(self, index: torch.Tensor, z: torch.Tensor) -> None:
        """Store the chains' states ``z (C, B, dim)`` of points ``index``; under several
        processes every rank stores the whole global batch's (gathered), so the chains
        of all points are the same on every rank, and in its checkpoint."""
        index, z = distributed.all_gather_indexed(index, z.transpose(0, 1))  # rows: points
        self.chains[:, index] = z.transpose(0, 1)
        self.visited[index] = True

    def m_step(self, x: torch.Tensor, z: torch.Tensor, index: Optional[torch.Tensor] = None,
               num_data: Optional[int] = None, story=None) -> float:
        """``m_steps`` gradient steps on θ at the samples ``z (C·B, dim)``; returns the mean
        log p(x, z) before the first step. ``story``: the step's
        :class:`~pyro_vae.inference.base.Collapsing` step, whose ``terms()`` (a family's
        penalty) join each M-step's loss."""
        index, num_data = _full(x, index, num_data)
        x_rep, index_rep = repeat_rows(x, self.num_chains), repeat_rows(index, self.num_chains)
        scale = subsample_scale(x, num_data) / self.num_chains
        z = z.detach()
        first = None
        for _ in range(self.m_steps):
            log_joint = self.space.log_joint(x_rep, z, index_rep, num_data)
            if first is None:
                first = log_joint.detach().mean().item()
            zero_grad(self.module.parameters())
            (-scale * log_joint.sum() + (story.terms() if story is not None else 0.0)).backward()
            self.optimizers["model"].step()
        return first

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        index, num_data = _full(x, index, num_data)
        with self.collapsed_step(x, index, num_data) as story:
            with story.fixed():  # the E-step's potential: one fixed function of z
                z = self.e_step(x, index, num_data)
            log_joint = self.m_step(x, z, index, num_data, story)
            return self._fit_guide(x, index, num_data, log_joint)

    def _fit_guide(self, x, index, num_data, log_joint: float) -> dict[str, float]:
        out = {"log_joint": log_joint, "accept_prob": self._last["accept_prob"].mean().item(),
               "step_size": self.sampler.step_size.mean().item()}
        if "guide" in self.optimizers.roles:
            loss = self._elbo.differentiable_loss(self.model, self.guide, x, index, num_data)
            zero_grad(self.module.parameters())
            loss.backward()
            self.optimizers["guide"].step()
            out["elbo"] = -loss.item() / num_data
        else:
            with torch.no_grad():
                out["elbo"] = -self._elbo.loss(self.model, self.guide, x, index, num_data) / num_data
        return out


    # ------------------------------------------------------------------------ chains

    def e_step_inference_data(self):
        """The latest E-step's draws as ArviZ ``InferenceData`` (None before any step):
        chains ``num_chains``, draws ``hmc_steps``, points the batch's (coordinate
        ``point`` = their positions in the training set)."""
        if self._last is None:
            return None
        last = self._last
        idata = hmc.to_inference_data(self.space, last["u"], {
            "lp": last["lp"], "accept_prob": last["accept_prob"], "diverging": last["diverging"],
            "step_size": last["step_size"].mean().expand(last["u"].shape[:3]),  # one, shared
        })
        return idata.assign_coords(point=last["index"].numpy())

    def sample_posterior(self, x: torch.Tensor, num_draws: int = 200, num_warmup: int = 100,
                         num_chains: int = 4, **kwargs) -> hmc.PosteriorSamples:
        """Multi-chain HMC of p_θ(z|x) at the current θ with the E-step's settings (the
        step size adapted during ``num_warmup``, chains from prior draws)."""
        kwargs.setdefault("num_steps", self.leapfrog_steps)
        kwargs.setdefault("target_accept", self.target_accept)
        kwargs.setdefault("step_size", float(self.sampler.step_size.mean()))
        kwargs.setdefault("backend", "batched")
        return hmc.sample_posterior(self.model, x, num_draws=num_draws, num_warmup=num_warmup,
                                    num_chains=num_chains, **kwargs)

    # ------------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        if self.space is None:
            state = dict(self._pending or {})
        else:
            state = {"optimizers": self.optimizers.state_dict(), "sampler": self.sampler.state_dict(),
                     "chains": self.chains.clone(), "visited": self.visited.clone()}
        if self.objective is not None:  # a family's cache (the GAE's)
            state["objective"] = self.objective.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.objective is not None:
            self.objective.load_state_dict(state["objective"])
        if self.space is None:
            self._pending = state
            self.sampler.load_state_dict(state["sampler"])
        else:
            self._load(state)

    def _load(self, state: dict) -> None:
        self.optimizers.load_state_dict(state["optimizers"])
        self.sampler.load_state_dict(state["sampler"])
        self.chains, self.visited = state["chains"].clone(), state["visited"].clone()


def _full(x: torch.Tensor, index: Optional[torch.Tensor], num_data: Optional[int]):
    if index is None:
        if num_data not in (None, len(x)):
            raise ValueError("MCEM keeps a chain per training point: pass the minibatch's index")
        return torch.arange(len(x), device=x.device), len(x)
    return index, num_data if num_data is not None else len(x)
