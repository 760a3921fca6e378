"""Run directories written by pyro-vae 0.1 load and resume.

The old code is not available to the tests, so a 0.1 run directory is made by hand: a
run trained by this release is rewritten in 0.1's layout (what 0.1 wrote, per
``migrate_checkpoint``'s docstring and 0.1's own run directories): a checkpoint
``{"module", "inference": <optimizers under each algorithm's own names>, "rng",
"state": {..., "best_valid"}}`` without ``"release"`` or ``"callbacks"``, and a
config.toml with one flat ``[inference]`` record of every algorithm's fields.
"""

import copy
import math
import shutil

import numpy as np
import pytest
import torch

from pyro_vae import __version__, checkpoint
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import resolve_data_dir
from pyro_vae.inference import SVIConfig, WakeSleepConfig
from pyro_vae.runs import LEGACY_RELEASE, RunDirectory, migrate_checkpoint, read_log
from pyro_vae.train import load_run, train
from tests.legacy import legacy_inference_toml

#: What pyro-vae 0.1 wrote: [model] without "network", [inference] with every field of
#: every algorithm, no [run] section and no [budget] monitor.
LEGACY_CONFIG = """seed = 0

[data]
name = "digits"
binarize = "dynamic"
batch_size = 200

[model]
name = "vae"
z_dim = 2
hidden = [16]
activation = "tanh"
likelihood = "bernoulli"

[guide]
name = "diagonal_normal"

""" + legacy_inference_toml("{name}", "meanfield", "{num_particles}") + """

[optim]
name = "adam"
lr = 0.003

[budget]
epochs = {epochs}
lr_decays = 0
lr_decay_factor = 0.1

[eval]
num_samples = 0
plots = false
"""


def legacy_text(name, epochs, num_particles=1):
    return LEGACY_CONFIG.format(name=name, epochs=epochs, num_particles=num_particles)


def config_of(tmp_path, name, epochs, num_particles=1):
    """The config this release reads from 0.1's config.toml."""
    path = tmp_path / f"{name}-{epochs}.toml"
    path.write_text(legacy_text(name, epochs, num_particles))
    return Config.from_toml(path, legacy=True)


def legacy_inference(name, state, module):
    """The algorithm's state as 0.1 kept it."""
    roles = state["optimizers"]
    if name == "svi":
        return {"optimizer": roles["all"]}
    if name == "wake_sleep":
        return {"wake_optimizer": roles["model"], "sleep_optimizer": roles["guide"]}
    if name == "rws":  # 0.1's RWS: one optimizer over the model's and the guide's parameters
        return {"optimizer": torch.optim.Adam(module.parameters(), lr=3e-3).state_dict()}
    raise ValueError(name)


def legacy_rng(rng):
    """pyro.util.get_rng_state() as 0.1 and 0.2.0 stored it: NumPy's keys a NumPy array."""
    name, keys, *rest = rng["numpy"]
    return {**rng, "numpy": (name, keys.numpy().astype(np.uint32), *rest)}


def make_legacy(run_dir, name):
    """Rewrite ``run_dir`` (trained by this release) as pyro-vae 0.1 left it."""
    ckpt = checkpoint.load(run_dir / "checkpoint.pt")
    exp, _ = load_run(run_dir, device="cpu")
    state = dict(ckpt["state"])
    best = state.pop("best_score")
    state["best_valid"] = -math.inf if best is None else best
    legacy = {"module": ckpt["module"], "inference": legacy_inference(name, ckpt["inference"], exp.module),
              "rng": legacy_rng(ckpt["rng"]), "state": state}
    torch.save(legacy, run_dir / "checkpoint.pt")  # as 0.1 wrote it (checkpoint.save refuses NumPy arrays)
    epochs = int(state["epoch"])
    num_particles = 2 if name == "rws" else 1
    (run_dir / "config.toml").write_text(legacy_text(name, epochs, num_particles))
    return legacy


