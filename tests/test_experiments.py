"""The AEVB figure experiments at tiny budgets: they run every algorithm the figure
compares, write PNG + CSV + JSON, stop on their budgets, and the CLI drives them."""

import math

import pytest

from inference_models import one_thread  # noqa: F401
from pyro_vae.cli import main
from pyro_vae.experiments import EXPERIMENTS, aevb_fig2, aevb_fig3, run_experiment
from pyro_vae.experiments.common import checkpoints, read_csv, run_curve

QUIET = {"log": lambda line: None, "threads": None}


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fig2_runs_both_algorithms_on_both_data_sets(tmp_path):
    summary = aevb_fig2.run(out=tmp_path, max_minutes=2, max_samples=300, z_dims=[2, 3], num_points=2,
                            eval_points=50, **QUIET)
    rows = read_csv(tmp_path / "aevb_fig2.csv")
    runs = {(r["dataset"], int(r["z_dim"]), r["algorithm"]) for r in rows}
    assert runs == {("mnist", 3, "aevb"), ("mnist", 3, "wake_sleep"),
                    ("frey_face", 2, "aevb"), ("frey_face", 2, "wake_sleep")}
    assert {r["samples"] for r in rows} == {100.0, 300.0}
    assert all(math.isfinite(r["train_bound"]) and math.isfinite(r["test_bound"]) for r in rows)
    assert _is_png(tmp_path / "aevb_fig2.png") and (tmp_path / "aevb_fig2.json").exists()
    assert [c["stopped"] for c in summary["runs"]] == ["samples"] * 4
    for entry in summary["comparison"]:
        assert entry["common_samples"] == 300 and math.isfinite(entry["aevb_minus_wake_sleep_test"])


def test_fig3_runs_mcem_only_where_feasible(tmp_path):
    summary = aevb_fig3.run(out=tmp_path, max_minutes=2, max_samples=200, n_train=[200, 400], mcem_max_train=200,
                            algorithms=["aevb", "mcem"], num_points=2, eval_points=5, hmc_samples=12,
                            hmc_warmup=5, is_samples=10, **QUIET)
    assert [(r["n_train"], r["algorithm"]) for r in summary["runs"]] == [(200, "aevb"), (200, "mcem"), (400, "aevb")]
    rows = read_csv(tmp_path / "aevb_fig3.csv")
    for key in ("train_ll", "test_ll", "train_ll_is", "test_ll_is", "train_bound", "test_bound"):
        assert all(math.isfinite(r[key]) for r in rows), key
    # The appendix-D estimate is of log p(x), so it lies above the ELBO.
    assert sum(r["test_ll"] > r["test_bound"] for r in rows) >= 0.8 * len(rows)
    assert _is_png(tmp_path / "aevb_fig3.png")
    assert "aevb_minus_mcem_test" in summary["comparison"][0]
    assert "aevb_minus_mcem_test" not in summary["comparison"][1]


def test_the_time_budget_stops_a_curve():
    config = aevb_fig2.config_for("frey_face", 2, "aevb")
    curve = run_curve(config, aevb_fig2._bounds, {"algorithm": "aevb"}, max_samples=10**6, max_seconds=0.0,
                      num_points=20, eval_points=20, log=lambda line: None)
    assert curve.stopped == "time" and len(curve.rows) == 1 and curve.rows[0]["samples"] == 100


def test_checkpoints_are_log_spaced_multiples_of_the_batch():
    marks = checkpoints(100, 10**6, 9)
    assert marks[0] == 100 and marks[-1] == 10**6 and all(m % 100 == 0 for m in marks)
    ratios = [b / a for a, b in zip(marks[2:], marks[3:])]  # past the rounding to whole batches
    assert max(ratios) / min(ratios) < 1.1 and len(marks) == 9
    assert checkpoints(100, 50, 5) == [100]


def test_cli_runs_an_experiment_and_refuses_options_of_the_other(tmp_path, capsys):
    code = main(["experiment", "aevb-fig2", "--out", str(tmp_path), "--max-samples", "100", "--z-dims", "2",
                 "--datasets", "frey_face", "--num-points", "1", "--eval-points", "20"])
    assert code == 0 and _is_png(tmp_path / "aevb_fig2.png") and (tmp_path / "aevb_fig2.csv").exists()
    assert main(["experiment", "aevb-fig2", "--n-train", "1000"]) == 2
    assert "--n-train does not apply to aevb-fig2" in capsys.readouterr().err
    assert main(["experiment", "aevb-fig2", "--out", str(tmp_path), "--z-dims", "7"]) == 2


def test_unknown_experiment_and_options():
    assert set(EXPERIMENTS) == {"aevb-fig2", "aevb-fig3"}
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("aevb-fig4")
    with pytest.raises(ValueError, match="unknown algorithm"):
        aevb_fig3.run(algorithms=["svi"], **QUIET)
