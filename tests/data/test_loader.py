"""The minibatch loader: batches of ``(b, *event_shape)``, shuffling, dynamic binarization
(bit-identical to the draws of the flattened ``(b, D)`` loader), sharding."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from pyro_vae.data import BatchLoader, DataError, DataSplits
from pyro_vae.data import rng


def _batches(data: DataSplits, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.loader("train", 100, **kwargs))


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()[:16]


def _reference_batches(x_flat: torch.Tensor, size: int, seed: int, epoch: int, shuffle: bool):
    """The loader of flattened ``(n, D)`` data with dynamic binarization, written out: the
    rows of each batch and ``u < p`` with ``u`` of shape ``(b, D)`` from the epoch's stream."""
    n = x_flat.shape[0]
    order = rng.derived_generator(seed, rng.SHUFFLE, epoch).permutation(n) if shuffle else np.arange(n)
    coin = rng.derived_generator(seed, rng.DYNAMIC_BINARIZE, epoch)
    out = []
    for start in range(0, n, size):
        index = order[start : start + size]
        p = x_flat.numpy()[index]
        u = coin.random(p.shape, dtype=np.float32)
        out.append((torch.from_numpy((u < p).astype(np.float32)), torch.from_numpy(index)))
    return out


def test_loader_batches_and_indices(digits):
    loader = digits.loader("train", 100)
    assert len(loader) == 13 and loader.num_data == 1297
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [100] * 12 + [97]
    assert torch.equal(torch.cat([i for _, i in batches]), torch.arange(1297))
    for x, index in batches:
        assert x.dtype == torch.float32 and index.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8)
        assert torch.equal(x, digits.train[index])


@pytest.mark.parametrize("event_shape", [(6,), (1, 2, 3), (2, 1, 3), (3, 2, 1, 1)])
def test_loader_keeps_any_event_shape(event_shape):
    x = torch.rand(23, *event_shape)
    data = DataSplits("toy", x, x[:3], x[:3], event_shape)
    for shuffle in (False, True):
        batches = list(data.loader("train", 5, shuffle=shuffle, seed=1))
        assert [b.shape for b, _ in batches] == [(5, *event_shape)] * 4 + [(3, *event_shape)]
        assert all(torch.equal(b, x[i]) for b, i in batches)


def test_loader_shuffle_is_deterministic_by_seed_and_epoch(digits):
    torch.manual_seed(123)
    first = _batches(digits, shuffle=True, seed=3, epoch=5)
    torch.manual_seed(999)  # the global RNG plays no part
    state = torch.get_rng_state()
    again = _batches(digits, shuffle=True, seed=3, epoch=5)
    assert torch.equal(torch.get_rng_state(), state)  # ... and is not consumed
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(first, again))
    other_epoch = _batches(digits, shuffle=True, seed=3, epoch=6)
    other_seed = _batches(digits, shuffle=True, seed=4, epoch=5)
    assert not torch.equal(first[0][1], other_epoch[0][1])
    assert not torch.equal(first[0][1], other_seed[0][1])
    for batches in (first, other_epoch):
        index = torch.cat([i for _, i in batches])
        assert torch.equal(torch.sort(index).values, torch.arange(1297))  # every row once
        assert all(torch.equal(x, digits.train[i]) for x, i in batches)
    # set_epoch on one loader equals a fresh loader for that epoch.
    loader = digits.loader("train", 100, shuffle=True, seed=3)
    loader.set_epoch(6)
    assert torch.equal(next(iter(loader))[1], other_epoch[0][1])


