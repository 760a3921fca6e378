"""Sphinx configuration of the pyro-vae site (Read the Docs layout, as Pyro's own).

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the README's
command). Everything here works offline: the tutorials are rendered from their stored
outputs, MathJax is served from the build itself, and the Pyro and PyTorch inventories
for intersphinx are written from the installed packages (``local_inventory.py``).
Generated inputs go to ``docs/_generated/`` (git-ignored).
"""

import shutil
import sys
from pathlib import Path

import mathjax  # django-static-mathjax: MathJax 3 as files

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
sys.path[:0] = [str(ROOT), str(DOCS)]  # the worktree's package, then local_inventory

import local_inventory  # noqa: E402

import pyro_vae  # noqa: E402

project = "pyro-vae"
author = "the pyro-vae authors"
copyright = "the pyro-vae authors"
release = version = pyro_vae.__version__

extensions = [
    "myst_nb",  # Markdown pages and notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the package's Google-style Args:/Returns:
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_theme = "sphinx_rtd_theme"
html_title = f"pyro-vae {release}"
html_static_path = ["_generated/static"]

# --- Markdown and notebooks -------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]  # the tutorials' $...$ and $$...$$
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the outputs stored in the notebooks; never run them
# The pages include README.md and benchmarks/README.md, which name repository files in
# code spans only; a copied notebook is rendered from _generated/tutorials.
(GENERATED / "tutorials").mkdir(parents=True, exist_ok=True)
for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
    target = GENERATED / "tutorials" / notebook.name
    if not target.exists() or target.read_bytes() != notebook.read_bytes():
        shutil.copyfile(notebook, target)  # rewritten only when changed: incremental builds

# --- API reference ------------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # Each module documents what it defines; a package's __init__ re-exports are not
    # described twice (they would be duplicate object descriptions).
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# autosummary imports every submodule to list them; importing __main__ would run the CLI.
autodoc_mock_imports = ["pyro_vae.__main__"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- Math, served offline -------------------------------------------------------------
# MathJax 3.2 from the django-static-mathjax wheel: the combined TeX/MathML-to-HTML
# component and the fonts it loads relative to itself; nothing comes from a CDN.
_mathjax = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
_static = GENERATED / "static" / "mathjax"
for part in ("tex-mml-chtml.js", "output/chtml/fonts/woff-v2"):
    target = _static / part
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (_mathjax / part).is_dir() else shutil.copyfile)(_mathjax / part, target)
mathjax_path = "mathjax/tex-mml-chtml.js"  # relative: under _static/
# Typeset only what Sphinx and myst mark as math (as Sphinx does for MathJax 3), so
# a stray \( in prose or code stays text.
mathjax3_config = {
    "options": {
        "ignoreHtmlClass": "tex2jax_ignore|mathjax_ignore|document",
        "processHtmlClass": "tex2jax_process|mathjax_process|math|output_area",
    }
}

# --- Links to Pyro and PyTorch, offline -----------------------------------------------
# The URL is where links point; the inventory is read from the local file written
# from the installed packages (intersphinx's "(url, (location, ...))" form).
_inventories = local_inventory.ensure(GENERATED / "inventories")
intersphinx_mapping = {
    "pyro": ("https://docs.pyro.ai/en/stable/", (str(_inventories["pyro"]),)),
    "torch": ("https://pytorch.org/docs/stable/", (str(_inventories["torch"]),)),
}
