"""Data-parallel training: shards, the gradient algebra, launch, failures, resume.

The multi-process tests start 2 processes on 127.0.0.1 with the gloo backend (one
thread each) and bound every wait by a timeout, so a bug shows as a failure, not a hang.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pyro_vae import checkpoint, distributed
from pyro_vae.config import Config
from pyro_vae.data import load_dataset
from pyro_vae.train import read_log, train

FAST = ["model.hidden=[32]", "eval.num_samples=0", "eval.plots=false"]
WAIT = 120  # seconds: the most any process of these tests may take


def config(*overrides):
    return Config().with_overrides(FAST + list(overrides))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, **extra) -> dict:
    """What torchrun gives a worker, on the loopback interface."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), **extra}


def wait_all(procs, timeout=WAIT):
    """Every process's (returncode, stderr); kills them all if one outlives ``timeout``."""
    deadline, out = time.time() + timeout, []
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(deadline - time.time(), 1))
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def run_two_ranks(tmp_path, source: str, *args) -> list:
    """Run the worker script ``source`` as ranks 0 and 1 with arguments ``tmp_path, *args``;
    each must exit cleanly and leave ``tmp_path/rank<r>.pt``, returned in rank order."""
    script, port = tmp_path / "worker.py", free_port()
    script.write_text(source)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), *map(str, args)],
                              env=rank_env(r, 2, port, PYRO_VAE_DIST_TIMEOUT="60"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    for code, err in wait_all(procs):
        assert code == 0, err
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


# ----------------------------------------------------------------- one process


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("batch,drop_last", [(25, True), (25, False), (100, False)])
def test_shards_partition_each_global_batch_with_the_same_draws(world, batch, drop_last):
    data = load_dataset("digits", binarize="dynamic")
    n = len(data.train)
    kw = dict(shuffle=True, seed=4, epoch=3, drop_last=drop_last, dynamic_binarize=True)
    whole = list(data.loader("train", batch, **kw))
    shards = [list(data.loader("train", batch, rank=r, world_size=world, **kw)) for r in range(world)]
    short = not drop_last and 0 < n % batch < world  # a last batch too small to share is dropped
    assert all(len(s) == len(whole) - short for s in shards)
    for k in range(len(whole) - short):
        x, index = whole[k]
        parts = [s[k] for s in shards]
        assert max(len(p[1]) for p in parts) - min(len(p[1]) for p in parts) <= 1
        assert torch.equal(torch.cat([p[1] for p in parts]), index)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)  # binarization draws included


def test_a_last_batch_smaller_than_the_world_is_dropped():
    data = load_dataset("digits")
    n = len(data.train)
    batch = n - 1  # the last batch has 1 row
    assert len(data.loader("train", batch)) == 2
    assert len(data.loader("train", batch, rank=1, world_size=2)) == 1


