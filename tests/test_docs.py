"""The documentation site's own machinery: the offline Pyro/PyTorch inventories resolve
names to the pages those sites document them on, and the browser check fails on a page
a reader would see broken. (Building the whole site and checking every page is a step of
``.ci/run``: ``python -m sphinx -W ...`` then ``python docs/check_site.py``.)"""

import shutil
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS))

PYRO = "https://docs.pyro.ai/en/stable/"
TORCH = "https://pytorch.org/docs/stable/"


def test_local_inventories_resolve_names_to_the_sites_pages(tmp_path):
    inventory = pytest.importorskip("sphinx.util.inventory")
    import local_inventory

    paths = local_inventory.ensure(tmp_path)
    loaded = {}
    for project, url in (("pyro", PYRO), ("torch", TORCH)):
        with open(paths[project], "rb") as f:
            inv = inventory.InventoryFile.load(f, url, lambda base, uri: base + uri)
        for role, entries in inv.items() if isinstance(inv, dict) else inv.data.items():
            for name, item in entries.items():
                loaded[name] = (role, item[2] if isinstance(item, tuple) else item.uri)
    expected = {
        "pyro.sample": ("py:function", PYRO + "primitives.html#pyro.primitives.sample"),
        "pyro.plate": ("py:class", PYRO + "primitives.html#pyro.primitives.plate"),
        "pyro.infer.SVI": ("py:class", PYRO + "inference_algos.html#pyro.infer.svi.SVI"),
        "pyro.infer.trace_elbo.Trace_ELBO": ("py:class", PYRO + "inference_algos.html#pyro.infer.trace_elbo.Trace_ELBO"),
        "pyro.infer.mcmc.NUTS": ("py:class", PYRO + "mcmc.html#pyro.infer.mcmc.NUTS"),
        "pyro.distributions.Normal": ("py:class", PYRO + "distributions.html#pyro.distributions.Normal"),
        "pyro.distributions.torch.Normal": ("py:class", PYRO + "distributions.html#pyro.distributions.Normal"),
        "pyro.distributions.transforms.AffineAutoregressive":
            ("py:class", PYRO + "distributions.html#pyro.distributions.transforms.AffineAutoregressive"),
        "pyro.poutine.trace": ("py:function", PYRO + "poutine.html#pyro.poutine.handlers.trace"),
        "pyro.nn.PyroModule": ("py:class", PYRO + "nn.html#pyro.nn.module.PyroModule"),
        "torch.Tensor": ("py:class", TORCH + "tensors.html#torch.Tensor"),
        "torch.nn.modules.linear.Linear": ("py:class", TORCH + "generated/torch.nn.Linear.html#torch.nn.Linear"),
        "torch.optim.Adam": ("py:class", TORCH + "generated/torch.optim.Adam.html#torch.optim.Adam"),
        "torch.utils.data.DataLoader": ("py:class", TORCH + "data.html#torch.utils.data.DataLoader"),
        "torch.distributions.Normal": ("py:class", TORCH + "distributions.html#torch.distributions.normal.Normal"),
        "torch.distributed.all_reduce": ("py:function", TORCH + "distributed.html#torch.distributed.all_reduce"),
        "torch.device": ("py:class", TORCH + "tensor_attributes.html#torch.device"),
        "torch._C.Generator": ("py:class", TORCH + "generated/torch.Generator.html#torch.Generator"),
    }
    for name, want in expected.items():
        assert loaded.get(name) == want, name


def _browser():
    if shutil.which("chromium") is None:
        pytest.skip("no chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    return shutil.which("chromium")


def test_the_browser_check_passes_a_good_page_and_fails_broken_ones(tmp_path):
    chromium = _browser()
    import check_site
    import mathjax

    # MathJax as the site serves it, and one tiny PNG.
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    shutil.copyfile(es5 / "tex-mml-chtml.js", tmp_path / "tex-mml-chtml.js")
    shutil.copytree(es5 / "output" / "chtml" / "fonts" / "woff-v2", tmp_path / "output" / "chtml" / "fonts" / "woff-v2")
    from matplotlib import pyplot as plt
    plt.imsave(tmp_path / "dot.png", [[0.0, 1.0]])

    mathjax_tag = '<script defer src="tex-mml-chtml.js"></script>'
    body = {
        "good.html": mathjax_tag + '<p><img src="dot.png"> <span class="math">\\(x^2\\)</span></p>',
        "broken_image.html": '<img src="missing.png">',
        "raw_math.html": '<p><span class="math">\\(x^2\\)</span> and \\[ y \\] left as TeX</p>',
        "missing_script.html": '<script src="nowhere.js"></script><p>text</p>',
        "offline.html": '<img src="https://example.org/logo.png">',
    }
    for name, html in body.items():
        (tmp_path / name).write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body>{html}</body></html>")

    report = check_site.check(tmp_path, chromium=chromium)
    assert report.pages == 5 and report.images == 3 and report.math == 2
    assert sorted(report.failures) == ["broken_image.html", "missing_script.html", "offline.html", "raw_math.html"]
    assert any("image not rendered: missing.png" in p for p in report.failures["broken_image.html"])
    assert any("math not typeset" in p for p in report.failures["raw_math.html"])
    assert any("raw TeX" in p for p in report.failures["raw_math.html"])
    assert any("404" in p for p in report.failures["missing_script.html"])
    assert any("example.org" in p for p in report.failures["offline.html"])