@pytest.mark.parametrize("name", ["svi", "wake_sleep"])
def test_a_legacy_run_loads_and_resumes_as_if_never_interrupted(tmp_path, name):
    whole_cfg = config_of(tmp_path, name, 3)
    assert type(whole_cfg.inference) is {"svi": SVIConfig, "wake_sleep": WakeSleepConfig}[name]
    _, whole = train(whole_cfg, tmp_path / "whole", progress=False)
    train(config_of(tmp_path, name, 2), tmp_path / "old", progress=False)
    legacy = make_legacy(tmp_path / "old", name)
    assert RunDirectory(tmp_path / "old", whole_cfg).is_legacy()

    exp, state = load_run(tmp_path / "old", device="cpu")
    assert type(exp.config.inference) is type(whole_cfg.inference)
    assert state.epoch == 2 and state.best_score == legacy["state"]["best_valid"]
    for k, v in exp.module.state_dict().items():
        assert torch.equal(v, legacy["state"]["best_module"][k]), k

    exp, resumed = train(whole_cfg, tmp_path / "old", progress=False)
    assert resumed.epoch == 3 and resumed.stopped == "budget"
    assert [r["train_elbo"] for r in resumed.history] == [r["train_elbo"] for r in whole.history]
    untimed = lambda run: [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(tmp_path / run)]
    assert untimed("old") == untimed("whole")
    a, b = checkpoint.load(tmp_path / "whole" / "checkpoint.pt"), checkpoint.load(tmp_path / "old" / "checkpoint.pt")
    for k, v in a["module"].items():
        assert torch.equal(v, b["module"][k]), k
    # Written back in this release's layout.
    assert b["release"] == __version__ and "best_valid" not in b["state"] and b["state"]["best_score"] is not None
    assert set(b["inference"]["optimizers"]) == set(a["inference"]["optimizers"])
    assert not RunDirectory(tmp_path / "old", whole_cfg).is_legacy()
    assert "hmc_steps" not in (tmp_path / "old" / "config.toml").read_text()


def test_a_legacy_rws_run_is_refused_with_the_sentence_naming_the_releases(tmp_path):
    cfg = config_of(tmp_path, "rws", 2, num_particles=2)
    train(cfg, tmp_path / "old", progress=False)
    make_legacy(tmp_path / "old", "rws")
    path = tmp_path / "old" / "checkpoint.pt"
    with pytest.raises(ConfigError) as e:
        train(config_of(tmp_path, "rws", 3, num_particles=2), tmp_path / "old", progress=False)
    assert str(e.value) == (
        f"{path} was written by pyro-vae {LEGACY_RELEASE}, whose 'rws' kept one optimizer over the model's and "
        f"the guide's parameters; pyro-vae {__version__} keeps one per parameter role, so this run cannot be "
        "resumed (evaluate, sample and plot still read its parameters): train it afresh in a new run directory")
    assert "release" not in checkpoint.load(path)  # left as it was


def test_a_legacy_rws_runs_parameters_can_still_be_read(tmp_path):
    train(config_of(tmp_path, "rws", 2, num_particles=2), tmp_path / "old", progress=False)
    legacy = make_legacy(tmp_path / "old", "rws")
    exp, state = load_run(tmp_path / "old", device="cpu")
    for k, v in exp.module.state_dict().items():
        assert torch.equal(v, legacy["state"]["best_module"][k]), k


def test_this_release_is_not_the_legacy_release():
    assert __version__ != LEGACY_RELEASE


# ----------------------------------------------------------------------------- the layout


def _opt(n=1):
    return {"state": {}, "param_groups": [{"lr": 1e-3, "params": list(range(n))}]}


def _legacy_ckpt(inference, module=None, best_module=None, best_valid=-40.0):
    module = module or {"decoder.w": "w"}  # values are only moved: plain objects compare with ==
    return {"module": module, "inference": inference, "rng": {},
            "state": {"epoch": 2, "step": 24, "history": [], "best_valid": best_valid,
                      "best_module": best_module if best_module is not None else dict(module),
                      "bad_epochs": 0, "lr_decays": 0, "stopped": "budget"}}