def test_every_helper_is_the_identity_without_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.init() and not distributed.is_active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.arange(6.0).view(3, 2)
    assert distributed.all_gather_rows(t) is t
    index = torch.tensor([4, 1, 0])
    assert all(a is b for a, b in zip(distributed.all_gather_indexed(index, t), (index, t)))
    assert distributed.shard_range(7) == (0, 7) and distributed.shard_sizes(7) == [7]
    assert distributed.sum_and_share([1.5, 2.0]) == [1.5, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.backend() in ("gloo", "cpu:gloo,cuda:nccl")


def test_the_gradient_hook_is_inert_without_a_process_group_or_outside_a_step():
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    sync = distributed.GradientSync()
    try:
        for armed in (False, True):
            opt.zero_grad()
            lin(torch.ones(1, 2)).sum().backward()
            before = lin.weight.grad.clone()
            with sync.step(0.25) if armed else open(os.devnull):
                assert distributed.grad_weight() == (0.25 if armed else 1.0)
                opt.step()
            assert torch.equal(lin.weight.grad, before) and sync.syncs == 0 and distributed.grad_weight() == 1.0
    finally:
        sync.remove()
    assert distributed.global_mean(torch.tensor([0.5, 2.0]), 7).tolist() == [0.5, 2.0]


# ----------------------------------------------------------------- several processes

WORKER = textwrap.dedent("""
    import json, sys, torch
    # No reparameterization noise (z = loc): the objective is then a deterministic
    # function of the batches, so 2 processes must reproduce 1 process's parameters.
    torch.distributions.Normal.rsample = lambda self, shape=torch.Size(): self.loc.expand(self._extended_shape(shape))
    from pyro_vae import distributed
    from pyro_vae.config import Config
    from pyro_vae.train import train

    run_dir, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    exp, state = train(Config().with_overrides(overrides), run_dir, progress=False)
    r = distributed.rank()
    mine = torch.full((2 + r, 3), float(r))  # uneven rows: 2 on rank 0, 3 on rank 1
    torch.save({"module": exp.module.state_dict(), "history": state.history,
                "gathered": distributed.all_gather_rows(mine),
                "gathered_sized": distributed.all_gather_rows(mine, sizes=[2, 3]),
                "mean": distributed.global_mean(torch.tensor([float(r), 1.0]), 2 + r),
                "world": distributed.world_size()}, out)
    distributed.shutdown(barrier=True)
""")


def no_noise(monkeypatch):
    monkeypatch.setattr(torch.distributions.Normal, "rsample",
                        lambda self, shape=torch.Size(): self.loc.expand(self._extended_shape(shape)))


#: Deterministic (with the guide's noise off) combinations: SVI on the VAE, and the GAE
#: with its data index summed out under the exact estimator, by IWAE and by RWS.
EXACT_GAE = ["model.name=gae", "model.estimator=exact", "data.binarize=static", "data.train_size=396"]
SINGLE_VS_TWO = {
    "svi": ["inference.elbo=trace"],
    "gae_iwae": EXACT_GAE + ["inference.name=iwae", "inference.num_particles=2"],
    "gae_rws": EXACT_GAE + ["inference.name=rws", "inference.num_particles=2"],
}


@pytest.mark.parametrize("combination", list(SINGLE_VS_TWO))
def test_two_processes_take_the_single_process_steps(tmp_path, monkeypatch, combination):
    """Same global batches (99 rows: shards of 49 and 50), same number of Adam steps:
    the parameters, the logged figures and the validation figures equal one process's."""
    overrides = FAST + ["budget.epochs=2", "data.batch_size=99", *SINGLE_VS_TWO[combination]]
    script, port = tmp_path / "worker.py", free_port()
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "dist"), str(tmp_path / f"rank{r}.pt"),
                               json.dumps(overrides)], env=rank_env(r, 2, port, PYRO_VAE_DIST_TIMEOUT="60"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]
    no_noise(monkeypatch)
    single_exp, single = train(Config().with_overrides(overrides), tmp_path / "single", progress=False)
    for code, err in wait_all(procs):
        assert code == 0, err
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["world"] == 2
    expected_rows = torch.cat([torch.zeros(2, 3), torch.ones(3, 3)])
    for r in ranks:
        assert torch.equal(r["gathered"], expected_rows) and torch.equal(r["gathered_sized"], expected_rows)
        assert r["mean"].tolist() == pytest.approx([3 / 5, 1.0])  # (0 * 2 + 1 * 3) / 5
    # The replicas never drift apart: bit-identical on both ranks.
    for name, t in ranks[0]["module"].items():
        assert torch.equal(t, ranks[1]["module"][name]), name
    # ... and equal to the single-process run up to float summation order.
    a, b = checkpoint.load(tmp_path / "dist" / "checkpoint.pt"), checkpoint.load(tmp_path / "single" / "checkpoint.pt")
    assert a["state"]["step"] == b["state"]["step"] == 2 * (len(single_exp.data.train) // 99)
    for name, t in b["module"].items():
        torch.testing.assert_close(a["module"][name], t, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for key in [k for k in single.history[0] if k.startswith(("train_", "valid_")) and k != "train_seconds"]:
        assert [row[key] for row in a["state"]["history"]] == pytest.approx(
            [row[key] for row in single.history], rel=1e-5), key
    # Only rank 0 wrote the run directory.
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [
        "checkpoint.pt", "config.toml", "data.json", "log.csv"]


REGULARISED_WORKER = WORKER.replace(
    "from pyro_vae import distributed",
    "torch.randn = lambda *shape, dtype=None, device=None: torch.zeros(*shape, dtype=dtype, device=device)\n"
    "from pyro_vae import distributed")


@pytest.mark.parametrize("regulariser", ["dip_vae_ii", "capacity"])
def test_regularised_data_parallel_training_takes_the_single_process_steps(tmp_path, monkeypatch, regulariser):
    """DIP-VAE's covariance and the capacity's |KL − C| are nonlinear in batch moments:
    gathered across 2 processes (shards of 49 and 50 rows), the step is the single-process
    step on the global batch, so the parameters and logs equal one process's."""
    overrides = FAST + ["budget.epochs=2", "data.batch_size=99", f"inference.regulariser={regulariser}",
                        "inference.capacity_steps=10", "inference.capacity_max=3.0", "inference.capacity_gamma=5.0"]
    script, port = tmp_path / "worker.py", free_port()
    script.write_text(REGULARISED_WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "dist"), str(tmp_path / f"rank{r}.pt"),
                               json.dumps(overrides)], env=rank_env(r, 2, port, PYRO_VAE_DIST_TIMEOUT="60"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]
    no_noise(monkeypatch)
    monkeypatch.setattr(torch, "randn", lambda *shape, dtype=None, device=None: torch.zeros(*shape, dtype=dtype,
                                                                                          device=device))
    _, single = train(Config().with_overrides(overrides), tmp_path / "single", progress=False)
    for code, err in wait_all(procs):
        assert code == 0, err
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert tensors_equal(ranks[0]["module"], ranks[1]["module"]) == ""
    a, b = checkpoint.load(tmp_path / "dist" / "checkpoint.pt"), checkpoint.load(tmp_path / "single" / "checkpoint.pt")
    assert a["inference"]["objective"] == b["inference"]["objective"]  # the capacity's step count
    for name, t in b["module"].items():
        torch.testing.assert_close(a["module"][name], t, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for key in ("train_elbo", "valid_elbo"):
        assert [row[key] for row in a["state"]["history"]] == pytest.approx(
            [row[key] for row in single.history], rel=1e-5)


GAE_WORKER = textwrap.dedent("""
    import functools, json, sys, torch
    from pyro_vae import distributed
    from pyro_vae.config import Config
    from pyro_vae.models.gae import ExemplarELBO
    from pyro_vae.train import build

    ExemplarELBO.__init__ = functools.partialmethod(ExemplarELBO.__init__, improve=True)  # lists gathered too
    out, overrides, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    distributed.init()
    exp = build(Config().with_overrides(overrides))
    gae, objective = exp.module, exp.inference.objective
    n, batch = len(exp.data.train), exp.config.data.batch_size
    loader = exp.data.loader("train", batch, shuffle=True, seed=exp.config.seed, drop_last=True,
                             rank=distributed.rank(), world_size=distributed.world_size())
    sync, worst, cleared = distributed.GradientSync(), 0.0, True
    for i, (x, index) in enumerate(loader):
        if i == steps:
            break
        rows = distributed.all_gather_rows(index)  # the global batch
        with torch.no_grad():  # what the step's encoder pass gives every row of it
            loc, scale = gae.guide.encoder(distributed.all_gather_rows(x))
        with sync.step(len(x) / batch):
            exp.inference.step(x, index, n)
        worst = max(worst, float((objective.bank.loc[rows] - loc).abs().max()),
                    float((objective.bank.scale[rows] - scale).abs().max()))
        cleared = cleared and not any(bool(t[rows].any()) for t in objective.bank.deferred_tables)
    state = objective.state_dict()  # collects the last step's deferred gradients, on every rank
    torch.save({"bank": {k: v for k, v in state.items() if k.startswith("bank.")},
                "worst": worst, "cleared": cleared, "index": index}, f"{out}/rank{distributed.rank()}.pt")
    distributed.shutdown(barrier=True)
""")


@pytest.mark.parametrize("bandwidth", ["posterior", "shared"])
def test_every_gae_process_keeps_the_cache_of_all_training_points(tmp_path, bandwidth):
    """The GAE under 2 processes: after every step each rank's cache holds the fresh
    statistics of the whole global batch (the other rank's rows too), the deferred
    gradients applied in the step are cleared for all of it, and the cache, neighbour
    lists and deferred gradients are bit-identical on both ranks."""
    overrides = FAST + ["model.name=gae", "model.neighbours=8", "model.fresh=2",
                        "data.batch_size=50", "data.binarize=static", f"model.bandwidth={bandwidth}"]
    ranks = run_two_ranks(tmp_path, GAE_WORKER, json.dumps(overrides), 6)
    assert not set(ranks[0]["index"].tolist()) & set(ranks[1]["index"].tolist())  # disjoint shards
    for r in ranks:
        assert r["worst"] < 1e-5 and r["cleared"]
    assert tensors_equal(ranks[0]["bank"], ranks[1]["bank"]) == ""
    bank = ranks[0]["bank"]
    grads = bank["bank.grad_loc"] if bandwidth == "shared" else bank["bank.grad_w"]
    assert int(bank["bank.steps"]) == 6 and grads.abs().sum() > 0


WGAN_WORKER = textwrap.dedent("""
    import json, sys, torch
    from pyro_vae import distributed
    from pyro_vae.config import Config
    from pyro_vae.train import train

    out, overrides = sys.argv[1], json.loads(sys.argv[2])
    exp, state = train(Config().with_overrides(overrides), f"{out}/run", progress=False)
    torch.save({"module": exp.module.state_dict(), "critic": exp.inference.critic.state_dict(),
                "history": state.history}, f"{out}/rank{distributed.rank()}.pt")
    distributed.shutdown(barrier=True)
""")


def test_two_process_wgan_gp_takes_the_single_process_steps(tmp_path):
    """WGAN-GP under 2 processes (global batches of 99 rows: shards of 49 and 50): the noise
    of each global batch is drawn whole on every rank and cut to its rows, the penalty
    and the losses are means weighed by the shards' shares, so the generator's and the
    critic's parameters and the training figures equal one process's."""
    overrides = FAST + ["inference.name=wgan_gp", "inference.critic_hidden=[16]", "inference.n_critic=2",
                        "data.binarize=none", "data.batch_size=99", "budget.epochs=2"]
    ranks = run_two_ranks(tmp_path, WGAN_WORKER, json.dumps(overrides))
    single_exp, single = train(Config().with_overrides(overrides), tmp_path / "single", progress=False)
    assert tensors_equal(ranks[0]["module"], ranks[1]["module"]) == ""
    for got, expected in ((ranks[0]["module"], single_exp.module.state_dict()),
                          (ranks[0]["critic"], single_exp.inference.critic.state_dict())):
        for name, t in expected.items():
            torch.testing.assert_close(got[name], t, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for key in ("train_wasserstein", "train_critic_loss", "train_gradient_penalty"):
        assert [r[key] for r in ranks[0]["history"]] == pytest.approx([r[key] for r in single.history], rel=1e-4)


ONE_VALID_ROW_WORKER = textwrap.dedent("""
    import dataclasses, json, sys, torch
    from pyro_vae import distributed, train as loop
    from pyro_vae.config import Config

    out, overrides = sys.argv[1], json.loads(sys.argv[2])
    real_build = loop.build

    def build(config, device=None):  # a validation set of one row: rank 1 has none of it
        exp = real_build(config, device)
        exp.data = dataclasses.replace(exp.data, valid=exp.data.valid[:1], valid_labels=exp.data.valid_labels[:1])
        return exp

    loop.build = build
    exp, state = loop.train(Config().with_overrides(overrides), f"{out}/run", progress=False)
    bank = {k: v for k, v in exp.inference.objective.state_dict().items() if k.startswith("bank.")}
    torch.save({"bank": bank, "history": state.history}, f"{out}/rank{distributed.rank()}.pt")
    distributed.shutdown(barrier=True)
""")


def test_gae_caches_agree_when_a_process_has_no_validation_rows(tmp_path):
    """A validation set smaller than the number of processes: the rank without rows keeps
    the same GAE cache (re-encoded at each epoch's start) and log as the rank with them."""
    overrides = FAST + ["model.name=gae", "model.neighbours=8", "data.binarize=static",
                        "budget.epochs=2"]
    ranks = run_two_ranks(tmp_path, ONE_VALID_ROW_WORKER, json.dumps(overrides))
    assert tensors_equal(ranks[0]["bank"], ranks[1]["bank"]) == ""
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["history"][-1]["valid_elbo"] is not None


ALGORITHMS_WORKER = textwrap.dedent("""
    import json, sys, torch
    from pyro_vae import distributed
    from pyro_vae.config import Config
    from pyro_vae.inference.svi import SVI
    from pyro_vae.train import TrainingDiverged, train

    out, runs, nan_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    real_step, steps = SVI.step, []

    def nan_step(self, x, index, num_data):  # rank 1 alone feeds a NaN batch at step nan_at
        steps.append(1)
        if len(steps) == nan_at and distributed.rank() == 1:
            x = x * float("nan")
        return real_step(self, x, index, num_data)

    result = {}
    for name, overrides in runs.items():
        SVI.step = nan_step if name == "svi_nan" else real_step
        try:
            exp, state = train(Config().with_overrides(overrides), f"{out}/{name}", progress=False)
        except TrainingDiverged as e:
            result[name] = str(e)
            continue
        result[name] = {"module": exp.module.state_dict(), "inference": exp.inference.state_dict(),
                        "history": state.history}
    torch.save(result, f"{out}/rank{distributed.rank()}.pt")
    distributed.shutdown(barrier=True)
""")

ALGORITHMS = {  # every gradient-based algorithm but svi (above), on 1 epoch of 12 steps
    "wake_sleep": [],  # two optimizers, built at the first batch, two steps a batch
    "rws": ["inference.num_particles=2"],
    "iwae": ["inference.num_particles=2"],
    "vimco": ["inference.num_particles=2"],
    "mcem": ["inference.m_steps=2"],  # m_steps optimizer steps a batch
    "em": ["model.name=gae", "model.neighbours=8", "inference.m_steps=2"],  # the GAE's cache gathered too
    "mle": ["model.name=nice", "model.couplings=2", "data.binarize=none", 'data.transform=["dequantize"]'],
    # two roles (critic, generator), a generator step every n_critic-th step, noise of the global batch
    "wgan": ["inference.critic_hidden=[16]", "inference.n_critic=2"],
    "wgan_gp": ["inference.critic_hidden=[16]", "inference.n_critic=2"],
    "adversarial_ae": ["model.name=pixelgan", "model.hidden=[16]", "model.channels=4", "model.layers=1",
                       "inference.discriminator_hidden=[8]"],  # three roles a step
}

#: The validation figure each algorithm logs (an ELBO unless named here).
VALID_FIGURE = {"mle": "valid_log_likelihood", "wgan": "valid_wasserstein", "wgan_gp": "valid_wasserstein",
                "adversarial_ae": "valid_log_px_given_z"}


#: The GAE with every algorithm that samples its latents (its data index summed out of
#: each step under the knn estimator: the cache, lists and deferred gradients gathered).
GAE_ALGORITHMS = {
    f"gae_{name}": ["model.name=gae", "model.neighbours=8", "model.fresh=2", "data.binarize=static",
                    "data.train_size=600", "data.batch_size=50", *extra]
    for name, extra in ALGORITHMS.items() if name in ("wake_sleep", "rws", "iwae", "vimco", "mcem")
}


def tensors_equal(a, b, where=""):
    """``a == b`` bit for bit, through nested dicts/lists; the first difference's path."""
    if isinstance(a, torch.Tensor):
        return "" if isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b) else where
    if isinstance(a, dict):
        if set(a) != set(b):
            return where
        return next((d for k in a if (d := tensors_equal(a[k], b[k], f"{where}.{k}"))), "")
    if isinstance(a, (list, tuple)):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := tensors_equal(x, y, f"{where}[{i}]"))),
                    "" if len(a) == len(b) else where)
    return "" if a == b or (a != a and b != b) else where


