"""The AEVB figure experiments at tiny budgets: they run every algorithm the figure
compares, write PNG + CSV + JSON, stop on their budgets, resume, and the CLI drives them."""

import json
import math

import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.errors import ConfigError
from pyro_vae.experiments import EXPERIMENTS, aevb_fig2, aevb_fig3, run_experiment
from pyro_vae.experiments.common import checkpoints, read_csv, run_curve

QUIET = {"log": lambda line: None, "threads": None}
TIMING = ("train_seconds", "eval_seconds")


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fig2_runs_both_algorithms_on_both_data_sets(tmp_path):
    summary = aevb_fig2.reproduce(out=tmp_path, max_minutes=20, max_samples=300, z_dims=[2, 3], num_points=2,
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
    # each curve trained in a run directory of its own, without validation
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "frey_face-nz2-aevb", "frey_face-nz2-wake_sleep", "mnist-nz3-aevb", "mnist-nz3-wake_sleep"]
    assert 'monitor = "none"' in (tmp_path / "runs" / "mnist-nz3-aevb" / "config.toml").read_text()


def test_fig3_runs_mcem_only_where_feasible(tmp_path):
    summary = aevb_fig3.reproduce(out=tmp_path, max_minutes=2, max_samples=200, n_train=[200, 400],
                                  mcem_max_train=200, algorithms=["aevb", "mcem"], num_points=2, eval_points=5,
                                  hmc_samples=12, hmc_warmup=5, is_samples=10, **QUIET)
    assert [(r["n_train"], r["algorithm"]) for r in summary["runs"]] == [(200, "aevb"), (200, "mcem"), (400, "aevb")]
    rows = read_csv(tmp_path / "aevb_fig3.csv")
    for key in ("train_ll", "test_ll", "train_ll_is", "test_ll_is", "train_bound", "test_bound"):
        assert all(math.isfinite(r[key]) for r in rows), key
    # The appendix-D estimate is of log p(x), so it lies above the ELBO.
    assert sum(r["test_ll"] > r["test_bound"] for r in rows) >= 0.8 * len(rows)
    assert _is_png(tmp_path / "aevb_fig3.png")
    assert "aevb_minus_mcem_test" in summary["comparison"][0]
    assert "aevb_minus_mcem_test" not in summary["comparison"][1]
    # N_train is [data] train_size: the fixed random subset of the old experiments
    assert "train_size = 200" in (tmp_path / "runs" / "n200-mcem" / "config.toml").read_text()


def test_fig3_draws_the_gae_rows_on_the_same_plot(tmp_path):
    """The GAE trained by AEVB (its own objective) and by MCEM (its data index summed out),
    next to the VAE's curves; its log-likelihoods on the collapsed story."""
    summary = aevb_fig3.reproduce(out=tmp_path, max_minutes=2, max_samples=200, n_train=[200], models=["vae", "gae"],
                                  algorithms=["aevb", "mcem"], num_points=2, eval_points=5, hmc_samples=12,
                                  hmc_warmup=5, is_samples=10, **QUIET)
    assert [r["algorithm"] for r in summary["runs"]] == ["aevb", "mcem", "gae_aevb", "gae_mcem"]
    rows = read_csv(tmp_path / "aevb_fig3.csv")
    assert {r["algorithm"] for r in rows} == {"aevb", "mcem", "gae_aevb", "gae_mcem"}
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_ll", "test_ll", "test_ll_is", "test_bound"))
    assert "aevb_minus_gae_mcem_test" in summary["comparison"][0]
    assert 'name = "gae"' in (tmp_path / "runs" / "n200-gae-mcem" / "config.toml").read_text()
    assert _is_png(tmp_path / "aevb_fig3.png")


def test_the_time_budget_stops_a_curve(tmp_path):
    config = aevb_fig2.config_for("frey_face", 2, "aevb")
    curve = run_curve(config, aevb_fig2._bounds, {"algorithm": "aevb"}, max_samples=10**6, max_seconds=0.0,
                      run_dir=tmp_path / "curve", num_points=20, eval_points=20, log=lambda line: None)
    assert curve.stopped == "time" and len(curve.rows) == 1 and curve.rows[0]["samples"] == 100


class Interrupted(Exception):
    pass


