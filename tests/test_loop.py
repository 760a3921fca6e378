"""The training loop: named figures in the log, the monitored figure (early stopping,
the best parameters, learning-rate decays), divergence, callbacks and their state."""

import copy
import csv
import math

import pytest
import torch

from pyro_vae import checkpoint
from pyro_vae.config import Config
from pyro_vae.inference.svi import SVI
from pyro_vae.inference.wake_sleep import WakeSleep
from pyro_vae.loop import Callback, flushes_denormals, flushing_denormals
from pyro_vae.train import TrainingDiverged, load_run, read_log, train

FAST = ["model.hidden=[32]", "eval.num_samples=0", "eval.plots=false"]


def config(*overrides):
    return Config().with_overrides(FAST + list(overrides))


def test_progress_bar_shows_the_running_elbo(tmp_path, capsys):
    train(config("budget.epochs=1"), tmp_path, progress=True)
    assert "elbo=" in capsys.readouterr().err


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
        return {"elbo": score}

    monkeypatch.setattr(SVI, "evaluate", evaluate)
    exp, state = train(config("budget.epochs=6", "budget.patience=2"), tmp_path, progress=False)
    assert state.stopped == "early_stopping" and state.epoch == 5 and state.best_score == -29.0
    for k, v in exp.module.state_dict().items():
        assert torch.equal(v, best[k])
    assert torch.equal(load_run(tmp_path)[0].module.decoder.head.weight, best["decoder.head.weight"])


def scripted_validation(monkeypatch, scores, inference=SVI):
    """Validation returns ``scores`` in turn; the parameters seen at each are kept."""
    scores, seen = iter(scores), []

    def evaluate(self, x):
        seen.append({k: v.clone() for k, v in self.module.state_dict().items()})
        return {"elbo": next(scores)}

    monkeypatch.setattr(inference, "evaluate", evaluate)
    return seen


def learning_rates(inference):
    return [group["lr"] for opt in inference.state_dict()["optimizers"].values() for group in opt["param_groups"]]


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


def test_callbacks_see_the_parameters_their_epoch_trained_before_a_plateau_restores_the_best(tmp_path,
                                                                                               monkeypatch):
    """The plateau after epoch 4 restores epoch 2's parameters; a callback scoring the module
    at epoch 4's end (pixelgan-clustering's cluster error, say) must still see epoch 4's,
    else its row for epoch 4 would repeat epoch 2's figures."""
    seen = scripted_validation(monkeypatch, [-30.0, -29.0, -29.5, -29.6, -28.0, -28.5, -28.2])

    class Snapshots(Callback):
        def __init__(self):
            self.params = []

        def on_epoch_end(self, loop, row):
            self.params.append({k: v.clone() for k, v in loop.module.state_dict().items()})

    snapshots = Snapshots()
    train(config("budget.epochs=7", "budget.patience=2", "budget.lr_decays=1"), tmp_path, progress=False,
          callbacks=[snapshots])
    assert len(snapshots.params) == 7
    for epoch, params in enumerate(snapshots.params):
        for k, v in params.items():
            assert torch.equal(v, seen[epoch][k]), (epoch + 1, k)
    assert not torch.equal(seen[3]["decoder.head.weight"], seen[1]["decoder.head.weight"])


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


# ----------------------------------------------------------------------------- named figures

SMALL = ["data.train_size=300", "data.valid_size=100"]  # 3 steps an epoch


def log_columns(run_dir):
    with open(run_dir / "log.csv") as f:
        return next(csv.reader(f))


