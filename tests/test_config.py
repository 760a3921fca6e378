"""Experiment configs: TOML round trip, overrides, and refusals that name the entry."""

import pytest

from pyro_vae.config import Config, ConfigError


def test_toml_round_trip_keeps_every_entry(tmp_path):
    config = Config().with_overrides(["model.hidden=[500, 500]", "budget.patience=5", "guide.activation=relu",
                                      "optim.lr=0.02", "eval.plots=false", 'data.data_dir="/x y"'])
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert Config.from_toml(path) == config


def test_overrides_parse_toml_values_and_bare_words():
    c = Config().with_overrides(["model.z_dim=20", "inference.elbo=jit_trace", "optim.lr=1", "budget.patience=3"])
    assert (c.model.z_dim, c.inference.elbo, c.optim.lr, c.budget.patience) == (20, "jit_trace", 1.0, 3)
    assert isinstance(c.optim.lr, float)
    assert c.with_overrides(["budget.patience=none"]).budget.patience is None
    assert c.with_overrides(["data.binarize=none"]).data.binarize == "none"


@pytest.mark.parametrize("text,message", [
    ("[model]\nzdim = 3\n", r"\[model\]: unknown key\(s\) \['zdim'\]"),
    ("[modle]\n", r"unknown key\(s\) \['modle'\]"),
    ("[model]\nz_dim = 'two'\n", "z_dim must be of type int"),
    ("[model]\nhidden = 500\n", "hidden must be a list"),
    ("[budget]\nepochs = true\n", "epochs must be of type int"),
    ("model = 3\n", r"\[model\]: expected a table"),
    ("[model\n", "is not valid TOML"),
])
def test_bad_files_are_refused_naming_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        Config.from_toml(path)
    assert str(path) in str(e.value)


def test_bad_overrides_are_refused():
    with pytest.raises(ConfigError, match="section.key=value"):
        Config().with_overrides(["z_dim"])
    with pytest.raises(ConfigError, match="no config section 'nope'"):
        Config().with_overrides(["nope.x=1"])