def test_an_interrupted_curve_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path):
    """Frey Face: 15 steps an epoch; marks at 100, 300, 800, 1900 and 5000 samples (steps
    1, 3, 8, 19, 50). Interrupted at its fourth evaluation (in the second epoch, after the
    first epoch's checkpoint), the rerun continues from that checkpoint."""
    config = aevb_fig2.config_for("frey_face", 2, "aevb")
    kw = dict(max_samples=5000, max_seconds=600, num_points=5, eval_points=50, log=lambda line: None)
    whole = run_curve(config, aevb_fig2._bounds, {"algorithm": "aevb"}, run_dir=tmp_path / "whole", **kw)
    assert [r["samples"] for r in whole.rows] == [100, 300, 800, 1900, 5000] and whole.stopped == "samples"

    calls = []

    def interrupting(*args):
        calls.append(1)
        if len(calls) == 4:
            raise Interrupted
        return aevb_fig2._bounds(*args)

    with pytest.raises(Interrupted):
        run_curve(config, interrupting, {"algorithm": "aevb"}, run_dir=tmp_path / "cut", **kw)
    resumed = run_curve(config, aevb_fig2._bounds, {"algorithm": "aevb"}, run_dir=tmp_path / "cut", **kw)

    def figures(rows):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert figures(resumed.rows) == figures(whole.rows)
    assert (resumed.stopped, resumed.steps) == ("samples", 50) == (whole.stopped, whole.steps)
    # a finished curve is read back as it is, and refused under other settings
    again = run_curve(config, aevb_fig2._bounds, {"algorithm": "aevb"}, run_dir=tmp_path / "cut", **kw)
    assert again.rows == resumed.rows and again.steps == 50
    with pytest.raises(ConfigError, match="num_points 5 there, 6 now"):
        run_curve(config, aevb_fig2._bounds, {"algorithm": "aevb"}, run_dir=tmp_path / "cut",
                  **{**kw, "num_points": 6})


def test_a_figure_reruns_with_resume_and_starts_afresh_without(tmp_path):
    kw = dict(out=tmp_path, max_minutes=2, max_samples=200, datasets=["frey_face"], z_dims=[2],
              algorithms=["aevb"], num_points=2, eval_points=20, **QUIET)
    first = aevb_fig2.reproduce(**kw)
    checkpoint = tmp_path / "runs" / "frey_face-nz2-aevb" / "checkpoint.pt"
    mtime = checkpoint.stat().st_mtime_ns
    resumed = aevb_fig2.reproduce(**kw, resume=True)
    assert checkpoint.stat().st_mtime_ns == mtime  # read back, not trained again
    assert resumed["runs"][0]["test_bound"] == first["runs"][0]["test_bound"]
    aevb_fig2.reproduce(**kw)
    assert checkpoint.stat().st_mtime_ns != mtime


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


def test_every_experiment_declares_its_options(capsys):
    for name in EXPERIMENTS:
        with pytest.raises(SystemExit) as e:
            main(["experiment", name, "--help"])
        assert e.value.code == 0
        assert f"usage: pyro-vae experiment {name}" in capsys.readouterr().out


def test_unknown_experiment_and_options():
    assert set(EXPERIMENTS) == {"aevb-fig2", "aevb-fig3", "mnist-nll", "frey-face", "gae-nll", "gae-parzen",
                                "flow-mnist", "vlae-layers", "hier-nll", "wgan-curves", "wgan-overfit",
                                "pixelgan-clustering", "sample-quality"}
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("aevb-fig4")
    with pytest.raises(ValueError, match="unknown option"):
        run_experiment("aevb-fig2", n_train=[1000])
    with pytest.raises(ValueError, match="unknown algorithm"):
        aevb_fig3.reproduce(algorithms=["svi"], **QUIET)


def test_sample_quality_scores_a_random_subset_of_the_test_images_not_the_first_rows():
    """MNIST's test files are not shuffled (blocks of 1000 rows differ by tens of nats), so
    the log-likelihood column must not read a prefix."""
    from types import SimpleNamespace

    import torch

    from pyro_vae.experiments.sample_quality import model_log_likelihood

    test = torch.arange(10000.0).unsqueeze(-1)  # row i holds i: the subset's mean tells where it came from
    exp = SimpleNamespace(capabilities=SimpleNamespace(exact_log_prob=True), data=SimpleNamespace(test=test),
                          inference=SimpleNamespace(evaluate=lambda x: {"log_likelihood": float(x.mean())}))
    mean, kind = model_log_likelihood(exp, 1000, k=10)
    assert kind == "exact" and abs(mean - 4999.5) < 300  # the first 1000 rows would give 499.5


