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
#: A family's own small settings, where a key of TINY means something else for it (the
#: VLAE's per-layer lists take one entry a layer; the PixelGAN's prior is a kind of code).
OWN = {
    "vlae": {"z_dims": [2, 2], "hidden": [64, 64], "depths": [1, 1]},
    "pixelgan": {"prior": "gaussian", "hidden": [64], "channels": 8, "layers": 2},
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
    own = OWN.get(name, {}) if kind == "model" else {}
    return {"name": name, **{k: v for k, v in TINY[kind].items() if k in keys}, **own}


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
    if figure == "none":  # an adversarial figure: judged by the trained critic
        before, after = critics_distance(exp, start)
        assert after < before, f"{family} x {algorithm}: the trained critic's distance {before:.4f} -> {after:.4f}"
        return
    before = start.inference.evaluate(start.data.valid)[figure.removeprefix("valid_")]
    after = state.history[-1][figure]
    assert after > before, f"{family} x {algorithm}: {figure} {before:.2f} -> {after:.2f}"


def critics_distance(exp, start) -> tuple[float, float]:
    """A critic's estimate is no fixed yardstick (the critic trains too): the trained critic
    measures the untrained generator and the trained one, which must be nearer the data."""
    (figure,) = exp.inference.valid_figures
    trained = {k: v.clone() for k, v in exp.module.state_dict().items()}
    exp.module.load_state_dict(start.module.state_dict())
    before = exp.inference.evaluate(exp.data.valid)[figure]
    exp.module.load_state_dict(trained)
    return before, exp.inference.evaluate(exp.data.valid)[figure]


def test_the_documented_tables_are_the_registry_s():
    table = matrix.markdown()
    for doc in ("docs/inference_matrix.md", "README.md"):
        assert table in (ROOT / doc).read_text(), f"{doc}: paste `python -m pyro_vae.matrix`'s table"


def test_refusals_are_mathematical_only():
    """Among the latent-variable families (a guide), only "mle" (which needs an exact
    log-density), "em" (which needs an enumerated index) and "adversarial_ae" on an
    exemplar prior (which is the aggregate posterior the algorithm would match to it) may
    refuse; and every refusal states its reason in words, not as a capability's name."""
    for (family, algorithm), reason in matrix.cells().items():
        caps = registry.FAMILIES[family].capabilities
        if caps.has_guide and reason is not None:
            assert algorithm in ("mle", "em") or (algorithm == "adversarial_ae" and caps.aggregate_prior), \
                (family, algorithm, reason)
        assert reason is None or " = " not in reason, (family, algorithm, reason)
