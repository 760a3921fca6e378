"""``[run] device``: training, checkpoints and evaluation on a GPU and across devices.

Every test runs on the CPU as well, so the code the GPU variants run is exercised on
any machine; the variants that need CUDA are marked ``cuda`` and skipped without one
(``pytest -m cuda`` runs only them). The CPU-only refusal of ``device = "cuda"`` is in
``test_config.py``.
"""

import pyro
import pytest
import torch

from pyro_vae.config import Config
from pyro_vae.evaluation import evaluate_elbo, log_likelihood
from pyro_vae.report import write_plots
from pyro_vae.train import load_run, train

CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def on(device):
    return pytest.param(device, marks=CUDA) if device == "cuda" else device


def config(family, device, epochs=2):
    return Config().with_overrides([
        f"model.name={family}", "model.hidden=[16]", "eval.num_samples=0", "eval.plots=false", "optim.lr=3e-3",
        "data.train_size=300", "data.valid_size=100", "data.test_size=100", f"budget.epochs={epochs}",
        f"run.device={device}"])


def device_type(module):
    (kind,) = {p.device.type for p in module.parameters()}
    return kind


@pytest.mark.parametrize("device", ["cpu", on("cuda")])
@pytest.mark.parametrize("family", ["vae", "gae"])
def test_a_short_run_trains_on_the_device(tmp_path, family, device):
    exp, state = train(config(family, device), tmp_path, progress=False)
    assert exp.device.type == device and device_type(exp.module) == device
    assert {getattr(exp.data, s).device.type for s in ("train", "valid", "test")} == {device}
    elbos = [r["train_elbo"] for r in state.history]
    assert state.epoch == 2 and all(torch.isfinite(torch.tensor(elbos)))
    assert elbos[-1] > elbos[0] and state.history[-1]["valid_elbo"] > state.history[0]["valid_elbo"]


@pytest.mark.parametrize("device", ["cpu", on("cuda")])
@pytest.mark.parametrize("family", ["vae", "gae"])
def test_the_report_figures_are_drawn_from_a_model_on_the_device(tmp_path, family, device):
    """The manifold's grid, the quantiles of the model's prior, is computed where the
    model is, built on the CPU and decoded where the model is."""
    exp, state = train(config(family, device, epochs=1).with_overrides(["model.z_dim=2"]), tmp_path, progress=False)
    written = write_plots(exp, state.history, tmp_path / "plots")
    assert {"samples.png", "reconstructions.png", "latent.png", "manifold.png"} <= {p.name for p in written}


@pytest.mark.parametrize("saved,loaded", [("cpu", "cpu"), pytest.param("cuda", "cpu", marks=CUDA),
                                          pytest.param("cpu", "cuda", marks=CUDA)])
@pytest.mark.parametrize("family", ["vae", "gae"])
def test_a_checkpoint_saved_on_one_device_loads_and_resumes_on_another(tmp_path, family, saved, loaded):
    exp, _ = train(config(family, saved, epochs=1), tmp_path, progress=False)
    trained = {k: v.cpu() for k, v in exp.module.state_dict().items()}
    back, state = load_run(tmp_path, device=loaded)
    assert back.device.type == loaded and device_type(back.module) == loaded and state.epoch == 1
    for k, v in back.module.state_dict().items():
        assert torch.equal(v.cpu(), trained[k]), k
    assert torch.isfinite(torch.tensor(back.inference.evaluate(back.data.valid)["elbo"]))
    # [run] may change on resume: the run trains on where it is now
    exp, state = train(config(family, loaded, epochs=2), tmp_path, progress=False)
    assert state.epoch == 2 and device_type(exp.module) == loaded


@pytest.mark.parametrize("device", ["cpu", on("cuda")])
@pytest.mark.parametrize("family", ["vae", "gae"])
def test_evaluation_runs_where_the_model_is(tmp_path, family, device):
    """The ELBO and log p(x) of one set of parameters on the device agree with the CPU's
    (other random draws: within Monte Carlo error, ~0.07 nats between seeds here)."""
    train(config(family, "cpu", epochs=1), tmp_path, progress=False)
    scores = {}
    for where in ("cpu", device):
        exp, _ = load_run(tmp_path, device=where)
        valid, test = exp.data.valid, exp.data.test[:50]
        assert valid.device.type == where
        pyro.set_rng_seed(0)
        elbo = exp.inference.evaluate(valid)["elbo"]
        assert elbo == pytest.approx(evaluate_elbo(exp.module, valid), abs=0.5)
        pyro.set_rng_seed(0)
        ll = log_likelihood(exp.module, test, num_samples=20)
        assert ll.per_point.device.type == where and ll.per_point.shape == (50,)
        assert torch.isfinite(ll.per_point).all()
        scores[where] = (elbo, ll.mean)
    assert scores[device][0] == pytest.approx(scores["cpu"][0], abs=0.5)
    assert scores[device][1] == pytest.approx(scores["cpu"][1], abs=0.5)
    assert scores[device][1] >= scores[device][0] - 0.5  # log p(x) >= ELBO, up to the draws
