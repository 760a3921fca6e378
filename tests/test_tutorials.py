"""Every tutorial notebook runs from top to bottom, headless, in fast mode.

Each ``tutorials/*.ipynb`` is executed with nbclient in a fresh ``python3`` kernel that
runs *this* interpreter (``sys.executable -m ipykernel_launcher``, through a kernel spec
written for the test), with ``PYRO_VAE_FAST=1`` and a temporary working directory. A
cell that raises fails the test with the cell's source and traceback; a notebook that
runs past its time limit fails too. The stored notebooks must carry no outputs.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from nbclient.exceptions import CellExecutionError, CellTimeoutError  # noqa: E402

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
DEFAULT_TIMEOUT = 600  # seconds for a whole notebook in fast mode (01 takes well under a minute)
TIMEOUTS: dict[str, int] = {}  # per notebook, by file name, where one needs another limit
KERNEL = "python3"

# Run first in the kernel (not stored in the notebook): the kernel must be this
# interpreter, and it must import the package under test.
PREFLIGHT = f"""
import sys, pyro_vae
assert sys.prefix == {sys.prefix!r}, f"the kernel runs {{sys.executable}}, not {sys.executable!r}"
print("PREFLIGHT", sys.executable, pyro_vae.__file__)
"""


def kernel_manager(spec_dir: Path) -> AsyncKernelManager:
    """A manager for a ``python3`` kernel spec that launches ``sys.executable``."""
    kernel_dir = spec_dir / KERNEL
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.prefix})",
        "language": "python",
    }))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    stored_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("outputs")]
    assert not stored_outputs, f"{path.name}: clear the outputs of cells {stored_outputs} before committing"
    nb.cells.insert(0, nbformat.v4.new_code_cell(PREFLIGHT))

    workdir = tmp_path / "work"
    workdir.mkdir()
    limit = TIMEOUTS.get(path.name, DEFAULT_TIMEOUT)
    deadline = time.monotonic() + limit
    env = {**os.environ, "PYRO_VAE_FAST": "1", "MPLBACKEND": "Agg",
           # small models run fastest on one thread, and it keeps a busy machine usable
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager(tmp_path / "kernels"),
        kernel_name=KERNEL,
        # Each cell may use what is left of the notebook's limit.
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=False,
    )
    started = time.monotonic()
    try:
        client.execute(env=env, cwd=str(workdir))
    except CellTimeoutError as e:
        pytest.fail(f"{path.name} ran past its {limit} s limit (PYRO_VAE_FAST=1):\n{_plain(e)}", pytrace=False)
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell failed (PYRO_VAE_FAST=1):\n{_plain(e)}", pytrace=False)
    elapsed = time.monotonic() - started

    preflight = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "PREFLIGHT" in preflight and sys.executable in preflight, preflight
    print(f"{path.name}: {elapsed:.1f} s")


def _plain(error: Exception) -> str:
    """The error's message without the terminal colour codes of IPython tracebacks."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(error))
