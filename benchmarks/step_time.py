"""Milliseconds per training step: the package's training loop against plain PyTorch.

The package side is ``pyro_vae.train.train`` itself, the whole loop a user runs: the
minibatch loader, the SVI step (Pyro traces of model and guide, the ELBO, backward, the
optimizer), the per-step NaN check and logging, and the progress bar (drawn, to
/dev/null). Its time is the ``seconds`` the loop records per epoch, which time the
epoch's training steps (not the end-of-epoch validation and checkpoint). Each package
block is one ``train`` call of two epochs: the first warms up (JIT compilation,
allocator, caches) and is not counted, the second is. An epoch is ``--steps`` batches:
the training split is cut to a fixed random subset of ``steps * 100`` images (and the
validation split, which is not timed, to 1000) by the config's ``[data] train_size`` and
``valid_size``; the loop that runs is the package's own, unchanged.

The reference is a plain-PyTorch VAE of the same architecture and objective:
784-500-500-50 encoder and decoder, tanh, Bernoulli decoder (logits), diagonal Gaussian
posterior, the analytic KL (SGVB estimator B), the loss scaled by N / batch as the
package's minibatch ELBO is, batch 100, Adam lr 1e-3, on the same batches of the same
loader (static binarized MNIST, the same seed and epochs), logging ``loss.item()`` every
step. It runs twice per repeat: with the optimizer the package builds
(``make_optimizer``: fused Adam), so that the ratio isolates the package's own
overhead, and with ``torch.optim.Adam(params, lr=1e-3)`` as a user would write it.

Blocks alternate package / reference (order reversed every other repeat) and the
medians over ``--repeats`` are reported, for every ELBO variant and thread count, all in
one run: on a busy machine the absolute figures drift, the interleaved ratios much less.

    python benchmarks/step_time.py                     # all variants, threads 1 and 2
    python benchmarks/step_time.py --repeats 5 --threads 1 --elbos auto   # the default path
    python benchmarks/step_time.py --steps 2 --repeats 1 --threads 1 --elbos meanfield   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn
from torch.nn import functional as F

from common import add_data_dir, load_average, machine, spread
from pyro_vae.config import Config
from pyro_vae.data import load_dataset
from pyro_vae.inference.optim import make_optimizer
from pyro_vae.train import train

ELBOS = ("auto", "meanfield", "jit_meanfield", "trace", "jit_trace")  # auto: the default path
X_DIM, HIDDEN, Z_DIM, BATCH, LR, SEED = 784, 500, 50, 100, 1e-3, 0


#: The validation split, not timed, cut to this many images.
VALID = 1000


def package_config(elbo: str, epochs: int, data_dir: str | None, steps: int) -> Config:
    return Config.from_dict({
        "seed": SEED,
        "data": {"name": "binarized_mnist", "data_dir": data_dir, "binarize": "none", "batch_size": BATCH,
                 "train_size": steps * BATCH, "valid_size": VALID},
        "model": {"name": "vae", "z_dim": Z_DIM, "hidden": [HIDDEN, HIDDEN], "activation": "tanh",
                  "likelihood": "bernoulli"},
        "inference": {"name": "svi", "elbo": elbo, "num_particles": 1},
        "optim": {"name": "adam", "lr": LR},
        "budget": {"epochs": epochs},
        "eval": {"num_samples": 0, "plots": False},
    })


class ReferenceVAE(nn.Module):
    """The same VAE in plain PyTorch: ``loss(x)`` is −ELBO (estimator B) * N / batch (``x``
    flattened: the package's data keep their event shape)."""

    def __init__(self, num_data: int):
        super().__init__()
        self.num_data = num_data
        self.encoder = nn.Sequential(nn.Linear(X_DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh())
        self.loc, self.log_var = nn.Linear(HIDDEN, Z_DIM), nn.Linear(HIDDEN, Z_DIM)
        self.decoder = nn.Sequential(nn.Linear(Z_DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                                     nn.Linear(HIDDEN, X_DIM))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        h = self.encoder(x)
        loc, log_var = self.loc(h), self.log_var(h)
        z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
        nll = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + log_var.exp() - 1.0 - log_var).sum()
        return (nll + kl) * (self.num_data / len(x))


class Reference:
    """A plain training loop over the package's loader; ``run`` times ``epochs`` of it."""

    def __init__(self, data, optimizer: str):
        self.data, self.num_data = data, len(data.train)
        self.vae = ReferenceVAE(self.num_data)
        params = self.vae.parameters()
        self.optimizer = (make_optimizer("adam", params, LR) if optimizer == "package"
                          else torch.optim.Adam(params, lr=LR))

    def batches(self, epoch: int):
        return self.data.loader("train", BATCH, shuffle=True, seed=SEED, epoch=epoch, drop_last=True)

    def step(self, x: torch.Tensor) -> float:
        loss = self.vae.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return -loss.item() / self.num_data

    def warm_up(self, steps: int = 20) -> None:
        for i, (x, _) in enumerate(self.batches(0)):
            if i == steps:
                break
            self.step(x)

    def run(self, epoch: int) -> tuple[float, int]:
        """Seconds and steps for the batches of ``epoch`` (those of the package's timed epoch)."""
        total, steps, started = 0.0, 0, time.perf_counter()
        for x, _ in self.batches(epoch):
            total += self.step(x)
            steps += 1
        seconds = time.perf_counter() - started
        if not total == total:  # NaN: the timing would be of a broken run
            raise FloatingPointError("the reference ELBO is NaN")
        return seconds, steps


def package_block(elbo: str, data, data_dir: str | None) -> tuple[float, int]:
    """Seconds and steps of the second epoch of a two-epoch ``train`` on the subsets of
    ``data`` (what the config's ``train_size`` and ``valid_size`` load)."""
    config = package_config(elbo, 2, data_dir, len(data.train) // BATCH)
    with tempfile.TemporaryDirectory(prefix="step_time-") as run_dir, \
            open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        exp, state = train(config, run_dir, progress=True)
    if not torch.equal(exp.data.train, data.train):
        raise RuntimeError("the package trained on other images than the reference's")
    first, timed = state.history
    steps = timed["step"] - first["step"]
    if steps != len(data.train) // BATCH:
        raise RuntimeError(f"train ran {steps} steps an epoch, not {len(data.train) // BATCH}")
    return timed["seconds"], steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200,
                   help="timed steps per block: the epoch length (at most 500, all of the data; default 200)")
    p.add_argument("--repeats", type=int, default=3, help="blocks per variant; medians are reported (default 3)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    p.add_argument("--elbos", nargs="+", choices=ELBOS, default=list(ELBOS), help="ELBO variants (default all)")
    add_data_dir(p)
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or min(args.threads) < 1:
        p.error("--steps, --repeats and --threads must be positive")

    steps = min(args.steps, 500)  # 500 batches: all 50000 training images
    data = load_dataset("binarized_mnist", args.data_dir, train_size=steps * BATCH, valid_size=VALID)
    print(f"pyro-vae step time: {machine()}")
    print(f"binarized MNIST, 784-500-500-50 tanh, batch {BATCH}, Adam lr {LR}; {steps} timed steps per block, "
          f"{args.repeats} repeats, medians; load average at start: {load_average()}", flush=True)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        refs = {"same": Reference(data, "package"), "default": Reference(data, "default")}
        for ref in refs.values():
            ref.warm_up()
        for elbo in args.elbos:
            times = {"package": [], "same": [], "default": []}
            blocks = [("package", lambda: package_block(elbo, data, args.data_dir))]
            blocks += [(name, lambda r=ref: r.run(1)) for name, ref in refs.items()]
            for repeat in range(args.repeats):
                for name, block in (blocks if repeat % 2 == 0 else blocks[::-1]):
                    seconds, steps = block()
                    times[name].append(1e3 * seconds / steps)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append((threads, elbo, med, times))
            print(f"  threads={threads} {elbo:<14} package {med['package']:7.2f}  reference {med['same']:7.2f} "
                  f"(default Adam {med['default']:7.2f}) ms/step; ratio {med['package'] / med['same']:.3f}  "
                  f"[package {spread(times['package'])}, reference {spread(times['same'])}]", flush=True)
    print(f"load average at end: {load_average()}")
    print()
    print("| threads | ELBO | package ms/step | reference ms/step | ratio | reference, torch default Adam | ratio |")
    print("|---|---|---|---|---|---|---|")
    for threads, elbo, med, _ in rows:
        print(f"| {threads} | {elbo} | {med['package']:.2f} | {med['same']:.2f} | "
              f"{med['package'] / med['same']:.3f} | {med['default']:.2f} | {med['package'] / med['default']:.3f} |")
    print()
    print("ratio = package / reference with the same (fused) Adam: the package's own overhead; "
          "target <= 1.05. The last column compares with torch.optim.Adam's default implementation.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
