"""Data-parallel training with ``torch.distributed``: launch, gradient sync, gathers.

A run launched by ``torchrun`` (``WORLD_SIZE > 1`` in the environment) trains one
replica of the model per process. Every process

* walks the same global minibatches (the ``(seed, epoch)`` permutation) and takes its
  contiguous slice of each (:class:`~pyro_vae.data.splits.BatchLoader` ``rank`` /
  ``world_size``), so a global batch of ``B`` rows is ``b_0 + ... + b_{W-1}`` rows;
* passes the full training-set size ``N`` to its ``pyro.plate``, which scales its shard's
  log-density by ``N / b_r``: each process's loss is on its own an unbiased estimate of
  the full-data objective;
* before every optimizer step, replaces its gradient by the all-reduced
  ``sum_r (b_r / B) * grad_r`` (:class:`GradientSync`, an optimizer pre-step hook
  armed during the training step). Since ``(b_r / B) * (N / b_r) = N / B``, that is
  exactly the gradient of the single-process loss on the whole global batch, global
  (non-plate) terms included (the weights add up to one), so every replica takes the
  single-process step and the parameters stay identical without ever being broadcast
  again.

Why an explicit all-reduce rather than ``DistributedDataParallel``: DDP hooks into
``module.forward``, while Pyro runs ``module.model`` / ``module.guide`` (bound methods,
traced by the ELBO, some compiled by the JIT) and algorithms such as wake-sleep take
several optimizer steps of different parameter sets per minibatch, with optimizers
some build only at the first batch. A global optimizer pre-step hook applies to every
gradient-based algorithm unchanged, costs one collective per optimizer step (one flat
buffer: the fewest messages, which is what counts for the small models here), and lets
shards of unequal size be weighted exactly. What it gives up is DDP's overlap of
communication with the backward pass.

Without a process group (a plain ``python -m pyro_vae train``, or ``torchrun`` with one
process) nothing here is installed and every helper is the identity: the
single-process path has no distributed code in it.

Backends: ``gloo`` on CPU; when CUDA is available, ``cpu:gloo,cuda:nccl`` (CUDA tensors
over NCCL, CPU tensors over gloo) with the process bound to GPU ``LOCAL_RANK``.

What an inference algorithm must do to train data-parallel (no code of its own when
the first four hold, as for SVI, IWAE, VIMCO, wake-sleep and RWS):

1. Step ``torch.optim`` optimizers (built up front or lazily, one or several) with
   ``optimizer.step()``, the same steps in the same order on every rank. Anything done
   to ``.grad`` before ``step()`` (clipping, ...) sees local gradients: do it in a step
   pre-hook registered after the training loop's, or after the step.
2. Make each loss an unbiased estimate of the full-data objective from the rank's own
   rows: the ``"data"`` plate with ``num_data`` (scale ``N / b``), or a mean over the
   batch; never a plain sum over the batch (its size differs between ranks and from B).
3. Return ``step()["elbo"]`` as a mean per data point of the batch, and make
   ``evaluate(x)`` a mean per point of ``x`` (validation is split across ranks and the
   parts averaged with weights ``n_r / n``).
4. Keep ``state_dict()`` global (the checkpoint is rank 0's): state adapted from the
   batch must be adapted from global figures (:func:`global_mean`, e.g. an HMC step
   size tuned to the acceptance rate), and per-data-point state (MCMC chains, caches)
   must be written on every rank for the whole global batch (:func:`all_gather_indexed`
   of the batch ``index`` and the rows' new values).

A model whose prior reads statistics of all ``n`` training points (the GAE's exemplar
mixture) must keep them identical on every rank: write the global batch's fresh rows
with :func:`all_gather_indexed` after each step, compute full refreshes a shard per rank
(:func:`shard_range`) and gather them, and scale any gradient it accumulates outside
``.grad`` by :func:`grad_weight` before summing it across ranks. Collectives must be
called by every rank the same number of times, in the same order, outside a
``torch.jit`` trace.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import time
from typing import Any, Iterable, Optional

import numpy as np
import pyro
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pyro_vae.data.splits import shard_bounds
from pyro_vae.errors import ConfigError

#: Seconds a process waits in a collective for the others before giving up (a dead or
#: stuck worker); overridden by ``PYRO_VAE_DIST_TIMEOUT`` or ``init(timeout=...)``.
DEFAULT_TIMEOUT = 600.0
TIMEOUT_ENV = "PYRO_VAE_DIST_TIMEOUT"

# A stream key for the per-rank training noise, apart from the data streams of
# pyro_vae.data.rng (1, 2, 3).
_NOISE_STREAM = 100


class WorkerFailure(RuntimeError):
    """Another training process died or stopped answering; this one gives up too."""


class NonFiniteGradients(FloatingPointError):
    """The all-reduced gradient holds NaN/inf; raised on every rank at the same step."""


# --------------------------------------------------------------------------- state


def is_active() -> bool:
    """Whether this process is one of several in an initialized process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0, the one process that writes logs, checkpoints and plots."""
    return rank() == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str:
    """``gloo`` on CPU, ``cpu:gloo,cuda:nccl`` where this process has a GPU."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and dist.is_nccl_available() and local < torch.cuda.device_count():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def timeout_seconds(timeout: Optional[float] = None) -> float:
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    if not timeout > 0:
        raise ValueError(f"the distributed timeout must be positive, got {timeout}")
    return timeout


