r"""The GAE of Kim, Kim & Hwang (2018): a VAE whose prior is the mixture of its own posteriors.

:class:`GAE` is the VAE of :mod:`pyro_vae.models.vae` with the prior component
:class:`~pyro_vae.models.gae.prior.ExemplarPrior` (its model is the VAE's, unchanged) and
the questions one asks of a mixture prior: which training points explain an input
(:meth:`GAE.responsibilities`, :meth:`GAE.explain`), the exact ``log P(z)``
(:meth:`GAE.log_prior`). Training state lives in the training objective
(:class:`~pyro_vae.models.gae.objective.ExemplarELBO`), never here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from torch import nn

from pyro_vae.models.gae.kernels import MAX_ELEMENTS
from pyro_vae.models.gae.prior import ExemplarPrior
from pyro_vae.models.vae.model import VAE


class GAE(VAE):
    """The GAE: a VAE whose prior is the mixture of its posteriors over the training set.

    Args:
        exemplars: ``(n, *event_shape)`` training points ``x_j`` whose posteriors make the
            prior (row ``j`` is the data index ``y = j``; a minibatch ``index`` refers to it).
        z_dim, hidden, activation, likelihood, guide: as for :class:`~pyro_vae.models.VAE`.
        bandwidth, leave_one_out, max_enumerated: the prior's
            (:class:`~pyro_vae.models.gae.prior.ExemplarPrior`).
        network: ``"mlp"`` or ``"conv"``, as for the VAE.
    """

    def __init__(
        self,
        exemplars: torch.Tensor,
        z_dim: int = 20,
        hidden: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        guide: Optional[nn.Module] = None,
        bandwidth: str = "posterior",
        leave_one_out: bool = True,
        max_enumerated: int = MAX_ELEMENTS,
        network: str = "mlp",
    ):
        if not torch.is_tensor(exemplars) or exemplars.dim() < 2:
            shape = tuple(exemplars.shape) if torch.is_tensor(exemplars) else type(exemplars).__name__
            raise ValueError(f"exemplars must be an (n, *event_shape) tensor of training points, got {shape}")
        event_shape = tuple(exemplars.shape[1:])
        super().__init__(event_shape, z_dim, hidden, activation, likelihood, guide=guide, network=network)
        encoder = self.guide.encoder
        if encoder.z_dim != z_dim or tuple(encoder.event_shape) != event_shape:
            raise ValueError(f"the guide's encoder maps {encoder.event_shape} -> {encoder.z_dim} but the "
                             f"exemplars have event shape {event_shape} and z_dim is {z_dim}")
        # The prior reads the guide's encoder, so it comes after it (the VAE's N(0, I) gives way).
        self.prior = ExemplarPrior(exemplars, encoder, bandwidth, leave_one_out, max_enumerated)

    @property
    def exemplars(self) -> torch.Tensor:
        return self.prior.exemplars

    @property
    def num_exemplars(self) -> int:
        return self.prior.num_exemplars

    @property
    def bandwidth(self) -> Optional[nn.Module]:
        return self.prior.bandwidth

    @torch.no_grad()
    def log_prior(self, z: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log P(z)``, exact over all ``n`` components, for ``z (..., B, z_dim)``; with
        ``index (B,)`` the leave-one-out ``log P_{−i}(z)``. Returns ``z.shape[:-1]``."""
        return self.prior.log_prob(z, index)

    # ------------------------------------------------------------------ responsibilities

    def _rows_per_call(self, batch_size: Optional[int]) -> int:
        """Rows scored together: ``y`` then enumerates every exemplar on its own."""
        return batch_size or max(1, self.prior.max_enumerated // self.num_exemplars)

    @torch.no_grad()
    def responsibilities(
        self,
        x: torch.Tensor,
        index: Optional[torch.Tensor] = None,
        num_samples: int = 1,
        weighted: bool = True,
        batch_size: Optional[int] = None,
    ) -> torch.Tensor:
        r"""``q(y | x)``: which training points explain each row of ``x``; ``(batch, n)``.

        For each of ``num_samples`` draws ``z_k ~ q_φ(z|x)`` the exact posterior
        ``p(y | z_k, x) ∝ p(y) k_y(z_k)`` comes from Pyro's discrete inference
        (``TraceEnum_ELBO.compute_marginals`` on the model with ``y`` enumerated over all
        ``n`` exemplars); the draws are averaged with self-normalised importance weights
        ``p(x, z_k) / q(z_k|x)`` (``weighted=True``, consistent for ``p(y | x)`` as
        ``num_samples`` grows) or uniformly (the EM E-step's ``E_q p(y|z, x)``). With
        ``index`` (the rows are training points) the leave-one-out prior applies and a
        point never explains itself. Rows sum to 1.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        n = self.num_exemplars
        if index is not None:
            index = self.prior.check_index(index, len(x), None)
        rows = self._rows_per_call(batch_size)
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        out = []
        with self.prior.frozen():
            for s in range(0, len(x), rows):
                xb = x[s : s + rows]
                ib = None if index is None else index[s : s + rows]
                args = (xb, ib, n if ib is not None else None)
                probs, log_w = [], []
                for _ in range(num_samples):
                    guide_tr = poutine.trace(self.guide).get_trace(*args)
                    marg = elbo.compute_marginals(self.model, poutine.replay(self.guide, trace=guide_tr), *args)
                    probs.append(marg["y"].probs.reshape(len(xb), n))
                    if weighted and num_samples > 1:
                        log_w.append(self._log_weight(xb, ib, guide_tr))
                if log_w:
                    w = torch.stack(log_w).softmax(0).unsqueeze(-1)
                    out.append((w * torch.stack(probs)).sum(0))
                else:
                    out.append(torch.stack(probs).mean(0))
        return torch.cat(out)

    @torch.no_grad()
    def explain(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, temperature: int = 0,
                z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The data index ``y`` of each row of ``x`` drawn by Pyro's ``infer_discrete``
        from ``p(y | z, x)`` at ``z ~ q_φ(z|x)`` (or the given ``z``): its mode with
        ``temperature=0`` (the training point that best explains the row), a posterior
        sample with ``temperature=1``. ``(batch,)`` positions in the training set."""
        n = self.num_exemplars
        if index is not None:
            index = self.prior.check_index(index, len(x), None)
        rows, out = self._rows_per_call(None), []
        with self.prior.frozen():
            for s in range(0, len(x), rows):
                ib = None if index is None else index[s : s + rows]
                args = (x[s : s + rows], ib, None if ib is None else n)
                zb = poutine.trace(self.guide).get_trace(*args).nodes["z"]["value"] if z is None else z[s : s + rows]
                model = infer_discrete(poutine.condition(self.model, data={"z": zb}),
                                       first_available_dim=-2, temperature=temperature)
                out.append(poutine.trace(model).get_trace(*args).nodes["y"]["value"])
        return torch.cat(out)

    def _log_weight(self, x: torch.Tensor, index: Optional[torch.Tensor], guide_tr) -> torch.Tensor:
        """``log p(x|z) + log P(z) − log q(z|x)`` per row at the guide trace's ``z``."""
        site = guide_tr.nodes["z"]
        z = site["value"]
        return self.decoder(z).log_prob(x) + self.prior.log_prob(z, index) - site["fn"].log_prob(z)
