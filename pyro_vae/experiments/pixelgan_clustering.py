"""Unsupervised clustering of MNIST by a PixelGAN autoencoder with a categorical prior
(Makhzani & Frey 2017, "PixelGAN Autoencoders", section 3: the style/content split;
published: 5.27% test error). Target: <= 5.27%.

``[model] name = "pixelgan"`` with ``prior = "categorical"`` of ``--clusters`` classes
(the code is the content, the PixelCNN the style), trained by ``[inference] name =
"adversarial_ae"`` on the 50000 MNIST training images binarized anew at every batch.
At every epoch's end (every checkpoint) each cluster (the argmax of the encoder's class
probabilities) takes the majority label of the training images it holds (``--n-label``
of them, a fixed subset; the labels are used for nothing else), and the error is that
of those cluster labels on the 10000 test images. The figures are kept in the run's
checkpoint, so the same command carries a long run on where it stopped
(``--max-minutes`` per call)::

    pyro-vae experiment pixelgan-clustering --max-minutes 60 --epochs 500   # call again to go on
    pyro-vae experiment pixelgan-clustering --epochs 1 --n-train 500 --channels 8 --layers 1 \\
        --per-cluster 0                                                    # seconds

``--adversarial-lr`` is the adversarial phases' Adam rate; ``--late-epoch E`` (default 7)
raises it to ``--late-adversarial-lr`` from epoch E on (``[inference] late_epoch``): the rate
that sharpens a trained encoder's soft codes into one-hot ones collapses a fresh one's.
``--patience P --lr-decays N`` (``[budget]`` entries, so a resumed run may take them)
restart from the best parameters by the validation log p(x|z) at every rate / 10 when it
has not improved for P epochs, N times; the late rate then stays decayed.

Output under ``--out`` (default ``results/pixelgan_clustering``): ``run/``, ``trend.csv``
(rewritten at every epoch's end: epoch, minutes, test and validation error, validation
log p(x|z), the learning-rate decays the epoch trained after), ``summary.json`` (the test
error at the epoch of the lowest validation error, the last epoch's, and the trend) and
``clusters.png`` (``--per-cluster`` samples of every cluster, one row each).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_vae import plots
from pyro_vae.config import Config, ConfigError
from pyro_vae.experiments.common import set_threads, write_csv, write_json
from pyro_vae.experiments.wgan_curves import StepRecorder
from pyro_vae.loop import Callback
from pyro_vae.train import train

NAME = "pixelgan-clustering"
PUBLISHED = 5.27  # % test error, Makhzani & Frey (2017)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("results/pixelgan_clustering"))
    p.add_argument("--clusters", type=int, default=30, help="K, the categorical prior's classes")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--max-minutes", type=float, default=None, help="per call; the same command resumes")
    p.add_argument("--n-train", type=int, default=None, help="a fixed random subset of training images")
    p.add_argument("--n-label", type=int, default=10000, help="training images whose labels name the clusters")
    p.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000])
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--conditioning", choices=["global", "local"], default="global")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--adversarial-lr", type=float, default=2e-4,
                   help="Adam's rate of the discriminator and of the encoder's generator phase")
    p.add_argument("--late-adversarial-lr", type=float, default=1e-3, help="that rate from --late-epoch on")
    p.add_argument("--late-epoch", type=int, default=7,
                   help="the 1-based epoch the late rate starts (0: never; 7 as measured in benchmarks/README.md)")
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without a better validation log p(x|z) before --lr-decays acts, then a stop "
                        "(default: none, every epoch of --epochs is trained)")
    p.add_argument("--lr-decays", type=int, default=0,
                   help="with --patience: restart from the best parameters at every rate / 10, this many times")
    p.add_argument("--per-cluster", type=int, default=4, help="samples drawn per cluster for clusters.png (0: none)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")


def make_config(args) -> Config:
    return Config().with_overrides([
        f"seed={args.seed}", "data.name=mnist", "data.binarize=dynamic", f"data.batch_size={args.batch_size}",
        *([f"data.train_size={args.n_train}"] if args.n_train else []),
        *([f'data.data_dir="{args.data_dir}"'] if args.data_dir else []),
        "model.name=pixelgan", "model.prior=categorical", f"model.num_classes={args.clusters}",
        f"model.hidden={list(args.hidden)}", f"model.channels={args.channels}",
        f"model.layers={args.layers}", f"model.conditioning={args.conditioning}",
        "inference.name=adversarial_ae", f"inference.adversarial_lr={args.adversarial_lr}",
        f"inference.late_adversarial_lr={args.late_adversarial_lr}", f"inference.late_epoch={args.late_epoch}",
        f"budget.epochs={args.epochs}", *_plateaus(args),
        *([f"budget.max_minutes={args.max_minutes}"] if args.max_minutes else []),
        "eval.num_samples=0", "eval.plots=false"])


def _plateaus(args) -> list[str]:
    """The budget entries of ``--patience`` and ``--lr-decays``: a plateau of the validation
    log p(x|z), the algorithm's own figure (the error is the callback's, not the loop's)."""
    if args.patience is None:
        if args.lr_decays:
            raise ConfigError("--lr-decays acts when --patience runs out: give --patience too")
        return ["budget.monitor=none"]
    return ["budget.monitor=valid_log_px_given_z", f"budget.patience={args.patience}",
            f"budget.lr_decays={args.lr_decays}"]


