"""Agreement of the package's disentanglement metrics with ``disent``'s implementations
(issue 20): the same saved representations scored by both.

``disent`` (Michlo, https://github.com/nmichlo/disent, a PyTorch port of
disentanglement_lib) is never a package dependency; it is installed, without its
dependencies, into a separate benchmark venv that already has torch, scikit-learn and the
package::

    /work/bench-venv/bin/pip install --no-deps disent==0.8.0

Its ``disent.metrics`` package imports torchvision (its image data sets) and lightning (its
training frameworks) on the way, never in the metric functions called here; where they are
not importable (no torchvision build matches a CPU-only torch 2.13) this script puts
placeholder modules for them in ``sys.modules`` before importing disent
(:func:`stub_absent`): empty modules whose only names are the two disent reads at import,
``torchvision.datasets.ImageFolder`` and ``lightning.LightningModule``, as empty classes.

Representations (``(N + N/2, L)`` codes of the same dSprites factors, cheap, no training):

=====================  ====================================================================
``factors+noise``      the five factor classes, each standardized, plus N(0, 0.1²) noise
``rotated``            the same codes times a fixed random 5x5 rotation (entangled)
``pixel-projection``   the rendered images times a fixed random 4096x10 matrix (as
                       ``disentanglement.py --throughput``)
``run:<name>``         a trained run's encoder means (``--run DIR``, repeatable)
=====================  ====================================================================

* **MIG, SAP, DCI** (deterministic given the arrays): the same arrays, ``N`` train points
  (and ``N/2`` test points for SAP and DCI), go to the package's array-level functions
  (``mig.mig_of_codes``, ``sap.score_matrix`` + ``sap.top_two_gap``, ``dci.dci_of_codes``)
  and to disent's (``_mig._compute_mig``, ``_sap._compute_sap``, ``_dci._compute_dci``);
  both numbers and their absolute difference. DCI's classifiers are scikit-learn's
  ``GradientBoostingClassifier``: disent builds its own, unseeded, inside its function, so
  ``sklearn.ensemble.GradientBoostingClassifier`` is patched for the call to
  ``GradientBoostingClassifier(n_estimators=--dci-trees, random_state=0)``, the classifier
  the package is handed too. ``--dci-own-seeds`` seeds each side its own way instead (the
  package's per-factor seeds drawn from seed 0; disent's unseeded classifiers drawing from
  numpy's global generator, seeded 0): what ``random_state`` alone changes. DCI runs on the
  first ``--dci-points`` train points and half as many test points: with scikit-learn's 100
  trees on 10000 points (11,300 trees, one per class and stage) each DCI would take about ten
  minutes on one core.
* **FactorVAE metric** (sampling-based): both implementations on the same representation
  function and ground-truth data, with their default settings at ``num_train = N``
  (``num_eval = N/2``, ``num_variance_estimate = N``), ``--seeds`` each (disent draws the
  fixed factor from numpy's global generator, seeded, and the factors from a generator of
  the same seed): mean ± sd, so agreement is within sampling noise, not exact. Their
  defaults differ in one setting: disent keeps every code (standard deviation >= 0,
  disentanglement_lib's ``prune_dims`` default), the package only those of standard
  deviation >= 0.05 (the threshold of disentanglement_lib's study configuration), so a
  collapsed code may vote in disent's; and disent's ``num_active_dims`` counts all codes.
* **β-VAE metric**: disent 0.8.0 has none, so it is not compared.

    /work/bench-venv/bin/python benchmarks/disent_agreement.py                    # N = 10000, 3 seeds: ~2.5 min
    /work/bench-venv/bin/python benchmarks/disent_agreement.py --run results/disentanglement/beta4-s0 --points 1000
    /work/bench-venv/bin/python benchmarks/disent_agreement.py --points 300 --seeds 0 --dci-points 200 --dci-trees 2

Without disent importable, the script exits at once with a one-line message (status 1).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

from common import add_threads, set_threads, write_json

MISSING = ("disent_agreement.py: disent is not importable; install it into the benchmark venv "
           "without its dependencies (pip install --no-deps disent==0.8.0) and run the script with "
           "that venv's python")
#: Modules disent's package imports but the metrics here never use, with the names it reads at import.
ABSENT = {"torchvision": (), "torchvision.datasets": ("ImageFolder",), "torchvision.transforms": (),
          "torchvision.transforms.functional": (), "lightning": ("LightningModule",)}
NOISE = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=10000, help="N: train points (test points N/2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the FactorVAE metric")
    p.add_argument("--dci-trees", type=int, default=10, help="boosted trees per factor in both DCIs "
                   "(scikit-learn's default, disent's, is 100)")
    p.add_argument("--dci-points", type=int, default=2000, help="DCI's train points (test: half)")
    p.add_argument("--dci-own-seeds", action="store_true", help="seed each DCI's classifiers its own way "
                   "instead of random_state=0 in both (see the docstring)")
    p.add_argument("--run", type=Path, action="append", default=[], help="a trained run directory "
                   "whose encoder means to compare on too (repeatable)")
    p.add_argument("--out", type=Path, default=Path("results/disent_agreement.json"))
    add_threads(p)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- disent


def stub_absent() -> list[str]:
    """Placeholder modules for those of :data:`ABSENT` that are not importable; their names."""
    stubbed = []
    for name, classes in ABSENT.items():
        root = name.split(".")[0]
        if root not in stubbed and importlib.util.find_spec(root) is not None:
            continue  # the real package is there: use it
        module = types.ModuleType(name, "placeholder: not installed, unused by the metrics compared")
        module.__path__ = []  # a package, so that its submodules' placeholders import
        for cls in classes:
            setattr(module, cls, type(cls, (), {"__module__": name}))
        sys.modules[name] = module
        stubbed.append(name)
    return stubbed


def import_disent() -> types.SimpleNamespace:
    """disent's metric modules, or exit with :data:`MISSING`."""
    if importlib.util.find_spec("disent") is None:
        sys.exit(MISSING)
    stubbed = stub_absent()
    with warnings.catch_warnings():  # its numba-less JIT fallback warns once at import
        warnings.filterwarnings("ignore", message="failed to JIT compile")
        from disent.metrics import _dci, _factor_vae, _mig, _sap
    from importlib.metadata import version

    return types.SimpleNamespace(mig=_mig, sap=_sap, dci=_dci, factor_vae=_factor_vae,
                                 version=version("disent"), stubbed=stubbed)


