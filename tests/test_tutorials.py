"""The tutorial notebooks: each runs from top to bottom in fast mode, and each is stored with
the outputs of its real settings, small.

Running: every ``tutorials/*.ipynb`` is executed by ``tutorials/render.py``'s ``execute`` in a
fresh kernel on *this* interpreter, with ``PYRO_VAE_FAST=1`` and a temporary working
directory; a cell that raises fails the test with the cell's source and traceback, and so does
a notebook that runs past its time limit. The stored notebook is not changed.

Stored outputs: rendered by ``python tutorials/render.py`` with the real settings, every code
cell executed once in order, no error in any output, and within the size budget.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from nbclient.exceptions import CellExecutionError, CellTimeoutError  # noqa: E402

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
_spec = importlib.util.spec_from_file_location("tutorials_render", TUTORIALS / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

NOTEBOOKS = render.notebooks()
DEFAULT_TIMEOUT = 600  # seconds for a whole notebook in fast mode (01 takes well under a minute)
TIMEOUTS: dict[str, int] = {}  # per notebook, by file name, where one needs another limit
NOTEBOOK_BUDGET = 1536 * 1024  # bytes on disk for one stored notebook, outputs included
IMAGE_BUDGET = 300 * 1024  # bytes for one stored PNG

# Run first in the kernel (not stored in the notebook): the kernel must be this
# interpreter, and it must import the package under test.
PREFLIGHT = f"""
import sys, pyro_vae
assert sys.prefix == {sys.prefix!r}, f"the kernel runs {{sys.executable}}, not {sys.executable!r}"
print("PREFLIGHT", sys.executable, pyro_vae.__file__)
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch):
    # small models run fastest on one thread, and it keeps a busy machine usable
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(path, as_version=4)
    limit = TIMEOUTS.get(path.name, DEFAULT_TIMEOUT)
    started = time.monotonic()
    try:
        render.execute(nb, tmp_path, fast=True, timeout=limit, preamble=PREFLIGHT)
    except CellTimeoutError as e:
        pytest.fail(f"{path.name} ran past its {limit} s limit (PYRO_VAE_FAST=1):\n{_plain(e)}", pytrace=False)
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell failed (PYRO_VAE_FAST=1):\n{_plain(e)}", pytrace=False)
    preflight = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "PREFLIGHT" in preflight and sys.executable in preflight, preflight
    print(f"{path.name}: {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_outputs_are_real_and_small(path: Path):
    nb = nbformat.read(path, as_version=4)
    fix = f"render it: python tutorials/render.py {path.stem}"
    made = nb.metadata.get("pyro_vae", {})
    assert made.get("settings") == "real", f"{path.name} is not stored with its real-settings outputs; {fix}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: cells not executed once in order {counts}; {fix}"
    for i, cell in enumerate(code):
        for output in cell.outputs:
            assert output.output_type != "error", f"{path.name}, code cell {i}: stored with an error; {fix}"
            text = output.get("text", "")
            assert "Traceback" not in text, f"{path.name}, code cell {i}: a traceback in its output; {fix}"
    images = [o.data["image/png"] for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no figure"
    for image in images:
        png = base64.b64decode(image)
        assert len(png) <= IMAGE_BUDGET, f"{path.name}: a {len(png) // 1024} KiB PNG (budget {IMAGE_BUDGET // 1024})"
        assert _png_width(png) <= render.MAX_WIDTH, f"{path.name}: a PNG wider than {render.MAX_WIDTH} px; {fix}"
    size = path.stat().st_size
    assert size <= NOTEBOOK_BUDGET, f"{path.name} is {size // 1024} KiB, over its {NOTEBOOK_BUDGET // 1024} KiB budget"


def test_shrink_images_scales_wide_pngs_down():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2 * render.MAX_WIDTH, 100), "white").save(buffer, format="PNG")
    output = nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buffer.getvalue()).decode()})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=[output])])
    render.shrink_images(nb)
    assert _png_width(base64.b64decode(nb.cells[0].outputs[0].data["image/png"])) == render.MAX_WIDTH


def _png_width(png: bytes) -> int:
    """The width in the PNG's IHDR chunk (bytes 16-20, big-endian)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(png[16:20], "big")


def _plain(error: Exception) -> str:
    """The error's message without the terminal colour codes of IPython tracebacks."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(error))
