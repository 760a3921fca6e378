"""Every benchmark script and every ``pyro-vae experiment`` runs, at a tiny size, so that none
of them rots: each is a subprocess (as a user runs it) on the real data files, whose exit
code and printed lines and files are checked.

The commands are those of the scripts' docstrings and ``benchmarks/README.md``, made tiny
with the scripts' own options (``--n-train``, ``--n-data``, ``--steps``, ...). They run two
at a time (``PYRO_VAE_SMOKE_JOBS``), all of them once for the module: the first test to ask
starts them, the others read their results. The scripts that read a trained run
(``gae_bandwidth.py``, ``gae_parzen_ceiling.py``) take the runs ``gae-nll`` trained.
``disent_agreement.py`` needs ``disent``, never a dependency: without it the test checks its
one-line refusal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyro_vae.data import DATASETS, resolve_data_dir
from pyro_vae.experiments import EXPERIMENTS

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
DATA_SETS = ("binarized_mnist", "mnist", "frey_face")
JOBS = int(os.environ.get("PYRO_VAE_SMOKE_JOBS", "2"))


def _data_dir() -> Path | None:
    """The first data directory holding every file of the real data sets the scripts read."""
    needed = [f for name in DATA_SETS for f in DATASETS[name].files]
    for directory in resolve_data_dir():
        if all(any((directory / v).is_file() for v in f.variants) for f in needed):
            return directory
    return None


DATA = _data_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason=f"the data files of {DATA_SETS} were not found")


@dataclass
class Job:
    """One command: ``args`` after the interpreter; ``after`` names a job whose files it reads."""

    args: list[str]
    after: str | None = None


def script(name: str, *args: str) -> list[str]:
    return [str(BENCHMARKS / name), *args]


def experiment(name: str, *args: str) -> list[str]:
    return ["-m", "pyro_vae", "experiment", name, *args]


def jobs(out: Path) -> dict[str, Job]:
    """The tiny commands, by name (``out/<name>`` is each one's output folder)."""
    runs = out / "gae-nll"  # the GAE and VAE runs gae_bandwidth.py and gae_parzen_ceiling.py read
    return {
        # pyro-vae experiment NAME
        "aevb-fig2": Job(experiment("aevb-fig2", "--out", str(out / "aevb-fig2"), "--datasets", "frey_face",
                                    "--z-dims", "2", "--max-samples", "300", "--num-points", "2",
                                    "--eval-points", "50")),
        "aevb-fig3": Job(experiment("aevb-fig3", "--out", str(out / "aevb-fig3"), "--n-train", "200",
                                    "--mcem-max-train", "200", "--max-samples", "200", "--num-points", "2",
                                    "--eval-points", "5", "--hmc-samples", "12", "--hmc-warmup", "5",
                                    "--is-samples", "10")),
        "mnist-nll": Job(experiment("mnist-nll", "--out", str(out / "mnist-nll"), "--epochs", "1", "--n-train", "200",
                                    "--n-valid", "100", "--eval-samples", "2", "--eval-points", "20",
                                    "--no-progress")),
        "frey-face": Job(experiment("frey-face", "--out", str(out / "frey-face"), "--z-dims", "2", "--epochs", "2",
                                    "--eval-elbo-samples", "2", "--no-progress")),
        "gae-nll": Job(experiment("gae-nll", "--out", str(runs), "--epochs", "1", "--layers", "1", "--n-train", "500",
                                  "--n-valid", "100", "--eval-samples", "2", "--eval-points", "10",
                                  "--diagnostic-points", "20")),
        "gae-parzen": Job(experiment("gae-parzen", "--out", str(out / "gae-parzen"), "--epochs", "1", "--layers", "1",
                                     "--n-train", "500", "--n-valid", "100", "--num-samples", "100",
                                     "--eval-points", "50")),
        "flow-mnist": Job(experiment("flow-mnist", "--out", str(out / "flow-mnist"), "--models", "nice", "made",
                                     "--epochs", "1", "--n-train", "200", "--n-valid", "100", "--n-test", "100",
                                     "--hidden", "800")),
        # python benchmarks/SCRIPT
        "flow_step_time.py": Job(script("flow_step_time.py", "--steps", "2", "--points", "200", "--repeats", "1",
                                        "--hidden", "800", "--flows", "1")),
        "denormal_step_time.py": Job(script("denormal_step_time.py", "--run", str(out / "flow-mnist" / "made"),
                                            "--steps", "2", "--repeats", "1"), after="flow-mnist"),
        "iaf_guide.py": Job(script("iaf_guide.py", "--epochs", "1", "--n-train", "300", "--n-valid", "100",
                                   "--eval-points", "20", "--eval-samples", "10", "--hidden", "64",
                                   "--out", str(out / "iaf_guide"))),
        "wgan-curves": Job(experiment("wgan-curves", "--out", str(out / "wgan-curves"), "--epochs", "1", "--n-train",
                                      "200", "--hidden", "32", "--critic-hidden", "32", "--score-samples", "0",
                                      "--no-progress")),
        "wgan-overfit": Job(experiment("wgan-overfit", "--out", str(out / "wgan-overfit"), "--epochs", "2",
                                       "--n-train", "200", "--n-valid", "100", "--hidden", "32", "--critic-hidden",
                                       "32", "--no-progress")),
        "pixelgan-clustering": Job(experiment("pixelgan-clustering", "--out", str(out / "pixelgan"), "--epochs", "1",
                                              "--n-train", "200", "--n-label", "200", "--clusters", "10",
                                              "--channels", "4", "--layers", "1", "--hidden", "32",
                                              "--per-cluster", "1", "--adversarial-lr", "1e-3",
                                              "--late-epoch", "1", "--no-progress")),
        "sample-quality": Job(experiment("sample-quality", "--out", str(out / "sample-quality"), "--runs",
                                         f"gan={out / 'wgan-curves' / 'run'}", f"pixelgan={out / 'pixelgan' / 'run'}",
                                         "--num-samples", "100", "--eval-points", "100", "--quick-classifier",
                                         "--cache-dir", str(out / "cache")), after="pixelgan-clustering"),
        # python benchmarks/SCRIPT
        "wgan_step_time.py": Job(script("wgan_step_time.py", "--steps", "2", "--repeats", "1", "--hidden", "32",
                                        "--critic-hidden", "32")),
        "step_time.py": Job(script("step_time.py", "--steps", "2", "--repeats", "1", "--threads", "1",
                                   "--elbos", "meanfield")),
        "gae_step_time.py": Job(script("gae_step_time.py", "--layers", "1", "--steps", "2", "--warmup", "1",
                                       "--naive-exemplars", "50", "--exact-steps", "1", "--n-train", "500",
                                       "--hidden-size", "50", "--out", str(out / "gae_step_time"))),
        "inference_step_time.py": Job(script("inference_step_time.py", "--n-data", "500", "--steps", "1",
                                             "--warmup", "0", "--train-steps", "2", "--draws", "10",
                                             "--hmc-warmup", "5", "--per-point-points", "0",
                                             "--out", str(out / "inference_step_time"))),
        "distributed_throughput.py": Job(script("distributed_throughput.py", "--workload", "gae-digits",
                                                "--setups", "1x1", "2x1", "--seconds", "0.2", "--reps", "5",
                                                "--out", str(out / "distributed_throughput.json"))),
        "importance_sampling.py": Job(script("importance_sampling.py", "--images", "2", "--samples", "50",
                                             "--exemplars", "500", "--repeats", "1", "--threads", "1",
                                             "--peak-size", "512")),
        "gae_refresh.py": Job(script("gae_refresh.py", "--periods", "1", "2", "--epochs", "1", "--n-train", "300",
                                     "--hidden-size", "50", "--points", "20", "--out", str(out / "gae_refresh"))),
        "hier-nll": Job(experiment("hier-nll", "--out", str(out / "hier-nll"), "--models", "hvae", "vlae", "--epochs",
                                   "1", "--n-train", "200", "--hidden-size", "32", "--z-dim", "4", "--vlae-z-dims", "2",
                                   "2", "2", "--eval-samples", "5", "--eval-points", "20", "--warmup-epochs", "0")),
        "hier-nll iwae": Job(experiment("hier-nll", "--out", str(out / "hier-nll"), "--models", "gae2", "--inference",
                                        "name=iwae", "num_particles=2", "--epochs", "1", "--n-train", "200",
                                        "--hidden-size", "32", "--z-dim", "4", "--eval-samples", "5", "--eval-points",
                                        "20", "--warmup-epochs", "0"), after="hier-nll"),
        "vlae-layers": Job(experiment("vlae-layers", "--out", str(out / "vlae-layers"), "--epochs", "1", "--n-train",
                                      "200", "--n-valid", "100", "--test-points", "50", "--probe-train", "100")),
        "hier_step_time.py": Job(script("hier_step_time.py", "--steps", "2", "--repeats", "1", "--hidden-size", "32",
                                        "--z-dim", "4", "--vlae-z-dims", "2", "2", "2", "--n-train", "200")),
        "matrix_step_time.py": Job(script("matrix_step_time.py", "--n-train", "300", "--steps", "2", "--warmup", "1",
                                          "--hidden-size", "32", "--out", str(out / "matrix_step_time"))),
        "gae_iwae_nll.py": Job(script("gae_iwae_nll.py", "--epochs", "1", "--n-train", "300", "--n-valid", "100",
                                      "--eval-samples", "5", "--eval-points", "10", "--out", str(out / "gae_iwae_nll"))),
        "disentanglement.py": Job(script("disentanglement.py", "--methods", "vae", "dip2", "--seeds", "0",
                                         "--epochs", "1", "--train-size", "64", "--only", "mig", "sap",
                                         "--out", str(out / "disentanglement"))),
        "disent_agreement.py": Job(script("disent_agreement.py", "--points", "300", "--seeds", "0", "--dci-points",
                                          "200", "--dci-trees", "2", "--out", str(out / "disent_agreement.json"))),
        "gae_bandwidth.py": Job(script("gae_bandwidth.py", str(runs / "vae-L1"), "--scales", "1", "2",
                                       "--points", "10", "--samples", "5"), after="gae-nll"),
        "gae_parzen_ceiling.py": Job(script("gae_parzen_ceiling.py", "--runs", str(runs), "--layers", "1",
                                            "--num-samples", "100", "--draws", "2", "--eval-points", "50",
                                            "--threads", "1"), after="gae-nll"),
    }


@dataclass
class Done:
    code: int
    out: str
    err: str
    seconds: float


def _run(args: list[str], cwd: Path, wait: Future | None) -> Done:
    if wait is not None:
        wait.result()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYRO_VAE_DATA_DIR": str(DATA), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    return Done(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every job started, two at a time (those that read another's files after it)."""
    out = tmp_path_factory.mktemp("smoke")
    todo = jobs(out)
    # The jobs others wait for first, the waiting ones last: a waiting job holds a worker.
    order = sorted(todo, key=lambda n: (todo[n].after is not None, n not in {j.after for j in todo.values()}))
    futures: dict[str, Future] = {}
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        for name in order:
            futures[name] = pool.submit(_run, todo[name].args, out, futures.get(todo[name].after))
    return out, {name: f.result() for name, f in futures.items()}


def result(smoke, name: str) -> tuple[Path, Done]:
    out, done = smoke[0], smoke[1][name]
    assert done.code == 0, f"{name} failed (exit {done.code}):\n{done.err[-3000:]}"
    return out, done


def test_every_script_and_experiment_has_a_smoke_command():
    names = set(jobs(Path("out")))
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - {"common.py"}
    assert scripts <= names and set(EXPERIMENTS) <= names


def test_aevb_fig2(smoke):
    out, done = result(smoke, "aevb-fig2")
    folder = out / "aevb-fig2"
    assert {"aevb_fig2.csv", "aevb_fig2.png", "aevb_fig2.json"} <= {p.name for p in folder.iterdir()}
    summary = json.loads(done.out[done.out.index("{"):])
    assert [r["stopped"] for r in summary["runs"]] == ["samples", "samples"]
    assert summary["comparison"][0]["common_samples"] == 300


def test_aevb_fig3(smoke):
    out, done = result(smoke, "aevb-fig3")
    summary = json.loads((out / "aevb-fig3" / "aevb_fig3.json").read_text())
    assert [r["algorithm"] for r in summary["runs"]] == ["aevb", "wake_sleep", "mcem"]
    assert "aevb_minus_mcem_test" in summary["comparison"][0]
    assert (out / "aevb-fig3" / "aevb_fig3.png").exists() and "aevb-fig3: 3 runs" in done.out


def test_mnist_nll(smoke):
    out, done = result(smoke, "mnist-nll")
    assert "test NLL" in done.out and "only a subset was evaluated" in done.out
    folder = out / "mnist-nll"
    assert {"run", "curve.csv", "curve.png", "samples.png", "summary.json"} <= {p.name for p in folder.iterdir()}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["eval_points"] == 20 and summary["epochs"] == 1 and summary["config"]["data"]["train_size"] == 200


def test_frey_face(smoke):
    out, done = result(smoke, "frey-face")
    assert "| N_z | test ELBO (nats/face) |" in done.out and "| 2 |" in done.out
    assert {"run", "curve.csv", "curve.png", "samples.png", "manifold.png"} <= {
        p.name for p in (out / "frey-face" / "nz2").iterdir()}


def test_gae_nll(smoke):
    out, done = result(smoke, "gae-nll")
    assert "| hidden layers | VAE | GAE | GAE - VAE |" in done.out and "(paired)" in done.out
    assert "GAE L=1 estimator diagnostics" in done.out and "neighbour_mass" in done.out
    rows = json.loads((out / "gae-nll" / "summary.json").read_text())["rows"]
    assert [(r["model"], r["layers"]) for r in rows] == [("gae", 1), ("vae", 1)]
    assert all(r["eval_s"] > 0 for r in rows)  # summed over the saved chunks


def test_gae_parzen(smoke):
    out, done = result(smoke, "gae-parzen")
    assert "| GAE | 1 |" in done.out and "MNIST training images as the samples" in done.out
    assert (out / "gae-parzen" / "gae-L1" / "samples.png").exists()


def test_step_time(smoke):
    _, done = result(smoke, "step_time.py")
    assert "| threads | ELBO | package ms/step |" in done.out and "| 1 | meanfield |" in done.out


def test_gae_step_time(smoke):
    out, done = result(smoke, "gae_step_time.py")
    assert "gae amortized (x VAE)" in done.out and "exact ms (x VAE)" in done.out
    (row,) = json.loads((out / "gae_step_time" / "summary.json").read_text())["rows"]
    assert row["n"] == 500 and row["rebuild_every_steps"] == {"gae": 10, "gae-shared": 10}  # two epochs


def test_inference_step_time(smoke):
    out, done = result(smoke, "inference_step_time.py")
    saved = json.loads((out / "inference_step_time" / "inference_step_time.json").read_text())
    assert len(saved["step_ms"]["fig3: N_z=3, 100 hidden"]) == 10 and "batched" in saved["e_step"]


def test_distributed_throughput(smoke):
    out, done = result(smoke, "distributed_throughput.py")
    rows = json.loads((out / "distributed_throughput.json").read_text())["rows"]
    assert [(r["procs"], r["threads"]) for r in rows] == [(1, 1), (2, 1)]
    assert "predicted speed-up" in done.out and rows[1]["cache_gather_ms_per_step"] > 0


def test_gae_refresh(smoke):
    out, done = result(smoke, "gae_refresh.py")
    assert "epoch 1 period 2:" in done.out
    rows = json.loads((out / "gae_refresh" / "rows.json").read_text())["rows"]
    assert [r["period"] for r in rows] == [1, 2] and all(0 <= r["mass"] <= 1 for r in rows)


def test_gae_bandwidth(smoke):
    _, done = result(smoke, "gae_bandwidth.py")
    assert "| N(0, I) (the VAE) |" in done.out and "| exemplars, scale x 2 |" in done.out


def test_gae_parzen_ceiling(smoke):
    out, done = result(smoke, "gae_parzen_ceiling.py")
    rows = json.loads((out / "gae-nll" / "ceiling.json").read_text())
    assert [r["samples"] for r in rows][:3] == ["generation", "z at the mode", "z averaged out"]
    assert "| 1 | generation |" in done.out


def test_flow_mnist(smoke):
    out, done = result(smoke, "flow-mnist")
    assert "| model | epochs (stopped) | test log-likelihood (nats) | bits/dim | paper | train images |" in done.out
    rows = json.loads((out / "flow-mnist" / "summary.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["nice", "made"] and rows[0]["paper"] == 1980.50
    assert all(r["test_points"] == 100 and r["epochs"] == 1 for r in rows)
    assert (out / "flow-mnist" / "nice" / "checkpoint.pt").exists()  # a run directory, resumable


def test_flow_step_time(smoke):
    _, done = result(smoke, "flow_step_time.py")
    assert "| batch norm | implementation | CPU ms / training step | x plain |" in done.out
    assert "| yes | package |" in done.out and "| no | plain |" in done.out


def test_denormal_step_time(smoke):
    _, done = result(smoke, "denormal_step_time.py")
    assert "run " in done.out and "optimizer moments denormal: 0 of " in done.out  # one epoch leaves none
    assert "| flushed (the loop) |" in done.out and "| kept (torch's default) |" in done.out


def test_iaf_guide(smoke):
    out, done = result(smoke, "iaf_guide.py")
    rows = json.loads((out / "iaf_guide" / "summary.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["diagonal", "iaf", "maf-prior", "iaf+maf-prior"]
    assert "| iaf | " in done.out and all(r["gap"] > -1 for r in rows)  # log p >= ELBO up to the estimates' noise
    assert rows[0]["nll_minus_diagonal"] == 0 and rows[0]["paired_stderr"] == 0  # the reference against itself
    for r in rows[1:]:  # paired over the same images: the difference of the NLLs, a tighter error than theirs
        assert abs(r["nll_minus_diagonal"] - (r["test_nll"] - rows[0]["test_nll"])) < 1e-3
        assert 0 < r["paired_stderr"]
    assert "| diagonal | " in done.out and "| +0.00 ± 0.00 |" in done.out


def test_the_adversarial_experiments(smoke):
    out, done = result(smoke, "wgan-curves")
    assert {"curve.png", "steps.csv", "summary.json"} <= {p.name for p in (out / "wgan-curves").iterdir()}
    assert "epoch    1" in done.out
    out, done = result(smoke, "wgan-overfit")
    summary = json.loads((out / "wgan-overfit" / "summary.json").read_text())
    assert set(summary) == {"wgan_gp", "wgan"} and (out / "wgan-overfit" / "overfit.png").exists()
    out, done = result(smoke, "pixelgan-clustering")
    assert "epoch    1" in done.out and "valid error" in done.out and (out / "pixelgan" / "clusters.png").exists()
    assert "chosen by the lowest validation error" in done.out
    best = json.loads((out / "pixelgan" / "summary.json").read_text())["best"]
    assert 0 <= best["valid_error"] <= 100 and 0 <= best["test_error"] <= 100
    config = (out / "pixelgan" / "run" / "config.toml").read_text()
    assert "\nadversarial_lr = 0.001" in config and "\nlate_epoch = 1" in config
    out, done = result(smoke, "sample-quality")
    assert "| MNIST training images (reference) |" in done.out and "| pixelgan (pixelgan, adversarial_ae) |" in done.out


def test_wgan_step_time(smoke):
    _, done = result(smoke, "wgan_step_time.py")
    assert "| generator step (n_critic = 5) | package ms | reference ms | ratio |" in done.out


def test_the_hierarchical_experiments(smoke):
    out, done = result(smoke, "hier-nll")
    assert "| model | network | inference | test NLL | − best | k | n | epochs | best valid ELBO |" in done.out
    assert "| hvae | mlp | svi |" in done.out and "| vlae | mlp | svi |" in done.out
    assert json.loads((out / "hier-nll" / "hvae-mlp" / "result.json").read_text())["eval_s"] > 0
    _, done = result(smoke, "hier-nll iwae")  # its own run beside the SVI runs, in the same table
    assert "| gae2 | mlp | iwae K=2 |" in done.out and "| hvae | mlp | svi |" in done.out
    # three NLLs ± their errors; the best's "− best" is 0, the two others' paired ± errors
    assert done.out.count(" | 0 (best) | ") == 1 and done.out.count(" ± ") == 3 + 2
    assert (out / "hier-nll" / "gae2-mlp-iwae-2" / "result.json").exists()
    out, done = result(smoke, "vlae-layers")
    assert "| model | epochs | valid ELBO | layer | KL | active | probe acc. |" in done.out
    _, done = result(smoke, "hier_step_time.py")
    assert "| vae |" in done.out and "| gae2 |" in done.out and "| vlae |" in done.out


def test_matrix_step_time(smoke):
    out, done = result(smoke, "matrix_step_time.py")
    table = json.loads((out / "matrix_step_time" / "matrix_step_time.json").read_text())["table"]
    assert set(table["gae"]) >= {"svi", "iwae K=5", "vimco K=5", "rws K=5", "wake_sleep", "em"} and "em" not in table["vae"]
    assert "| iwae K=5 |" in done.out


def test_gae_iwae_nll(smoke):
    out, done = result(smoke, "gae_iwae_nll.py")
    rows = json.loads((out / "gae_iwae_nll" / "summary.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["svi", "iwae5", "iwae50"]
    assert "| 1 | iwae50 |" in done.out and "best IWAE-trained GAE" in done.out
def test_disentanglement(smoke):
    out, done = result(smoke, "disentanglement.py")
    assert "| method | seeds | steps | train min | mig | sap |" in done.out and "| dip2 | 1 | 1 |" in done.out
    rows = json.loads((out / "disentanglement" / "summary.json").read_text())["rows"]
    assert [(r["method"], r["steps"]) for r in rows] == [("vae", 1), ("dip2", 1)]
    assert (out / "disentanglement" / "dip2-s0" / "plots" / "traversals.png").exists()


def test_disent_agreement(smoke):
    """Against disent where this interpreter has it (a benchmark venv); else its one-line
    refusal, since disent is never a dependency."""
    if importlib.util.find_spec("disent") is None:
        done = smoke[1]["disent_agreement.py"]
        assert done.code == 1 and done.err.strip().startswith("disent_agreement.py: disent is not importable")
        assert len(done.err.strip().splitlines()) == 1, done.err
        return
    out, done = result(smoke, "disent_agreement.py")
    rows = json.loads((out / "disent_agreement.json").read_text())["rows"]
    exact = [r for r in rows if r["metric"] in ("mig", "sap") or r["metric"].startswith("dci")]
    assert len(exact) == 18 and max(r["abs_difference"] for r in exact) < 1e-9
    assert "| pixel-projection | factor_vae eval_accuracy |" in done.out


def test_the_smoke_runs_are_quick(smoke):
    """Each a few seconds of work past the interpreter's start; printed for the record."""
    times = {name: round(done.seconds, 1) for name, done in smoke[1].items()}
    print(json.dumps(times, indent=1))
    assert max(times.values()) < 300, times


def test_importance_sampling(smoke):
    """Its table and the package / plain ratio lines (the numbers are not checked: a smoke
    run times a few milliseconds of work)."""
    _, done = result(smoke, "importance_sampling.py")
    assert "GEMM peak" in done.out and "load average" in done.out
    for model in ("VAE", "GAE"):
        assert f"| {model} | package |" in done.out and f"| {model} | plain |" in done.out
        assert f"{model} ratio package / plain: " in done.out
    assert "VAE ratio package / plain, x·l − softplus: " in done.out