@pytest.mark.parametrize("name,extra,figures", [
    ("svi", [], ["train_elbo"]),
    ("wake_sleep", [], ["train_elbo", "train_log_joint", "train_sleep_log_q"]),
    ("mcem", ["inference.hmc_leapfrog_steps=3", "inference.m_steps=1"],
     ["train_log_joint", "train_accept_prob", "train_step_size", "train_elbo"]),
    ("iwae", ["inference.num_particles=2"], ["train_iwae", "train_elbo"]),
])
def test_the_log_has_a_column_for_every_figure_the_algorithm_reports(tmp_path, name, extra, figures):
    exp, state = train(config(*SMALL, "budget.epochs=2", f"inference.name={name}", *extra), tmp_path,
                       progress=False)
    assert [f"train_{f}" for f in exp.inference.figures] == figures
    assert log_columns(tmp_path) == ["epoch", "step", "samples_seen", *figures, "valid_elbo", "seconds"]
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows] == [3, 6] and [r["samples_seen"] for r in rows] == [300, 600]
    assert all(math.isfinite(r[c]) for r in rows for c in figures + ["valid_elbo"])
    assert rows == [{k: float(v) for k, v in row.items()} for row in state.history]


class Snapshots(Callback):
    """The module's parameters at the end of every epoch, and the figures of every step."""

    def __init__(self):
        self.params, self.steps = [], []

    def on_step_end(self, loop, figures):
        self.steps.append(dict(figures))

    def on_epoch_end(self, loop, row):
        self.params.append(copy.deepcopy(loop.module.state_dict()))


def same(a, b):
    return all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_training_figure_is_monitored_without_validation_data(tmp_path, mode):
    """``monitor = "train_elbo"`` needs no validation split: no valid_ column is logged, and
    the best parameters are those of the best training ELBO in the monitor's direction."""
    snaps = Snapshots()
    exp, state = train(config("data.train_size=300", "data.valid_size=0", "budget.epochs=4",
                              "budget.monitor=train_elbo", f"budget.monitor_mode={mode}", "optim.lr=3e-3"),
                       tmp_path, progress=False, callbacks=[snaps])
    assert len(exp.data.valid) == 0
    assert not any(c.startswith("valid_") for c in log_columns(tmp_path))
    elbos = [r["train_elbo"] for r in state.history]
    assert elbos[-1] > elbos[0]  # it learns, so the two directions pick different epochs
    best = (max if mode == "max" else min)(range(4), key=lambda e: elbos[e])
    assert best == (3 if mode == "max" else 0)
    assert state.best_score == elbos[best] and state.stopped == "budget"
    assert same(exp.module.state_dict(), snaps.params[best])
    assert same(load_run(tmp_path, device="cpu")[0].module.state_dict(), snaps.params[best])


def test_patience_counts_epochs_without_a_better_monitored_figure_in_its_direction(tmp_path, monkeypatch):
    """``monitor_mode = "min"`` on a scripted validation figure: lower is better."""
    scripted_validation(monkeypatch, [5.0, 4.0, 4.5, 4.2, 3.0])
    snaps = Snapshots()
    exp, state = train(config(*SMALL, "budget.epochs=5", "budget.patience=2", "budget.monitor_mode=min"),
                       tmp_path, progress=False, callbacks=[snaps])
    assert state.stopped == "early_stopping" and state.epoch == 4 and state.best_score == 4.0
    assert same(exp.module.state_dict(), snaps.params[1])


def test_monitor_none_keeps_the_latest_parameters(tmp_path, monkeypatch):
    """Validation only gets worse, yet nothing is restored: no best, no early stopping."""
    scripted_validation(monkeypatch, [-30.0, -31.0, -32.0, -33.0])
    snaps = Snapshots()
    exp, state = train(config(*SMALL, "budget.epochs=4", "budget.patience=1", "budget.monitor=none"),
                       tmp_path, progress=False, callbacks=[snaps])
    assert state.stopped == "budget" and state.epoch == 4
    assert state.best_score is None and state.best_module is None
    assert [r["valid_elbo"] for r in state.history] == [-30.0, -31.0, -32.0, -33.0]  # still logged
    assert same(exp.module.state_dict(), snaps.params[-1]) and not same(snaps.params[0], snaps.params[-1])
    assert same(load_run(tmp_path, device="cpu")[0].module.state_dict(), snaps.params[-1])


