"""``pyro-vae train`` and its data, as a user runs it (a process of its own): a named data
directory that lacks the files is refused in one paragraph, no traceback and no run
directory written; a run prints and records the files it read with their checksums."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyro_vae
from pyro_vae.data import DATASETS
from pyro_vae.data import paths as data_paths

REPO_ROOT = Path(pyro_vae.__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"  # what the train process falls back to
FAST = ["--epochs", "1", "--no-progress", "--set", "eval.num_samples=0", "--set", "eval.plots=false"]


def train(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``pyro-vae train --run-dir tmp_path/run *args`` with no data directory named unless
    ``env`` or ``args`` name one, and a home folder of its own (no ~/.pyro_vae copy)."""
    base = {k: v for k, v in os.environ.items() if k != data_paths.ENV_VAR}
    base.update(OMP_NUM_THREADS="1", HOME=str(tmp_path / "home"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "pyro_vae", "train", "--run-dir", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=300, env=base, cwd=tmp_path)


def _fashion_dir(tmp_path: Path) -> Path:
    """A data directory holding (stand-ins for) Fashion-MNIST's files and nothing else."""
    for f in DATASETS["fashion_mnist"].files:
        (tmp_path / "fashion" / f.relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fashion" / f.relpath).touch()
    return tmp_path / "fashion"


@pytest.mark.parametrize("case", ["missing data dir", "missing variable dir", "another set's dir"])
def test_a_named_data_dir_without_the_files_is_refused(tmp_path, case):
    name, args, env = "mnist", [], None
    if case == "missing data dir":
        args, named = ["--data-dir", str(tmp_path / "no" / "such")], "--data-dir, [data] data_dir or data_dir="
    elif case == "missing variable dir":
        name, env, named = "frey_face", {data_paths.ENV_VAR: str(tmp_path / "no" / "such")}, "$PYRO_VAE_DATA_DIR"
    else:
        args, named = ["--data-dir", str(_fashion_dir(tmp_path))], "--data-dir, [data] data_dir or data_dir="
    done = train(tmp_path, "--set", f'data.name="{name}"', *args, env=env)
    err = done.stderr
    assert done.returncode == 2, err
    assert err.startswith(f"pyro-vae train: error: cannot find the files of data set '{name}' in the data directory ")
    assert f"named by {named}: a named data directory is the only place looked" in err
    assert "Traceback" not in err and "\n\n" not in err.strip()  # one paragraph
    expected = DATASETS[name].files[0].relpath
    assert expected in err  # the files expected there, under their layout folder
    if all((SHARED / f.relpath).is_file() for f in DATASETS[name].files):
        assert f"A complete copy of '{name}' is in {SHARED}" in err
    if case == "another set's dir":
        assert 'the files of \'fashion_mnist\' (FashionMNIST/raw/): name = "fashion_mnist"' in err
    assert not (tmp_path / "run" / "config.toml").exists()  # nothing recorded of a run that never was


def test_train_prints_and_records_the_files_it_read(tmp_path):
    path = tmp_path / "faces.npz"
    np.savez(path, x=np.random.default_rng(0).random((60, 2, 3)).astype(np.float32))
    done = train(tmp_path, "--set", 'data.name="array"', "--set", f'data.path="{path}"',
                 "--set", 'data.binarize="static"', "--set", "data.batch_size=16", "--set", "model.hidden=[8]", *FAST)
    assert done.returncode == 0, done.stderr
    digest, size = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    line = f"data file {path.resolve()}  sha256 {digest}  {size} bytes"
    assert done.stdout.splitlines()[:2] == [f"run directory: {tmp_path / 'run'}", line]
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert record == {"dataset": "array:faces", "sources": [
        {"kind": "file", "label": str(path.resolve()), "sha256": digest, "size": size}]}
