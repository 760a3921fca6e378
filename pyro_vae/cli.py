"""``pyro-vae train | evaluate | sample | plot | fetch | experiment``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pyro_vae.checkpoint import CheckpointError
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError
from pyro_vae.errors import EvaluationError

ERRORS = (ConfigError, DataError, CheckpointError, EvaluationError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.command == "train" and (args.nproc or 1) > 1 and "LOCAL_RANK" not in os.environ:
        return launch(argv, args)  # re-run under torchrun, before any heavy import
    from pyro_vae.distributed import WorkerFailure
    from pyro_vae.loop import Interrupted, TrainingDiverged  # heavy imports after argument parsing

    args.argv = argv  # what an interrupted train tells the user to run again
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    where = f"pyro-vae {args.command}" + (f" [rank {os.environ['RANK']}]" if several else "")
    try:
        with contextlib.nullcontext() if several else _sigterm_interrupts():
            return args.func(args) or 0
    except (*ERRORS, TrainingDiverged, WorkerFailure) as e:
        print(f"{where}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: a bug, or the lead's to translate
            raise
        print(f"{where}: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"{where}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C outside the training loop's steps (or a second one)
        print(f"{where}: stopped by SIGINT before it finished: {_AGAIN}", file=sys.stderr)
        return 128 + signal.SIGINT


_AGAIN = "run the same command again (training resumes from its last checkpoint, an evaluation from its saved chunks)"


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (``kill``, a scheduler) raises :class:`~pyro_vae.loop.Interrupted`, as
    Ctrl-C raises a KeyboardInterrupt: the command stops with one line, its atomic writes
    remove their temporary files, and the training loop, which records the signal to stop
    at a step boundary, restores this handler after the first one. Main thread only."""
    from pyro_vae.loop import Interrupted

    def interrupt(signum, frame):
        raise Interrupted("stopped by SIGTERM before it finished", signum, _AGAIN)

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _os_error(e: OSError) -> str:
    """One sentence for a file-system error on a path the user chose (a file where a
    folder should be, a read-only folder, ...): the path, what went wrong, what to do."""
    path = Path(e.filename)
    found = next((p for p in (path, *path.parents) if p.exists()), None)
    if isinstance(e, (FileExistsError, NotADirectoryError)) and found is not None and not found.is_dir():
        return f"{found} is a file where a folder is needed: choose another path"
    if isinstance(e, PermissionError):
        return f"permission denied on {path}: choose a path you may write to, or change its permissions"
    return f"cannot use {path} ({e.strerror or type(e).__name__}): check the path, or choose another"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-vae", description="Deep latent-variable models in Pyro.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an experiment (default: a VAE on the embedded digits)",
                       description="Train the experiment a config declares; re-running on the same "
                                   "--run-dir resumes from its checkpoint.")
    t.add_argument("--config", type=Path, help="experiment TOML file (default: the built-in config)")
    t.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/<model>-<data>-<time>)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config entry, e.g. --set inference.elbo=trace (repeatable)")
    t.add_argument("--data-dir", help="where the data files are (or set PYRO_VAE_DATA_DIR)")
    t.add_argument("--epochs", type=_positive_int, metavar="N", help="shorthand for --set budget.epochs=N")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="train data-parallel in N processes on this machine (re-launches itself "
                        "with torchrun; for several machines call torchrun directly)")
    t.add_argument("--dist-timeout", type=_positive_float, metavar="SECONDS",
                   help="under several processes: how long one waits for the others before the "
                        "run fails (default: $PYRO_VAE_DIST_TIMEOUT or 600)")
    _allow_pickle_option(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log-likelihood and ELBO of a trained run "
                                        "(or --metrics disentanglement)")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", choices=["train", "valid", "test"], default="test")
    e.add_argument("--num-samples", "-k", type=_positive_int, default=5000, metavar="K",
                   help="importance samples per point")
    e.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N points of the split")
    e.add_argument("--seed", type=int, default=0, help="seed of the importance samples (or of the metrics)")
    e.add_argument("--metrics", choices=["likelihood", "disentanglement"], default="likelihood",
                   help="likelihood: the ELBO and importance-sampled log p(x); disentanglement (data with known "
                        "factors, e.g. dsprites): the metrics, traversals and KL per dimension, written into RUN_DIR")
    e.add_argument("--only", nargs="+", metavar="METRIC", help="disentanglement: these metrics only "
                   "(beta_vae factor_vae mig dci sap)")
    e.add_argument("--size", choices=["quick", "full"], default="quick",
                   help="disentanglement: quick (300-2000 points, DCI with 10 trees: minutes) or full "
                        "(disentanglement_lib's settings: an hour or more on a CPU)")
    e.add_argument("--dci-trees", type=_positive_int, metavar="K", help="disentanglement: DCI's boosted trees per factor")
    _allow_pickle_option(e)
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("run_dir", type=Path)
    s.add_argument("-n", "--num-samples", type=_positive_int, default=100, metavar="N")
    s.add_argument("--out", type=_png_file, help="PNG path (default: RUN_DIR/plots/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    _allow_pickle_option(s)
    s.set_defaults(func=cmd_sample)

    pl = sub.add_parser("plot", help="(re)draw a run's plots")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--out", type=_folder, help="folder (default: RUN_DIR/plots)")
    _allow_pickle_option(pl)
    pl.set_defaults(func=cmd_plot)

    f = sub.add_parser("fetch", help="download the standard data files, checking their checksums")
    f.add_argument("names", nargs="*", help="data sets (default: all)")
    f.add_argument("--data-dir", type=Path, default=Path.home() / ".pyro_vae" / "data")
    f.add_argument("--mirror", help="base URL of a mirror laid out like the data folder")
    f.set_defaults(func=cmd_fetch)

    from pyro_vae.experiments import listing  # light: the experiments' modules load when run

    x = sub.add_parser("experiment", help="reproduce a published experiment (figures, tables, JSON under --out)",
                       description="Reproduce a published experiment at the scale a budget allows. Each "
                                   "experiment has its own options: pyro-vae experiment NAME --help.",
                       epilog="experiments:\n" + listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("name", metavar="NAME", choices=list(_experiment_names()),
                   help="one of: " + ", ".join(_experiment_names()))
    x.add_argument("options", nargs=argparse.REMAINDER, help="the experiment's options (NAME --help lists them)")
    x.set_defaults(func=cmd_experiment)
    return p


def _allow_pickle_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--allow-pickle", action="store_true",
                         help="read the run's checkpoint and saved evaluation with Python's full unpickler, "
                              "which executes any code they carry: only for a run directory from a source "
                              "you trust (default: they load as data only, and a file holding anything "
                              "else is refused)")


def _experiment_names() -> list[str]:
    from pyro_vae.experiments import EXPERIMENTS

    return list(EXPERIMENTS)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _png_file(text: str) -> Path:
    """A PNG file to write: a folder or another extension is refused before any work."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give the PNG file to write, e.g. {path / 'samples.png'}")
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text} is not a .png path: the samples are written as a PNG image")
    return path


def _folder(text: str) -> Path:
    """A folder to write into (created if missing): an existing file is refused before any work."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: give a folder for the plots")
    return path


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.model.name}-{config.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def launch(argv: list[str], args) -> int:
    """``train --nproc N ...`` as ``torchrun --standalone --nproc_per_node N -m pyro_vae
    train ...``: N processes on this machine, rendezvous on a free local port. The run
    directory is fixed here so that every process writes (rank 0) and reads the same one.
    """
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    run_dir = args.run_dir
    if run_dir is None:
        try:
            run_dir = _default_run_dir(_config(args))
            rest += ["--run-dir", str(run_dir)]
        except ERRORS as e:
            print(f"pyro-vae train: error: {e}", file=sys.stderr)
            return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={args.nproc}", "-m", "pyro_vae", *rest]
    proc = subprocess.Popen(cmd)
    received = []

    def forward(signum, frame):  # SIGTERM to this process alone would leave torchrun training on
        received.append(signum)
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # torchrun forwards the interrupt to its workers
        received.append(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not received:
        return code
    resume = argv + ([] if args.run_dir is not None else ["--run-dir", str(run_dir)])
    print(f"pyro-vae train: stopped by {signal.Signals(received[0]).name}, every process with it; "
          f"{_kept_on_disk(run_dir)}: resume with `{shlex.join(['pyro-vae', *resume])}`", file=sys.stderr)
    return 128 + received[0]


def _kept_on_disk(run_dir: Path) -> str:
    """What :meth:`~pyro_vae.runs.RunDirectory.kept` says, without reading the checkpoint
    (the launcher imports no torch)."""
    path = run_dir / "checkpoint.pt"
    if path.exists():
        return f"the last good checkpoint is kept at {path}"
    return "no epoch had finished, so there is no checkpoint"


def _config(args) -> Config:
    config = Config.from_toml(args.config) if args.config else Config()
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f'data.data_dir="{args.data_dir}"')
    if args.epochs is not None:
        overrides.append(f"budget.epochs={args.epochs}")
    return config.with_overrides(overrides)


def cmd_train(args) -> None:
    from pyro_vae import distributed
    from pyro_vae.loop import Interrupted
    from pyro_vae.report import summarize, write_plots
    from pyro_vae.train import train

    config = _config(args)
    if distributed.init(args.dist_timeout):  # under torchrun with several processes
        # torchrun ends a failed run with SIGTERM: let atomic writes remove their temp files.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    run_dir = distributed.broadcast_object(args.run_dir or _default_run_dir(config))  # rank 0's clock
    if distributed.is_main():
        print(f"run directory: {run_dir}")
    try:
        exp, state = train(config, run_dir, progress=not args.no_progress, echo=print,
                           allow_pickle=args.allow_pickle)
    except Interrupted as e:
        raise Interrupted(e.where, e.signum, f"resume with `{_resume_command(args, run_dir)}`") from None
    main_rank = distributed.is_main()
    distributed.shutdown(barrier=True)  # what follows is rank 0's alone
    if not main_rank:
        return
    summary = summarize(exp, state, run_dir, config.eval.num_samples)
    if config.eval.plots:
        write_plots(exp, state.history, run_dir / "plots")
    print(json.dumps(summary, indent=2))


def _resume_command(args, run_dir: Path) -> str:
    """The command that was run, with its run directory named (a default one has the
    time in its name, so the same command without it would start a new run)."""
    argv = list(getattr(args, "argv", None) or ["train"])
    if args.run_dir is None:
        argv += ["--run-dir", str(run_dir)]
    return shlex.join(["pyro-vae", *argv])


def cmd_evaluate(args) -> None:
    """Scores chunk by chunk under RUN_DIR/evaluation/, so an interrupted evaluation resumes."""
    import pyro

    from pyro_vae.evaluation import checkpointed_log_likelihood
    from pyro_vae.train import load_run

    exp, state = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    if args.metrics == "disentanglement":
        return _evaluate_disentanglement(args, exp, state)
    x = exp.data.split(args.split)[: args.limit]
    if not len(x):
        raise ConfigError(f"the {args.split} split of {args.run_dir}'s data is empty: evaluate another --split")
    if exp.capabilities.exact_log_prob:  # a flow: its log-likelihood is exact, no importance samples
        pyro.set_rng_seed(args.seed)  # any draws of its figures (dequantization noise): repeatable
        print(json.dumps({"split": args.split, "points": len(x), **exp.inference.evaluate(x), "exact": True},
                         indent=2))
        return
    name = f"{args.split}-{len(x)}points-k{args.num_samples}-seed{args.seed}-epoch{state.epoch}"  # trained on: anew
    progress = args.run_dir / "evaluation" / name
    ll = checkpointed_log_likelihood(exp.module, x, progress, num_samples=args.num_samples, seed=args.seed,
                                     allow_pickle=args.allow_pickle)
    pyro.set_rng_seed(args.seed)  # the ELBO's draws: the same whether the chunks were drawn or read back
    print(json.dumps({"split": args.split, "points": len(x), **exp.inference.evaluate(x),
                      "log_likelihood": ll.mean, "stderr": ll.stderr, "num_samples": args.num_samples},
                     indent=2))


def _evaluate_disentanglement(args, exp, state) -> None:
    """The metric table, traversals and KL per dimension, into the run directory."""
    from pyro_vae.disentanglement_report import write_disentanglement
    from pyro_vae.evaluation.disentanglement import METRICS

    record = write_disentanglement(exp, state, args.run_dir, args.only or tuple(METRICS), size=args.size,
                                   seed=args.seed, dci_trees=args.dci_trees, progress=True)
    print(json.dumps(record, indent=2))


def cmd_sample(args) -> None:
    import pyro

    from pyro_vae import plots
    from pyro_vae.train import load_run

    exp, _ = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    pyro.set_rng_seed(args.seed)
    out = args.out or args.run_dir / "plots" / "samples.png"
    samples = exp.module.sample(args.num_samples)
    if not exp.data.is_image:  # points, e.g. a 2-D flow's
        print(plots.latent_scatter(samples.reshape(len(samples), -1).cpu(), None, out, title="samples", axis="x"))
        return
    print(plots.image_grid(samples.reshape(len(samples), -1).cpu(), exp.data.image_shape, out, title="samples"))


def cmd_plot(args) -> None:
    from pyro_vae.report import write_plots
    from pyro_vae.train import load_run

    exp, state = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    for path in write_plots(exp, _history(args.run_dir, state), args.out or args.run_dir / "plots"):
        print(path)


def _history(run_dir: Path, state) -> list[dict]:
    """The run's log.csv, or when that is gone the copy of the log every checkpoint holds
    (the rows log.csv was written from), with a note that says so."""
    if (run_dir / "log.csv").exists():
        from pyro_vae.train import read_log

        return read_log(run_dir)
    print(f"pyro-vae plot: note: {run_dir / 'log.csv'} is missing: the curves are drawn from the log "
          f"kept in {run_dir / 'checkpoint.pt'}", file=sys.stderr)
    return state.history


def cmd_fetch(args) -> None:
    from pyro_vae.data import fetch

    for path in fetch(args.names or None, args.data_dir, mirror=args.mirror):
        print(path)


def cmd_experiment(args) -> None:
    """The experiment's own parser reads its options; an option of another experiment is
    named as such (a one-line error, exit code 2)."""
    from pyro_vae.experiments import EXPERIMENTS, load, make_parser
    from pyro_vae.loop import Interrupted

    parser = make_parser(args.name)
    options, extra = parser.parse_known_args(args.options)
    if extra:
        flags = [a.split("=", 1)[0] for a in extra if a.startswith("--")]
        for flag in flags:
            owners = [name for name in EXPERIMENTS if name != args.name
                      and any(flag in action.option_strings for action in make_parser(name)._actions)]
            if owners:
                raise ConfigError(f"{flag} does not apply to {args.name} (it is an option of {', '.join(owners)}); "
                                  f"pyro-vae experiment {args.name} --help lists its options")
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        load(args.name).run(options)
    except Interrupted as e:
        raise Interrupted(e.where, e.signum, f"resume with `{_resume_experiment(args, parser)}`") from None


def _resume_experiment(args, parser: argparse.ArgumentParser) -> str:
    """The experiment's command again, with ``--resume`` where it has that option (its
    runs start afresh without it)."""
    argv = ["pyro-vae", "experiment", args.name, *args.options]
    resumes = any("--resume" in action.option_strings for action in parser._actions)
    return shlex.join(argv + (["--resume"] if resumes and "--resume" not in argv else []))


if __name__ == "__main__":
    sys.exit(main())
