r"""Figures per latent layer of a model with several: what each layer carries.

For a model with latent layers ``z_1..z_L`` (its capabilities' ``latent_layers``) and a
guide ``q(z|x)`` that samples them all:

* **per-layer KL** (:func:`layer_kl`): ``KL_l(x) = E_q[log q(z_l | ·) − log p(z_l | ·)]``,
  each layer's factor of the guide against its factor of the model, estimated by the
  guide's draws. Their sum is ``E_q[log q(z|x) − log p(z)]``, the total KL of the ELBO
  ``E_q log p(x|z) − KL`` (tested), so the bars split the rate between the layers. Under
  an exemplar prior the top layer's ``p`` is its marginal mixture (the story collapsed).
* **active units per layer** (:func:`active_units`): Burda, Grosse & Salakhutdinov (2016),
  section 5.2: unit ``u`` is active when ``Cov_x(E_{q(z|x)}[z_u]) > 0.01``; the posterior
  means are Monte Carlo means over the guide's draws (exact layers below a sampled one
  have no closed form).
* **linear probe** (:func:`linear_probe`): the test accuracy of a multinomial logistic
  regression from one layer's posterior means to the label, fitted on other points: how
  much of the label a layer holds linearly (the VLAE paper's claim: the top layer holds
  the digit's identity).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from pyro_vae.capabilities import capabilities_of
from pyro_vae.traces import max_plate_nesting, particle_traces, per_point_log_prob, preserved_rng

#: Burda et al.'s threshold on the variance of a unit's posterior mean.
ACTIVE_THRESHOLD = 1e-2


def _layers(module) -> tuple[str, ...]:
    caps = capabilities_of(module)
    layers = caps.latent_layers or tuple(s for s in caps.latent_sites if s != "y")
    if not caps.has_guide:
        raise ValueError(f"{type(module).__name__} has no guide: per-layer figures need q(z|x)")
    return layers


def _collapsed(module) -> contextlib.AbstractContextManager:
    return module.collapsed() if capabilities_of(module).enumerated_latents else contextlib.nullcontext()


@torch.no_grad()
def layer_kl(module, x: torch.Tensor, num_samples: int = 10, batch_size: int = 500) -> dict[str, float]:
    """Each latent layer's KL in nats per data point, averaged over ``x`` and
    ``num_samples`` guide draws per point; keys top first (module docstring)."""
    layers = _layers(module)
    totals = {name: 0.0 for name in layers}
    with _collapsed(module):
        with preserved_rng():  # a set-up run: the estimate's draws are the guide's first
            nesting = max_plate_nesting(module.model, module.guide, x[:batch_size])
        for xb in x.split(batch_size):
            for name, kl in _per_point_kl(module, xb, num_samples, nesting, layers).items():
                totals[name] += float(kl.sum())
    return {name: v / len(x) for name, v in totals.items()}


def _per_point_kl(module, x: torch.Tensor, num_samples: int, nesting: int,
                  layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``(batch,)`` Monte Carlo KL per layer, averaged over ``num_samples`` draws."""
    tr = particle_traces(module.model, module.guide, x, None, None, num_samples, nesting, grad_guide=False)
    shape, dim = (num_samples, len(x)), -(nesting + 1)
    out = {}
    for name in layers:
        log_q = per_point_log_prob(tr.guide_trace.nodes[name], dim, shape)
        log_p = per_point_log_prob(tr.model_trace.nodes[name], dim, shape)
        out[name] = (log_q - log_p).mean(0)
    return out


@torch.no_grad()
def posterior_means(module, x: torch.Tensor, num_samples: int = 20, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """``E_q[z_l | x]`` per layer, ``(n, d_l)`` each, by ``num_samples`` guide draws per point."""
    layers = _layers(module)
    parts = {name: [] for name in layers}
    with _collapsed(module):
        with preserved_rng():  # a set-up run: the estimate's draws are the guide's first
            nesting = max_plate_nesting(module.model, module.guide, x[:batch_size])
        for xb in x.split(batch_size):
            tr = particle_traces(module.model, module.guide, xb, None, None, num_samples, nesting, grad_guide=False)
            for name in layers:
                value = tr.guide_trace.nodes[name]["value"]
                parts[name].append(value.reshape(num_samples, len(xb), -1).mean(0))
    return {name: torch.cat(p) for name, p in parts.items()}


@torch.no_grad()
def active_units(module, x: torch.Tensor, num_samples: int = 20, threshold: float = ACTIVE_THRESHOLD,
                 means: Optional[dict[str, torch.Tensor]] = None) -> dict[str, int]:
    """Active units per layer (Burda et al.'s covariance criterion; module docstring),
    from ``means`` (:func:`posterior_means`) when given."""
    means = posterior_means(module, x, num_samples) if means is None else means
    return {name: int((m.var(0, unbiased=False) > threshold).sum()) for name, m in means.items()}


def linear_probe(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 steps: int = 200, l2: float = 1e-4) -> float:
    """Accuracy on ``test`` of a multinomial logistic regression fitted (L-BFGS, weight decay
    ``l2``) on ``train (n, d)`` standardized features and their integer labels."""
    train, test = train.detach().double().cpu(), test.detach().double().cpu()
    mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
    train, test = (train - mean) / std, (test - mean) / std
    y, y_test = train_labels.long().cpu(), test_labels.long().cpu()
    classes = int(max(y.max(), y_test.max())) + 1
    w = torch.zeros(train.shape[1], classes, dtype=torch.double, requires_grad=True)  # cpu-ok: fitted on the CPU copy
    b = torch.zeros(classes, dtype=torch.double, requires_grad=True)  # cpu-ok
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(train @ w + b, y) + l2 * w.pow(2).sum()
            loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((test @ w + b).argmax(-1) == y_test).double().mean())


__all__ = ["ACTIVE_THRESHOLD", "active_units", "layer_kl", "linear_probe", "posterior_means"]