def test_every_gradient_based_algorithm_trains_data_parallel(tmp_path):
    """Wake-sleep, RWS, IWAE, VIMCO, MCEM and EM under 2 processes: the replicas stay bit-identical
    (the gradients of every optimizer step were synchronized) and they learn. Then a NaN
    batch on rank 1 alone: the summed gradient is NaN on both ranks, so both raise
    TrainingDiverged at that step, before the update; neither waits for a timeout."""
    from pyro_vae.registry import ALGORITHMS as REGISTERED

    assert set(ALGORITHMS) | {"svi"} == set(REGISTERED), "a new algorithm: add it here"
    runs = {name: FAST + [f"inference.name={name}", "budget.epochs=1", *extra] for name, extra in ALGORITHMS.items()}
    runs["em"] += ["budget.monitor=train_em_bound"]
    runs["svi_nan"] = FAST + ["budget.epochs=3"]  # 12 steps an epoch: a NaN at step 15
    ranks = run_two_ranks(tmp_path, ALGORITHMS_WORKER, json.dumps(runs), 15)
    local_state = set()
    for name in ALGORITHMS:
        assert tensors_equal(ranks[0][name]["module"], ranks[1][name]["module"]) == "", name
        assert tensors_equal(ranks[0][name]["history"], ranks[1][name]["history"]) == "", name
        row = ranks[0][name]["history"][-1]
        assert all(torch.isfinite(t).all() for t in ranks[0][name]["module"].values()), name
        score = row.get(VALID_FIGURE.get(name, "valid_elbo"))
        assert score is not None and score == score, name
        if tensors_equal(ranks[0][name]["inference"], ranks[1][name]["inference"]):
            local_state.add(name)
    # The checkpoint holds rank 0's inference state: it must be the same on every rank
    # (MCEM's per-point chains and adapted step size included).
    assert not local_state, f"rank-local inference state in {sorted(local_state)}"
    # MCEM: every rank holds the chains of every point of every global batch.
    visited = ranks[0]["mcem"]["inference"]["visited"]
    assert int(visited.sum()) == ranks[0]["mcem"]["history"][-1]["samples_seen"]
    for r in ranks:
        assert r["svi_nan"].startswith("training diverged: the gradient is NaN/inf at step 15"), r["svi_nan"]
        assert "(epoch 1) is kept" in r["svi_nan"]
    ckpt = checkpoint.load(tmp_path / "svi_nan" / "checkpoint.pt")
    assert ckpt["state"]["epoch"] == 1 and all(torch.isfinite(t).all() for t in ckpt["module"].values())