def test_pixelgan_clustering_reports_the_test_error_of_the_epoch_chosen_by_validation():
    from pyro_vae.experiments.pixelgan_clustering import chosen_epoch

    trend = [{"epoch": 1, "test_error": 9.0, "valid_error": None},  # recorded before the validation error was
             {"epoch": 2, "test_error": 7.0, "valid_error": 8.5},
             {"epoch": 3, "test_error": 8.0, "valid_error": 7.5},
             {"epoch": 4, "test_error": 6.0, "valid_error": 9.0}]
    assert chosen_epoch(trend)["epoch"] == 3  # not epoch 4, the lowest test error
    assert chosen_epoch([dict(r, valid_error=None) for r in trend])["epoch"] == 4  # none: the last


def test_pixelgan_clustering_decays_its_rates_on_a_plateau_of_log_px_only_when_asked():
    import argparse

    from pyro_vae.experiments import pixelgan_clustering as pc

    p = argparse.ArgumentParser()
    pc.add_arguments(p)
    budget = pc.make_config(p.parse_args([])).budget
    assert (budget.monitor, budget.patience, budget.lr_decays) == ("none", None, 0)  # every epoch trained
    budget = pc.make_config(p.parse_args(["--patience", "3", "--lr-decays", "2"])).budget
    assert (budget.monitor, budget.patience, budget.lr_decays) == ("valid_log_px_given_z", 3, 2)
    with pytest.raises(ConfigError, match="--lr-decays acts when --patience runs out"):
        pc.make_config(p.parse_args(["--lr-decays", "1"]))
    epoch = {"epoch": 38, "seconds": 60.0, "test_error": 6.0, "valid_error": 5.5, "clusters_used": 25,
             "valid_log_px_given_z": -84.85}
    assert "decay" not in pc._epoch_line(epoch) and "decay" not in pc._epoch_line({**epoch, "lr_decays": 0})
    assert pc._epoch_line({**epoch, "lr_decays": 1}).endswith("-84.85  after 1 lr decay")
    assert pc._epoch_line({**epoch, "lr_decays": 2}).endswith("after 2 lr decays")


def test_pixelgan_clustering_keeps_trend_csv_current_at_every_epoch_not_only_when_the_call_ends(tmp_path):
    """A long run's call is often ended by a signal or a time limit; its trend.csv must then
    hold every epoch recorded, as the checkpoint does."""
    from types import SimpleNamespace

    from pyro_vae.experiments import pixelgan_clustering as pc
    from pyro_vae.experiments.common import read_csv

    recorder = SimpleNamespace(epochs=[])
    writer = pc.TrendFile(recorder, tmp_path / "trend.csv")
    for epoch, error in ((50, 5.55), (51, 5.53)):
        recorder.epochs.append({"epoch": epoch, "seconds": 60.0 * epoch, "test_error": error, "valid_error": 5.1,
                                "clusters_used": 25, "valid_log_px_given_z": -84.6, "lr_decays": 2})
        writer.on_epoch_end(None, {"epoch": epoch})
        rows = read_csv(tmp_path / "trend.csv")
        assert [r["epoch"] for r in rows] == list(range(50, epoch + 1)) and rows[-1]["test_error"] == error
    assert rows[-1]["minutes"] == 51.0 and not list(tmp_path.glob(".trend.csv.*"))  # no temporary file left


def test_hier_nll_gives_both_gaes_the_one_level_gaes_recipe_and_every_model_the_decays():
    """The table compares the two-level GAE with the one-level GAE's 85.47, which had the
    shared bandwidth and two learning-rate decays; the VAEs keep their own priors."""
    import argparse

    from pyro_vae.experiments import hier_nll

    p = argparse.ArgumentParser()
    hier_nll.add_arguments(p)
    args = p.parse_args([])
    for model in ("gae", "gae2"):
        config = hier_nll.make_config(args, model)
        assert (config.model.bandwidth, config.model.lambda1, config.budget.lr_decays) == ("shared", 0.05, 2)
    assert hier_nll.make_config(args, "hvae").budget.lr_decays == 2
    assert not hasattr(hier_nll.make_config(args, "hvae").model, "bandwidth")
    args = p.parse_args(["--gae", "bandwidth=posterior", "--lr-decays", "0"])
    config = hier_nll.make_config(args, "gae2")
    assert (config.model.bandwidth, config.budget.lr_decays) == ("posterior", 0)
    assert (hier_nll.run_name(args, "gae2"), hier_nll.inference_label(config)) == ("gae2-mlp", "svi")


