"""Optimizers by parameter role: the algorithms' one place to build ``torch.optim`` optimizers.

An algorithm names the roles its parameters play (``"all"`` for SVI's one optimizer;
``"model"`` θ and ``"guide"`` φ for wake-sleep and MCEM, whose phases update one each;
others, such as a critic, where an algorithm has them) and gets one optimizer per role.
Their state checkpoints under the role's name, and the training loop's learning-rate
decay scales every role's rate.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from pyro_vae.errors import ConfigError

OPTIMIZERS = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}


def make_optimizer(name: str, params, lr: float, **options) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer called ``name`` over ``params`` (``options``: its
    other settings, e.g. Adam's ``betas``).

    Adam uses its fused kernel where every parameter allows it (floating point, on a
    device with the kernel), else the default implementation; the two differ only by
    floating-point rounding. Adagrad keeps the default one, which also takes sparse
    gradients.
    """
    check_optimizer(name, lr)
    params = list(params)
    if name == "adam" and _fused_ok(params):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True, **options)
        except (RuntimeError, ValueError):
            pass
    return OPTIMIZERS[name](params, lr=lr, **options)


def check_optimizer(name: str, lr: float, setting: str = "") -> None:
    """Clear errors for an unknown optimizer or a learning rate that is not positive;
    ``setting`` (e.g. ``"[inference] adversarial_lr"``) names the entry the rate came from."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {sorted(OPTIMIZERS)}")
    if not lr > 0:
        if setting:
            raise ConfigError(f"{setting} = {lr}: the learning rate must be positive")
        raise ValueError(f"the learning rate must be positive, got {lr}")


def _fused_ok(params: list) -> bool:
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return bool(tensors) and all(
        torch.is_tensor(p) and p.is_floating_point() and not p.is_sparse
        and p.device.type in ("cpu", "cuda") for p in tensors
    )


class RoleOptimizers:
    """One optimizer per parameter role, all of kind ``name`` with learning rate ``lr``
    (and ``options``, e.g. Adam's ``betas``).

    ``optimizers["model"]`` is the model role's optimizer; :meth:`state_dict` is keyed
    by role.
    """

    def __init__(self, name: str, lr: float, roles: Mapping[str, Iterable[torch.nn.Parameter]], **options):
        self.roles = {role: make_optimizer(name, params, lr, **options) for role, params in roles.items()}

    def __getitem__(self, role: str) -> torch.optim.Optimizer:
        return self.roles[role]

    def state_dict(self) -> dict:
        return {role: opt.state_dict() for role, opt in self.roles.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.roles) - set(state))
        if missing:
            raise KeyError(f"no optimizer state for the role(s) {missing}; the state holds {sorted(state)}")
        for role, opt in self.roles.items():
            opt.load_state_dict(state[role])