def init(timeout: Optional[float] = None) -> bool:
    """Join the process group ``torchrun`` set up in the environment, if it has several
    processes; returns :func:`is_active`. Idempotent; a no-op for one process.

    ``timeout`` (seconds; default ``PYRO_VAE_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`)
    bounds every collective: when a worker dies its peers fail at once (its sockets
    close), and when one hangs they fail after ``timeout`` -- never a silent hang.
    """
    if dist.is_available() and dist.is_initialized():
        return is_active()
    if launched_world_size() <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: cannot train with several processes")
    name = backend()
    if "nccl" in name:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(name, timeout=datetime.timedelta(seconds=timeout_seconds(timeout)))
    atexit.register(shutdown)
    return is_active()


def shutdown(barrier: bool = False) -> None:
    """Leave the process group (safe to call twice, or after a failure).

    ``barrier=True`` (the normal end of a run) first waits for every rank to get there,
    so that none tears its connections down while another still receives, and then
    keeps rank 0 -- the host of the rendezvous store -- until every rank has left its
    group: a peer whose store vanished while it was still tearing down can abort at
    exit (torchelastic's agents keep the same exit barrier).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world, me = dist.get_world_size(), dist.get_rank()
    store = _default_store() if barrier and world > 1 else None
    if store is not None:
        try:
            dist.barrier()
        except Exception:  # a broken group: leave it all the same
            store = None
    try:
        dist.destroy_process_group()
    except Exception:  # nothing left to release
        pass
    if store is not None:
        _exit_barrier(store, world, me)


def _default_store():
    """The default group's rendezvous store, or None where this torch keeps it elsewhere."""
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:
        return None


def _exit_barrier(store, world: int, me: int, timeout: float = 30.0) -> None:
    """Every rank checks in; rank 0, whose process hosts the store, returns once all have
    (or after ``timeout`` seconds: a peer that died is not waited for)."""
    try:
        count = store.add("pyro_vae/left_group", 1)
        deadline = time.monotonic() + timeout
        while me == 0 and count < world and time.monotonic() < deadline:
            time.sleep(0.01)
            count = store.add("pyro_vae/left_group", 0)
    except Exception:  # the store is gone: nothing left to wait for
        pass


def _collective(fn, *args, **kwargs):
    """Run a collective, turning a dead/stuck peer into a :class:`WorkerFailure`."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        raise WorkerFailure(
            f"rank {rank()} of {world_size()}: another training process failed or stopped "
            f"responding ({str(e).splitlines()[0][:300]})") from e


# --------------------------------------------------------------------------- shards


def shard_range(n: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of ``n`` that this process takes (all of them when alone)."""
    return shard_bounds(n, rank(), world_size())


def shard_sizes(n: int) -> list[int]:
    """Every rank's share of ``n`` rows, in rank order."""
    w = world_size()
    return [hi - lo for lo, hi in (shard_bounds(n, r, w) for r in range(w))]


