"""Training steps of a saved run with denormal floats flushed to zero (as the package's loop
trains) against the same steps without (plain PyTorch's default), from the same state.

A long CPU run's Adam moments of parameters whose gradients have vanished decay
geometrically into the denormal range (float32 magnitudes below 1.2e-38), where x86
arithmetic is many times slower; :func:`pyro_vae.loop.flushing_denormals` reads and writes
them as zero while the loop trains. This script loads a run directory's checkpoint (its
parameters and its inference state, Adam's moments included), counts the denormal values in
the optimizers' state, and times ``--steps`` training steps of the run's own inference on its
own training batches, from that same state each block, with flushing off and on (blocks
alternate, the order reversed every other repeat; medians of ``--repeats``), in the process's
CPU time and in wall time.

    python benchmarks/denormal_step_time.py --run /work/runs/nice-epoch6-denormal --steps 10 --repeats 3
    python benchmarks/denormal_step_time.py --run results/flow_mnist/nice --steps 2 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from common import add_threads, load_average, machine, set_threads
from pyro_vae.checkpoint import load_parameters
from pyro_vae.config import Config
from pyro_vae.loop import flushing_denormals
from pyro_vae.runs import RunDirectory
from pyro_vae.train import build

MOMENTS = ("exp_avg", "exp_avg_sq", "square_avg", "momentum_buffer")
TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32, 1.18e-38


def denormal_count(state) -> tuple[int, int]:
    """(denormal, all) values of the optimizer moments anywhere in a nested state dict."""
    if isinstance(state, dict):
        counts = [denormal_count(v) if k not in MOMENTS else _count(v) for k, v in state.items()]
    elif isinstance(state, (list, tuple)):
        counts = [denormal_count(v) for v in state]
    else:
        return 0, 0
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _count(t) -> tuple[int, int]:
    if not torch.is_tensor(t) or not t.is_floating_point():
        return 0, 0
    return int(((t != 0) & (t.abs() < TINY)).sum()), t.numel()


class SavedRun:
    """A run directory's experiment, reset to its checkpoint before every block."""

    def __init__(self, run_dir: Path):
        self.exp = build(Config.from_toml(run_dir / "config.toml"), device="cpu")
        self.ckpt = RunDirectory(run_dir, self.exp.config, "cpu").load()
        if self.ckpt is None:
            raise SystemExit(f"{run_dir} has no checkpoint: train the run first")
        self.num_data = len(self.exp.data.train)

    def reset(self) -> None:
        # deep copies: a step writes the optimizer's moments in place, and every block starts from the saved ones
        load_parameters(self.exp.module, copy.deepcopy(self.ckpt["module"]), "the benchmark's run")
        self.exp.inference.load_state_dict(copy.deepcopy(self.ckpt["inference"]))

    def batches(self, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batch = self.exp.config.data.batch_size
        index = torch.arange(steps * batch) % self.num_data
        return [(self.exp.data.train[i], i) for i in index.split(batch)]

    def time_steps(self, batches, flush: bool) -> tuple[float, float]:
        """(wall, CPU) ms per step from the saved state, flushing denormals or not."""
        self.reset()
        torch.set_flush_denormal(False)
        with flushing_denormals() if flush else contextlib.nullcontext():
            wall, cpu = time.perf_counter(), time.process_time()
            for x, index in batches:
                self.exp.inference.step(x, index, self.num_data)
            return 1e3 * (time.perf_counter() - wall) / len(batches), 1e3 * (time.process_time() - cpu) / len(batches)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a run directory with a checkpoint")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per block (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="blocks per mode; medians (default 3)")
    add_threads(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    run = SavedRun(args.run)
    denormal, total = denormal_count(run.ckpt["inference"])
    print(f"denormal step time: {machine()}; threads {args.threads}; load average {load_average()}")
    print(f"run {args.run}: {run.exp.config.model.name} by {run.exp.config.inference.name}, epoch "
          f"{run.ckpt['state']['epoch']}; optimizer moments denormal: {denormal} of {total} "
          f"({100 * denormal / max(total, 1):.1f}%); {args.steps} steps a block, {args.repeats} repeats", flush=True)
    batches = run.batches(args.steps)
    run.time_steps(batches[:1], True)  # warm-up: the allocator, Pyro's first-step validation
    times = {False: [], True: []}
    for repeat in range(args.repeats):
        for flush in ((False, True) if repeat % 2 == 0 else (True, False)):
            times[flush].append(run.time_steps(batches, flush))
            print(f"  flush={str(flush).lower():<5} {times[flush][-1][1]:9.1f} CPU ms/step "
                  f"({times[flush][-1][0]:.1f} wall)", flush=True)
    med = {f: tuple(statistics.median(t[i] for t in v) for i in (0, 1)) for f, v in times.items()}
    print()
    print("| denormals | CPU ms / step | x flushed | wall ms / step | x flushed |")
    print("|---|---|---|---|---|")
    for flush, name in ((True, "flushed (the loop)"), (False, "kept (torch's default)")):
        print(f"| {name} | {med[flush][1]:.1f} | {med[flush][1] / med[True][1]:.2f} | {med[flush][0]:.1f} | "
              f"{med[flush][0] / med[True][0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
