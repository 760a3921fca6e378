"""The inference matrix, walked whole: every (family, algorithm) pair of the registry.

Each "yes" trains a few steps from a TOML file on a small real data set (the 8x8
digits) and raises the figure it is judged by (the validation ELBO; a flow's exact
log-likelihood); each refusal stops before anything is built, with its reason. Rows and
columns come from the registry, so a family or an algorithm that lands later is walked
too: the settings below apply where its config has the key, the data are the first of
:data:`DATA` its family accepts.
"""

import dataclasses
import re
from pathlib import Path

import pytest

from pyro_vae import matrix, registry
from pyro_vae.config import Config, ConfigError, _toml_value
from pyro_vae.errors import ConfigError as BaseConfigError
from pyro_vae.train import build, train

#: Small settings, applied to a section where its dataclass has the key.
TINY = {
    "model": {"hidden": [64], "z_dim": 2, "neighbours": 8, "tail": 50, "couplings": 2, "num_flows": 1,
              "prior": "normal"},
    "inference": {"num_particles": 2, "m_steps": 2, "hmc_leapfrog_steps": 4},
}
#: Data sets tried in order; a family gets the first that it accepts (registry.check_data).
DATA = [
    {"name": "digits", "binarize": "static"},
    {"name": "digits", "binarize": "none", "transform": ["dequantize"]},
]
SIZES = {"train_size": 300, "valid_size": 100, "test_size": 100, "batch_size": 50}
ROOT = Path(__file__).resolve().parents[1]


def section(kind: str, name: str) -> dict:
    cls = (registry.FAMILIES[name].config if kind == "model" else registry.ALGORITHMS[name].config)
    keys = {f.name for f in dataclasses.fields(cls)}
    return {"name": name, **{k: v for k, v in TINY[kind].items() if k in keys}}


def toml(family: str, algorithm: str, data: dict) -> str:
    tables = {"data": {**data, **SIZES}, "model": section("model", family),
              "inference": section("inference", algorithm), "optim": {"lr": 0.01},
              "budget": {"epochs": 2}, "eval": {"num_samples": 0, "plots": False}}
    lines = ["seed = 0"]
    for name, values in tables.items():
        lines += [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def config_for(tmp_path, family: str, algorithm: str) -> Config:
    """The cell's config, written to and read from a TOML file, on the first data its family accepts."""
    for data in DATA:
        path = tmp_path / f"{family}-{algorithm}.toml"
        path.write_text(toml(family, algorithm, data))
        config = Config.from_toml(path)
        try:
            registry.check_data(config, build_data(config))
        except (BaseConfigError, ValueError):
            continue
        return config
    raise AssertionError(f"no data set in DATA suits [model] name = {family!r}: add one")


def build_data(config):
    from pyro_vae.data import load_dataset

    d = config.data
    return load_dataset(d.name, binarize=d.binarize, seed=config.seed, train_size=d.train_size,
                        valid_size=d.valid_size, test_size=d.test_size)


CELLS = sorted(matrix.cells().items())


@pytest.mark.parametrize("cell,reason", CELLS, ids=[f"{f}-{a}" for (f, a), _ in CELLS])
def test_every_cell_trains_or_says_why_not(tmp_path, cell, reason):
    family, algorithm = cell
    config = config_for(tmp_path, family, algorithm)
    if reason is not None:
        said = matrix.cell(family, algorithm, hint=True)
        with pytest.raises(ConfigError, match=re.escape(f"[inference] name = {algorithm!r} cannot train "
                                                        f"[model] name = {family!r}: it {said}")):
            build(config)
        return
    start = build(config)
    exp, state = train(config, tmp_path / "run", progress=False)
    figure = exp.config.budget.monitor  # the algorithm's own validation figure
    before = start.inference.evaluate(start.data.valid)[figure.removeprefix("valid_")]
    after = state.history[-1][figure]
    assert after > before, f"{family} x {algorithm}: {figure} {before:.2f} -> {after:.2f}"


def test_the_documented_tables_are_the_registry_s():
    table = matrix.markdown()
    for doc in ("docs/inference_matrix.md", "README.md"):
        assert table in (ROOT / doc).read_text(), f"{doc}: paste `python -m pyro_vae.matrix`'s table"


def test_refusals_are_mathematical_only():
    """Among the latent-variable families (a guide), only "mle" (which needs an exact
    log-density) and "em" (which needs an enumerated index) may refuse."""
    for (family, algorithm), reason in matrix.cells().items():
        if registry.FAMILIES[family].capabilities.has_guide and reason is not None:
            assert algorithm in ("mle", "em"), (family, algorithm, reason)