class DisentView:
    """What disent's FactorVAE metric calls on its ``DisentDataset``, over the package's
    ground-truth ``data`` and a numpy ``generator``: ``gt_data.num_factors``,
    ``gt_data.sample_factors(n)``, ``dataset_batch_from_factors(factors, mode)``,
    ``dataset_sample_batch(n, mode)``."""

    def __init__(self, data, generator: np.random.Generator):
        self.data, self.generator = data, generator
        self.gt_data = self
        self.num_factors = len(data.factor_sizes)

    def sample_factors(self, n: int) -> np.ndarray:
        return self.data.sample_factors(n, self.generator)

    def dataset_batch_from_factors(self, factors: np.ndarray, mode: str):
        return self.data.observations(factors, self.generator)

    def dataset_sample_batch(self, n: int, mode: str):
        return self.dataset_batch_from_factors(self.sample_factors(n), mode)


# ----------------------------------------------------------------------------- representations


def standard_factors():
    """Ground-truth data whose observation is the standardized factor classes plus noise."""
    import torch

    from pyro_vae.data.dsprites import DSprites
    from pyro_vae.data.factors import FactorGrid, check_classes

    class StandardFactors(FactorGrid):
        """dSprites' five factors; an observation is each class standardized over its uniform
        grid (mean 0, sd 1) plus N(0, NOISE²) from ``generator``, float32 ``(n, 5)``."""

        factor_names, factor_sizes, event_shape = DSprites.factor_names, DSprites.factor_sizes, (5,)

        def observations(self, factors, generator):
            f = check_classes(factors, self.factor_sizes, self.factor_names)
            size = np.asarray(self.factor_sizes, dtype=np.float64)
            z = (f - (size - 1) / 2) / np.sqrt((size**2 - 1) / 12)
            return torch.from_numpy((z + NOISE * generator.standard_normal(z.shape)).astype(np.float32))

    return StandardFactors()


