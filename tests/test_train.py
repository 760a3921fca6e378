"""The training loop: every ELBO/optimizer choice learns, resume is exact, guards hold."""

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
from pyro_vae.inference.svi import SVI
from pyro_vae.inference.wake_sleep import WakeSleep
from pyro_vae.train import TrainingDiverged, build, load_run, read_log, train

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


def test_progress_bar_shows_the_running_elbo(tmp_path, capsys):
    train(config("budget.epochs=1"), tmp_path, progress=True)
    assert "elbo=" in capsys.readouterr().err


def run_cli(run_dir, *extra):
    args = [sys.executable, "-m", "pyro_vae", "train", "--run-dir", str(run_dir), "--no-progress",
            "--epochs", "25", *[a for o in FAST for a in ("--set", o)], *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL mid-run, resume; the result equals an uninterrupted run's bit for bit."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(whole).wait(timeout=300) == 0
    proc = run_cli(killed)
    deadline = time.time() + 120
    while not ((killed / "log.csv").exists() and len(read_log(killed)) >= 3):
        assert time.time() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = len(read_log(killed))
    assert interrupted_at < 25
    assert run_cli(killed).wait(timeout=300) == 0
    a, b = checkpoint.load(whole / "checkpoint.pt"), checkpoint.load(killed / "checkpoint.pt")
    assert a["state"]["epoch"] == b["state"]["epoch"] == 25
    for name, tensor in a["module"].items():
        assert torch.equal(tensor, b["module"][name]), name
    assert [r["train_elbo"] for r in read_log(whole)] == [r["train_elbo"] for r in read_log(killed)]


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


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_step, calls = SVI.step, []

    def step(self, *args):
        calls.append(1)
        return {"elbo": math.nan} if len(calls) > 15 else real_step(self, *args)  # 12 steps/epoch

    monkeypatch.setattr(SVI, "step", step)
    with pytest.raises(TrainingDiverged, match=r"ELBO is nan.*epoch 1\) is kept"):
        train(config("budget.epochs=3"), tmp_path, progress=False)
    ckpt = checkpoint.load(tmp_path / "checkpoint.pt")
    assert ckpt["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["module"].values())


def test_early_stopping_restores_the_best_validation_parameters(tmp_path, monkeypatch):
    scores = iter([-30.0, -31.0, -29.0, -29.5, -29.6, -40.0])
    best = {}

    def evaluate(self, x):
        score = next(scores)
        if score == -29.0:
            best.update({k: v.clone() for k, v in self.module.state_dict().items()})
        return score

    monkeypatch.setattr(SVI, "evaluate", evaluate)
    exp, state = train(config("budget.epochs=6", "budget.patience=2"), tmp_path, progress=False)
    assert state.stopped == "early_stopping" and state.epoch == 5 and state.best_valid == -29.0
    for k, v in exp.module.state_dict().items():
        assert torch.equal(v, best[k])
    assert torch.equal(load_run(tmp_path)[0].module.decoder.head.weight, best["decoder.head.weight"])


def scripted_validation(monkeypatch, scores, inference=SVI):
    """Validation returns ``scores`` in turn; the parameters seen at each are kept."""
    scores, seen = iter(scores), []

    def evaluate(self, x):
        seen.append({k: v.clone() for k, v in self.module.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(inference, "evaluate", evaluate)
    return seen


def learning_rates(inference):
    return [group["lr"] for opt in inference.state_dict().values() for group in opt["param_groups"]]


def test_a_plateau_decays_the_learning_rate_from_the_best_parameters(tmp_path, monkeypatch):
    """Patience 2, one decay: the plateau after epoch 4 restarts epoch 5 from epoch 2's
    parameters at lr / 10; the next plateau (epochs 6, 7) stops the run."""
    seen = scripted_validation(monkeypatch, [-30.0, -29.0, -29.5, -29.6, -28.0, -28.5, -28.2, -99.0])
    restarts = []
    real_step = SVI.step

    def step(self, *args):
        if len(seen) == 4 and not restarts:  # the first step after the decay
            restarts.append(({k: v.clone() for k, v in self.module.state_dict().items()}, learning_rates(self)))
        return real_step(self, *args)

    monkeypatch.setattr(SVI, "step", step)
    exp, state = train(config("budget.epochs=8", "budget.patience=2", "budget.lr_decays=1", "optim.lr=0.004"),
                       tmp_path, progress=False)
    assert state.stopped == "early_stopping" and state.epoch == 7 and state.lr_decays == 1
    params, lrs = restarts[0]
    assert lrs == [pytest.approx(4e-4)] and learning_rates(exp.inference) == [pytest.approx(4e-4)]
    for k, v in params.items():
        assert torch.equal(v, seen[1][k]), k  # epoch 2's: the best before the plateau
    for k, v in exp.module.state_dict().items():
        assert torch.equal(v, seen[4][k]), k  # the best of the whole run, epoch 5's


@pytest.mark.parametrize("inference", ["svi", "wake_sleep"])
def test_a_run_stopped_early_resumes_with_a_decay_as_if_it_had_one_all_along(tmp_path, monkeypatch, inference):
    """Stopped early, then resumed with ``lr_decays = 1``: the same parameters, log and
    learning rate as one run with the decay, also for wake-sleep, whose optimizers are
    built only at the first batch after the resume."""
    scores = [-30.0, -29.0, -29.5, -29.6, -28.0, -28.5, -28.2]
    cls = SVI if inference == "svi" else WakeSleep
    base = [f"inference.name={inference}", "budget.epochs=7", "budget.patience=2"]
    scripted_validation(monkeypatch, scores, cls)
    whole_exp, _ = train(config(*base, "budget.lr_decays=1"), tmp_path / "whole", progress=False)
    scripted_validation(monkeypatch, scores, cls)
    _, state = train(config(*base), tmp_path / "split", progress=False)
    assert state.stopped == "early_stopping" and state.epoch == 4
    split_exp, state = train(config(*base, "budget.lr_decays=1"), tmp_path / "split", progress=False)
    assert state.epoch == 7 and state.lr_decays == 1
    assert learning_rates(split_exp.inference) == learning_rates(whole_exp.inference)
    assert learning_rates(split_exp.inference)[0] == pytest.approx(Config().optim.lr / 10)
    for k, v in whole_exp.module.state_dict().items():
        assert torch.equal(v, split_exp.module.state_dict()[k]), k
    elbos = lambda run: [(r["train_elbo"], r["valid_elbo"]) for r in read_log(tmp_path / run)]
    assert elbos("whole") == elbos("split")


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
