"""Fixed random subsets by count: ``train_size``, ``valid_size``, ``test_size``."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data import DataError, DataSplits, load_dataset, subset_indices
from pyro_vae.data.subsets import SUBSET_SALT, take_subsets


def _paper_rule(n, k, salt):
    """The paper-figure experiments' subsets, written out as they define them."""
    if k is None or k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(1000 + salt)
    return torch.randperm(n, generator=g)[:k].sort().values


def test_subset_indices_is_the_paper_rule():
    for n, k, salt in [(100, 10, 0), (1297, 500, 1), (250, 249, 2), (5, None, 0), (5, 9, 1)]:
        assert torch.equal(subset_indices(n, k, salt), _paper_rule(n, k, salt))
    idx = subset_indices(1000, 30, 0)
    assert idx.dtype == torch.int64 and len(set(idx.tolist())) == 30
    assert torch.equal(idx, idx.sort().values)
    assert subset_indices(10, 0, 2).shape == (0,)
    assert not torch.equal(subset_indices(1000, 30, 0), subset_indices(1000, 30, 1))
    assert SUBSET_SALT == {"train": 0, "valid": 1, "test": 2}


def test_subsets_of_digits(digits):
    torch.manual_seed(5)
    data = load_dataset("digits", train_size=100, valid_size=0, test_size=250, seed=3)
    torch.manual_seed(6)
    again = load_dataset("digits", train_size=100, valid_size=0, test_size=250)
    assert data.train.shape == (100, 1, 8, 8) and data.valid.shape == (0, 1, 8, 8)
    assert data.valid_labels.shape == (0,)
    # The salt rule, labels in step, the same whatever the seeds.
    rows = _paper_rule(1297, 100, 0)
    assert torch.equal(data.train, digits.train[rows])
    assert torch.equal(data.train_labels, digits.train_labels[rows])
    assert torch.equal(again.train, data.train)
    assert torch.equal(data.test, digits.test)  # all of it, in order
    valid = load_dataset("digits", valid_size=10)
    assert torch.equal(valid.valid_labels, digits.valid_labels[_paper_rule(250, 10, 1)])
    test = load_dataset("digits", test_size=10)
    assert torch.equal(test.test, digits.test[_paper_rule(250, 10, 2)])
    assert torch.equal(test.train, digits.train)  # other splits untouched


def test_subsets_are_taken_after_binarization(digits):
    full = load_dataset("digits", binarize="static", seed=4)
    part = load_dataset("digits", binarize="static", seed=4, train_size=50, test_size=20)
    assert torch.equal(part.train, full.train[_paper_rule(1297, 50, 0)])
    assert torch.equal(part.test, full.test[_paper_rule(250, 20, 2)])
    dynamic = load_dataset("digits", binarize="dynamic", train_size=50)
    assert dynamic.binarize == "dynamic"
    assert torch.equal(dynamic.train, digits.train[_paper_rule(1297, 50, 0)])


def test_too_large_subsets_are_refused(isolated):
    too_many = r"train_size = 1298, but the train split of 'digits' has only 1297 rows"
    with pytest.raises(DataError, match=too_many):
        load_dataset("digits", train_size=1298)
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(DataError, match="valid_size must be a non-negative integer"):
            load_dataset("mnist", valid_size=bad)  # refused before looking for files


def test_take_subsets_without_labels_and_any_event_shape():
    x = torch.rand(30, 2, 3)
    data = DataSplits("toy", x, x[:10], x[:5], (2, 3))
    cut = take_subsets(data, train_size=4, test_size=5)
    assert torch.equal(cut.train, x[_paper_rule(30, 4, 0)]) and cut.train_labels is None
    assert cut.test.shape == (5, 2, 3) and cut.valid is data.valid
    assert take_subsets(data) is data