def test_flow_mnist_keeps_the_papers_constant_rate_unless_asked_for_decays():
    """The papers' protocols train at one rate; ``--lr-decays`` (a budget entry, so a resumed
    run may take it) restarts from the best parameters at lr / 10 on a plateau."""
    import argparse

    from pyro_vae.experiments import flow_mnist

    p = argparse.ArgumentParser()
    flow_mnist.add_arguments(p)
    assert flow_mnist.make_config(p.parse_args([]), "nice").budget.lr_decays == 0
    budget = flow_mnist.make_config(p.parse_args(["--lr-decays", "2", "--patience", "3"]), "maf5").budget
    assert (budget.lr_decays, budget.patience, budget.lr_decay_factor) == (2, 3, 0.1)
    row = {"model": "nice", "epochs": 60, "stopped": "time", "test_log_likelihood": 2000.0,
           "test_bits_per_dim": 4.32, "paper": 1980.5, "paper_confirmed": True, "train_points": 50000}
    assert "| nice | 60 (time) | 2000.00 |" in flow_mnist.table([row])  # a row from before the column
    assert "| nice | 60 (time, 1 lr decay) |" in flow_mnist.table([{**row, "lr_decays": 1}])
    assert "| nice | 60 (time, 2 lr decays) |" in flow_mnist.table([{**row, "lr_decays": 2}])


def test_hier_nll_pairs_every_run_with_the_best_over_the_same_images(tmp_path):
    """The table's "− best" column: the NLL difference to the best run scored on the same
    points with the same k, ± the paired standard error, from the saved per-image scores."""
    from pyro_vae import checkpoint
    from pyro_vae.experiments import hier_nll

    def scored(name, per_point, data="x4", points=4, k=10, epochs=3):
        run = tmp_path / name
        if per_point is not None:
            where = hier_nll.scores_dir(run, points, k, epochs)
            where.mkdir(parents=True)
            (where / "settings.json").write_text(json.dumps({"num_samples": k, "data_sha1": data}))
            half = len(per_point) // 2  # two chunks, read back in order
            for start, part in ((0, per_point[:half]), (half, per_point[half:])):
                checkpoint.save({"per_point": torch.tensor(part), "seconds": 1.0}, where / f"chunk-{start:07d}.pt")
        nll = -sum(per_point) / len(per_point) if per_point else 99.0
        return run, {"test_nll": nll, "test_points": points, "eval_samples": k, "epochs": epochs}

    runs = dict([scored("a", [-1.0, -2.0, -3.0, -4.0]), scored("b", [-2.0, -2.0, -4.0, -4.0]),
                 scored("c", [-1.0, -1.0], data="x2", points=2), scored("d", None),
                 scored("e", [-0.5, -0.5, -0.5, -0.5], data="other 4 points")])
    vs_best = {d.name: v for d, v in hier_nll.paired_to_best(runs).items()}
    assert vs_best == {"a": "0 (best)", "b": "+0.50 ± 0.29", "c": "-", "d": "-", "e": "-"}


def test_hier_nll_trains_by_the_inference_it_is_given_in_runs_of_their_own():
    import argparse

    from pyro_vae.experiments import hier_nll

    p = argparse.ArgumentParser()
    hier_nll.add_arguments(p)
    args = p.parse_args(["--inference", "name=iwae", "num_particles=5"])
    config = hier_nll.make_config(args, "gae2")
    assert (config.inference.name, config.inference.num_particles, config.model.bandwidth) == ("iwae", 5, "shared")
    assert (hier_nll.run_name(args, "gae2"), hier_nll.inference_label(config)) == ("gae2-mlp-iwae-5", "iwae K=5")


def test_a_run_stopped_by_its_time_budget_is_carried_on_not_scored(tmp_path):
    """Scoring at k = 5000 costs hours: only a run that stopped for good is scored."""
    import argparse

    from pyro_vae.experiments import hier_nll
    from pyro_vae.runs import read_log

    p = argparse.ArgumentParser()
    hier_nll.add_arguments(p)
    tiny = ["--models", "hvae", "--n-train", "200", "--hidden-size", "16", "--z-dim", "2", "--eval-samples", "3",
            "--eval-points", "10", "--warmup-epochs", "0", "--out", str(tmp_path)]
    row = hier_nll.run_one(p.parse_args(tiny + ["--epochs", "5", "--max-minutes", "1e-5"]), "hvae")
    run_dir = tmp_path / "hvae-mlp"
    assert row["epochs"] == 1 and "unscored" in row and "test_nll" not in row
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()
    first_epoch_s = row["train_s"]
    row = hier_nll.run_one(p.parse_args(tiny + ["--epochs", "2", "--resume"]), "hvae")
    assert row["epochs"] == 2 and "test_nll" in row and (run_dir / "result.json").exists()
    # the scored row reports both epochs' training time, not only the resumed call's
    seconds = [r["seconds"] for r in read_log(run_dir)]
    assert len(seconds) == 2 and row["train_s"] == sum(seconds) > first_epoch_s