@pytest.mark.parametrize("algorithm,old,new", [
    ("svi", {"optimizer": "A"}, {"optimizers": {"all": "A"}, "objective": {}}),
    ("iwae", {"optimizer": "A"}, {"optimizers": {"all": "A"}}),
    ("vimco", {"optimizer": "A"}, {"optimizers": {"all": "A"}}),
    ("wake_sleep", {"wake_optimizer": "W", "sleep_optimizer": "S"}, {"optimizers": {"model": "W", "guide": "S"}}),
    ("mcem", {"m_optimizer": "M", "guide_optimizer": "G", "sampler": "s", "chains": "c", "visited": "v"},
     {"optimizers": {"model": "M", "guide": "G"}, "sampler": "s", "chains": "c", "visited": "v"}),
    ("mcem", {"m_optimizer": "M", "sampler": "s", "chains": "c", "visited": "v"},  # fit_guide = false
     {"optimizers": {"model": "M"}, "sampler": "s", "chains": "c", "visited": "v"}),
    ("wake_sleep", {}, {}),  # optimizers still pending (no step yet)
])
def test_migrate_checkpoint_keys_optimizers_by_role(tmp_path, algorithm, old, new):
    ckpt = _legacy_ckpt(old)
    before = copy.deepcopy(ckpt)
    out = migrate_checkpoint(ckpt, tmp_path / "checkpoint.pt", algorithm)
    assert out["inference"] == new and out["release"] == LEGACY_RELEASE
    assert out["state"]["best_score"] == -40.0 and "best_valid" not in out["state"]
    assert ckpt == before  # the loaded dict is left as it was
    assert migrate_checkpoint(out, tmp_path / "checkpoint.pt", algorithm) is out  # this release's: as it is


def test_migrate_checkpoint_reads_an_unset_best_valid_as_no_best_score(tmp_path):
    for best_valid in (-math.inf, None):
        out = migrate_checkpoint(_legacy_ckpt({"optimizer": "A"}, best_valid=best_valid), tmp_path / "c.pt", "svi")
        assert out["state"]["best_score"] is None


def _legacy_gae_module():
    return {"decoder.w": "w", "bank.loc": "mu", "bank.scale": "sigma", "bandwidth.log_scale": "s"}


def test_migrate_checkpoint_moves_the_gae_cache_to_the_objective_and_the_bandwidth_to_the_prior(tmp_path):
    out = migrate_checkpoint(_legacy_ckpt({"optimizer": "A"}, _legacy_gae_module()), tmp_path / "c.pt", "svi")
    assert out["module"] == {"decoder.w": "w", "prior.bandwidth.log_scale": "s"}
    assert out["inference"]["objective"] == {"bank.loc": "mu", "bank.scale": "sigma"}
    assert out["inference"]["optimizers"] == {"all": "A"}


def test_migrate_checkpoint_translates_the_best_parameters_too(tmp_path):
    out = migrate_checkpoint(_legacy_ckpt({"optimizer": "A"}, _legacy_gae_module()), tmp_path / "c.pt", "svi")
    assert set(out["state"]["best_module"]) == set(out["module"])


#: The real Frey Face file, if there is one where the tests look for data.
SHARED_FREY = next((d / "frey_face" / "frey_rawface.mat" for d in resolve_data_dir()
                    if (d / "frey_face" / "frey_rawface.mat").is_file()), None)


@pytest.mark.skipif(SHARED_FREY is None, reason="the Frey Face file was not found")
def test_a_run_resumes_from_another_copy_of_its_data_but_not_from_other_data(tmp_path):
    """``[data] data_dir`` says where the files are, not what they are: a resumed run may
    read an identical copy elsewhere; data.json's checksums refuse other data."""
    import scipy.io

    copies = {name: tmp_path / name / "frey_face" for name in ("a", "b", "changed")}
    for folder in copies.values():
        folder.mkdir(parents=True)
        shutil.copy(SHARED_FREY, folder / "frey_rawface.mat")
    faces = scipy.io.loadmat(SHARED_FREY)
    faces["ff"][0, 0] = 255 - faces["ff"][0, 0]
    scipy.io.savemat(copies["changed"] / "frey_rawface.mat", {"ff": faces["ff"]})

    def config(copy, epochs):
        return Config().with_overrides([
            'data.name="frey_face"', 'data.binarize="none"', 'model.likelihood="gaussian"', "model.hidden=[16]",
            "eval.num_samples=0", "eval.plots=false", f'data.data_dir="{tmp_path / copy}"', f"budget.epochs={epochs}"])

    train(config("a", 1), tmp_path / "run", progress=False)
    _, state = train(config("b", 2), tmp_path / "run", progress=False)
    assert state.epoch == 2
    with pytest.raises(ConfigError, match=r"was trained on other data than was read now: data.json records "
                                          r".*frey_rawface.mat \(sha256 .*Point --data-dir at the copy"):
        train(config("changed", 3), tmp_path / "run", progress=False)
