"""Training through the config: every ELBO/optimizer choice learns, a run directory
resumes exactly and refuses another experiment, config entries reach what is built and
bad ones are refused. The loop itself is tested in ``test_loop.py``."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError
from pyro_vae.train import build, read_log, train

FAST = ["model.hidden=[32]", "eval.num_samples=0", "eval.plots=false"]


def config(*overrides):
    return Config().with_overrides(FAST + list(overrides))


@pytest.mark.parametrize("elbo,optim,particles", [
    ("trace", "adam", 1), ("meanfield", "adagrad", 1), ("jit_trace", "adam", 2), ("jit_meanfield", "adam", 1),
])
def test_every_estimator_and_optimizer_raises_the_elbo(tmp_path, elbo, optim, particles):
    lr = 0.05 if optim == "adagrad" else 3e-3
    cfg = config("budget.epochs=6", f"inference.elbo={elbo}", f"optim.name={optim}", f"optim.lr={lr}",
                 f"inference.num_particles={particles}")
    exp, state = train(cfg, tmp_path, progress=False)
    elbos = [row["train_elbo"] for row in state.history]
    assert elbos[-1] > elbos[0] + 2.0  # nats per data point, digits start near -45
    assert all(math.isfinite(row["valid_elbo"]) for row in state.history)
    assert isinstance(exp.inference.optimizer, {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[optim])
    assert [r["epoch"] for r in read_log(tmp_path)] == list(range(1, 7))


def run_cli(run_dir, *extra):
    args = [sys.executable, "-m", "pyro_vae", "train", "--run-dir", str(run_dir), "--no-progress",
            "--epochs", "25", *[a for o in FAST for a in ("--set", o)], *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL mid-run, resume; the result equals an uninterrupted run's bit for bit."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted, proc = run_cli(whole), run_cli(killed)  # side by side
    deadline = time.time() + 120
    while not ((killed / "log.csv").exists() and len(read_log(killed)) >= 3):
        assert time.time() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = len(read_log(killed))
    assert interrupted_at < 25
    assert run_cli(killed).wait(timeout=300) == 0 and uninterrupted.wait(timeout=300) == 0
    a, b = checkpoint.load(whole / "checkpoint.pt"), checkpoint.load(killed / "checkpoint.pt")
    assert a["state"]["epoch"] == b["state"]["epoch"] == 25
    for name, tensor in a["module"].items():
        assert torch.equal(tensor, b["module"][name]), name
    assert [r["train_elbo"] for r in read_log(whole)] == [r["train_elbo"] for r in read_log(killed)]


@pytest.mark.parametrize("elbo", ["meanfield", "auto", "jit_meanfield"])
def test_each_elbo_resumes_to_the_uninterrupted_run(tmp_path, elbo):
    cfg = config("data.train_size=300", f"inference.elbo={elbo}")
    _, whole = train(cfg.with_overrides(["budget.epochs=3"]), tmp_path / "whole", progress=False)
    train(cfg.with_overrides(["budget.epochs=2"]), tmp_path / "split", progress=False)
    _, resumed = train(cfg.with_overrides(["budget.epochs=3"]), tmp_path / "split", progress=False)
    assert [r["train_elbo"] for r in resumed.history] == [r["train_elbo"] for r in whole.history]
    a, b = checkpoint.load(tmp_path / "whole" / "checkpoint.pt"), checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    for name, tensor in a["module"].items():
        assert torch.equal(tensor, b["module"][name]), name


def test_resume_refuses_a_run_dir_of_another_experiment(tmp_path):
    train(config("budget.epochs=1"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"another experiment .*\['model'\]"):
        train(config("budget.epochs=1", "model.z_dim=3"), tmp_path, progress=False)


def test_a_finished_run_trains_on_under_a_larger_budget(tmp_path):
    """[budget] may change on resume: more epochs continue the run (and are recorded in
    its config.toml); the same budget again trains nothing more."""
    train(config("budget.epochs=2"), tmp_path, progress=False)
    _, state = train(config("budget.epochs=2"), tmp_path, progress=False)
    assert state.epoch == 2 and len(read_log(tmp_path)) == 2
    _, state = train(config("budget.epochs=3", "eval.plots=false"), tmp_path, progress=False)
    assert state.epoch == 3 and state.stopped == "budget" and len(read_log(tmp_path)) == 3
    assert "epochs = 3" in (tmp_path / "config.toml").read_text()


def test_config_entries_reach_what_is_built():
    exp = build(config("model.z_dim=5", "model.hidden=[16, 8]", "guide.hidden=[12]",
                       "model.activation=relu", "inference.elbo=trace", "optim.name=adagrad"))
    vae = exp.module
    assert vae.z_dim == 5 and vae.guide.encoder.head.loc.out_features == 5
    assert [m.out_features for m in vae.decoder.body if hasattr(m, "out_features")] == [16, 8]
    assert [m.out_features for m in vae.guide.encoder.body if hasattr(m, "out_features")] == [12]
    assert isinstance(vae.decoder.body[1], torch.nn.ReLU)
    assert type(exp.inference.elbo).__name__ == "Trace_ELBO"


@pytest.mark.parametrize("override,match", [
    ("model.name=gan", "model.*unknown"),
    ("inference.name=mcmc", "inference.*unknown"),
    ("inference.elbo=renyi", "unknown ELBO"),
    ("optim.lr=-1", "learning rate must be positive"),
    ("model.z_dim=0", "z_dim must be >= 1"),
    ("data.batch_size=0", "batch_size"),
    ("model.likelihood=poisson", "likelihood"),
    ("budget.lr_decays=-1", "lr_decays must be >= 0"),
    ("budget.lr_decay_factor=1.5", r"lr_decay_factor must lie in \(0, 1\)"),
    ("budget.lr_decays=1", "set \\[budget\\] patience"),
])
def test_bad_config_entries_are_refused_with_their_name(override, match):
    with pytest.raises(ConfigError, match=match):
        build(config(override))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = checkpoint.save({"a": 1}, tmp_path / "ckpt.pt")

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, fail)
    assert checkpoint.load(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    path.write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="damaged"):
        checkpoint.load(path)
