"""Sphinx inventories of Pyro's and PyTorch's documentation, written from the installed packages.

The docs build runs offline, so intersphinx cannot download ``objects.inv`` from
docs.pyro.ai or pytorch.org. This module writes a local stand-in for each (Sphinx's
inventory format, version 2) that maps every public object of the parts of Pyro and
PyTorch this package uses to the page and anchor where that site documents it, under
every name a docstring or a type hint may give it: the public path (``pyro.infer.SVI``),
the defining path autodoc writes for type hints (``pyro.infer.svi.SVI``) and the one the
site itself documents it under.

Where each object lives follows the sites' own sources: docs.pyro.ai is built from
``docs/source/*.rst`` of pyro-ppl/pyro (``automodule``/``autoclass`` per page, listed in
:data:`PYRO_PAGES`), pytorch.org/docs from ``docs/source/*.md`` of pytorch/pytorch
(autosummary pages ``generated/<name>.html`` for most of ``torch``, ``torch.nn``,
``torch.optim``; one page for ``torch.utils.data``, ``torch.distributions`` and
``torch.distributed``).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

#: docs.pyro.ai's pages and what each documents: a module (``automodule`` with its
#: members) or one class or function (``autoclass``/``autofunction``, its anchor the name
#: as written there). The distributions page is built by :func:`_pyro_distributions`.
PYRO_PAGES: dict[str, list[str]] = {
    "primitives": ["pyro.primitives", "pyro.ops.jit.trace"],
    "inference_algos": [f"pyro.infer.{m}" for m in (
        "svi", "elbo", "trace_elbo", "tracegraph_elbo", "traceenum_elbo", "trace_mean_field_elbo",
        "trace_tail_adaptive_elbo", "renyi_elbo", "tracetmc_elbo", "importance", "rws", "smcfilter",
        "svgd", "energy_distance", "discrete", "predictive", "abstract_infer")],
    "mcmc": ["pyro.infer.mcmc.api.MCMC", "pyro.infer.mcmc.api.StreamingMCMC",
             "pyro.infer.mcmc.mcmc_kernel.MCMCKernel", "pyro.infer.mcmc.HMC", "pyro.infer.mcmc.NUTS",
             "pyro.infer.mcmc.RandomWalkKernel", "pyro.infer.mcmc.BlockMassMatrix",
             "pyro.infer.mcmc.util.initialize_model", "pyro.infer.mcmc.util.diagnostics",
             "pyro.infer.mcmc.util.select_samples"],
    "infer.autoguide": [f"pyro.infer.autoguide.{c}" for c in (
        "AutoGuide", "AutoGuideList", "AutoCallable", "AutoNormal", "AutoDelta", "AutoContinuous",
        "AutoMultivariateNormal", "AutoDiagonalNormal", "AutoLowRankMultivariateNormal",
        "AutoNormalizingFlow", "AutoIAFNormal", "AutoLaplaceApproximation", "AutoDiscreteParallel",
        "AutoStructured", "AutoGaussian", "AutoMessenger", "AutoNormalMessenger",
        "AutoHierarchicalNormalMessenger", "AutoRegressiveMessenger")]
    + ["pyro.infer.autoguide.initialization"],
    "infer.util": ["pyro.infer.util.enable_validation", "pyro.infer.util.is_validation_enabled",
                   "pyro.infer.util.validation_enabled", "pyro.infer.inspect", "pyro.infer.resampler"],
    "parameters": ["pyro.params.param_store"],
    "nn": ["pyro.nn.module", "pyro.nn.auto_reg_nn.AutoRegressiveNN", "pyro.nn.dense_nn.DenseNN",
           "pyro.nn.auto_reg_nn.ConditionalAutoRegressiveNN", "pyro.nn.dense_nn.ConditionalDenseNN"],
    "optimization": [f"pyro.optim.{m}" for m in (
        "optim", "lr_scheduler", "adagrad_rmsprop", "clipped_adam", "pytorch_optimizers", "multi")],
    "poutine": ["pyro.poutine.handlers", "pyro.infer.enum.config_enumerate", "pyro.poutine.Trace",
                "pyro.poutine.runtime", "pyro.poutine.util", "pyro.poutine.guide"]
    + [f"pyro.poutine.{m}_messenger" for m in (
        "block", "broadcast", "collapse", "condition", "do", "enum", "equalize", "escape", "indep",
        "infer_config", "lift", "markov", "mask", "plate", "reentrant", "reparam", "replay", "scale",
        "seed", "subsample", "substitute", "trace", "uncondition")] + ["pyro.poutine.messenger"],
    "ops": [f"pyro.ops.{m}" for m in (
        "dual_averaging", "integrator", "welford", "newton", "special", "tensor_utils", "indexing",
        "einsum", "gaussian", "stats", "streaming", "ssm_gp")]
    + ["pyro.ops.contract.einsum", "pyro.ops.contract.ubersum"],
}

#: Packages whose public names are aliases of what they re-export (``pyro.sample``,
#: ``pyro.infer.SVI``, ``torch.nn.Linear``, ...).
PYRO_NAMESPACES = ["pyro", "pyro.infer", "pyro.infer.mcmc", "pyro.infer.autoguide", "pyro.poutine",
                   "pyro.nn", "pyro.optim", "pyro.ops", "pyro.params", "pyro.distributions",
                   "pyro.distributions.transforms"]


def _resolve(path: str):
    """The object a dotted path names: a module, or an attribute of the longest importable prefix."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _role(obj) -> str:
    if inspect.ismodule(obj):
        return "py:module"
    if inspect.isclass(obj):
        return "py:class"
    return "py:function" if callable(obj) else "py:data"  # data: constraints.positive, ...


