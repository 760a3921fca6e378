"""DataSplits (event shapes, validation), the split helpers, binarize modes and the
likelihood checks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from pyro_vae.data import DataError, DataSplits, check_likelihood, load_dataset
from pyro_vae.data import rng
from pyro_vae.data.binarize import bernoulli_sample
from pyro_vae.data.splits import (
    permutation_split,
    split_off_valid,
    three_way_sizes,
    to_tensor,
)
from shared_data import SHARED, needs_shared


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()[:16]


# --- DataSplits ------------------------------------------------------------------------


def test_datasplits_validates_its_tensors():
    x = torch.zeros(3, 4)
    with pytest.raises(DataError, match="float32"):
        DataSplits(name="bad", train=x.double(), valid=x, test=x, event_shape=(4,))
    with pytest.raises(DataError, match="labels"):
        DataSplits(
            name="bad", train=x, valid=x, test=x, event_shape=(4,), train_labels=torch.zeros(2)
        )
    ok = DataSplits(name="ok", train=x, valid=x, test=x, event_shape=(4,))
    assert "train/valid/test=3/3/3" in repr(ok)


def test_datasplits_checks_the_event_shape():
    x = torch.zeros(3, 1, 2, 2)
    data = DataSplits("img", x, x[:1], x[:0], [1, 2, 2])  # a list is read as a tuple
    assert data.event_shape == (1, 2, 2) and data.x_dim == 4 and data.is_image
    assert data.image_shape == (2, 2)
    assert "event_shape=(1, 2, 2)" in repr(data) and "train/valid/test=3/1/0" in repr(data)
    with pytest.raises(DataError, match=r"img valid: expected a float32 \(n, 1, 2, 2\).*\(3, 4\)"):
        DataSplits("img", x, torch.zeros(3, 4), x, (1, 2, 2))
    with pytest.raises(DataError, match=r"test: expected.*\(n, 1, 2, 2\).*\(3, 2, 2\)"):
        DataSplits("img", x, x, torch.zeros(3, 2, 2), (1, 2, 2))
    for bad in ((), (0, 2), (2.5,), "12", None):
        with pytest.raises(DataError, match="event_shape must be a non-empty tuple"):
            DataSplits("img", x, x, x, bad)


def test_image_shape_only_for_images():
    x = torch.zeros(3, 4)
    vectors = DataSplits("vec", x, x, x, (4,))
    assert not vectors.is_image and vectors.x_dim == 4
    with pytest.raises(DataError, match=r"'vec' has event shape \(4,\), not images"):
        vectors.image_shape
    with pytest.raises(AttributeError):  # read-only
        vectors.image_shape = (2, 2)


def test_to_tensor_keeps_or_sets_the_event_shape():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    kept = to_tensor(pixels, 255.0)
    assert kept.shape == (2, 3, 4) and kept.dtype == torch.float32
    grey = to_tensor(pixels, 255.0, (1, 3, 4))
    flat = to_tensor(pixels.reshape(2, 12), 255.0, (1, 3, 4))
    assert grey.shape == (2, 1, 3, 4) and torch.equal(grey, flat) and grey.is_contiguous()
    assert torch.equal(grey.flatten(1), torch.from_numpy(pixels.reshape(2, 12) / np.float32(255)))


def test_permutation_split_any_event_shape():
    x = torch.arange(20, dtype=torch.float32).view(10, 1, 2) / 20
    labels = torch.arange(10)
    data = permutation_split("toy", x, labels, (6, 2, 2), (1, 2), 0)
    perm = torch.from_numpy(rng.fixed_permutation(10, 0))
    assert torch.equal(torch.cat([data.train, data.valid, data.test]), x[perm])
    assert torch.equal(torch.cat([data.train_labels, data.valid_labels, data.test_labels]), perm)
    with pytest.raises(DataError, match="do not add up to 10"):
        permutation_split("toy", x, labels, (6, 2, 1), (1, 2), 0)


def test_split_rules():
    assert three_way_sizes(100) == (80, 10, 10) and three_way_sizes(1797) == (1439, 179, 179)
    assert three_way_sizes(3) == (1, 1, 1) and three_way_sizes(25) == (21, 2, 2)
    with pytest.raises(DataError, match="at least 3"):
        three_way_sizes(2)
    # Large training sets: the last 10000 rows, in order.
    x = torch.arange(20001, dtype=torch.float32).view(-1, 1) / 20001
    y = torch.arange(20001)
    train, train_y, valid, valid_y = split_off_valid(x, y)
    assert torch.equal(train, x[:10001]) and torch.equal(valid, x[10001:])
    assert torch.equal(train_y, y[:10001]) and torch.equal(valid_y, y[10001:])
    # Small ones: a tenth (at least 1) by the fixed permutation.
    x, y = x[:50], y[:50]
    train, train_y, valid, valid_y = split_off_valid(x, y)
    perm = torch.from_numpy(rng.fixed_permutation(50, 0))
    assert torch.equal(valid_y, perm[45:]) and torch.equal(train_y, perm[:45])
    assert torch.equal(valid, x[perm[45:]])
    assert split_off_valid(x[:2], None)[2].shape == (1, 1)
    with pytest.raises(DataError, match="at least 2"):
        split_off_valid(x[:1], None)


# --- binarize modes --------------------------------------------------------------------


def test_static_binarization_is_reproducible_by_seed(digits):
    a = load_dataset("digits", binarize="static", seed=1)
    b = load_dataset("digits", binarize="static", seed=1)
    c = load_dataset("digits", binarize="static", seed=2)
    assert a.binarize == "static" and a.is_binary
    assert a.train.shape == (1297, 1, 8, 8)
    assert all(torch.equal(a.split(s), b.split(s)) for s in ("train", "valid", "test"))
    assert not torch.equal(a.train, c.train)
    assert abs(a.train.mean().item() - digits.train.mean().item()) < 0.01
    assert torch.equal(a.train_labels, digits.train_labels)


def test_static_binarization_is_pinned_and_shape_free(digits):
    # The samples of the flattened (n, 64) data before event shapes were kept.
    a = load_dataset("digits", binarize="static", seed=1)
    assert _digest(a.train.flatten(1)) == "87bd9662f7b18544"
    assert _digest(a.test.flatten(1)) == "5647a61f0f2d79c2" and int(a.train.sum()) == 25282
    # ... and the same numbers for the flattened tensor, reshaped.
    assert torch.equal(bernoulli_sample(digits.train.flatten(1), 1, "train"), a.train.flatten(1))


def test_dynamic_mode_keeps_train_grey(digits):
    dynamic = load_dataset("digits", binarize="dynamic", seed=1)
    static = load_dataset("digits", binarize="static", seed=1)
    assert dynamic.binarize == "dynamic"
    assert torch.equal(dynamic.train, digits.train)
    assert torch.equal(dynamic.valid, static.valid) and torch.equal(dynamic.test, static.test)
    assert load_dataset("digits", binarize="none").binarize is None


def test_unknown_binarize_mode_is_refused_before_reading_files(isolated):
    with pytest.raises(DataError, match="unknown binarize mode 'threshold'.*static.*dynamic"):
        load_dataset("mnist", binarize="threshold")
    with pytest.raises(DataError, match="seed must be a non-negative integer, got -1"):
        load_dataset("mnist", binarize="static", seed=-1)


@needs_shared
def test_static_binarization_leaves_binary_data_unchanged():
    kwargs = dict(data_dir=SHARED)
    again = load_dataset("binarized_mnist", binarize="static", seed=5, **kwargs)
    assert torch.equal(again.valid, load_dataset("binarized_mnist", **kwargs).valid)


# --- likelihood checks -----------------------------------------------------------------


@needs_shared
def test_check_likelihood_refuses_grey_data_for_bernoulli():
    frey = load_dataset("frey_face", data_dir=SHARED)
    with pytest.raises(DataError) as err:
        check_likelihood(frey, "bernoulli")
    message = str(err.value)
    assert "'frey_face' has grey-level values" in message
    assert 'binarize = "static" or "dynamic"' in message and 'likelihood = "gaussian"' in message
    check_likelihood(frey, "gaussian")


def test_check_likelihood_accepts_binarized_data(digits):
    check_likelihood(load_dataset("digits", binarize="static"), "bernoulli")
    check_likelihood(load_dataset("digits", binarize="dynamic"), "bernoulli")
    with pytest.raises(DataError, match="grey-level"):
        check_likelihood(digits, "bernoulli")
    with pytest.raises(DataError, match="unknown likelihood"):
        check_likelihood(digits, "poisson")


@pytest.mark.parametrize("event_shape", [(16,), (1, 4, 4), (2, 2, 4)])
def test_check_likelihood_refuses_values_outside_unit_interval(event_shape):
    x = torch.full((4, *event_shape), 2.0)
    data = DataSplits(name="scaled", train=x, valid=x, test=x, event_shape=event_shape)
    for likelihood in ("gaussian", "bernoulli"):
        with pytest.raises(DataError, match=r"'scaled'.*outside \[0, 1\].*max 2"):
            check_likelihood(data, likelihood)


def test_check_likelihood_any_event_shape_and_empty_splits():
    x = torch.tensor([0.0, 1.0]).repeat(3, 2, 1, 1)  # (3, 2, 1, 2) of 0/1
    data = DataSplits("bin", x, x[:0], x, (2, 1, 2))
    check_likelihood(data, "bernoulli")
    check_likelihood(data, "gaussian")
    grey = DataSplits("grey", x / 2, x[:0], x, (2, 1, 2))
    with pytest.raises(DataError, match="'grey' has grey-level values in \\[0, 1\\] \\(train"):
        check_likelihood(grey, "bernoulli")
