"""The disentanglement pictures and ``pyro-vae evaluate --metrics disentanglement``."""

import json

import numpy as np
import pytest
import torch

from pyro_vae import disentanglement_plots
from pyro_vae.cli import main
from pyro_vae.config import Config, ConfigError
from pyro_vae.disentanglement_report import (
    factor_data,
    kl_per_dimension,
    metrics_table,
    settings_for,
    small_boosting,
    traversal_images,
)
from pyro_vae.train import build, train
from tests.models.gae_helpers import small_gae
from tests.toy_models import fresh_vae

DSPRITES = ["data.name=dsprites", "data.binarize=none", "data.batch_size=32", "data.train_size=64",
            "data.valid_size=32", "data.test_size=32", "model.z_dim=4", "model.network=conv",
            "model.hidden=[16]", "model.activation=relu", "eval.num_samples=0", "eval.plots=false",
            "budget.epochs=1"]


def test_kl_per_dimension_adds_up_to_the_vaes_kl(digits):
    vae, x = fresh_vae(z_dim=3), digits.test[:50]
    kl, what = kl_per_dimension(vae, x, chunk=16)
    loc, scale = vae.guide.encoder(x)
    assert kl.shape == (3,) and what == "KL to the prior"
    assert kl.sum() == pytest.approx(float(vae.prior.kl(loc, scale).mean().detach()), rel=1e-5)


def test_kl_per_dimension_of_a_mixture_prior_is_to_the_matched_gaussian(digits):
    kl, what = kl_per_dimension(small_gae(digits), digits.test[:40])
    assert kl.shape == (3,) and (kl >= 0).all() and "moment-matched" in what


def test_traversals_vary_one_dimension_per_row(digits):
    vae = fresh_vae(z_dim=3)
    x0 = digits.test[:1]
    images = traversal_images(vae, x0, order=[2, 0], num_values=5)
    assert images.shape == (10, 64)
    z0, q = vae.encode(x0)[0], vae.prior_quantiles(torch.linspace(0.02, 0.98, 5))
    expected = z0.repeat(5, 1)
    expected[:, 2] = q[:, 2]
    torch.testing.assert_close(images[:5], vae.decoder.mean(expected).reshape(5, -1))


def test_the_figures_are_written_and_check_their_input(tmp_path):
    images = np.random.default_rng(0).random((6, 64))
    path = disentanglement_plots.latent_traversals(images, (8, 8), tmp_path / "t.png", 3, ["a", "b"])
    assert path.stat().st_size > 0
    assert disentanglement_plots.kl_per_dimension_bars([0.1, 2.0], tmp_path / "k.png").stat().st_size > 0
    with pytest.raises(ValueError, match="do not make rows"):
        disentanglement_plots.latent_traversals(images, (8, 8), tmp_path / "t.png", 4)
    with pytest.raises(ValueError, match="finite"):
        disentanglement_plots.kl_per_dimension_bars([float("nan")], tmp_path / "k.png")


def test_settings_and_table():
    quick = settings_for("quick", dci_trees=3)
    assert quick["dci"]["classifier"](0).n_estimators == 3 and small_boosting(0).n_estimators == 10
    assert settings_for("full")["mig"] == {}
    with pytest.raises(ConfigError, match="unknown"):
        settings_for("medium")
    table = metrics_table({"mig": {"mig": 0.25}, "dci": {"completeness": 0.5, "disentanglement": 0.75}})
    assert table.splitlines()[2:] == ["| mig | mig | 0.2500 |", "| dci | disentanglement | 0.7500 |",
                                      "| dci | completeness | 0.5000 |"]


def test_data_without_factors_is_refused():
    exp = build(Config().with_overrides(["model.hidden=[8]"]))
    with pytest.raises(ConfigError, match="known factors of variation"):
        factor_data(exp.data)


def test_evaluate_writes_the_metrics_and_pictures_into_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    train(Config().with_overrides(DSPRITES + ["inference.regulariser=dip_vae_ii"]), run, progress=False)
    assert main(["evaluate", str(run), "--metrics", "disentanglement", "--only", "mig", "sap"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "disentanglement.json").read_text())
    assert printed == saved and set(saved["scores"]) == {"mig", "sap"} and saved["step"] == 2
    assert 0 <= saved["scores"]["mig"]["mig"] <= 1 and saved["seconds"]["mig"] >= 0
    assert "| mig | mig |" in (run / "disentanglement.md").read_text()
    assert (run / "plots" / "traversals.png").exists() and (run / "plots" / "kl_per_dimension.png").exists()
    assert main(["evaluate", str(run), "--metrics", "disentanglement", "--only", "magic"]) == 2
    assert "unknown disentanglement metrics ['magic']" in capsys.readouterr().err
