"""Every bad input gets a clear answer (issue 17): one paragraph, no traceback.

On the command line a bad input ends the command with a non-zero exit code and one
paragraph on stderr starting ``pyro-vae <command>: error:`` (argparse prints its usage
lines above it); from Python it raises an exception of the package's whose message names
the argument. Most CLI cases call :func:`~pyro_vae.cli.main` in this process (what the
console script runs, without an interpreter's start-up each: a traceback would be an
uncaught exception here); a few run it as a user does, in a process of its own, and the
signals can only be tested that way.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.config import Config, ConfigError
from pyro_vae.errors import EvaluationError
from pyro_vae.evaluation import checkpointed_log_likelihood
from pyro_vae.loop import Callback, Interrupted, StopOnSignals
from pyro_vae.models import GAE, VAE
from pyro_vae.runs import RunDirectory
from pyro_vae.train import build, read_log, train

FAST = ["model.hidden=[16]", "eval.num_samples=0", "eval.plots=false"]
SETS = [a for o in FAST for a in ("--set", o)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run (one epoch, a small network) the read-only commands are pointed at."""
    path = tmp_path_factory.mktemp("trained") / "run"
    train(Config().with_overrides(FAST + ["budget.epochs=1"]), path, progress=False)
    return path


def cli_main(capsys, *args) -> tuple[int, str]:
    """``pyro-vae ARGS`` through ``main`` in this process: the exit code and stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def cli(*args, env=None) -> subprocess.Popen:
    """``pyro-vae ARGS`` as a user runs it, in a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "pyro_vae", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**(env or os.environ), "OMP_NUM_THREADS": "1"})


def assert_one_paragraph(err: str, start: str, *fragments: str) -> str:
    """The message from ``start`` on is the last paragraph of stderr, with no traceback."""
    assert "Traceback" not in err, err
    assert start in err, err
    message = err[err.index(start):].strip()
    assert "\n" not in message, err
    for fragment in fragments:
        assert fragment in message, message
    return message


# ----------------------------------------------------------------------------- argument ranges

