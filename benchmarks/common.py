"""What the benchmark scripts share (each script imports this module, none imports another).

* options: :func:`add_threads`, :func:`add_data_dir`, :func:`add_gae_model` (the GAE
  benchmarks' network and data options), :func:`settings` (``KEY=VALUE`` words of
  ``[model]`` entries, pyro-vae 0.1's GAE names understood);
* the machine: :func:`set_threads`, :func:`load_average`, :func:`cpu_name`,
  :func:`machine` (a one-line description);
* timing: :func:`seconds` (one call), :func:`median_ms`, :func:`spread`;
* experiments: :func:`gae_config` (the GAE/VAE config of the GAE benchmarks),
  :func:`cached_datasets` (build many experiments on one load of the data);
* output: :func:`write_json`.

The scripts run from the repository root (``python benchmarks/<script>.py``), which puts
this folder on ``sys.path``. torch and the package are imported where they are used, so
that a script's launcher process (``distributed_throughput.py``) stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional
from unittest import mock

# ----------------------------------------------------------------------------- options


def add_threads(p: argparse.ArgumentParser, default: int = 1) -> None:
    p.add_argument("--threads", type=int, default=default,
                   help=f"torch threads (default {default}; on busy cores two threads wait for each other)")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where the data files are (default: the package's search path)")


def add_gae_model(p: argparse.ArgumentParser) -> None:
    """The network and data options of the GAE benchmarks (binarized MNIST)."""
    p.add_argument("--hidden-size", type=int, default=500)
    p.add_argument("--z-dim", type=int, default=40)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--n-train", type=int,
                   help="a fixed random subset of N training images (the GAE's exemplars; "
                        "[data] train_size: a quick look, the figures use all 50000)")
    add_data_dir(p)


def settings(items: Iterable[str]) -> dict:
    """``["bandwidth=shared", "neighbours=64"]`` -> ``{"bandwidth": "shared", "neighbours": 64}``:
    values in JSON (a bare word is a string), pyro-vae 0.1's ``exemplar_*`` GAE names under
    this release's (``exemplar_bandwidth`` -> ``bandwidth``)."""
    from pyro_vae.config import migrate_legacy

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        (key,) = migrate_legacy({"model": {key.strip(): None}})["model"]
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word: a string setting, e.g. bandwidth=shared
            out[key] = value
    return out


# ----------------------------------------------------------------------------- the machine


def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """The CPU, its count, torch's and Python's versions, on one line."""
    import torch

    return f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, python {platform.python_version()}"


# ----------------------------------------------------------------------------- timing


def seconds(call: Callable[[], object]) -> float:
    """Wall seconds of one ``call()``."""
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def median_ms(times: list[float]) -> float:
    """The median of ``times`` (seconds), in milliseconds."""
    return statistics.median(times) * 1000


def spread(values: list[float]) -> str:
    """``"min-max"`` of ``values``, two decimals."""
    return f"{min(values):.2f}-{max(values):.2f}"


# ----------------------------------------------------------------------------- experiments


def gae_config(args, layers: int, **model):
    """Static binarized MNIST, ``layers`` hidden layers of ``args.hidden_size``, the
    package's defaults otherwise (Adam 1e-3; ``elbo = "auto"``: the GAE's own objective);
    ``model`` entries on top (``name="gae"``, ``estimator="random"``, ...)."""
    from pyro_vae.config import Config

    return Config.from_dict({
        "seed": args.seed,
        "data": {"name": "binarized_mnist", "binarize": "none", "batch_size": args.batch_size,
                 "data_dir": args.data_dir, "train_size": args.n_train},
        "model": {"z_dim": args.z_dim, "hidden": [args.hidden_size] * layers, "activation": args.activation,
                  **model},
    })


@contextlib.contextmanager
def cached_datasets() -> Iterator[None]:
    """Within it, :func:`pyro_vae.train.build` loads each data set once (by its
    arguments) and hands every later experiment the same splits: a benchmark that builds
    many models on one data set times the models, not the file reading."""
    import pyro_vae.train

    real, cache = pyro_vae.train.load_dataset, {}

    def load(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in cache:
            cache[key] = real(*args, **kwargs)
        return cache[key]

    with mock.patch.object(pyro_vae.train, "load_dataset", load):
        yield


# ----------------------------------------------------------------------------- output


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return path