def _epoch_line(e: dict) -> str:
    valid = "-" if e.get("valid_error") is None else f"{e['valid_error']:6.2f}%"
    return (f"epoch {e['epoch']:4d}  {e['seconds'] / 60:7.2f} min  test error {e['test_error']:6.2f}%  "
            f"valid error {valid}  clusters used {e['clusters_used']:3d}  "
            f"valid log p(x|z) {e['valid_log_px_given_z']:.2f}"
            + (f"  after {e['lr_decays']} lr decay{'s' if e['lr_decays'] > 1 else ''}" if e.get("lr_decays") else ""))


@torch.no_grad()
def cluster_error(module, x_label: torch.Tensor, y_label: torch.Tensor, x_test: torch.Tensor,
                  y_test: torch.Tensor, chunk: int = 1000) -> tuple[float, int]:
    """The test error (%) when every cluster takes the majority label of its images among
    ``x_label``; and the number of clusters used."""
    names, used = cluster_names(module, x_label, y_label, chunk)
    return named_error(module, names, x_test, y_test, chunk), used


@torch.no_grad()
def cluster_names(module, x_label: torch.Tensor, y_label: torch.Tensor, chunk: int = 1000) -> tuple[torch.Tensor, int]:
    """Each cluster's label ``(K,)``, the majority label of its images among ``x_label``
    (a cluster no labelled image falls in: the most common label); and the clusters used."""
    c_label = _clusters(module, x_label, chunk)
    counts = torch.zeros(module.code_dim, 10, dtype=torch.long, device=c_label.device)
    counts.index_put_((c_label, y_label.to(c_label.device)), torch.ones_like(c_label), accumulate=True)
    names = counts.argmax(-1)
    names[counts.sum(-1) == 0] = int(torch.bincount(y_label, minlength=10).argmax())
    return names, int((counts.sum(-1) > 0).sum())


@torch.no_grad()
def named_error(module, names: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> float:
    """The error (%) on ``x`` of the cluster labels ``names``."""
    predicted = names[_clusters(module, x, chunk)]
    return float((predicted.cpu() != y.cpu()).double().mean()) * 100


def _clusters(module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([module.cluster(x[s:s + chunk]) for s in range(0, len(x), chunk)])


def trend_rows(epochs: list[dict]) -> list[dict]:
    """``trend.csv``'s rows from the recorder's epochs."""
    return [{"epoch": e["epoch"], "minutes": e["seconds"] / 60, "test_error": e["test_error"],
             "valid_error": e.get("valid_error"), "clusters_used": e["clusters_used"],
             "valid_log_px_given_z": e["valid_log_px_given_z"], "lr_decays": e.get("lr_decays")}
            for e in epochs]


class TrendFile(Callback):
    """Rewrites ``trend.csv`` at every epoch's end (after ``recorder`` has recorded it): a run
    stopped by a signal, a time limit or a session's end leaves it current, not as of the
    last call that finished."""

    def __init__(self, recorder: StepRecorder, path: Path):
        self.recorder, self.path = recorder, path

    def on_epoch_end(self, loop, row: dict) -> None:
        write_csv(trend_rows(self.recorder.epochs), self.path)


def chosen_epoch(trend: list[dict]) -> dict:
    """The epoch of the lowest validation error (the 10000 held-out training images named by
    the same clusters): the test error is reported there, never minimised. Without a
    validation error (no validation split, or epochs recorded before it was), the last."""
    scored = [r for r in trend if r.get("valid_error") is not None]
    return min(scored, key=lambda r: r["valid_error"]) if scored else trend[-1]


def run(args) -> dict:
    set_threads(args.threads)
    out = Path(args.out)
    config = make_config(args)

    def at_checkpoint(loop, row) -> dict:
        data = loop.data
        # a fixed binarization of the labelled training images (the loader's are drawn per batch)
        gen = torch.Generator(device=data.train.device).manual_seed(7)
        x_label = data.train[:args.n_label]
        x_label = torch.bernoulli(x_label, generator=gen)
        names, used = cluster_names(loop.module, x_label, data.train_labels[:args.n_label])
        error = named_error(loop.module, names, data.test, data.test_labels)
        valid = named_error(loop.module, names, data.valid, data.valid_labels) if len(data.valid) else None
        return {"test_error": error, "valid_error": valid, "clusters_used": used,
                "valid_log_px_given_z": row.get("valid_log_px_given_z"), "lr_decays": loop.state.lr_decays}

    recorder = StepRecorder(("log_px_given_z",), at_checkpoint, every=100, describe=_epoch_line)
    exp, _ = train(config, out / "run", progress=not args.no_progress,
                   callbacks=[recorder, TrendFile(recorder, out / "trend.csv")])
    trend = trend_rows(recorder.epochs)
    write_csv(trend, out / "trend.csv")
    best = chosen_epoch(trend)
    summary = {"clusters": args.clusters, "published_error": PUBLISHED, "best": best, "last": trend[-1],
               "epochs": len(trend), "minutes": recorder.seconds / 60}
    write_json(summary, out / "summary.json")
    chosen = "the lowest validation error" if best["valid_error"] is not None else "the last (no validation error)"
    print(f"test error {best['test_error']:.2f}% at epoch {best['epoch']} of {len(trend)}, chosen by {chosen} "
          f"(published {PUBLISHED}%; every epoch: {out / 'trend.csv'})")
    if args.per_cluster:
        classes = torch.arange(args.clusters).repeat_interleave(args.per_cluster)
        images = exp.module.sample(len(classes), classes=classes, generator=torch.Generator().manual_seed(0))
        plots.image_grid(images.cpu().flatten(1), exp.data.image_shape, out / "clusters.png",
                         nrow=args.per_cluster, title="samples per cluster (one row each)")
    return summary


__all__ = ["NAME", "PUBLISHED", "add_arguments", "chosen_epoch", "cluster_error", "cluster_names", "make_config",
           "named_error", "run"]