@pytest.mark.parametrize("args,message", [
    (["train", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["train", "--epochs", "-3"], "argument --epochs: must be >= 1, got -3"),
    (["evaluate", "RUN", "-k", "0"], "argument --num-samples/-k: must be >= 1, got 0"),
    (["evaluate", "RUN", "-k", "-5"], "argument --num-samples/-k: must be >= 1, got -5"),
    (["evaluate", "RUN", "-k", "many"], "must be a whole number >= 1, got 'many'"),
    (["evaluate", "RUN", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["evaluate", "RUN", "--limit", "-5"], "argument --limit: must be >= 1, got -5"),
    (["sample", "RUN", "-n", "0"], "argument -n/--num-samples: must be >= 1, got 0"),
    (["sample", "RUN", "-n", "-1"], "argument -n/--num-samples: must be >= 1, got -1"),
    (["sample", "RUN", "--out", "DIR"], "DIR is a folder: give the PNG file to write, e.g. DIR/samples.png"),
    (["sample", "RUN", "--out", "s.jpg"], "s.jpg is not a .png path"),
    (["plot", "RUN", "--out", "FILE"], "FILE is a file: give a folder for the plots"),
])
def test_the_parser_checks_argument_ranges(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("")
    code, err = cli_main(capsys, *args)
    assert code == 2
    assert_one_paragraph(err, f"pyro-vae {args[0]}: error: ", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "FILE"]  # nothing written


def test_a_bad_argument_fails_fast_in_a_process_of_its_own(tmp_path):
    """As a user meets it: argparse's usage and one error line, exit code 2."""
    done = cli("sample", tmp_path, "-n", "0")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 2
    assert_one_paragraph(err, "pyro-vae sample: error: ", "must be >= 1, got 0")


# ----------------------------------------------------------------------------- the config's budget

@pytest.mark.parametrize("override,message", [
    ("budget.epochs=0", "[budget] epochs must be >= 1, got 0"),
    ("budget.epochs=-2", "[budget] epochs must be >= 1, got -2"),
    ("budget.patience=-1", "[budget] patience must be >= 0 epochs"),
    ("budget.max_minutes=-1.5", "[budget] max_minutes must be >= 0"),
])
def test_a_budget_that_trains_nothing_is_refused(override, message):
    with pytest.raises(ConfigError) as info:
        build(Config().with_overrides(FAST + [override]))
    assert message in str(info.value)


def test_epochs_zero_in_a_config_file_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text("[budget]\nepochs = 0\n")
    code, err = cli_main(capsys, "train", "--config", "exp.toml", "--run-dir", "run", "--no-progress")
    assert code == 2
    assert_one_paragraph(err, "pyro-vae train: error: ", "[budget] epochs must be >= 1, got 0")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the run directory

def test_a_run_directory_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("notes")
    code, err = cli_main(capsys, "train", "--run-dir", "taken", "--epochs", "1", "--no-progress", *SETS)
    assert code == 2
    assert_one_paragraph(err, "pyro-vae train: error: ", "the run directory taken is a file, not a folder",
                         "choose another run directory")
    assert (tmp_path / "taken").read_text() == "notes"


def test_a_run_directory_under_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match=r"lies under .*taken, which is a file: choose another run directory"):
        RunDirectory(tmp_path / "taken" / "run", Config()).open()


def test_a_run_directory_that_may_not_be_written_is_refused(tmp_path, monkeypatch):
    """Read-only folders do not stop root (who runs these tests in containers), so the
    write's failure is made here; the next test uses a real read-only folder where it can."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / ".write-test.x"))

    monkeypatch.setattr("pyro_vae.runs.tempfile.mkstemp", refuse)
    with pytest.raises(ConfigError) as info:
        RunDirectory(tmp_path / "run", Config()).open()
    assert f"the run directory {tmp_path / 'run'} cannot be written (Permission denied" in str(info.value)
    assert "choose a run directory you may write to" in str(info.value)
    assert not (tmp_path / "run" / "config.toml").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_refused(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot be written"):
            RunDirectory(parent / "run", Config()).open()
    finally:
        parent.chmod(0o755)


def test_an_output_path_under_a_file_is_named(run, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    code, err = cli_main(capsys, "sample", run, "-n", "4", "--out", tmp_path / "taken" / "s.png")
    assert code == 2
    assert_one_paragraph(err, "pyro-vae sample: error: ",
                         f"{tmp_path / 'taken'} is a file where a folder is needed: choose another path")


# ----------------------------------------------------------------------------- evaluate, plot

def test_evaluate_twice_prints_identical_json(run, capsys):
    """The second call reads the log-likelihood's chunks back, drawing nothing: the ELBO,
    seeded on its own, must not depend on that."""
    outputs = []
    for _ in range(2):
        capsys.readouterr()
        assert main(["evaluate", str(run), "-k", "4", "--limit", "30", "--seed", "7"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert {"elbo", "log_likelihood"} <= set(outputs[0])


def test_a_damaged_evaluation_settings_file_is_named(run, capsys):
    assert cli_main(capsys, "evaluate", run, "-k", "2", "--limit", "5")[0] == 0
    (settings,) = (run / "evaluation").glob("test-5points-k2-*/settings.json")
    settings.write_text('{"num_samples": 2,')
    code, err = cli_main(capsys, "evaluate", run, "-k", "2", "--limit", "5")
    assert code == 2
    assert_one_paragraph(err, "pyro-vae evaluate: error: ", f"{settings} is damaged",
                         f"delete the folder {settings.parent}")


def test_a_damaged_settings_file_raises_an_evaluation_error(tmp_path):
    """From Python: an EvaluationError, a ValueError as the refusal of other settings was."""
    vae, data = VAE(6, z_dim=2, hidden=[4]), torch.bernoulli(torch.full((8, 6), 0.5))
    (tmp_path / "settings.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(EvaluationError, match="settings.json is damaged"):
        checkpointed_log_likelihood(vae, data, tmp_path, num_samples=2)
    assert issubclass(EvaluationError, ValueError)


def test_evaluating_an_empty_split_is_refused(tmp_path, capsys):
    path = tmp_path / "run"
    train(Config().with_overrides(FAST + ["budget.epochs=1", "data.valid_size=0", "budget.monitor=train_elbo"]),
          path, progress=False)
    code, err = cli_main(capsys, "evaluate", path, "--split", "valid", "-k", "2")
    assert code == 2
    assert_one_paragraph(err, "pyro-vae evaluate: error: ", "the valid split", "is empty")


def test_plot_without_log_csv_draws_the_curves_from_the_checkpoint(run, tmp_path, capsys):
    """The checkpoint holds the rows log.csv was written from: a lost log loses nothing."""
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("config.toml", "checkpoint.pt"):
        (copy / name).write_bytes((run / name).read_bytes())
    code, err = cli_main(capsys, "plot", copy, "--out", tmp_path / "plots")
    assert code == 0
    assert_one_paragraph(err, "pyro-vae plot: note: ", f"{copy / 'log.csv'} is missing",
                         f"the log kept in {copy / 'checkpoint.pt'}")
    assert (tmp_path / "plots" / "elbo.png").stat().st_size > 0


# ----------------------------------------------------------------------------- the model classes

@pytest.mark.parametrize("make,message", [
    (lambda: VAE(0), "VAE: event_shape (x_dim, the size of one data point) must be a positive int"),
    (lambda: VAE((1, 0, 28)), "VAE: event_shape"),
    (lambda: VAE(64, z_dim=0), "VAE: z_dim must be a positive int (the number of latent dimensions), got 0"),
    (lambda: VAE(64, z_dim=-2), "VAE: z_dim must be a positive int"),
    (lambda: VAE(64, z_dim=2.5), "got 2.5"),
    (lambda: GAE(torch.zeros(10, 64), z_dim=0), "GAE: z_dim must be a positive int"),
])
def test_the_model_classes_refuse_empty_dimensions(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


# ----------------------------------------------------------------------------- signals

@pytest.fixture
def ctrl_c():
    """SIGINT as at a terminal. A shell starts a background job (``cmd &``, so a suite run
    under ``nohup ... &``) with SIGINT ignored; the loop leaves an ignored signal ignored
    (tested below) and so would never see the tests' Ctrl-C. The handler set here is
    replaced by SIG_DFL in a child process, which Python then turns into Ctrl-C again."""
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_with_one_line_and_the_run_resumes(tmp_path, signum, ctrl_c):
    """As a user (Ctrl-C) or a scheduler (SIGTERM) stops a run; it then resumes, here in
    this process (the same command, without a second interpreter's start-up), once: the
    checkpoint left is the same whichever signal stopped the run. The checkpoint is of the
    step the signal stopped at, inside an epoch or at its end."""
    run_dir = tmp_path / "run"
    args = ["train", "--run-dir", run_dir, "--epochs", "200", "--no-progress", *SETS]
    proc = cli(*args)
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    name = signal.Signals(signum).name
    message = assert_one_paragraph(err, f"pyro-vae train: stopped by {name} after step ",
                                   f"is kept at {run_dir / 'checkpoint.pt'}", "resume with `pyro-vae train ")
    stopped_at = len(read_log(run_dir))
    step = re.search(r"after step (\d+) ", message).group(1)
    inside = f"a checkpoint of step {step} (" in message and f" steps into epoch {stopped_at + 1})" in message
    assert 1 <= stopped_at < 200 and (inside or f"the last good checkpoint (epoch {stopped_at})" in message)
    if signum == signal.SIGTERM:  # the checkpoint left is the same after either
        assert main(["train", "--run-dir", str(run_dir), "--epochs", str(stopped_at + 1), "--no-progress",
                     *SETS]) == 0
        assert [r["epoch"] for r in read_log(run_dir)] == list(range(1, stopped_at + 2))


class SignalAt(Callback):
    """Sends this process ``signum`` after step ``at``, as a user or a scheduler would."""

    def __init__(self, signum: int, at: int):
        self.signum, self.at = signum, at

    def on_step_end(self, loop, figures):
        if loop.state.step == self.at:
            os.kill(os.getpid(), self.signum)


def test_the_loop_stops_at_the_step_boundary_and_restores_the_handlers(tmp_path, ctrl_c):
    """From Python (a notebook): Interrupted, a KeyboardInterrupt, at the step the signal
    came in, a checkpoint of that step kept, and the handlers as they were before."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    config = Config().with_overrides(FAST + ["budget.epochs=5"])
    steps = len(build(config).data.train) // config.data.batch_size
    with pytest.raises(Interrupted) as info:
        train(config, tmp_path, progress=False, callbacks=[SignalAt(signal.SIGINT, steps + 2)])
    assert isinstance(info.value, KeyboardInterrupt) and info.value.signum == signal.SIGINT
    assert str(info.value).startswith(f"stopped by SIGINT after step {steps + 2} (in epoch 2 of 5); a checkpoint "
                                      f"of step {steps + 2} (2 steps into epoch 2) is kept at {tmp_path / 'checkpoint.pt'}")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    _, state = train(config, tmp_path, progress=False)
    assert state.epoch == 5


def test_a_second_signal_interrupts_at_once(ctrl_c):
    """Ctrl-C twice: the first is recorded, the second acts as Ctrl-C always does."""
    with StopOnSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    """A run started under ``nohup ... &`` (SIGINT ignored) is not stopped by a Ctrl-C."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopOnSignals() as signals:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert signals.received is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_sigterm_outside_training_stops_a_command_with_one_line(run, monkeypatch, capsys):
    """A SIGTERM while a command loads its run (not in the loop): exit 143, one line."""
    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)

    monkeypatch.setattr("pyro_vae.train.load_run", terminated)
    code, err = cli_main(capsys, "evaluate", run, "-k", "2")
    assert code == 143
    assert_one_paragraph(err, "pyro-vae evaluate: stopped by SIGTERM before it finished: run the same command")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def processes_naming(text: str) -> list[int]:
    """This machine's processes whose command line holds ``text`` (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # ended meanwhile
            pass
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
def test_sigterm_to_the_launcher_of_several_processes_ends_them_all(tmp_path):
    """``train --nproc 2``: a SIGTERM to the launcher (what ``kill`` sends it) used to end
    it alone, and torchrun trained on without it. Now every process ends, and one line
    (after torchrun's own report) says where the checkpoint is."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    run_dir = tmp_path / "run"
    proc = cli("train", "--nproc", "2", "--run-dir", run_dir, "--epochs", "200", "--no-progress",
               "--dist-timeout", "60", *SETS, env=env)
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    last = err.strip().splitlines()[-1]
    assert last.startswith("pyro-vae train: stopped by SIGTERM, every process with it; the last good checkpoint is "
                           f"kept at {run_dir / 'checkpoint.pt'}: resume with `pyro-vae train --nproc 2 "), err
    assert processes_naming(str(run_dir)) == []