def all_gather_rows(tensor: torch.Tensor, sizes: Optional[list[int]] = None) -> torch.Tensor:
    """Every rank's ``tensor`` (``(n_r, ...)``, any ``n_r``) concatenated in rank order.

    The same tensor on every rank; the input itself when alone. Pass ``sizes`` (every
    rank's ``n_r``, e.g. :func:`shard_sizes`) when known, to save a round trip. The
    result carries no gradient: use it for statistics, caches and indices.

    Since a global batch is the ranks' slices in rank order, gathering the batch
    ``index`` and per-row values gives the global batch's rows::

        rows = all_gather_rows(index)                 # the global batch's indices
        cache[rows] = all_gather_rows(stats.detach())  # the same cache on every rank

    and a statistic of all ``n`` points can be computed a shard per rank::

        lo, hi = shard_range(n)
        cache = all_gather_rows(encode(x[lo:hi]))     # == encode(x), W times faster
    """
    if not is_active():
        return tensor
    tensor = tensor.detach().contiguous()
    if sizes is None:
        mine = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
        every = [torch.empty_like(mine) for _ in range(world_size())]
        _collective(dist.all_gather, every, mine)
        sizes = [int(s) for s in every]
    if len(sizes) != world_size() or sizes[rank()] != tensor.shape[0]:
        raise ValueError(f"sizes {sizes} do not match {world_size()} ranks with {tensor.shape[0]} rows here")
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:  # all_gather needs equal shapes
        padded = torch.cat([tensor, tensor.new_zeros((longest - tensor.shape[0],) + tensor.shape[1:])])
    parts = [torch.empty_like(padded) for _ in sizes]
    _collective(dist.all_gather, parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def all_gather_indexed(index: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's positions ``index (m_r,)`` and their ``values (m_r, ...)``, concatenated
    in rank order, in one collective: ``(index, values)`` as they are when alone.

    The pair travels as one float64 table, exact for float32 (or integer) values and
    positions below 2**53; ``values`` come back in their own dtype. For per-row state of
    the whole data set (caches, MCMC chains) written from each rank's batch rows::

        rows, stats = all_gather_indexed(index, stats)
        cache[rows] = stats                          # the same cache on every rank
    """
    if not is_active():
        return index, values
    table = torch.cat([index.reshape(-1, 1).double(), values.reshape(len(index), -1).double()], -1)
    table = all_gather_rows(table)
    return table[:, 0].long(), table[:, 1:].to(values.dtype).reshape((-1,) + values.shape[1:])


def sum_and_share(values: Iterable[float]) -> list[float]:
    """The sum over ranks of ``values`` (float64), bit-identical on every rank.

    Decisions taken on the result (early stopping, divergence, the time budget) are
    therefore the same everywhere: after the all-reduce, rank 0's copy is broadcast.
    """
    t = torch.tensor(list(values), dtype=torch.float64)
    if not is_active():
        return t.tolist()
    _collective(dist.all_reduce, t)
    _collective(dist.broadcast, t, 0)
    return t.tolist()


def global_mean(value: torch.Tensor, count: int) -> torch.Tensor:
    """The mean over every rank's rows of a statistic whose mean over this rank's
    ``count`` rows is ``value`` (any shape): one all-reduce; ``value`` when alone.

    For state an algorithm adapts from its batch (an HMC step size tuned to the
    acceptance rate, a running average, ...): adapting to the global mean keeps it the
    same on every rank, and equal to the single-process adaptation on the global batch.
    """
    if not is_active():
        return value
    packed = torch.cat([value.detach().reshape(-1).to(torch.float64) * count,
                        torch.tensor([float(count)], dtype=torch.float64, device=value.device)])
    _collective(dist.all_reduce, packed)
    return (packed[:-1] / packed[-1]).to(value.dtype).reshape(value.shape)


def batch_statistic(value: torch.Tensor, count: int) -> torch.Tensor:
    """A batch mean ``value`` over this rank's ``count`` rows (any shape, with gradients)
    made the mean over the *global* batch, for a loss that is a nonlinear function of it.

    The value returned is the global mean on every rank (:func:`global_mean`); its
    gradient is that of ``value``, the local mean (``value + (global − value).detach()``).
    The gradient sync sums ``(b_r / B) ∇ value_r`` over ranks, which is ``∇`` of the global
    mean, so ``f(batch_statistic(m, b))`` has exactly the single-process gradient
    ``f'(m) ∇m`` on the whole global batch for any ``f`` (a covariance penalty,
    ``|KL − C|``). Alone: ``value`` itself. One all-reduce: pack several statistics into one
    tensor.
    """
    if not is_active():
        return value
    return value + (global_mean(value.detach(), count) - value.detach())


_step_weight = 1.0


def grad_weight() -> float:
    """This rank's weight ``b_r / B`` in the gradient sum of the training step in progress
    (1.0 outside one, and in one process).

    For gradient-like quantities a model or algorithm accumulates itself, outside the
    parameters' ``.grad`` (e.g. loss gradients w.r.t. cached statistics, applied at a later
    step): scale them by this weight where they are produced, then sum over ranks (e.g.
    ``all_gather_rows`` of rows and values, then ``index_add_``), as the optimizer hook does
    for ``.grad``.
    """
    return _step_weight


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank."""
    if not is_active():
        return obj
    box = [obj if rank() == src else None]
    _collective(dist.broadcast_object_list, box, src)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module``."""
    if not is_active():
        return
    for tensor in module.state_dict().values():
        if isinstance(tensor, torch.Tensor):
            _collective(dist.broadcast, tensor, src)


def noise_seed(seed: int, epoch: int) -> int:
    """The seed of this rank's random draws in ``epoch`` (reparameterization noise, ...).

    Ranks draw independent noise (a shared seed would give rows on different ranks
    the same noise), and reseeding from ``(seed, epoch, rank)`` at every epoch makes a
    resumed run draw what the interrupted one drew, with no per-rank state to save.
    """
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(_NOISE_STREAM, int(epoch), rank()))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


# --------------------------------------------------------------------------- gradients


class GradientSync:
    """All-reduce the gradients before every optimizer step taken inside :meth:`step`.

    One hook for every ``torch.optim`` optimizer of the process
    (``torch.optim.optimizer.register_optimizer_step_pre_hook``), armed only while the
    training loop runs ``inference.step`` in ``with sync.step(weight):``. So it applies
    to any gradient-based algorithm unchanged: one optimizer or several (wake-sleep's
    wake and sleep phases), built up front or at the first batch, stepped once or
    ``m_steps`` times per minibatch; and optimizers used outside a training step
    (evaluation, a user's own code) are left alone.

    Each optimizer step's local gradients are scaled by ``weight`` (``b_r / B``) and
    summed over ranks in one flat buffer per (optimizer, device, dtype). A parameter
    with no gradient on every rank keeps ``grad = None`` (so optimizers skip it as they
    would in one process); one with a gradient on some rank gets the sum, the others
    counting as zero. A NaN/inf in the summed gradient raises :class:`NonFiniteGradients`
    on every rank before the step, so the parameters stay finite and all ranks stop
    together.

    Every rank must take the same optimizer steps in the same order (the code paths are
    the same; only the data differ). :attr:`comm_seconds` / :attr:`sync_seconds` add up
    the time inside the all-reduce alone / the whole hook, :attr:`syncs` the count.
    """

    def __init__(self):
        self.weight = 1.0
        self.comm_seconds = self.sync_seconds = 0.0
        self.syncs = 0
        self._armed = False
        self._buffers: dict[tuple, torch.Tensor] = {}
        self._handle = register_optimizer_step_pre_hook(self._hook)

    @contextlib.contextmanager
    def step(self, weight: float = 1.0):
        """Synchronize the optimizer steps taken in this block, this rank's gradients
        weighing ``weight`` (its share of the global batch; see :func:`grad_weight`)."""
        global _step_weight
        self.weight, self._armed, _step_weight = weight, True, weight
        try:
            yield self
        finally:
            self._armed, _step_weight = False, 1.0

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._buffers.clear()

    def _hook(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        if not self._armed or not is_active():
            return
        started = time.perf_counter()
        buckets: dict[tuple, list[torch.Tensor]] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                buckets.setdefault((id(optimizer), p.device, p.dtype), []).append(p)
        for key, params in buckets.items():
            self._reduce(key, params)
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - started

    @torch.no_grad()
    def _reduce(self, key: tuple, params: list[torch.Tensor]) -> None:
        """One all-reduce of ``weight * grad`` for ``params`` (one device and dtype) and
        of one has-a-gradient flag per parameter, through a buffer kept across steps."""
        if any(p.grad is not None and p.grad.is_sparse for p in params):
            raise TypeError("sparse gradients are not supported by GradientSync")
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() != total + len(params):
            buf = self._buffers[key] = params[0].new_empty(total + len(params))
        offset = 0
        for p, n in zip(params, sizes):
            view = buf[offset: offset + n]
            if p.grad is None:
                view.zero_()
            elif self.weight != 1.0:
                torch.mul(p.grad.reshape(-1), self.weight, out=view)  # copy and scale in one pass
            else:
                view.copy_(p.grad.reshape(-1))
            offset += n
        flags = buf[total:]
        flags.copy_(torch.tensor([float(p.grad is not None) for p in params], dtype=buf.dtype))
        t = time.perf_counter()
        _collective(dist.all_reduce, buf)
        self.comm_seconds += time.perf_counter() - t
        # One reduction pass (NaN and inf propagate through a sum; a sum of finite
        # gradients past 3e38 counts too, rightly). The buffer is identical on every
        # rank: so is the decision.
        if not math.isfinite(buf.sum().item()):
            raise NonFiniteGradients("the gradient summed over processes holds NaN/inf")
        offset = 0
        for p, n, count in zip(params, sizes, flags.tolist()):
            # The summed gradient is used in place: .grad becomes a view of the buffer
            # (no copy back; the next step's backward makes a new .grad, or accumulates
            # into this one, which the next sync then reads before overwriting).
            p.grad = buf[offset: offset + n].view_as(p) if count else None
            offset += n


# --------------------------------------------------------------------------- the loop's seam


class Replicas:
    """The one seam between the training loop and ``torch.distributed``.

    The loop calls the same methods whether it runs alone or as one of several
    processes; alone every method is the identity (or a no-op), and under ``torchrun``
    they do what data-parallel training needs: one copy of the module on every rank,
    the gradient sync armed during each step, per-rank noise seeds, sharded
    validation, and epoch figures summed and shared so that every rank takes the same
    decisions.
    """

    def __init__(self, timeout: Optional[float] = None):
        self.active = init(timeout)
        self._sync: Optional[GradientSync] = None

    @property
    def is_main(self) -> bool:
        return is_main()

    @property
    def rank(self) -> int:
        return rank()

    @property
    def world_size(self) -> int:
        return world_size()

    def start(self, module: nn.Module) -> None:
        """Make every rank's module rank 0's (equal already, from the same seed or
        checkpoint: made sure) and arm the gradient sync for training steps."""
        if self.active:
            broadcast_module(module)
            self._sync = GradientSync()

    def close(self) -> None:
        if self._sync is not None:
            self._sync.remove()
            self._sync = None

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Each rank's random draws for ``epoch`` (see :func:`noise_seed`)."""
        if self.active:
            pyro.set_rng_seed(noise_seed(seed, epoch))

    def step(self, weight: float):
        """The context of one training step whose rows weigh ``weight`` of the global batch."""
        return self._sync.step(weight) if self._sync is not None else contextlib.nullcontext()

    def on_main(self, fn) -> Any:
        """``fn()`` run by rank 0 alone (reading or writing the run directory, say), its
        result, or the exception it raised, shared with every rank."""
        if not self.active:
            return fn()
        try:
            found = ("ok", fn()) if self.is_main else None
        except Exception as e:  # shared, so that every rank stops with the same error
            found = ("error", e)
        found = broadcast_object(found)
        if found[0] == "error":
            raise found[1]
        return found[1]

    def check_batches(self, num_data: int, batch_size: int) -> None:
        """Every rank must get rows of every global batch (validation slices may be empty)."""
        if min(num_data, batch_size) < self.world_size:
            raise ConfigError(f"[data] batch_size = {batch_size} on {num_data} training points cannot give each of "
                              f"{self.world_size} processes a row of every batch: use a batch of at least "
                              f"{self.world_size}")

    def evaluate(self, evaluate, data: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
        """``evaluate(data)``'s figures (per-point means), each rank scoring its slice and
        the slices' means weighed by their share of the rows; ``{}`` without data."""
        if not len(data):
            return {}
        if not self.active:
            return dict(evaluate(data))
        lo, hi = shard_range(len(data))
        mine = evaluate(data[lo:hi]) if hi > lo else {}
        share = [mine[k] * (hi - lo) / len(data) if k in mine else 0.0 for k in names]
        return dict(zip(names, sum_and_share(share)))

    def share_epoch(self, figures: dict[str, float], elapsed: float, seconds: float) -> tuple[dict, float, float]:
        """The epoch's training figures (each rank's share of the global means) summed
        over ranks, and rank 0's clock, identical on every rank."""
        if not self.active:
            return figures, elapsed, seconds
        main = self.is_main
        keys = sorted(figures)
        summed = sum_and_share([figures[k] for k in keys] + [elapsed if main else 0.0, seconds if main else 0.0])
        return dict(zip(keys, summed[:-2])), summed[-2], summed[-1]
