"""``pyro-vae train | evaluate | sample | plot | fetch | experiment``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyro_vae.checkpoint import CheckpointError
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError

ERRORS = (ConfigError, DataError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.command == "train" and (args.nproc or 1) > 1 and "LOCAL_RANK" not in os.environ:
        return launch(argv, args)  # re-run under torchrun, before any heavy import
    from pyro_vae.distributed import WorkerFailure
    from pyro_vae.loop import TrainingDiverged  # heavy imports after argument parsing

    try:
        return args.func(args) or 0
    except (*ERRORS, TrainingDiverged, WorkerFailure) as e:
        where = f" [rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"pyro-vae {args.command}{where}: error: {e}", file=sys.stderr)
        return 2


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
    t.add_argument("--epochs", type=int, help="shorthand for --set budget.epochs=N")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="train data-parallel in N processes on this machine (re-launches itself "
                        "with torchrun; for several machines call torchrun directly)")
    t.add_argument("--dist-timeout", type=_positive_float, metavar="SECONDS",
                   help="under several processes: how long one waits for the others before the "
                        "run fails (default: $PYRO_VAE_DIST_TIMEOUT or 600)")
    _allow_pickle_option(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log-likelihood and ELBO of a trained run")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", choices=["train", "valid", "test"], default="test")
    e.add_argument("--num-samples", "-k", type=int, default=5000, help="importance samples per point")
    e.add_argument("--limit", type=int, help="evaluate only the first N points of the split")
    e.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    _allow_pickle_option(e)
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("run_dir", type=Path)
    s.add_argument("-n", "--num-samples", type=int, default=100)
    s.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/plots/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    _allow_pickle_option(s)
    s.set_defaults(func=cmd_sample)

    pl = sub.add_parser("plot", help="(re)draw a run's plots")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--out", type=Path, help="folder (default: RUN_DIR/plots)")
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
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    if args.run_dir is None:
        try:
            rest += ["--run-dir", str(_default_run_dir(_config(args)))]
        except ERRORS as e:
            print(f"pyro-vae train: error: {e}", file=sys.stderr)
            return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={args.nproc}", "-m", "pyro_vae", *rest]
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # torchrun forwards the interrupt to its workers
        proc.send_signal(signal.SIGINT)
        return proc.wait()


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
    from pyro_vae.report import summarize, write_plots
    from pyro_vae.train import train

    config = _config(args)
    if distributed.init(args.dist_timeout):  # under torchrun with several processes
        # torchrun ends a failed run with SIGTERM: let atomic writes remove their temp files.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    run_dir = distributed.broadcast_object(args.run_dir or _default_run_dir(config))  # rank 0's clock
    if distributed.is_main():
        print(f"run directory: {run_dir}")
    exp, state = train(config, run_dir, progress=not args.no_progress, echo=print, allow_pickle=args.allow_pickle)
    main_rank = distributed.is_main()
    distributed.shutdown(barrier=True)  # what follows is rank 0's alone
    if not main_rank:
        return
    summary = summarize(exp, state, run_dir, config.eval.num_samples)
    if config.eval.plots:
        write_plots(exp, state.history, run_dir / "plots")
    print(json.dumps(summary, indent=2))


def cmd_evaluate(args) -> None:
    """Scores chunk by chunk under RUN_DIR/evaluation/, so an interrupted evaluation resumes."""
    from pyro_vae.evaluation import checkpointed_log_likelihood
    from pyro_vae.train import load_run

    exp, state = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    x = exp.data.split(args.split)[: args.limit]
    if exp.capabilities.exact_log_prob:  # a flow: its log-likelihood is exact, no importance samples
        print(json.dumps({"split": args.split, "points": len(x), **exp.inference.evaluate(x), "exact": True},
                         indent=2))
        return
    name = f"{args.split}-{len(x)}points-k{args.num_samples}-seed{args.seed}-epoch{state.epoch}"  # trained on: anew
    progress = args.run_dir / "evaluation" / name
    ll = checkpointed_log_likelihood(exp.module, x, progress, num_samples=args.num_samples, seed=args.seed,
                                     allow_pickle=args.allow_pickle)
    print(json.dumps({"split": args.split, "points": len(x), **exp.inference.evaluate(x),
                      "log_likelihood": ll.mean, "stderr": ll.stderr, "num_samples": args.num_samples},
                     indent=2))


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
    from pyro_vae.train import load_run, read_log

    exp, _ = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    for path in write_plots(exp, read_log(args.run_dir), args.out or args.run_dir / "plots"):
        print(path)


def cmd_fetch(args) -> None:
    from pyro_vae.data import fetch

    for path in fetch(args.names or None, args.data_dir, mirror=args.mirror):
        print(path)


def cmd_experiment(args) -> None:
    """The experiment's own parser reads its options; an option of another experiment is
    named as such (a one-line error, exit code 2)."""
    from pyro_vae.experiments import EXPERIMENTS, load, make_parser

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
    load(args.name).run(options)


if __name__ == "__main__":
    sys.exit(main())
