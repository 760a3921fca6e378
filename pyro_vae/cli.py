"""``pyro-vae train | evaluate | sample | plot | fetch``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pyro_vae.checkpoint import CheckpointError
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError

ERRORS = (ConfigError, DataError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pyro_vae.train import TrainingDiverged  # heavy imports after argument parsing

    try:
        return args.func(args) or 0
    except (*ERRORS, TrainingDiverged) as e:
        print(f"pyro-vae {args.command}: error: {e}", file=sys.stderr)
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
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log-likelihood and ELBO of a trained run")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", choices=["train", "valid", "test"], default="test")
    e.add_argument("--num-samples", "-k", type=int, default=5000, help="importance samples per point")
    e.add_argument("--limit", type=int, help="evaluate only the first N points of the split")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("run_dir", type=Path)
    s.add_argument("-n", "--num-samples", type=int, default=100)
    s.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/plots/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)

    pl = sub.add_parser("plot", help="(re)draw a run's plots")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--out", type=Path, help="folder (default: RUN_DIR/plots)")
    pl.set_defaults(func=cmd_plot)

    f = sub.add_parser("fetch", help="download the standard data files, checking their checksums")
    f.add_argument("names", nargs="*", help="data sets (default: all)")
    f.add_argument("--data-dir", type=Path, default=Path.home() / ".pyro_vae" / "data")
    f.add_argument("--mirror", help="base URL of a mirror laid out like the data folder")
    f.set_defaults(func=cmd_fetch)
    return p


def _config(args) -> Config:
    config = Config.from_toml(args.config) if args.config else Config()
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f'data.data_dir="{args.data_dir}"')
    if args.epochs is not None:
        overrides.append(f"budget.epochs={args.epochs}")
    return config.with_overrides(overrides)


def cmd_train(args) -> None:
    from pyro_vae.report import summarize, write_plots
    from pyro_vae.train import train

    config = _config(args)
    run_dir = args.run_dir or Path("runs") / f"{config.model.name}-{config.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"run directory: {run_dir}")
    exp, state = train(config, run_dir, progress=not args.no_progress)
    summary = summarize(exp, state, run_dir, config.eval.num_samples)
    if config.eval.plots:
        write_plots(exp, state.history, run_dir / "plots")
    print(json.dumps(summary, indent=2))


def cmd_evaluate(args) -> None:
    from pyro_vae.evaluation import log_likelihood
    from pyro_vae.train import load_run

    exp, _ = load_run(args.run_dir)
    x = exp.data.split(args.split)[: args.limit]
    ll = log_likelihood(exp.module, x, num_samples=args.num_samples)
    print(json.dumps({"split": args.split, "points": len(x), "elbo": exp.inference.evaluate(x),
                      "log_likelihood": ll.mean, "stderr": ll.stderr, "num_samples": args.num_samples},
                     indent=2))


def cmd_sample(args) -> None:
    import pyro

    from pyro_vae import plots
    from pyro_vae.train import load_run

    exp, _ = load_run(args.run_dir)
    pyro.set_rng_seed(args.seed)
    out = args.out or args.run_dir / "plots" / "samples.png"
    print(plots.image_grid(exp.module.sample(args.num_samples), exp.data.image_shape, out, title="samples"))


def cmd_plot(args) -> None:
    from pyro_vae.report import write_plots
    from pyro_vae.train import load_run, read_log

    exp, _ = load_run(args.run_dir)
    for path in write_plots(exp, read_log(args.run_dir), args.out or args.run_dir / "plots"):
        print(path)


def cmd_fetch(args) -> None:
    from pyro_vae.data import fetch

    for path in fetch(args.names or None, args.data_dir, mirror=args.mirror):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
