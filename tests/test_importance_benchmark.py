"""``benchmarks/importance_sampling.py`` in its smoke mode: it runs, and prints its table
and the package / plain ratio lines (the numbers themselves are not checked: a smoke
run times a few milliseconds of work)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae.data import DataError, get_spec
from pyro_vae.data.paths import locate_files

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "importance_sampling.py"


def _has_binarized_mnist() -> bool:
    spec = get_spec("binarized_mnist")
    try:
        locate_files(spec.name, spec.files)
    except DataError:
        return False
    return True


@pytest.mark.skipif(not _has_binarized_mnist(), reason="binarized MNIST not found (pyro-vae fetch binarized_mnist)")
def test_smoke_mode_prints_the_table_and_the_ratios():
    repo = SCRIPT.parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", "2", "--samples", "50", "--exemplars", "500", "--repeats", "1",
         "--threads", "1", "--peak-size", "512"],
        capture_output=True, text=True, timeout=300, env=env, cwd=repo,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "GEMM peak" in out and "load average" in out
    for model in ("VAE", "GAE"):
        assert f"| {model} | package |" in out and f"| {model} | plain |" in out
        assert f"{model} ratio package / plain: " in out
    assert "VAE ratio package / plain, x·l − softplus: " in out
