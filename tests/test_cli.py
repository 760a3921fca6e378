"""``pyro-vae`` on the command line: help, the train/evaluate/sample/plot cycle, errors."""

import json
import os
import subprocess
import sys

import pytest

from pyro_vae.cli import _config, main, parser
from pyro_vae.config import ConfigError
from pyro_vae.inference import VIMCOConfig
from pyro_vae.models import GAEConfig

COMMANDS = ["train", "evaluate", "sample", "plot", "fetch"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pyro_vae", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: pyro-vae {command}" in capsys.readouterr().out


def test_train_evaluate_sample_plot_cycle(tmp_path, capsys):
    """``train`` as a user runs it (a process of its own); the commands that read its run
    directory through ``main`` in this process (the same code, without an interpreter's
    start-up each)."""
    run = tmp_path / "run"
    done = cli("train", "--run-dir", str(run), "--epochs", "3", "--no-progress", "--set", "eval.num_samples=20")
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["test_log_likelihood"] >= summary["test_elbo"] - 1.0
    assert {p.name for p in (run / "plots").iterdir()} == {
        "samples.png", "reconstructions.png", "latent.png", "elbo.png", "manifold.png"}
    assert (run / "config.toml").exists() and (run / "checkpoint.pt").exists()

    def command(*args) -> str:
        capsys.readouterr()
        assert main(list(args)) == 0
        return capsys.readouterr().out

    result = json.loads(command("evaluate", str(run), "-k", "10", "--limit", "20"))
    assert result["points"] == 20 and result["num_samples"] == 10
    assert (run / "evaluation" / "test-20points-k10-seed0-epoch3" / "chunk-0000000.pt").exists()
    again = json.loads(command("evaluate", str(run), "-k", "10", "--limit", "20"))
    assert again["log_likelihood"] == result["log_likelihood"]  # read back, not redrawn

    out = tmp_path / "s.png"
    command("sample", str(run), "-n", "16", "--out", str(out))
    assert out.stat().st_size > 0
    plots = tmp_path / "plots"
    command("plot", str(run), "--out", str(plots))
    assert len(list(plots.glob("*.png"))) == 5


def test_train_with_a_config_file_and_default_run_dir(tmp_path):
    (tmp_path / "exp.toml").write_text(
        '[model]\nz_dim = 3\nhidden = [16]\n[budget]\nepochs = 1\n[eval]\nnum_samples = 0\nplots = false\n')
    done = cli("train", "--config", "exp.toml", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("vae-digits-") and "z_dim = 3" in (run / "config.toml").read_text()


@pytest.mark.parametrize("args,message", [
    (["train", "--config", "missing.toml"], "cannot read config file missing.toml"),
    (["train", "--set", "model.zdim=3"], "unknown key(s) ['zdim']"),
    (["train", "--set", "data.name=binarized_mnist", "--data-dir", "nowhere"], "pyro-vae fetch"),
    (["train", "--set", "data.binarize=none"], "Bernoulli decoder needs"),
    (["evaluate", "no-such-run"], "not a run directory"),
])
def test_bad_input_gives_one_clear_line_not_a_traceback(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    # Only --data-dir counts: hide the environment variable, the shared copy and the home folder.
    monkeypatch.delenv("PYRO_VAE_DATA_DIR", raising=False)
    monkeypatch.setattr("pyro_vae.data.paths._repo_data_dir", lambda: tmp_path / "none")
    monkeypatch.setattr("pyro_vae.data.paths._home_data_dir", lambda: tmp_path / "none")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyro-vae {args[0]}: error: ") and message in err
    assert "Traceback" not in err


def test_set_model_name_switches_the_family_keeping_what_was_set(tmp_path):
    (tmp_path / "exp.toml").write_text('[model]\nz_dim = 3\nhidden = [16]\n[inference]\nnum_particles = 2\n')
    args = parser().parse_args(["train", "--config", str(tmp_path / "exp.toml"), "--set", "model.name=gae",
                                "--set", "inference.name=vimco", "--epochs", "2"])
    config = _config(args)
    assert config.model == GAEConfig(z_dim=3, hidden=[16])
    assert config.inference == VIMCOConfig(num_particles=2) and config.budget.epochs == 2
    bad = parser().parse_args(["train", "--set", "model.bandwidth=shared"])
    with pytest.raises(ConfigError, match="'bandwidth' belongs to 'gae'"):
        _config(bad)
