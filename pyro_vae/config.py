"""Experiment configuration: what to train, on what, with which inference and budget.

An experiment is a :class:`Config`, built in Python or read from a TOML file whose
sections mirror its fields::

    seed = 0
    [data]       name = "binarized_mnist"
    [model]      name = "vae"; z_dim = 50; hidden = [500, 500]
    [inference]  name = "svi"; elbo = "auto"
    [optim]      name = "adam"; lr = 1e-3
    [budget]     epochs = 500; patience = 20; lr_decays = 1
    [run]        device = "auto"

The shared sections are defined here. ``[model]`` and ``[inference]`` are chosen by their
``name``: each model family (``pyro_vae/models/<family>/config.py``) and each inference
algorithm (``pyro_vae/inference/<algorithm>.py``) has its own dataclass holding only its
own settings, listed in :mod:`pyro_vae.registry`. Swapping the model or the inference
algorithm is a change of one entry; unknown keys, keys of another family and values of
the wrong type are refused with a message that names them and the valid keys.

A family may declare defaults for other sections (:attr:`~pyro_vae.registry.Family.defaults`:
a flow trains with ``[inference] name = "mle"`` on ``[data] binarize = "none"``), so that
choosing it stays one entry. They fill only the entries the user did not name (in the
dict or TOML file given to :meth:`Config.from_dict`, or in an override of
:meth:`Config.with_overrides`); an entry the user named is kept, and refused later if the
family cannot use it. The resolved values are what :meth:`Config.to_toml` writes.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from pyro_vae.errors import ConfigError
from pyro_vae.inference.svi import SVIConfig
from pyro_vae.loop import BudgetConfig
from pyro_vae.models.vae.config import VAEConfig
from pyro_vae.registry import ALGORITHMS, FAMILIES

__all__ = [
    "BudgetConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "GuideConfig", "OptimConfig",
    "RunConfig", "migrate_legacy",
]


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: Optional[str] = None
    #: "none" (keep values), "static" (binarize once) or "dynamic" (resample every batch).
    binarize: str = "dynamic"
    batch_size: int = 100
    #: A file or folder for the sources that need one ("idx", "array", "torchvision").
    path: Optional[str] = None
    #: ``name = "torchvision"``: the class in ``torchvision.datasets``.
    dataset: Optional[str] = None
    #: Fixed random subsets of the splits (the same in every run): this many points.
    train_size: Optional[int] = None
    valid_size: Optional[int] = None
    test_size: Optional[int] = None
    #: Density models (flows): the steps from stored grey levels to the modelled space,
    #: a subsequence of ["dequantize", "rescale" | "logit"]; see pyro_vae.data.transforms.
    transform: list[str] = field(default_factory=list)
    #: "rescale": the interval [lo, hi] the values are mapped to (NICE's CIFAR-10: [-1, 1]).
    rescale_to: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    #: "logit": λ of logit(λ + (1 − 2λ) x) (MAF's MNIST: 1e-6; CIFAR-like data: 0.05).
    logit_lambda: float = 1e-6


@dataclass
class GuideConfig:
    #: "diagonal_normal", or "iaf": IAF steps on top of it (Kingma et al. 2016).
    name: str = "diagonal_normal"
    #: Encoder widths and activation; None mirrors the model's decoder.
    hidden: Optional[list[int]] = None
    activation: Optional[str] = None
    #: "iaf": the steps T, the width of the context h the encoder feeds every step, and each
    #: step's autoregressive hidden widths (at least z_dim; None: [max(64, 2 z_dim)]).
    flow_steps: int = 2
    context_dim: int = 32
    flow_hidden: Optional[list[int]] = None


@dataclass
class OptimConfig:
    #: "adam", "adagrad" (the AEVB paper's) or "rmsprop"; one optimizer per parameter role.
    name: str = "adam"
    lr: float = 1e-3


@dataclass
class EvalConfig:
    #: Importance samples per test point for the marginal log-likelihood (0: skip).
    num_samples: int = 100
    #: Write the plots at the end of training.
    plots: bool = True


@dataclass
class RunConfig:
    #: Where the module, the data and the optimizer state live: "auto" (a GPU when
    #: torch sees one, else the CPU), "cpu" or "cuda" (or "cuda:N").
    device: str = "auto"


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default_factory=VAEConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    inference: Any = field(default_factory=SVIConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    #: The ``"section.key"`` entries the user named (in :meth:`from_dict`'s dict, a TOML
    #: file, an override): the family's defaults never replace them. Empty for a Config
    #: built by its constructor.
    _explicit: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "Config":
        """The config of the table ``d`` (``{"data": {...}, "model": {...}, ...}``): every
        entry ``d`` lacks takes its default, the chosen family's (:attr:`Family.defaults
        <pyro_vae.registry.Family.defaults>`) where it declares one, else the dataclass's."""
        config = _from_dict(cls, _with_family_defaults(d), where)
        config._explicit = _named_entries(d)
        return config

    @classmethod
    def from_toml(cls, path: str | Path, legacy: bool = False) -> "Config":
        """The config of a TOML file; ``legacy``: written by pyro-vae 0.1 (see
        :func:`migrate_legacy`)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        return cls.from_dict(migrate_legacy(d) if legacy else d, where=str(path))

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
        """A copy with ``"section.key=value"`` entries applied (values in TOML syntax).

        An override of a section's ``name`` switches the family (or algorithm): the old
        one's settings that were at their defaults give way to the new one's defaults. The
        entries a family's defaults decide (e.g. ``inference.name``) that the user never
        named are decided afresh for the family the result has.
        """
        d = _undecided(self)
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
            new = _parse_toml_value(value.strip(), a)
            if leaf == "name" and sections and sections[-1] in _CHOSEN_BY_NAME and new != target.get("name"):
                target = _switched(sections[-1], target, new)
                d[sections[-1]] = target
            target[leaf] = new
        return Config.from_dict(d, where="overrides")


#: Sections whose dataclass is chosen by their ``name``: name -> {name: dataclass}.
_CHOSEN_BY_NAME = {
    "model": {name: family.config for name, family in FAMILIES.items()},
    "inference": {name: algorithm.config for name, algorithm in ALGORITHMS.items()},
}
#: The sections of a plain ``Config()``: the dataclasses' defaults.
_PLAIN = Config().to_dict()


def _named_entries(d: Any) -> frozenset[str]:
    """The ``"section.key"`` entries (and top-level keys) the table ``d`` names."""
    if not isinstance(d, dict):
        return frozenset()
    return frozenset(f"{s}.{k}" if isinstance(v, dict) else s
                     for s, v in d.items() for k in (v if isinstance(v, dict) else [None]))


def _family_defaults(d: dict) -> dict[str, Any]:
    """``{"section.key": value}`` the family ``d["model"]`` names declares (none for an
    unknown name: it is refused when its section is read)."""
    model = d.get("model", {})
    name = model.get("name", VAEConfig.name) if isinstance(model, dict) else None
    family = FAMILIES.get(name) if isinstance(name, str) else None
    return dict(family.defaults) if family is not None else {}


def _with_family_defaults(d: Any) -> Any:
    """``d`` with its family's defaults in the entries it does not name (a copy)."""
    if not isinstance(d, dict):
        return d  # refused by _from_dict
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for key, value in _family_defaults(d).items():
        section, leaf = key.split(".")
        values = out.setdefault(section, {})
        if isinstance(values, dict):  # else refused by _from_dict, naming the section
            values.setdefault(leaf, value)
    return out


def _undecided(config: "Config") -> dict:
    """``config.to_dict()`` without the entries some family's defaults decide that the user
    did not name and that hold a default (the dataclass's or ``config``'s family's): the
    :meth:`Config.from_dict` of the result decides them for its family. A value set in
    Python after the config was built (neither default) is kept as the user's."""
    d = config.to_dict()
    current = _family_defaults(d)
    decided = {key for family in FAMILIES.values() for key, _ in family.defaults}
    for key in sorted(decided - config._explicit):
        section, leaf = key.split(".")
        values = d[section]
        if leaf not in values or values[leaf] not in (_PLAIN[section].get(leaf), current.get(key)):
            continue
        if leaf == "name" and section in _CHOSEN_BY_NAME:  # its settings at their defaults go with it
            d[section] = {k: v for k, v in _switched(section, values, None, force=True).items() if k != "name"}
        else:
            del values[leaf]
    return d


def _section_class(section: str, name: Any, where: str) -> type:
    choices = _CHOSEN_BY_NAME[section]
    if name not in choices:
        raise ConfigError(f"{where}: [{section}] name = {name!r} is unknown: choose one of {sorted(choices)}")
    return choices[name]


def _switched(section: str, values: dict, new_name: Optional[str], force: bool = False) -> dict:
    """``values`` of the old ``[section]`` carried over to ``new_name``'s: what differs from
    the old dataclass's defaults (a setting made on purpose); the rest takes the new one's
    (``force``: whatever the new name, e.g. one still to be decided)."""
    old_cls = _CHOSEN_BY_NAME[section].get(values.get("name"))
    if old_cls is None or (new_name not in _CHOSEN_BY_NAME[section] and not force):
        return dict(values)
    defaults = dataclasses.asdict(old_cls())
    return {k: v for k, v in values.items() if v != defaults.get(k)}


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
        if cls is Config and name in _CHOSEN_BY_NAME:
            kwargs[name] = _from_named_section(name, value, f"{where}: [{name}]")
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value, f"{where}: [{name}]")
        else:
            kwargs[name] = _check_type(value, tp, f"{where}: {name}")
    return cls(**kwargs)


def _from_named_section(section: str, d: dict, where: str) -> Any:
    """``[model]`` / ``[inference]``: the dataclass its ``name`` picks, its keys checked
    against that dataclass's (a key of another family is named as such)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {d!r}")
    default_name = {"model": VAEConfig.name, "inference": SVIConfig.name}[section]
    name = d.get("name", default_name)
    cls = _section_class(section, name, where.split(": [")[0])
    own = {f.name for f in dataclasses.fields(cls)}
    foreign = sorted(set(d) - own)
    if foreign:
        owners = {k: sorted(n for n, c in _CHOSEN_BY_NAME[section].items()
                            if k in {f.name for f in dataclasses.fields(c)}) for k in foreign}
        said = "; ".join(f"{k!r} belongs to {', '.join(map(repr, o))}" if o else f"{k!r} is unknown"
                         for k, o in owners.items())
        raise ConfigError(f"{where}: unknown key(s) {foreign} for name = {name!r} ({said}); "
                          f"the keys of {name!r} are {sorted(own)}")
    return _from_dict(cls, d, where)


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


# ----------------------------------------------------------------------------- release 0.1

#: [model] keys of pyro-vae 0.1's GAE and the GAE config's names for them.
_LEGACY_GAE_KEYS = {
    "exemplar_estimator": "estimator", "exemplar_neighbours": "neighbours", "exemplar_tail": "tail",
    "exemplar_fresh": "fresh", "exemplar_refresh": "refresh_every", "exemplar_bandwidth": "bandwidth",
}


def migrate_legacy(d: dict) -> dict:
    """A config written by pyro-vae 0.1 (one flat ``[model]`` and ``[inference]`` record
    for every family and algorithm) in this release's form: the GAE's ``exemplar_*`` keys
    under their new names, and the ``[inference]`` keys the named algorithm never read
    (0.1 wrote every field, e.g. ``hmc_steps`` for SVI) dropped."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    model = d.get("model", {})
    for old, new in _LEGACY_GAE_KEYS.items():
        if old in model:
            model[new] = model.pop(old)
    inference = d.get("inference")
    if isinstance(inference, dict):
        cls = _CHOSEN_BY_NAME["inference"].get(inference.get("name", SVIConfig.name))
        if cls is not None:
            own = {f.name for f in dataclasses.fields(cls)}
            d["inference"] = {k: v for k, v in inference.items() if k in own}
    return d
