"""A data set's train/valid/test splits, and the minibatch loader over one split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from pyro_vae.data import rng
from pyro_vae.data.errors import DataError

SPLITS = ("train", "valid", "test")


class BatchLoader:
    """Minibatches ``(x, index)`` of one split: ``x`` float32 ``(b, D)``, ``index`` int64 ``(b,)``.

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
    batch's uniforms and keeps its rows, so the stream stays in step). A last global
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
                u = coin.random((index.size, x.shape[1]), dtype=np.float32)[lo:hi]
                x = _below(u, x)
            yield x, torch.from_numpy(index[lo:hi])

    def _gather(self, start: int, index: np.ndarray) -> torch.Tensor:
        """The rows ``index`` (which start at ``start`` when not shuffling), ``(b, D)``."""
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


def _below(u: np.ndarray, p: torch.Tensor) -> torch.Tensor:
    """``u < p`` as float32 on ``p``'s device, as :func:`rng.bernoulli` computes it."""
    if p.device.type == "cpu":
        return torch.from_numpy((u < p.detach().numpy()).astype(np.float32))
    return (torch.from_numpy(np.ascontiguousarray(u)).to(p.device) < p).to(torch.float32)


@dataclass(eq=False, repr=False)
class DataSplits:
    """A data set split into train/valid/test, every image flattened.

    Attributes:
        name: data set name (a key of :data:`pyro_vae.data.DATASETS`).
        train, valid, test: float32 ``(n, D)`` with values in [0, 1], ``D = H * W``.
        image_shape: ``(H, W)`` of one image; ``x.view(-1, H, W)`` restores images.
        train_labels, valid_labels, test_labels: int64 ``(n,)`` class labels, or None
            when the data set has none (or its rows cannot be matched to labels).
        binarize: how the values were binarized: None (as in the files), ``"static"``
            (every split sampled once) or ``"dynamic"`` (valid/test sampled once, train
            kept grey: pass ``dynamic_binarize=True`` to the train :meth:`loader`).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, int]
    train_labels: Optional[torch.Tensor] = None
    valid_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None
    binarize: Optional[str] = None

    def __post_init__(self) -> None:
        dim = self.image_shape[0] * self.image_shape[1]
        for split in SPLITS:
            x, y = self.split(split), self.labels(split)
            if x.dtype != torch.float32 or x.dim() != 2 or x.shape[1] != dim:
                raise DataError(
                    f"{self.name} {split}: expected a float32 (n, {dim}) tensor, "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            if y is not None and (y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],)):
                raise DataError(
                    f"{self.name} {split} labels: expected int64 ({x.shape[0]},), "
                    f"got {y.dtype} {tuple(y.shape)}"
                )

    @property
    def x_dim(self) -> int:
        """Length ``D`` of a flattened data vector."""
        return self.train.shape[1]

    @property
    def is_binary(self) -> bool:
        """Whether every value of every split is 0 or 1 (computed on each access)."""
        return all(bool(((x == 0) | (x == 1)).all()) for x in (self.train, self.valid, self.test))

    def split(self, name: str) -> torch.Tensor:
        """The data of split ``name`` (``"train"``, ``"valid"`` or ``"test"``), ``(n, D)``."""
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
        """Minibatches ``(x (b, D), index (b,))`` of ``split``; see :class:`BatchLoader`
        (``rank``/``world_size``: this process's shard of every batch)."""
        return BatchLoader(
            self.split(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
            drop_last=drop_last, dynamic_binarize=dynamic_binarize,
            rank=rank, world_size=world_size,
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(self.split(s).shape[0]) for s in SPLITS)
        return (
            f"DataSplits(name={self.name!r}, train/valid/test={sizes}, x_dim={self.x_dim}, "
            f"image_shape={self.image_shape}, labels={self.train_labels is not None}, "
            f"binarize={self.binarize!r})"
        )


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise DataError(f"unknown split {name!r}: choose one of {list(SPLITS)}")
    return name


def to_tensor(pixels: np.ndarray, scale: float) -> torch.Tensor:
    """``pixels (n, ...)`` of any numeric dtype as C-contiguous float32 ``(n, D)`` / ``scale``."""
    x = np.ascontiguousarray(pixels.reshape(pixels.shape[0], -1), dtype=np.float32)
    return torch.from_numpy(x / np.float32(scale) if scale != 1 else x)


def labels_tensor(labels: np.ndarray) -> torch.Tensor:
    """``labels (n,)`` as int64."""
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1).copy())


def permutation_split(
    name: str,
    x: torch.Tensor,
    labels: Optional[torch.Tensor],
    sizes: tuple[int, int, int],
    image_shape: tuple[int, int],
    split_seed: int,
) -> DataSplits:
    """Split ``x (n, D)`` (and ``labels``) by a fixed permutation into ``sizes`` rows.

    The permutation depends only on ``(n, split_seed)`` (:func:`rng.fixed_permutation`),
    not on the training seed, so every run of every model sees the same test set.
    """
    if sum(sizes) != x.shape[0]:
        raise DataError(f"{name}: split sizes {sizes} do not add up to {x.shape[0]} rows")
    perm = torch.from_numpy(rng.fixed_permutation(x.shape[0], split_seed))
    bounds = np.cumsum((0,) + sizes)
    parts = [perm[bounds[i] : bounds[i + 1]] for i in range(3)]
    xs = [x[p] for p in parts]
    ys = [labels[p] for p in parts] if labels is not None else [None, None, None]
    return DataSplits(
        name=name, train=xs[0], valid=xs[1], test=xs[2], image_shape=image_shape,
        train_labels=ys[0], valid_labels=ys[1], test_labels=ys[2],
    )