# ----------------------------------------------------------------------------- callbacks


class StopAt(Callback):
    """Counts steps (its state); asks the loop to stop after step ``at``."""

    def __init__(self, at=None):
        self.at, self.seen, self.loaded = at, 0, None

    def on_step_end(self, loop, figures):
        self.seen += 1
        if self.seen == self.at:
            loop.request_stop("mine")

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.loaded = dict(state)
        self.seen = state["seen"]


def test_a_callback_stops_the_run_mid_epoch_and_the_run_stays_stopped(tmp_path):
    stop = StopAt(at=5)  # epoch 2's second step
    exp, state = train(config(*SMALL, "budget.epochs=4"), tmp_path, progress=False, callbacks=[stop])
    assert state.stopped == "mine" and state.epoch == 2 and state.step == 5 and stop.seen == 5
    assert [r["step"] for r in read_log(tmp_path)] == [3, 5]
    ckpt = checkpoint.load(tmp_path / "checkpoint.pt")
    assert ckpt["callbacks"] == [{"seen": 5}] and ckpt["state"]["stopped"] == "mine"
    # A callback's stop is final: a larger budget trains nothing more, and the callback
    # gets its state back.
    again = StopAt()
    exp, state = train(config(*SMALL, "budget.epochs=6"), tmp_path, progress=False, callbacks=[again])
    assert state.stopped == "mine" and state.epoch == 2 and state.step == 5
    assert again.loaded == {"seen": 5} and again.seen == 5 and len(read_log(tmp_path)) == 2


def test_a_callbacks_state_is_restored_when_a_run_resumes(tmp_path):
    first = StopAt()
    train(config(*SMALL, "budget.epochs=2"), tmp_path, progress=False, callbacks=[first])
    assert first.seen == 6 and first.loaded is None
    resumed = StopAt(at=8)  # counts on from 6: stops after epoch 3's second step
    _, state = train(config(*SMALL, "budget.epochs=4"), tmp_path, progress=False, callbacks=[resumed])
    assert resumed.loaded == {"seen": 6}
    assert state.stopped == "mine" and state.epoch == 3 and state.step == 8 and resumed.seen == 8


class FlushProbe(Callback):
    """Records, at every step, whether denormal floats are flushed to zero."""

    def __init__(self):
        self.flushing = []

    def on_step_end(self, loop, figures):
        self.flushing.append(flushes_denormals())


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero mode (not x86 SSE3)")
def test_denormals_are_flushed_while_training_and_the_mode_is_restored_after(tmp_path):
    assert not flushes_denormals()
    assert torch.full((1,), 1e-40, dtype=torch.float32).item() > 0  # a denormal survives outside training
    probe = FlushProbe()
    train(config(*SMALL, "budget.epochs=1"), tmp_path, progress=False, callbacks=[probe])
    assert probe.flushing and all(probe.flushing)
    assert not flushes_denormals()
    # a mode the user set is what comes back
    torch.set_flush_denormal(True)
    try:
        train(config(*SMALL, "budget.epochs=2"), tmp_path, progress=False)
        assert flushes_denormals()
    finally:
        torch.set_flush_denormal(False)


def test_flushing_turns_an_adam_step_on_denormal_moments_into_zeros():
    """What the loop relies on: under the mode, Adam's decayed moments become exact zeros."""
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([p], lr=1e-3)
    p.grad = torch.ones(4)
    opt.step()
    opt.state[p]["exp_avg"].fill_(1e-39)  # where a vanished gradient's moment decays to
    p.grad = torch.zeros(4)
    with flushing_denormals():
        opt.step()
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros(4))
    opt.state[p]["exp_avg"].fill_(1e-39)
    opt.step()
    assert (opt.state[p]["exp_avg"] > 0).all()  # outside it, torch keeps them (and is slow on them)
