"""A data set's train/valid/test splits, the minibatch loader over one split, and the
fixed rules that split a source which does not come split."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from pyro_vae.data import rng
from pyro_vae.data.errors import DataError
from pyro_vae.data.provenance import DataSource

SPLITS = ("train", "valid", "test")


class BatchLoader:
    """Minibatches ``(x, index)`` of one split: ``x`` float32 ``(b, *event_shape)`` (the
    split's rows, e.g. ``(b, 1, 28, 28)``), ``index`` int64 ``(b,)`` on the CPU.

    ``index`` holds the rows' positions in the split (for a subsampled ``pyro.plate``).
    A plain iterable rather than a ``torch.utils.data.DataLoader``: the split is already
    one tensor in memory, so a batch is one row gather (a view when not shuffling) and
    the per-batch overhead stays in the tens of microseconds, against hundreds for a
    ``DataLoader`` over a ``TensorDataset``.

    The batches depend on ``(seed, epoch)`` alone: the permutation and the dynamic
    binarization draw from generators derived from them (see :mod:`pyro_vae.data.rng`),
    never from the global RNG, and iterating the same loader twice gives the same
    batches. So a run resumed at epoch ``e`` sees the batches the interrupted run saw;
    to resume mid-epoch, skip batches with ``itertools.islice`` (the skipped batches'
    random draws are replayed, so the rest match too). Use :meth:`set_epoch` or a new
    loader for the next epoch.

    Unshuffled batches without dynamic binarization are views of the split: do not
    modify them in place.

    Sharding for data-parallel training: with ``world_size > 1`` each *global* batch
    (what the loader yields with ``world_size=1``) is cut into ``world_size`` contiguous
    slices whose sizes differ by at most one, and the loader of ``rank`` yields slice
    ``rank``: rows ``[b * rank // world_size, b * (rank + 1) // world_size)`` of a global
    batch of ``b`` rows. Every rank therefore walks the same ``(seed, epoch)`` permutation,
    the union of the ranks' k-th batches is the single-process k-th batch, and dynamic
    binarization gives those rows the very same draws (each rank draws the whole global
    batch's uniforms and keeps its rows, so the stream stays in step).

    The dynamic binarization draws ``(b, prod(event_shape))`` uniforms per batch and
    reshapes them, so a split's samples do not depend on its event shape: the batches of
    ``(n, 1, 28, 28)`` data are those of the same data flattened to ``(n, 784)``, reshaped. A last global
    batch with fewer rows than ``world_size`` is dropped (every rank must take part in
    every step); :meth:`__len__` counts global batches, the same on every rank.
    """

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        dynamic_binarize: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed < 0 or epoch < 0:
            raise DataError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.drop_last = drop_last
        self.dynamic_binarize = dynamic_binarize
        self.rank = rank
        self.world_size = world_size

    @property
    def num_data(self) -> int:
        """Number of rows in the split (the ``size`` of the data plate)."""
        return self.data.shape[0]

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration the batches of ``epoch``."""
        if epoch < 0:
            raise DataError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_data, self.batch_size)
        # The short last batch is kept unless drop_last, or it cannot give each rank a row.
        return full if self.drop_last or rest < self.world_size else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, size = self.num_data, self.batch_size
        if self.shuffle:
            order = rng.derived_generator(self.seed, rng.SHUFFLE, self.epoch).permutation(n)
        else:
            order = np.arange(n)
        coin = (
            rng.derived_generator(self.seed, rng.DYNAMIC_BINARIZE, self.epoch)
            if self.dynamic_binarize
            else None
        )
        for start in range(0, len(self) * size, size):
            index = order[start : start + size]
            if self.world_size == 1:
                x = self._gather(start, index)
                if coin is not None:
                    x = rng.bernoulli(x, coin)
                yield x, torch.from_numpy(index)
                continue
            lo, hi = shard_bounds(index.size, self.rank, self.world_size)
            x = self._gather(start + lo, index[lo:hi])
            if coin is not None:
                # The global batch's uniforms, of which this rank compares its own rows:
                # what rng.bernoulli draws for the whole batch in one process.
                u = rng.uniforms(coin, index.size, tuple(x.shape[1:]))[lo:hi]
                x = rng.below(u, x)
            yield x, torch.from_numpy(index[lo:hi])

    def _gather(self, start: int, index: np.ndarray) -> torch.Tensor:
        """The rows ``index`` (which start at ``start`` when not shuffling), ``(b, *event_shape)``."""
        if not self.shuffle:
            return self.data[start : start + index.size]  # a view: no copy at all
        if self.data.device.type == "cpu":
            # numpy's single-threaded gather: torch's index_select enters the intra-op
            # thread pool, which costs milliseconds per call on a busy 2-core machine.
            return torch.from_numpy(self.data.numpy()[index])
        return self.data.index_select(0, torch.from_numpy(index).to(self.data.device))


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that ``rank`` of ``world_size`` takes: contiguous slices
    in rank order whose sizes differ by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


@dataclass(eq=False, repr=False)
class DataSplits:
    """A data set split into train/valid/test, each data point kept in its event shape.

    Attributes:
        name: data set name (a key of :data:`pyro_vae.data.DATASETS`, or a label such
            as ``"array:faces"`` for data a user brings).
        train, valid, test: float32 ``(n, *event_shape)`` with values in [0, 1]; ``n``
            may be 0 (an empty split).
        event_shape: the shape of one data point: ``(C, H, W)`` for images (e.g.
            ``(1, 28, 28)``), ``(D,)`` for plain vectors. ``x.flatten(1)`` gives the
            ``(n, D)`` rows, ``D =`` :attr:`x_dim`.
        train_labels, valid_labels, test_labels: int64 ``(n,)`` class labels, or None
            when the data set has none (or its rows cannot be matched to labels).
        binarize: how the values were binarized: None (as in the files), ``"static"``
            (every split sampled once) or ``"dynamic"`` (valid/test sampled once, train
            kept grey: pass ``dynamic_binarize=True`` to the train :meth:`loader`).
        sources: what the splits were read from (:class:`~pyro_vae.data.provenance.DataSource`:
            each file with its sha256 and size, or a checksum of in-memory arrays), filled
            by the loader so that a run can record and print its inputs; kept through
            binarization and subsets. Empty for splits built by hand.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    event_shape: tuple[int, ...]
    train_labels: Optional[torch.Tensor] = None
    valid_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None
    binarize: Optional[str] = None
    sources: tuple[DataSource, ...] = ()

    def __post_init__(self) -> None:
        self.event_shape = check_event_shape(self.event_shape, self.name)
        for split in SPLITS:
            x = self.split(split)
            _check_data(f"{self.name} {split}", x, self.event_shape)
            _check_labels(f"{self.name} {split} labels", self.labels(split), x.shape[0])

    @property
    def x_dim(self) -> int:
        """Number ``D`` of values in one data point: the product of :attr:`event_shape`."""
        return math.prod(self.event_shape)

    @property
    def is_image(self) -> bool:
        """Whether the data points are images, event shape ``(C, H, W)``."""
        return len(self.event_shape) == 3

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image (event shape ``(C, H, W)``); read-only.

        Raises:
            DataError: the data points are not images (e.g. event shape ``(D,)``).
        """
        if not self.is_image:
            raise DataError(
                f"data set {self.name!r} has event shape {self.event_shape}, not images "
                "(C, H, W): it has no image_shape (check data.is_image first)"
            )
        return self.event_shape[1], self.event_shape[2]

    @property
    def is_binary(self) -> bool:
        """Whether every value of every split is 0 or 1 (computed on each access)."""
        return all(bool(((x == 0) | (x == 1)).all()) for x in (self.train, self.valid, self.test))

    def split(self, name: str) -> torch.Tensor:
        """The data of split ``name`` (``"train"``, ``"valid"`` or ``"test"``),
        ``(n, *event_shape)``."""
        return getattr(self, _check_split(name))

    def labels(self, name: str) -> Optional[torch.Tensor]:
        """The labels of split ``name``, int64 ``(n,)``, or None."""
        return getattr(self, f"{_check_split(name)}_labels")

    def loader(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        dynamic_binarize: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> BatchLoader:
        """Minibatches ``(x (b, *event_shape), index (b,))`` of ``split``; see
        :class:`BatchLoader` (``rank``/``world_size``: this process's shard of every batch)."""
        return BatchLoader(
            self.split(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
            drop_last=drop_last, dynamic_binarize=dynamic_binarize,
            rank=rank, world_size=world_size,
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(self.split(s).shape[0]) for s in SPLITS)
        return (
            f"DataSplits(name={self.name!r}, train/valid/test={sizes}, "
            f"event_shape={self.event_shape}, x_dim={self.x_dim}, "
            f"labels={self.train_labels is not None}, binarize={self.binarize!r})"
        )


def check_event_shape(event_shape: Sequence[int], name: str = "data") -> tuple[int, ...]:
    """``event_shape`` as a tuple, if it is a non-empty sequence of positive ints."""
    try:
        shape = tuple(event_shape)
    except TypeError:
        shape = None
    if (
        not shape
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape)
    ):
        raise DataError(
            f"{name}: event_shape must be a non-empty tuple of positive ints, e.g. (1, 28, 28) "
            f"or (784,), got {event_shape!r}"
        )
    return tuple(int(s) for s in shape)


def _check_data(what: str, x: torch.Tensor, event_shape: tuple[int, ...]) -> None:
    """Raise unless ``x`` is a float32 ``(n, *event_shape)`` tensor."""
    if (
        not isinstance(x, torch.Tensor)
        or x.dtype != torch.float32
        or x.dim() == 0
        or tuple(x.shape[1:]) != event_shape
    ):
        raise DataError(
            f"{what}: expected a float32 (n, {_shape_text(event_shape)}) tensor (event shape "
            f"{event_shape}), got {_describe(x)}"
        )


def _check_labels(what: str, y: Optional[torch.Tensor], rows: int) -> None:
    """Raise unless ``y`` is None or an int64 ``(rows,)`` tensor."""
    if y is not None and (
        not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (rows,)
    ):
        raise DataError(f"{what}: expected int64 ({rows},), got {_describe(y)}")


def _describe(t) -> str:
    """``"<dtype> <shape>"`` of a tensor, else its type's name."""
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def _shape_text(shape: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in shape)


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise DataError(f"unknown split {name!r}: choose one of {list(SPLITS)}")
    return name


def to_tensor(
    pixels: np.ndarray, scale: float, event_shape: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """``pixels (n, ...)`` of any numeric dtype as C-contiguous float32
    ``(n, *event_shape)``, divided by ``scale``.

    ``event_shape`` defaults to ``pixels.shape[1:]``; another one must hold as many
    values (the row-major values are reshaped, e.g. ``(n, 784)`` to ``(n, 1, 28, 28)``).
    """
    shape = tuple(pixels.shape[1:]) if event_shape is None else tuple(event_shape)
    x = np.ascontiguousarray(pixels, dtype=np.float32).reshape((pixels.shape[0], *shape))
    return torch.from_numpy(x / np.float32(scale) if scale != 1 else x)


def labels_tensor(labels: np.ndarray) -> torch.Tensor:
    """``labels (n,)`` as int64."""
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1).copy())


def _take(t: Optional[torch.Tensor], rows: np.ndarray) -> Optional[torch.Tensor]:
    """Rows ``rows`` of ``t`` (None stays None); the index lives on ``t``'s device."""
    return None if t is None else t[torch.from_numpy(rows).to(t.device)]


def permutation_split(
    name: str,
    x: torch.Tensor,
    labels: Optional[torch.Tensor],
    sizes: tuple[int, int, int],
    event_shape: Sequence[int],
    split_seed: int,
) -> DataSplits:
    """Split ``x (n, *event_shape)`` (and ``labels (n,)``) by a fixed permutation into ``sizes`` rows.

    The permutation depends only on ``(n, split_seed)`` (:func:`rng.fixed_permutation`),
    not on the training seed, so every run of every model sees the same test set. Each
    split keeps the permutation's order: train is ``perm[:sizes[0]]``, and so on.
    """
    if sum(sizes) != x.shape[0]:
        raise DataError(f"{name}: split sizes {sizes} do not add up to {x.shape[0]} rows")
    perm = rng.fixed_permutation(x.shape[0], split_seed)
    bounds = np.cumsum((0,) + tuple(sizes))
    parts = [perm[bounds[i] : bounds[i + 1]] for i in range(3)]
    xs = [_take(x, p) for p in parts]
    ys = [_take(labels, p) for p in parts]
    return DataSplits(
        name=name, train=xs[0], valid=xs[1], test=xs[2], event_shape=tuple(event_shape),
        train_labels=ys[0], valid_labels=ys[1], test_labels=ys[2],
    )


# --- fixed split rules for sources that do not come split ------------------------------

#: A training set of more than this many rows gives its last HOLDOUT_ROWS rows to valid.
LARGE_TRAIN_ROWS = 20000
#: Rows of the valid split cut from the end of a large training set (MNIST's 50000/10000).
HOLDOUT_ROWS = 10000


def tenth(n: int) -> int:
    """The rows of a valid (or test) split carved by permutation from ``n`` rows: ``n // 10``,
    at least 1."""
    return max(1, n // 10)


def three_way_sizes(n: int, name: str = "data") -> tuple[int, int, int]:
    """Split sizes for a source of ``n`` rows with no split of its own: about 80/10/10.

    Valid and test get ``max(1, n // 10)`` rows each, train the rest; with the rows
    drawn by ``rng.fixed_permutation(n, 0)`` (:func:`permutation_split`).
    """
    if n < 3:
        raise DataError(f"{name}: {n} rows cannot be split into train/valid/test: need at least 3")
    return n - 2 * tenth(n), tenth(n), tenth(n)


def split_off_valid(
    x: torch.Tensor, labels: Optional[torch.Tensor], name: str = "data"
) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """``(train, train_labels, valid, valid_labels)`` carved from a training set ``x (n, *event)``.

    The rule for every source that has a test split but no valid split (IDX folders,
    torch datasets, ``.npz`` files without ``valid``):

    * ``n > 20000`` (:data:`LARGE_TRAIN_ROWS`): valid is the last 10000 rows, train the
      first ``n - 10000``, both in file order (MNIST's usual 50000/10000 protocol);
    * otherwise: valid is ``max(1, n // 10)`` rows, the last ones of
      ``rng.fixed_permutation(n, 0)``, train the others in that permutation's order.
    """
    n = x.shape[0]
    if n > LARGE_TRAIN_ROWS:
        cut = n - HOLDOUT_ROWS
        return x[:cut], _slice(labels, 0, cut), x[cut:], _slice(labels, cut, n)
    if n < 2:
        raise DataError(
            f"{name}: a training set of {n} rows cannot give a valid split: need at least 2"
        )
    perm = rng.fixed_permutation(n, 0)
    train, valid = perm[: n - tenth(n)], perm[n - tenth(n) :]
    return _take(x, train), _take(labels, train), _take(x, valid), _take(labels, valid)


def _slice(t: Optional[torch.Tensor], lo: int, hi: int) -> Optional[torch.Tensor]:
    return None if t is None else t[lo:hi]
