"""Data-parallel training throughput: 1 process against 2, and what the all-reduce costs.

    python benchmarks/distributed_throughput.py [--workload digits mnist mnist-b1000]
                                                 [--seconds 8] [--repeats 2] [--out FILE]
    python benchmarks/distributed_throughput.py --report results/distributed_throughput.json
    python benchmarks/distributed_throughput.py --workload digits --setups 1x1 2x1 --seconds 0.2 --reps 5 \\
        --out DIR/throughput.json                                     # smoke test

For each workload it times the training loop's own pieces (the sharded loader, the
inference step with the gradient all-reduce hook of :mod:`pyro_vae.distributed`) in
fresh processes on 127.0.0.1 with gloo, at the same *global* batch:

* ``1 proc x 1 thread``  -- the baseline;
* ``1 proc x 2 threads`` -- the same machine's two cores given to one process;
* ``2 procs x 1 thread`` -- data-parallel, each process half of every batch.

Each row reports examples/second (global batch x steps / wall time), the step time,
the time per step inside the all-reduce (waits for the other process included) and
inside the whole gradient hook (copies into one buffer, all-reduce, NaN check), and, measured apart, one all-reduce of a buffer the
size of the model's gradient. The 1-process rows also time one step at per-process
batches of 1, B/2 and B: the part of a step that does not shrink with the batch
(Python, Pyro's tracing, kernel launches) against the part that does (arithmetic),
which is what decides the scaling on GPUs (see docs/distributed.md). A last table puts
them together: the 2-process step that two free cores would take, t_1(B/2) + the
isolated all-reduce + the hook's copies, against the measured one.

Workloads: ``digits`` (the embedded 8x8 digits, 64-200-2 VAE, batch 100, the default
config) and ``mnist`` (synthetic binary 28x28 data, the AEVB MNIST architecture
784-500-20 with batch 100: the throughput does not depend on the pixel values), and
``mnist-b1000``, the same with a global batch of 1000 (ten times the arithmetic per
gradient exchanged), and ``gae-digits``, the GAE on the digits (its prior over all
1437 training points), whose processes also gather their cache rows every step (timed
apart: ``cache_gather_ms_per_step``; the cache is the GAE's training objective's).
``--setups`` picks some of the three setups (``PxT``: P processes of T threads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import load_average, write_json

WORKLOADS = {
    "digits": ["model.hidden=[200]", "model.z_dim=2", "data.batch_size=100", "inference.elbo=meanfield"],
    "mnist": ["model.hidden=[500]", "model.z_dim=20", "data.batch_size=100", "inference.elbo=meanfield"],
    "mnist-b1000": ["model.hidden=[500]", "model.z_dim=20", "data.batch_size=1000", "inference.elbo=meanfield"],
    # elbo = "auto": the GAE trains with its own objective (the exemplar estimator over its cache)
    "gae-digits": ["model.name=gae", "model.hidden=[200]", "model.z_dim=2", "data.batch_size=100"],
}
COMMON = ["eval.num_samples=0", "eval.plots=false"]


class _Timer:
    """Seconds spent in the GAE's gathers of its cache rows (``all_gather_rows``)."""
    seconds = 0.0


def _time_gathers() -> None:
    from pyro_vae import distributed

    real = distributed.all_gather_rows

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _Timer.seconds += time.perf_counter() - t

    distributed.all_gather_rows = timed
SETUPS = [(1, 1), (1, 2), (2, 1)]  # (processes, threads per process)