def _methods(cls) -> Iterator[tuple[str, object]]:
    """Public methods and properties a class defines itself (autodoc's ``:members:``)."""
    for name, member in vars(cls).items():
        if not name.startswith("_") and (callable(member) or isinstance(member, property)):
            yield name, member


def _module_members(module) -> Iterator[tuple[str, object]]:
    """What ``automodule`` with ``:members:`` documents: public classes and functions the
    module defines (or lists in ``__all__``)."""
    listed = set(getattr(module, "__all__", ()))
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if name in listed or (callable(obj) and getattr(obj, "__module__", None) == module.__name__):
            yield name, obj


class Inventory:
    """Names to (role, page#anchor), and documented objects to their anchor, for aliasing."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str]] = {}
        self._anchors: dict[int, tuple[object, str, str, str]] = {}  # id(obj) -> (obj, role, page, anchor)

    def add(self, obj, page: str, anchor: str, members: bool = True) -> None:
        role = _role(obj)
        self._anchors.setdefault(id(obj), (obj, role, page, anchor))
        self.entries[anchor] = (role, f"{page}#{anchor}")
        if members and inspect.isclass(obj):
            for name, member in _methods(obj):
                kind = "py:property" if isinstance(member, property) else "py:method"
                self.entries.setdefault(f"{anchor}.{name}", (kind, f"{page}#{anchor}.{name}"))

    def add_module(self, module, page: str) -> None:
        self.entries[module.__name__] = ("py:module", f"{page}#module-{module.__name__}")
        for name, obj in _module_members(module):
            self.add(obj, page, f"{module.__name__}.{name}")

    def alias(self, name: str, obj) -> None:
        """``name`` resolves to wherever ``obj`` is documented (if it is)."""
        found = self._anchors.get(id(obj))
        if found and name not in self.entries:
            _, role, page, anchor = found
            self.entries[name] = (role, f"{page}#{anchor}")
            if inspect.isclass(obj):  # methods under the alias too
                for member, _ in _methods(obj):
                    if f"{anchor}.{member}" in self.entries:
                        self.entries.setdefault(f"{name}.{member}", self.entries[f"{anchor}.{member}"])

    def alias_namespaces(self, packages: Iterable[str]) -> None:
        for package in packages:
            module = importlib.import_module(package)
            for name, obj in list(vars(module).items()):
                if not name.startswith("_"):
                    self.alias(f"{package}.{name}", obj)
        # The defining path: what autodoc writes for a type hint (obj.__module__.__qualname__).
        for obj, *_ in list(self._anchors.values()):
            qualname, module = getattr(obj, "__qualname__", None), getattr(obj, "__module__", None)
            if qualname and module:
                self.alias(f"{module}.{qualname}", obj)


def _resolve_quiet(path: str):
    try:
        return _resolve(path)
    except (ImportError, AttributeError):
        return None


def _pyro_distributions(inv: Inventory) -> None:
    """distributions.html: each distribution as ``pyro.distributions.<Name>`` (the wrappers of
    PyTorch's included), the transforms as ``pyro.distributions.transforms.<Name>``, and the
    constraints module."""
    import pyro.distributions as dist
    import pyro.distributions.transforms as transforms
    import torch

    own = {"TorchDistributionMixin": "pyro.distributions.torch_distribution.TorchDistributionMixin",
           "ImproperUniform": "pyro.distributions.improper_uniform.ImproperUniform"}
    for name, obj in sorted(vars(dist).items()):
        if name.startswith("_") or not inspect.isclass(obj):
            continue
        if issubclass(obj, (torch.distributions.Distribution, dist.TransformModule, dist.ConditionalTransform)):
            inv.add(obj, "distributions.html", own.get(name, f"pyro.distributions.{name}"))
    inv.add(dist.torch_distribution.TorchDistributionMixin, "distributions.html", own["TorchDistributionMixin"])
    for name, obj in sorted(vars(transforms).items()):
        if not name.startswith("_") and callable(obj) and getattr(obj, "__module__", "").startswith("pyro."):
            inv.add(obj, "distributions.html", f"pyro.distributions.transforms.{name}")
    inv.add_module(importlib.import_module("pyro.distributions.constraints"), "distributions.html")


def pyro_inventory() -> Inventory:
    inv = Inventory()
    for page, targets in PYRO_PAGES.items():
        for target in targets:
            obj = _resolve_quiet(target)
            if obj is None:  # a module this Pyro release lacks (horovod's is optional)
                continue
            if inspect.ismodule(obj):
                inv.add_module(obj, f"{page}.html")
            else:
                inv.add(obj, f"{page}.html", target)
    _pyro_distributions(inv)
    inv.alias_namespaces(PYRO_NAMESPACES)
    return inv


def _public(module) -> Iterator[tuple[str, object]]:
    for name, obj in vars(module).items():
        if not name.startswith("_") and not inspect.ismodule(obj) and callable(obj):
            yield name, obj


def torch_inventory() -> Inventory:
    import torch
    import torch.distributed
    import torch.distributions
    import torch.nn.functional
    import torch.nn.init
    import torch.optim.lr_scheduler
    import torch.utils.data

    inv = Inventory()

    def generated(name: str, obj) -> None:  # one autosummary page each, its methods on it
        inv.add(obj, f"generated/{name}.html", name)

    # Tensor: its own page, each method a generated page; dtype/device/layout on one page.
    inv.add(torch.Tensor, "tensors.html", "torch.Tensor", members=False)
    for member in dir(torch.Tensor):  # most are inherited from torch._C.TensorBase
        if not member.startswith("_"):
            inv.entries[f"torch.Tensor.{member}"] = ("py:method", f"generated/torch.Tensor.{member}.html#torch.Tensor.{member}")
    for name in ("dtype", "device", "layout", "memory_format"):
        inv.add(getattr(torch, name), "tensor_attributes.html", f"torch.{name}", members=False)
    inv.add(torch.Size, "size.html", "torch.Size")
    inv.add(torch.optim.Optimizer, "optim.html", "torch.optim.Optimizer", members=False)
    for member, _ in _methods(torch.optim.Optimizer):
        inv.entries[f"torch.optim.Optimizer.{member}"] = (
            "py:method", f"generated/torch.optim.Optimizer.{member}.html#torch.optim.Optimizer.{member}")
    inv.add(torch.nn.Parameter, "generated/torch.nn.parameter.Parameter.html", "torch.nn.parameter.Parameter")

    for name, obj in _public(torch):
        if id(obj) not in inv._anchors and not (inspect.isclass(obj) and name.endswith("Tensor")):
            generated(f"torch.{name}", obj)
    for name, obj in _public(torch.nn):
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
            generated(f"torch.nn.{name}", obj)
    for package in ("torch.nn.functional", "torch.nn.utils"):
        for name, obj in _public(importlib.import_module(package)):
            if inspect.isfunction(obj) or inspect.isbuiltin(obj):
                generated(f"{package}.{name}", obj)
    for name, obj in _public(torch.nn.init):
        if inspect.isfunction(obj):
            inv.add(obj, "nn.init.html", f"torch.nn.init.{name}")
    for name, obj in _public(torch.optim):
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            generated(f"torch.optim.{name}", obj)
    for name, obj in _public(torch.optim.lr_scheduler):
        if inspect.isclass(obj) and obj.__module__ == "torch.optim.lr_scheduler":
            generated(f"torch.optim.lr_scheduler.{name}", obj)

    for name, obj in _public(torch.utils.data):
        if getattr(obj, "__module__", "").startswith("torch.utils.data"):
            anchor = ("torch.utils.data.distributed.DistributedSampler" if name == "DistributedSampler"
                      else f"torch.utils.data.{name}")
            inv.add(obj, "data.html", anchor)
    # torch.distributions: one page, each class under its defining module.
    for name, obj in _public(torch.distributions):
        module = getattr(obj, "__module__", "")
        if module.startswith("torch.distributions") and (inspect.isclass(obj) or inspect.isfunction(obj)):
            inv.add(obj, "distributions.html", f"{module}.{obj.__name__}")
    for module in ("torch.distributions.transforms", "torch.distributions.constraints"):
        inv.add_module(importlib.import_module(module), "distributions.html")
    with warnings.catch_warnings():  # reading deprecated aliases (reduce_op) warns
        warnings.simplefilter("ignore")
        distributed = list(_public(torch.distributed))
    for name, obj in distributed:
        if getattr(obj, "__module__", "").startswith("torch.distributed"):
            inv.add(obj, "distributed.html", f"torch.distributed.{name}", members=False)

    inv.alias_namespaces(["torch", "torch.nn", "torch.optim", "torch.utils.data", "torch.distributions",
                          "torch.distributed", "torch.nn.functional"])
    return inv


def write(path: Path, project: str, version: str, entries: dict[str, tuple[str, str]]) -> None:
    """Sphinx's inventory format, version 2: four header lines, then zlib-compressed lines
    ``name domain:role priority uri dispname`` (``-``: the display name is the name)."""
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n")
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, (role, uri) in sorted(entries.items()) if " " not in name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + zlib.compress(body.encode()))


def ensure(folder: Path) -> dict[str, Path]:
    """Write (once per installed version) the Pyro and PyTorch inventories under ``folder``;
    return their paths by project."""
    import pyro
    import torch

    paths = {}
    for project, module, build in (("pyro", pyro, pyro_inventory), ("torch", torch, torch_inventory)):
        path = folder / f"{project}-{module.__version__}.inv"
        if not path.exists():
            write(path, project, module.__version__, build().entries)
        paths[project] = path
    return paths