def test_loader_drop_last(digits):
    loader = digits.loader("train", 100, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 12
    assert all(x.shape == (100, 1, 8, 8) for x, _ in batches)
    assert len(set(torch.cat([i for _, i in batches]).tolist())) == 1200
    assert len(digits.loader("valid", 300, drop_last=True)) == 0
    assert len(digits.loader("valid", 300)) == 1


def test_loader_rejects_bad_arguments(digits):
    with pytest.raises(DataError, match="batch_size"):
        digits.loader("train", 0)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        digits.loader("dev", 10)


def test_dynamic_binarization(digits):
    first = _batches(digits, shuffle=True, epoch=0, dynamic_binarize=True)
    again = _batches(digits, shuffle=True, epoch=0, dynamic_binarize=True)
    later = _batches(digits, shuffle=True, epoch=1, dynamic_binarize=True)
    x0 = torch.cat([x for x, _ in first])
    assert x0.shape == (1297, 1, 8, 8)
    assert set(x0.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x0, torch.cat([x for x, _ in again]))
    # Same rows (unshuffled) in two epochs give different samples.
    plain0 = torch.cat([x for x, _ in _batches(digits, epoch=0, dynamic_binarize=True)])
    plain1 = torch.cat([x for x, _ in _batches(digits, epoch=1, dynamic_binarize=True)])
    assert not torch.equal(plain0, plain1)
    assert not torch.equal(x0, torch.cat([x for x, _ in later]))
    # A sample: its mean matches the grey levels' mean (about 83000 pixels).
    assert abs(plain0.mean().item() - digits.train.mean().item()) < 0.01
    assert digits.train.unique().numel() == 17  # the split itself is untouched


@pytest.mark.parametrize("shuffle", [False, True])
def test_dynamic_binarization_equals_the_flattened_draws(digits, shuffle):
    batches = _batches(digits, shuffle=shuffle, seed=3, epoch=2, dynamic_binarize=True)
    reference = _reference_batches(digits.train.flatten(1), 100, 3, 2, shuffle)
    assert len(batches) == len(reference)
    for (x, i), (x_ref, i_ref) in zip(batches, reference):
        assert x.shape == (x_ref.shape[0], 1, 8, 8)
        assert torch.equal(i, i_ref) and torch.equal(x.flatten(1), x_ref)


def test_dynamic_binarization_is_pinned(digits):
    # The draws of the flattened (n, 64) loader before event shapes were kept: the same
    # seed and epoch must keep giving these very samples.
    batches = _batches(digits, shuffle=True, seed=3, epoch=2, dynamic_binarize=True)
    assert [int(x.sum()) for x, _ in batches[:3]] == [1949, 2010, 1899]
    assert _digest(torch.cat([x.flatten(1) for x, _ in batches])) == "daa619d8fe50e789"


def test_dynamic_binarization_does_not_depend_on_the_event_shape(digits):
    flat = DataSplits("flat", digits.train.flatten(1), digits.valid.flatten(1),
                      digits.test.flatten(1), (64,))
    other = DataSplits("other", digits.train.view(-1, 8, 1, 8), digits.valid.view(-1, 8, 1, 8),
                       digits.test.view(-1, 8, 1, 8), (8, 1, 8))
    kwargs = dict(shuffle=True, seed=1, epoch=4, dynamic_binarize=True)
    for (a, i), (b, j), (c, k) in zip(_batches(digits, **kwargs), _batches(flat, **kwargs),
                                      _batches(other, **kwargs)):
        assert torch.equal(i, j) and torch.equal(i, k)
        assert torch.equal(a.flatten(1), b) and torch.equal(a.flatten(1), c.flatten(1))


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sharded_batches_are_slices_of_the_global_ones(digits, world_size, shuffle):
    kwargs = dict(shuffle=shuffle, seed=5, epoch=1, dynamic_binarize=True)
    whole = _batches(digits, **kwargs)
    shards = [_batches(digits, rank=r, world_size=world_size, **kwargs) for r in range(world_size)]
    assert all(len(s) == len(whole) for s in shards)
    for k, (x, i) in enumerate(whole):
        assert torch.equal(torch.cat([s[k][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[k][1] for s in shards]), i)
        assert all(s[k][0].shape[1:] == (1, 8, 8) for s in shards)


def test_batch_loader_on_a_plain_tensor():
    x = torch.rand(10, 2, 3)
    (b, i), = list(BatchLoader(x, 10, shuffle=True, seed=0))
    assert b.shape == (10, 2, 3) and torch.equal(b, x[i])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loader_on_cuda_matches_cpu(digits):
    cuda = DataSplits("cuda", digits.train.cuda(), digits.valid.cuda(), digits.test.cuda(),
                      digits.event_shape)
    for kwargs in (dict(shuffle=True), dict(shuffle=True, dynamic_binarize=True),
                   dict(shuffle=True, dynamic_binarize=True, rank=1, world_size=2)):
        for (a, i), (b, j) in zip(_batches(digits, **kwargs), _batches(cuda, **kwargs)):
            assert b.device.type == "cuda" and torch.equal(a, b.cpu()) and torch.equal(i, j)