def _setup(text: str) -> tuple[int, int]:
    procs, _, threads = text.partition("x")
    if (int(procs), int(threads)) not in SETUPS:
        raise argparse.ArgumentTypeError(f"setup {text!r}: choose from {[f'{p}x{t}' for p, t in SETUPS]}")
    return int(procs), int(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _experiment(workload: str):
    import torch

    from pyro_vae.config import Config
    from pyro_vae.data import DataSplits
    from pyro_vae.registry import build_inference, build_model
    from pyro_vae.train import Experiment, build

    config = Config().with_overrides(COMMON + WORKLOADS[workload] + ["run.device=cpu"])
    if not workload.startswith("mnist"):
        return build(config)
    g = torch.Generator().manual_seed(0)
    rows = lambda n: (torch.rand(n, 1, 28, 28, generator=g) < 0.2).float()  # noqa: E731
    data = DataSplits("synthetic-mnist", rows(10_000), rows(1000), rows(1000), (1, 28, 28), binarize="static")
    torch.manual_seed(config.seed)
    module = build_model(config, data)
    return Experiment(config, data, module, build_inference(config, module), torch.device("cpu"))


def _loader(exp, epoch: int):
    """This process's shard of the epoch's global batches, as the training loop takes them
    (:meth:`pyro_vae.loop.Loop.loader`)."""
    from pyro_vae import distributed

    cfg, data = exp.config, exp.data
    return data.loader("train", cfg.data.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                       drop_last=len(data.train) >= cfg.data.batch_size,
                       dynamic_binarize=data.binarize == "dynamic",
                       rank=distributed.rank(), world_size=distributed.world_size())


def _steps(exp, sync, seconds: float, warmup: int = 20):
    """Train for about ``seconds`` after ``warmup`` steps: (steps, wall seconds)."""
    from pyro_vae import distributed

    num_data = len(exp.data.train)
    batch = min(exp.config.data.batch_size, num_data)

    def batches():
        epoch = 0
        while True:
            yield from _loader(exp, epoch)
            epoch += 1

    def step(x, index):
        with sync.step(len(x) / batch) if sync else contextlib.nullcontext():
            exp.inference.step(x, index, num_data)

    it = batches()
    for _ in range(warmup):
        step(*next(it))
    if sync:
        sync.comm_seconds = sync.sync_seconds = 0.0
        sync.syncs = 0
    _Timer.seconds = 0.0
    steps, start = 0, time.perf_counter()
    while True:
        step(*next(it))
        steps += 1
        # Every rank must take the same number of steps: rank 0's clock decides.
        if steps % 50 == 0 and distributed.sum_and_share([time.perf_counter() - start if distributed.is_main()
                                                          else 0.0])[0] >= seconds:
            return steps, time.perf_counter() - start


def worker(workload: str, seconds: float, reps: int = 60) -> None:
    import torch

    from pyro_vae import distributed

    parallel = distributed.init(timeout=120)
    _time_gathers()
    exp = _experiment(workload)
    sync = distributed.GradientSync() if parallel else None
    numel = sum(p.numel() for p in exp.module.parameters())
    steps, wall = _steps(exp, sync, seconds)
    batch = exp.config.data.batch_size
    row = {"workload": workload, "procs": distributed.world_size(), "threads": torch.get_num_threads(),
           "params": numel, "global_batch": batch, "steps": steps,
           "examples_per_s": batch * steps / wall, "step_ms": 1e3 * wall / steps}
    if sync:
        row["allreduce_ms_per_step"] = 1e3 * sync.comm_seconds / steps
        row["hook_ms_per_step"] = 1e3 * sync.sync_seconds / steps
        row["cache_gather_ms_per_step"] = 1e3 * _Timer.seconds / steps
        flat = torch.zeros(numel + len(list(exp.module.parameters())))
        for _ in range(10):
            torch.distributed.all_reduce(flat)
        t, k = time.perf_counter(), 50
        for _ in range(k):
            torch.distributed.all_reduce(flat)
        row["isolated_allreduce_ms"] = 1e3 * (time.perf_counter() - t) / k
        tiny = torch.zeros(1)
        t = time.perf_counter()
        for _ in range(k):
            torch.distributed.all_reduce(tiny)
        row["latency_allreduce_ms"] = 1e3 * (time.perf_counter() - t) / k
    else:
        row["step_ms_by_batch"] = _step_by_batch(exp, [1, batch // 2, batch], reps)
    if distributed.is_main():
        print("RESULT " + json.dumps(row), flush=True)
    distributed.shutdown(barrier=True)


def _step_by_batch(exp, sizes, reps: int = 60) -> dict:
    import torch

    num_data, x_all = len(exp.data.train), exp.data.train
    out = {}
    for b in sizes:
        x = x_all[:b].bernoulli() if exp.data.binarize == "dynamic" else x_all[:b]
        index = torch.arange(b)
        for _ in range(10):
            exp.inference.step(x, index, num_data)
        t = time.perf_counter()
        for _ in range(reps):
            exp.inference.step(x, index, num_data)
        out[b] = 1e3 * (time.perf_counter() - t) / reps
    return out


def run_setup(workload: str, procs: int, threads: int, seconds: float, reps: int = 60) -> dict:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": str(procs), "LOCAL_WORLD_SIZE": str(procs)}
    cmd = [sys.executable, __file__, "--worker", workload, "--seconds", str(seconds), "--reps", str(reps)]
    ps = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                           text=True) for r in range(procs)]
    outs = [p.communicate(timeout=600)[0] for p in ps]
    if any(p.returncode for p in ps):
        raise RuntimeError(f"{workload} {procs}x{threads} failed")
    (line,) = [ln for ln in outs[0].splitlines() if ln.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def table(rows: list[dict]) -> str:
    lines = ["| workload | setup | examples/s | step ms | all-reduce ms/step | hook ms/step | "
             "cache gathers ms/step | isolated all-reduce ms (params) | tiny all-reduce ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = lambda k: f"{r[k]:.2f}" if k in r else "-"  # noqa: E731
        lines.append(f"| {r['workload']} | {r['procs']} proc x {r['threads']} thr | {r['examples_per_s']:.0f} | "
                     f"{r['step_ms']:.2f} | {f('allreduce_ms_per_step')} | {f('hook_ms_per_step')} | "
                     f"{f('cache_gather_ms_per_step') if r['workload'].startswith('gae') else '-'} | "
                     f"{f('isolated_allreduce_ms')} ({r['params']:,}) | {f('latency_allreduce_ms')} |")
    return "\n".join(lines)


def split_table(rows: list[dict]) -> str:
    """Per workload: the 1-process step at the full and half batch and at one row (the
    fixed cost), the communication of the 2-process runs, and the 2-process step on two
    free cores this predicts: t_1(B/2) + all-reduce + hook copies (medians over repeats)."""
    import statistics as st

    lines = ["| workload | t1(B) ms | t1(B/2) ms | t1(1) ms (fixed) | all-reduce ms (isolated) | hook copies ms | "
             "predicted 2-proc step ms | predicted speed-up | measured speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in dict.fromkeys(r["workload"] for r in rows):
        one = [r for r in rows if r["workload"] == w and r["procs"] == 1 and r["threads"] == 1]
        two = [r for r in rows if r["workload"] == w and r["procs"] == 2]
        if not one or not two:
            continue
        b = one[0]["global_batch"]
        t = {k: st.median(float(r["step_ms_by_batch"][str(k)] if str(k) in r["step_ms_by_batch"]
                                else r["step_ms_by_batch"][k]) for r in one) for k in (1, b // 2, b)}
        comm = st.median(r["isolated_allreduce_ms"] for r in two)
        copies = st.median(r["hook_ms_per_step"] - r["allreduce_ms_per_step"] for r in two)
        predicted = t[b // 2] + comm + copies
        measured = st.median(r["examples_per_s"] for r in two) / st.median(r["examples_per_s"] for r in one)
        lines.append(f"| {w} | {t[b]:.2f} | {t[b // 2]:.2f} | {t[1]:.2f} | {comm:.2f} | {copies:.2f} | "
                     f"{predicted:.2f} | {t[b] / predicted:.2f}x | {measured:.2f}x |")
    return "\n".join(lines)


def median_table(rows: list[dict]) -> str:
    """One row per workload and setup: medians over the repeats."""
    import statistics as st

    lines = ["| workload | setup | examples/s | step ms | all-reduce ms/step (waits included) | runs |",
             "|---|---|---:|---:|---:|---:|"]
    keys = dict.fromkeys((r["workload"], r["procs"], r["threads"]) for r in rows)
    for w, procs, threads in keys:
        group = [r for r in rows if (r["workload"], r["procs"], r["threads"]) == (w, procs, threads)]
        comm = (f"{st.median(r['allreduce_ms_per_step'] for r in group):.2f}"
                if "allreduce_ms_per_step" in group[0] else "-")
        lines.append(f"| {w} (B={group[0]['global_batch']}) | {procs} proc x {threads} thr | "
                     f"{st.median(r['examples_per_s'] for r in group):.0f} | "
                     f"{st.median(r['step_ms'] for r in group):.2f} | {comm} | {len(group)} |")
    return "\n".join(lines)


def report(rows: list[dict]) -> None:
    print(table(rows))
    print()
    print(median_table(rows))
    print()
    print(split_table(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", nargs="+", choices=sorted(WORKLOADS), default=["digits", "mnist", "mnist-b1000"])
    p.add_argument("--seconds", type=float, default=8.0, help="timed training per setup")
    p.add_argument("--repeats", type=int, default=1, help="run the setups this many times, interleaved")
    p.add_argument("--setups", type=_setup, nargs="+", default=SETUPS, metavar="PxT",
                   help="setups to run: 1x1 1x2 2x1 (default all)")
    p.add_argument("--reps", type=int, default=60, help="timed steps per batch size of the 1-process split")
    p.add_argument("--out", type=Path, default=Path("results/distributed_throughput.json"),
                   help="write the rows as JSON here (default: %(default)s)")
    p.add_argument("--report", type=Path, help="only print the tables of an earlier --out file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.seconds, args.reps)
    if args.report:
        saved = json.loads(args.report.read_text())
        print(f"load average before: {saved['load_before']}, after: {saved['load_after']}\n")
        return report(saved["rows"])
    rows = []
    load = load_average()
    for _ in range(args.repeats):
        for workload in args.workload:
            for procs, threads in args.setups:
                rows.append(run_setup(workload, procs, threads, args.seconds, args.reps))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nload average before: {load}; after: {load_average()} ({os.cpu_count()} CPUs)\n")
    report(rows)
    if args.out:
        write_json(args.out, {"load_before": load, "load_after": load_average(), "rows": rows})


if __name__ == "__main__":
    main()
