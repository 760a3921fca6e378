"""Experiment configuration: what to train, on what, with which inference and budget.

An experiment is a :class:`Config`, built in Python or read from a TOML file whose
sections mirror its fields::

    seed = 0
    [data]       name = "binarized_mnist"
    [model]      name = "vae"; z_dim = 50; hidden = [500, 500]
    [inference]  name = "svi"; elbo = "jit_meanfield"
    [optim]      name = "adam"; lr = 1e-3
    [budget]     epochs = 500; patience = 20; lr_decays = 1

Swapping the model or the inference algorithm is a change of one entry. Unknown keys and
values of the wrong type are refused with a message that names them.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration that cannot be run; the message says which entry and why."""


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: Optional[str] = None
    #: "none" (keep values), "static" (binarize once) or "dynamic" (resample every batch).
    binarize: str = "dynamic"
    batch_size: int = 100


@dataclass
class ModelConfig:
    name: str = "vae"
    z_dim: int = 2
    hidden: list[int] = field(default_factory=lambda: [200])
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    # GAE settings (``name = "gae"``, see pyro_vae.models.gae); None means the GAE's
    # default and keeps them out of the TOML a VAE run writes.
    #: Regulariser weights λ1 (Σ μ²) and λ2 (−Σ (1 + log σ² − σ²)), >= 0; default 0.05.
    lambda1: Optional[float] = None
    lambda2: Optional[float] = None
    #: How training forms the mixture prior: "knn" (default), "exact" or "random".
    exemplar_estimator: Optional[str] = None
    #: "knn": neighbours listed per training point (default 32).
    exemplar_neighbours: Optional[int] = None
    #: Random exemplars per step ("knn": the tail sample; "random": the subset); default 300.
    exemplar_tail: Optional[int] = None
    #: "knn": nearest neighbours per point re-encoded with gradients each step (default 0).
    exemplar_fresh: Optional[int] = None
    #: "knn": neighbour lists rebuilt from the cache every this many steps (default: every
    #: 2 epochs; 0: only at the first step).
    exemplar_refresh: Optional[int] = None
    #: Exclude a training point's own component from its prior (default true).
    leave_one_out: Optional[bool] = None
    #: The components' scales: "posterior" (default, the GAE's) or "shared" (learned per dimension).
    exemplar_bandwidth: Optional[str] = None


@dataclass
class GuideConfig:
    name: str = "diagonal_normal"
    #: Encoder widths and activation; None mirrors the model's decoder.
    hidden: Optional[list[int]] = None
    activation: Optional[str] = None


@dataclass
class InferenceConfig:
    name: str = "svi"
    #: "trace" (SGVB estimator A), "meanfield" (estimator B: analytic KL), "trace_enum"
    #: (sums out enumerated discrete latents), their "jit_" variants, or "auto":
    #: "trace_enum" for a model with enumerated latents, else "meanfield".
    elbo: str = "auto"
    #: Samples per data point: of the ELBO estimate ("svi"), K of the importance-weighted
    #: bound ("iwae", "vimco") and of reweighted wake-sleep ("rws", needs K >= 2).
    num_particles: int = 1
    #: "rws": weight of the wake-φ update against the sleep-φ update (1: wake only).
    insomnia: float = 1.0
    #: "wake_sleep": points dreamt per sleep phase (None: the minibatch size).
    sleep_batch_size: Optional[int] = None
    #: "mcem": HMC transitions per E-step, leapfrog steps per transition, the initial
    #: step size and the acceptance rate it is tuned to (AEVB appendix: 10 and 90%).
    hmc_steps: int = 1
    hmc_leapfrog_steps: int = 10
    hmc_step_size: float = 0.1
    target_accept: float = 0.9
    #: "mcem": "batched" (per-point chains, one leapfrog for the batch) or "pyro"
    #: (pyro.infer.mcmc.HMC over the batch's joint potential).
    hmc_backend: str = "batched"
    #: "mcem": HMC chains per data point.
    num_chains: int = 1
    #: "mcem": gradient steps on θ per E-step (AEVB appendix: 5).
    m_steps: int = 5
    #: "mcem": also fit the guide (ELBO on φ only) so the logged ELBO is meaningful.
    fit_guide: bool = True
    #: "svi": β, the weight of the latent sites' terms (the KL) in the training ELBO
    #: (β-VAE: β ≠ 1); see pyro_vae.inference.annealing.
    kl_weight: float = 1.0
    #: "svi": warm-up epochs T: β rises linearly as min(1, epoch / T) (0: no warm-up).
    warmup_epochs: int = 0


@dataclass
class OptimConfig:
    #: "adam" or "adagrad" (the AEVB paper's).
    name: str = "adam"
    lr: float = 1e-3


@dataclass
class BudgetConfig:
    epochs: int = 100
    #: Stop after this many epochs without a better validation ELBO (None: never).
    patience: Optional[int] = None
    #: Stop after the first epoch that ends past this wall time (None: no limit).
    max_minutes: Optional[float] = None
    #: Learning-rate decay on a plateau: when ``patience`` runs out, restart from the best
    #: validation parameters with every learning rate times ``lr_decay_factor``, up to
    #: this many times; the plateau after the last decay stops the run.
    lr_decays: int = 0
    lr_decay_factor: float = 0.1


@dataclass
class EvalConfig:
    #: Importance samples per test point for the marginal log-likelihood (0: skip).
    num_samples: int = 100
    #: Write the plots at the end of training.
    plots: bool = True


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "Config":
        return _from_dict(cls, d, where)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        return cls.from_dict(d, where=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        lines = [f"seed = {_toml_value(self.seed)}"]
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                lines += ["", f"[{section}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        return "\n".join(lines) + "\n"

    def with_overrides(self, assignments: list[str]) -> "Config":
        """A copy with ``"section.key=value"`` entries applied (values in TOML syntax)."""
        d = self.to_dict()
        for a in assignments:
            key, sep, value = a.partition("=")
            if not sep:
                raise ConfigError(f"override {a!r} is not of the form section.key=value")
            *sections, leaf = key.strip().split(".")
            target = d
            for s in sections:
                if not isinstance(target.get(s), dict):
                    raise ConfigError(f"override {a!r}: no config section {s!r}; sections: {_sections(d)}")
                target = target[s]
            target[leaf] = _parse_toml_value(value.strip(), a)
        return Config.from_dict(d, where="overrides")


def _sections(d: dict) -> list[str]:
    return [k for k, v in d.items() if isinstance(v, dict)]


def _parse_toml_value(text: str, where: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string, as a user would mean it on the command line


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _from_dict(cls: type, d: dict, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value, f"{where}: [{name}]")
        else:
            kwargs[name] = _check_type(value, tp, f"{where}: {name}")
    return cls(**kwargs)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (ints accepted for floats), else a ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or value == "none"):
            return None  # TOML has no null: "none" unsets an optional entry
        (tp,) = [a for a in args if a is not type(None)]
        return _check_type(value, tp, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_check_type(v, args[0], where) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be of type {tp.__name__}, got {value!r}")
    return value