def test_the_gae_trains_data_parallel_with_every_sampling_algorithm(tmp_path):
    """The GAE with IWAE, VIMCO, RWS, wake-sleep and MCEM under 2 processes (its data index
    summed out of each step under the knn estimator): the replicas, the logs and the
    algorithm's state -- the GAE's cache, neighbour lists and deferred gradients, MCEM's
    chains -- are bit-identical on both ranks, and the validation ELBO rose."""
    runs = {name: FAST + [f"inference.name={name.removeprefix('gae_')}", "budget.epochs=2", *extra]
            for name, extra in GAE_ALGORITHMS.items()}
    ranks = run_two_ranks(tmp_path, ALGORITHMS_WORKER, json.dumps(runs), 10**6)
    for name in GAE_ALGORITHMS:
        for part in ("module", "history", "inference"):
            assert tensors_equal(ranks[0][name][part], ranks[1][name][part]) == "", (name, part)
        bank = ranks[0][name]["inference"]["objective"]
        assert int(bank["bank.steps"]) == 2 * (600 // 50) and bool(bank["bank.listed"]), name
        history = ranks[0][name]["history"]
        assert history[-1]["valid_elbo"] > history[0]["valid_elbo"] - 1.0, name  # finite, and not worse
        assert all(torch.isfinite(t).all() for t in ranks[0][name]["module"].values()), name


EXIT_WORKER = textwrap.dedent("""
    import sys, time, torch
    import torch.distributed as dist
    from pyro_vae import distributed
    distributed.init()
    rank, destroy = distributed.rank(), dist.destroy_process_group
    def slow_destroy():  # rank 1 takes a second to leave its group
        destroy()
        if rank == 1:
            time.sleep(1.0)
        torch.save({"left_group": time.time()}, f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group = slow_destroy
    distributed.shutdown(barrier=True)
    torch.save({**torch.load(f"{sys.argv[1]}/rank{rank}.pt"), "returned": time.time()}, f"{sys.argv[1]}/rank{rank}.pt")
""")


def test_rank_0_hosts_the_store_until_every_rank_has_left_its_group(tmp_path):
    """shutdown(barrier=True): rank 0's process holds the rendezvous store, so it returns
    (and may exit) only after the slowest rank has destroyed its group."""
    ranks = run_two_ranks(tmp_path, EXIT_WORKER)
    assert ranks[0]["returned"] >= ranks[1]["left_group"] > ranks[0]["left_group"] + 0.5


def launch_cli(run_dir, port, world, *extra, timeout="60"):
    """Every rank of ``pyro-vae train`` started as torchrun would start it."""
    args = [sys.executable, "-m", "pyro_vae", "train", "--run-dir", str(run_dir), "--no-progress",
            "--dist-timeout", timeout, *[a for o in FAST for a in ("--set", o)], *extra]
    return [subprocess.Popen(args, env=rank_env(r, world, port), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for r in range(world)]


def wait_for_epochs(run_dir: Path, epochs: int, procs) -> None:
    deadline = time.time() + WAIT
    while not ((run_dir / "log.csv").exists() and len(read_log(run_dir)) >= epochs):
        assert all(p.poll() is None for p in procs), "the run ended before it could be interrupted"
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_lost_worker_fails_the_run_cleanly_and_keeps_the_checkpoint(tmp_path, how):
    """SIGKILL of rank 1: rank 0 fails at its next collective (the socket closes).
    SIGSTOP of rank 1 (alive, silent): rank 0 fails when the timeout expires. Either way
    the last checkpoint is intact, and the run resumes in one process to its end."""
    run_dir, epochs = tmp_path / "run", 5
    timeout = "60" if how == "kill" else "6"  # enough for the ranks' start-up skew
    procs = launch_cli(run_dir, free_port(), 2, "--epochs", str(epochs), "--set", "data.batch_size=20",
                       timeout=timeout)
    try:
        wait_for_epochs(run_dir, 1, procs)
        procs[1].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        lost = time.time()
        code, err = wait_all(procs[:1], timeout=30)[0]
        waited = time.time() - lost
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert code != 0 and "another training process failed or stopped responding" in err, err
    assert "checkpoint" in err and "is kept" in err
    assert waited < (15 if how == "kill" else 6 + 15)  # far below the 60 s timeout when killed
    ckpt = checkpoint.load(run_dir / "checkpoint.pt")
    done = ckpt["state"]["epoch"]
    assert 1 <= done < epochs and [r["epoch"] for r in read_log(run_dir)] == list(range(1, done + 1))
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if how == "kill":  # resume with another number of processes: 1 (in this process)
        _, state = train(config("data.batch_size=20", f"budget.epochs={epochs}"), run_dir, progress=False)
        assert state.epoch == epochs and [r["epoch"] for r in read_log(run_dir)] == list(range(1, epochs + 1))
        assert checkpoint.load(run_dir / "checkpoint.pt")["state"]["step"] == epochs * (len(
            load_dataset("digits").train) // 20)


def test_cli_nproc_resumes_a_single_process_run_under_torchrun(tmp_path, monkeypatch):
    """A run interrupted in one process goes on with ``--nproc 2`` (torchrun): rank 0
    alone prints and writes, the log goes on from the checkpoint's epoch."""
    from pyro_vae.loop import Loop

    run_dir, saves, real_save = tmp_path / "run", [], Loop._save

    def save_then_stop(self):
        real_save(self)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Loop, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config("budget.epochs=4"), run_dir, progress=False)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = subprocess.run([sys.executable, "-m", "pyro_vae", "train", "--nproc", "2", "--run-dir", str(run_dir),
                          "--no-progress", "--epochs", "4", "--dist-timeout", "60",
                          *[a for o in FAST for a in ("--set", o)]],
                         env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("run directory:") == 1 and out.stdout.count('"test_elbo"') == 1
    assert out.stdout.count("data arrays sklearn.datasets.load_digits") == 1  # rank 0 alone
    assert [r["epoch"] for r in read_log(run_dir)] == [1, 2, 3, 4]
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 4
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt", "config.toml", "data.json", "log.csv", "summary.json"]


def test_cli_nproc_finishes_an_epoch_a_signal_stopped_in_one_process(tmp_path):
    """A checkpoint of the step a SIGTERM stopped goes on under ``--nproc 2``: the ranks
    take only the epoch's remaining batches, and rank 0 alone carries the stopped steps'
    figure sums (added on every rank, the epoch's mean would count them twice)."""
    from pyro_vae.loop import Callback, Interrupted

    class TermAt(Callback):
        def on_step_end(self, loop, figures):
            if loop.state.step == steps + 3:
                os.kill(os.getpid(), signal.SIGTERM)

    run_dir = tmp_path / "run"
    steps = len(load_dataset("digits").train) // Config().data.batch_size
    with pytest.raises(Interrupted):
        train(config("budget.epochs=3"), run_dir, progress=False, callbacks=[TermAt()])
    assert checkpoint.load(run_dir / "checkpoint.pt")["state"]["epoch_steps"] == 3
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = subprocess.run([sys.executable, "-m", "pyro_vae", "train", "--nproc", "2", "--run-dir", str(run_dir),
                          "--no-progress", "--epochs", "3", "--dist-timeout", "60",
                          *[a for o in FAST for a in ("--set", o)]],
                         env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    log = read_log(run_dir)
    assert [r["epoch"] for r in log] == [1, 2, 3] and [r["step"] for r in log] == [steps, 2 * steps, 3 * steps]
    assert log[0]["train_elbo"] < log[1]["train_elbo"] < log[2]["train_elbo"]
