"""Run the tutorial notebooks and store them with their outputs: the one command that renders them.

    python tutorials/render.py                  # every notebook, real settings, outputs stored
    python tutorials/render.py 02 04_flows      # those whose file names start so
    python tutorials/render.py --fast --check   # fast settings, nothing stored (what the tests do)

Each notebook runs top to bottom in a fresh kernel on *this* interpreter (a kernel spec
written for the run, so the kernel imports the package being rendered), headless
(matplotlib's inline backend, which stores ``plt.show()``'s figures as PNG outputs), in a
temporary working directory. Real settings are the notebook's own
(``PYRO_VAE_FAST`` unset): the real data in ``../shared/data`` and the training budgets the
text describes. Outputs are kept small before they are stored: a PNG wider than
:data:`MAX_WIDTH` pixels is scaled down, and every PNG is re-encoded with zlib at its best
(``optimize``); the per-cell timing metadata nbclient can record is not written. The
notebook's metadata says what made its outputs, ``{"pyro_vae": {"settings": "real",
"version": ..., "seconds": ...}}``, and ``tests/test_tutorials.py`` checks that and the
size budget. Look at every figure before committing a rendered notebook.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

TUTORIALS = Path(__file__).resolve().parent
MAX_WIDTH = 900  # pixels; a page column is narrower, so nothing is lost on the site
KERNEL = "python3"


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    """The tutorial notebooks, in order; with ``prefixes``, those whose names start with one."""
    paths = sorted(TUTORIALS.glob("*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(s) for s in prefixes)]
    return paths


def kernel_manager(spec_dir: Path) -> AsyncKernelManager:
    """A manager for a ``python3`` kernel spec (written under ``spec_dir``) that runs ``sys.executable``."""
    kernel_dir = spec_dir / KERNEL
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.prefix})",
        "language": "python",
    }))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(nb: nbformat.NotebookNode, workdir: Path, *, fast: bool, timeout: float | None = None,
            preamble: str | None = None) -> float:
    """Run ``nb`` in place (its outputs replaced) in a fresh kernel; returns the seconds it took.

    Args:
        nb: the notebook; its code cells get new outputs and execution counts.
        workdir: the kernel's working directory (it also holds the kernel spec).
        fast: run with ``PYRO_VAE_FAST=1`` (the tests' small settings).
        timeout: seconds the whole notebook may take (each cell gets what is left); None: no limit.
        preamble: code run first in the kernel and not kept in the notebook (a test's check).

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised.
        nbclient.exceptions.CellTimeoutError: the notebook ran past ``timeout``.
    """
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    if preamble:
        nb.cells.insert(0, nbformat.v4.new_code_cell(preamble))
    # No MPLBACKEND: the kernel's own inline backend is what shows plt.show()'s figures.
    env = {k: v for k, v in os.environ.items() if k not in ("PYRO_VAE_FAST", "MPLBACKEND")}
    if fast:
        env["PYRO_VAE_FAST"] = "1"
    deadline = None if timeout is None else time.monotonic() + timeout
    client = nbclient.NotebookClient(
        nb, km=kernel_manager(workdir / ".kernels"), kernel_name=KERNEL,
        timeout=None,  # with a deadline, timeout_func gives each cell what is left of it
        timeout_func=None if deadline is None else (lambda cell: max(1, int(deadline - time.monotonic()))),
        resources={"metadata": {"path": str(workdir)}}, allow_errors=False, record_timing=False,
    )
    started = time.monotonic()
    client.execute(env=env, cwd=str(workdir))
    return time.monotonic() - started


def shrink_images(nb: nbformat.NotebookNode, max_width: int = MAX_WIDTH) -> None:
    """Scale every stored PNG down to ``max_width`` pixels at most and re-encode it optimized."""
    from PIL import Image  # Pillow comes with matplotlib

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            image = Image.open(io.BytesIO(base64.b64decode(data["image/png"])))
            if image.width > max_width:
                height = round(image.height * max_width / image.width)
                image = image.resize((max_width, height), Image.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            data["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
            output.setdefault("metadata", {}).pop("image/png", None)  # stale width/height hints


def render(path: Path, *, fast: bool = False, store: bool = True, timeout: float | None = None) -> float:
    """Run one notebook and (unless ``store`` is False) write it back with its outputs."""
    import pyro_vae

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix=f"pyro-vae-{path.stem[:2]}-") as tmp:
        seconds = execute(nb, Path(tmp), fast=fast, timeout=timeout)
    if store:
        if fast:
            raise ValueError("fast-mode outputs are never stored: render with the real settings")
        shrink_images(nb)
        nb.metadata["pyro_vae"] = {"settings": "real", "version": pyro_vae.__version__, "seconds": round(seconds)}
        nbformat.write(nb, path)
    return seconds


def size_report(path: Path) -> str:
    """One line: the notebook's size on disk and its images' count and bytes."""
    nb = json.loads(path.read_text())
    images = [o["data"]["image/png"] for c in nb["cells"] for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    png_bytes = sum(len(base64.b64decode(i)) for i in images)
    return f"{path.name}: {path.stat().st_size / 1024:.0f} KiB, {len(images)} images ({png_bytes / 1024:.0f} KiB)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--fast", action="store_true", help="PYRO_VAE_FAST=1 (implies --check)")
    parser.add_argument("--check", action="store_true", help="run only; store nothing")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per notebook (default: none)")
    args = parser.parse_args(argv)
    paths = notebooks(args.names)
    if not paths:
        parser.error(f"no notebook in {TUTORIALS} starts with {' or '.join(args.names)}")
    for path in paths:
        seconds = render(path, fast=args.fast, store=not (args.check or args.fast), timeout=args.timeout)
        stored = "" if args.check or args.fast else f"; stored, {size_report(path)}"
        print(f"{path.name}: ran in {seconds:.0f} s{stored}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
