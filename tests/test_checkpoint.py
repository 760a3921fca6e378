"""Checkpoints load as data only and are written atomically (``pyro_vae/checkpoint.py``).

A crafted file whose unpickling would create a marker file is refused by every command
that reads a run directory and by ``load_run``, and the marker never appears; the same
for a saved evaluation chunk. What the package stores passes the safe loader (every
algorithm's state, the RNG states); runs written before the change (NumPy RNG state)
still load; a checkpoint of something else, of another architecture, or one the disk
cannot hold gets one sentence naming the file.
"""

import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae import checkpoint
from pyro_vae.checkpoint import CheckpointError
from pyro_vae.config import Config
from pyro_vae.evaluation import checkpointed_log_likelihood
from pyro_vae.train import load_run, train

FAST = ["model.hidden=[16]", "eval.num_samples=0", "eval.plots=false", "budget.epochs=1"]


class Planted:
    """What a crafted checkpoint carries: unpickling it calls ``open(marker, "w")``,
    i.e. runs code of the file's choosing (here harmless: it creates the marker)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run directory of one short epoch, copied by each test that tampers with it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(Config().with_overrides(FAST + ["inference.name=\"mcem\""]), run, progress=False)
    return run


def tampered(trained, tmp_path):
    """A copy of ``trained`` whose checkpoint carries a :class:`Planted` object."""
    run, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(trained, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["extra"] = Planted(marker)
    torch.save(ckpt, run / "checkpoint.pt")
    return run, marker


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pyro_vae", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_refused(done, marker):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()
    assert "not plain data" in done.stderr and "io.open" in done.stderr
    assert "would execute code" in done.stderr and "--allow-pickle" in done.stderr


@pytest.mark.parametrize("command", [
    ["train", "--run-dir", "{run}", "--epochs", "2", "--no-progress"],
    ["evaluate", "{run}", "-k", "2"],
    ["sample", "{run}", "-n", "4", "--out", "{run}/s.png"],
    ["plot", "{run}"],
])
def test_every_command_refuses_a_crafted_checkpoint_and_runs_none_of_it(trained, tmp_path, command):
    run, marker = tampered(trained, tmp_path)
    assert_refused(cli(*(a.format(run=run) for a in command)), marker)


def test_load_run_refuses_a_crafted_checkpoint_unless_the_caller_trusts_it(trained, tmp_path):
    run, marker = tampered(trained, tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt holds Python objects that are not plain data "
                                              r"\(io.open\).*would execute code.*--allow-pickle"):
        load_run(run, device="cpu")
    assert not marker.exists()
    load_run(run, device="cpu", allow_pickle=True)  # the documented opt-in: it does run the file's code
    assert marker.exists()


def test_a_crafted_evaluation_chunk_is_refused_by_the_api_and_the_cli(trained, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(trained, run)
    exp, _ = load_run(run, device="cpu")
    x, chunks = exp.data.test[:6], tmp_path / "chunks"
    checkpointed_log_likelihood(exp.module, x, chunks, num_samples=2, chunk_size=3)
    torch.save({"per_point": Planted(marker)}, chunks / "chunk-0000003.pt")
    with pytest.raises(CheckpointError, match="chunk-0000003.pt holds Python objects that are not plain data"):
        checkpointed_log_likelihood(exp.module, x, chunks, num_samples=2, chunk_size=3)
    assert not marker.exists()
    # The CLI's chunks of this run: 6 test points, k = 2, its chunks of 100 points.
    assert cli("evaluate", run, "-k", "2", "--limit", "6").returncode == 0
    chunk = run / "evaluation" / "test-6points-k2-seed0-epoch1" / "chunk-0000000.pt"
    torch.save({"per_point": Planted(marker)}, chunk)
    assert_refused(cli("evaluate", run, "-k", "2", "--limit", "6"), marker)


def test_what_every_algorithm_stores_passes_the_safe_loader(trained, tmp_path):
    """The safe loader reads the stored state back whole: optimizers, HMC sampler and
    chains (MCEM), RNG states."""
    ckpt = checkpoint.load(trained / "checkpoint.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(trained / "checkpoint.pt") == []
    assert {"optimizers", "sampler", "chains", "visited"} <= set(ckpt["inference"])


def test_saving_anything_the_safe_loader_would_refuse_fails_at_once_naming_the_entry(tmp_path):
    with pytest.raises(TypeError, match=r"state\['state'\]\['best'\] is a numpy.float64"):
        checkpoint.save({"state": {"best": np.float64(1.0)}}, tmp_path / "c.pt")
    with pytest.raises(TypeError, match=r"state\['rng'\]\[1\] is a numpy.ndarray"):
        checkpoint.save({"rng": ("MT19937", np.zeros(3))}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_the_rng_state_as_plain_data_restores_every_generator():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = checkpoint.rng_state()
    checkpoint.check_plain(state)
    first = torch.rand(3), random.random(), np.random.rand(3)
    checkpoint.set_rng_state(state)
    again = torch.rand(3), random.random(), np.random.rand(3)
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])


def test_a_pickle_of_something_else_is_not_a_checkpoint(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    torch.save([torch.zeros(2)], run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a pyro-vae checkpoint"):
        load_run(run, device="cpu")
    torch.save({"weights": torch.zeros(2)}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"is not a pyro-vae checkpoint \(it lacks \['module', 'state', "
                                              r"'inference'\]\)"):
        load_run(run, device="cpu")
    done = cli("evaluate", run, "-k", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not a pyro-vae checkpoint" in done.stderr


def test_a_checkpoint_of_another_architecture_is_named_as_such(trained, tmp_path):
    """config.toml gone, the run is resumed under another config: the parameters do not fit."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.toml").unlink()
    other = Config().with_overrides(FAST + ["inference.name=\"mcem\"", "model.hidden=[24]", "budget.epochs=2"])
    with pytest.raises(CheckpointError, match="checkpoint.pt holds the parameters of another model than this "
                                              "config builds.*size mismatch.*config.toml is missing or was changed"):
        train(other, run, progress=False)


def test_a_full_disk_is_named_and_the_previous_checkpoint_is_kept(tmp_path):
    """A file size limit (what a full disk looks like to a writer: the write fails) in a
    process of its own: the error says so, the old file is intact and no temp file stays."""
    path = tmp_path / "c.pt"
    checkpoint.save({"x": torch.zeros(3)}, path)
    script = f"""
import resource, signal, torch
from pyro_vae import checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    checkpoint.save({{"x": torch.zeros(100000)}}, {str(path)!r})
except checkpoint.CheckpointError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"cannot write {path}: File too large" in done.stdout and "previous file" in done.stdout
    assert torch.equal(checkpoint.load(path)["x"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_damaged_checkpoint_is_named_with_the_fix(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read.*damaged: delete it"):
        checkpoint.load(path)