def representations(runs: list[Path]) -> dict[str, tuple]:
    """``{name: (data, representation)}``: the module docstring's table."""
    import torch

    from pyro_vae.data.dsprites import DSprites

    factors, dsprites = standard_factors(), DSprites()
    rotation = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0)))[0]
    projection = torch.randn(64 * 64, 10, generator=torch.Generator().manual_seed(0)) / 64
    out = {
        "factors+noise": (factors, lambda x: x),
        "rotated": (factors, lambda x: x @ rotation),
        "pixel-projection": (dsprites, lambda x: x.reshape(len(x), -1) @ projection),
    }
    for run in runs:
        out[f"run:{run.name}"] = trained_representation(run)
    return out


def trained_representation(run: Path) -> tuple:
    """``(data, encoder means)`` of a trained run, loaded as ``pyro-vae evaluate`` does."""
    from pyro_vae.disentanglement_report import factor_data
    from pyro_vae.evaluation.disentanglement import encoder_mean
    from pyro_vae.train import load_run

    exp, _ = load_run(run, device="cpu")
    exp.module.eval()
    return factor_data(exp.data), encoder_mean(exp.module)


def saved_arrays(data, representation, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Codes and factor classes of ``n`` train and ``n // 2`` test points:
    ``codes (n, L)``, ``factors (n, K)``, ``codes_test``, ``factors_test``."""
    from pyro_vae.evaluation.disentanglement.codes import Encoder

    generator = np.random.default_rng(seed)
    codes, factors = Encoder(representation, data).sample(n + n // 2, generator)
    return {"codes": codes[:n], "factors": factors[:n], "codes_test": codes[n:], "factors_test": factors[n:]}


# ----------------------------------------------------------------------------- the metrics


def row(representation: str, metric: str, ours, theirs, note: str = "") -> dict:
    """One line of the table: numbers, or lists of numbers over seeds (then compared by mean)."""
    mean = statistics.mean if isinstance(ours, list) else (lambda v: v)
    return {"representation": representation, "metric": metric, "pyro_vae": ours, "disent": theirs,
            "abs_difference": abs(float(mean(ours)) - float(mean(theirs))), "note": note}


def compare_mig(name: str, a: dict, disent) -> list[dict]:
    from pyro_vae.evaluation.disentanglement.mig import mig_of_codes

    ours = mig_of_codes(a["codes"], a["factors"])
    theirs = disent.mig._compute_mig(a["codes"].T, a["factors"].T)["mig.discrete_score"]
    return [row(name, "mig", ours, float(theirs))]


def compare_sap(name: str, a: dict, disent) -> list[dict]:
    from pyro_vae.evaluation.disentanglement.sap import score_matrix, top_two_gap

    scores = score_matrix(a["codes"], a["factors"], a["codes_test"], a["factors_test"], False,
                          np.random.default_rng(0))
    theirs = disent.sap._compute_sap(a["codes"].T, a["factors"].T, a["codes_test"].T, a["factors_test"].T,
                                     False)["sap.score"]
    return [row(name, "sap", top_two_gap(scores), float(theirs))]


def compare_dci(name: str, a: dict, disent, trees: int, points: int, own_seeds: bool = False) -> list[dict]:
    """Both DCIs with ``GradientBoostingClassifier(n_estimators=trees, random_state=0)`` on
    the first ``points`` train and ``points // 2`` test points; with ``own_seeds``, each
    seeded its own way instead (the package's per-factor seeds drawn from seed 0, disent's
    unseeded classifiers from numpy's global generator seeded 0)."""
    from sklearn import ensemble

    from pyro_vae.evaluation.disentanglement.dci import dci_of_codes

    boosting = functools.partial(ensemble.GradientBoostingClassifier, n_estimators=trees)
    theirs_make = boosting if own_seeds else functools.partial(boosting, random_state=0)
    train, test = slice(points), slice(points // 2)
    ours = dci_of_codes(a["codes"][train], a["factors"][train], a["codes_test"][test], a["factors_test"][test],
                        lambda seed: boosting(random_state=seed if own_seeds else 0), np.random.default_rng(0))
    np.random.seed(0)  # what an unseeded scikit-learn model draws from
    # disent imports the class from sklearn.ensemble inside the call: patch it there.
    with mock.patch.object(ensemble, "GradientBoostingClassifier", theirs_make):
        theirs = disent.dci._compute_dci(a["codes"][train].T, a["factors"][train].T,
                                         a["codes_test"][test].T, a["factors_test"][test].T)
    note = f"{trees} trees, {points} points" + (", own seeds" if own_seeds else "")
    return [row(name, f"dci {key}", ours[key], float(theirs[f"dci.{key}"]), note)
            for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test")]


def compare_factor_vae(name: str, data, representation, disent, n: int, seeds: list[int]) -> list[dict]:
    """Both FactorVAE metrics, default settings at ``num_train = n``, once per seed."""
    import torch

    from pyro_vae.evaluation.disentanglement import factor_vae_score

    sizes = {"num_train": n, "num_eval": n // 2, "num_variance_estimate": n}
    ours, theirs = [], []
    for seed in seeds:
        ours.append(factor_vae_score(representation, data, seed=seed, **sizes))
        np.random.seed(seed)  # disent draws each vote's fixed factor from numpy's global generator
        with torch.no_grad():
            theirs.append(disent.factor_vae.metric_factor_vae(
                DisentView(data, np.random.default_rng(seed)), representation, **sizes))
    rows = []
    for key in ("train_accuracy", "eval_accuracy"):
        mine, other = [s[key] for s in ours], [float(s[f"factor_vae.{key}"]) for s in theirs]
        note = f"{len(seeds)} seeds; difference {standard_errors(mine, other)}"
        rows.append(row(name, f"factor_vae {key}", mine, other, note))
    return rows + [row(name, "factor_vae num_active_dims", [s["num_active_dims"] for s in ours],
                       [int(s["factor_vae.num_active_dims"]) for s in theirs], "disent counts every code")]


def compare(name: str, data, representation, disent, args) -> list[dict]:
    """Every row of one representation, with the seconds each comparison took."""
    started = time.perf_counter()
    arrays = saved_arrays(data, representation, args.points)
    rows = compare_mig(name, arrays, disent) + compare_sap(name, arrays, disent)
    rows += compare_dci(name, arrays, disent, args.dci_trees, min(args.dci_points, args.points), args.dci_own_seeds)
    rows += compare_factor_vae(name, data, representation, disent, args.points, args.seeds)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return rows


# ----------------------------------------------------------------------------- output


def cell(value) -> str:
    """An int, a float to 6 decimals, or ``mean ± sd`` of a list (sample sd) unless its
    values are all equal."""
    if isinstance(value, list):
        if len(set(value)) > 1:
            return f"{statistics.mean(value):.4f} ± {statistics.stdev(value):.4f}"
        value = value[0]
    return str(value) if isinstance(value, int) else f"{value:.6f}"


def standard_errors(ours: list[float], theirs: list[float]) -> str:
    """The difference of the means in standard errors of that difference (sample sds)."""
    if len(ours) < 2:
        return "one seed"
    se = (statistics.variance(ours) / len(ours) + statistics.variance(theirs) / len(theirs)) ** 0.5
    diff = abs(statistics.mean(ours) - statistics.mean(theirs))
    return "identical" if diff == 0 else f"{diff / se:.1f} standard errors" if se else "sd 0, differ"


def table(rows: list[dict]) -> str:
    head = ["representation", "metric", "pyro-vae", "disent", "abs. difference", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["representation"], r["metric"], cell(r["pyro_vae"]), cell(r["disent"]),
                 f"{r['abs_difference']:.1e}", r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    disent = import_disent()
    set_threads(args.threads)
    if disent.stubbed:
        print(f"placeholders for the absent {', '.join(disent.stubbed)} (unused by the metrics compared)")
    started = time.perf_counter()
    rows = [r for name, (data, rep) in representations(args.run).items()
            for r in compare(name, data, rep, disent, args)]
    print(table(rows))
    write_json(args.out, {"disent": disent.version, "points": args.points, "seeds": args.seeds,
                          "dci_trees": args.dci_trees, "dci_points": args.dci_points,
                          "dci_own_seeds": args.dci_own_seeds, "noise": NOISE,
                          "runs": [str(r) for r in args.run], "rows": rows,
                          "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
