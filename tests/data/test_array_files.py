"""``.npy`` / ``.npz`` files a user brings (``name = "array"``): layouts, values, shapes
and the errors for bad ones, on tiny files written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_vae.data import DataError, load_dataset
from pyro_vae.data import rng


def _grey(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_npy_one_array_is_split_80_10_10(tmp_path):
    x = _grey(40, 6)
    np.save(tmp_path / "vectors.npy", x)
    data = load_dataset("array", path=tmp_path / "vectors.npy")
    assert data.name == "array:vectors" and data.event_shape == (6,) and not data.is_image
    assert [data.split(s).shape for s in ("train", "valid", "test")] == [(32, 6), (4, 6), (4, 6)]
    perm = torch.from_numpy(rng.fixed_permutation(40, 0))
    joined = torch.cat([data.train, data.valid, data.test])
    assert torch.equal(joined, torch.from_numpy(x)[perm]) and data.train_labels is None


@pytest.mark.parametrize(
    "shape, event", [((30, 5, 4), (1, 5, 4)), ((30, 3, 5, 4), (3, 5, 4)), ((30, 20), (20,))]
)
def test_shapes_give_event_shapes(tmp_path, shape, event):
    np.savez(tmp_path / "a.npz", x=_grey(*shape))
    data = load_dataset("array", path=str(tmp_path / "a.npz"))
    assert data.event_shape == event and data.train.shape == (24, *event)


def test_npz_x_and_y(tmp_path):
    x, y = _grey(20, 2, 2), np.arange(20) % 3
    np.savez_compressed(tmp_path / "xy.npz", x=x, y=y)
    data = load_dataset("array", path=tmp_path / "xy.npz")
    perm = rng.fixed_permutation(20, 0)
    assert data.event_shape == (1, 2, 2)
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == y[perm[:16]].tolist()
    assert data.test_labels.tolist() == y[perm[18:]].tolist()
    assert torch.equal(data.test[:, 0], torch.from_numpy(x[perm[18:]]))


def test_npz_given_splits_with_labels(tmp_path):
    arrays = {s: _grey(n, 3, 3, seed=n) for s, n in (("train", 8), ("valid", 3), ("test", 4))}
    labels = {f"{s}_labels": np.arange(len(a), dtype=np.int32) for s, a in arrays.items()}
    np.savez(tmp_path / "splits.npz", **arrays, **labels)
    data = load_dataset("array", path=tmp_path / "splits.npz")
    for s, a in arrays.items():
        assert torch.equal(data.split(s), torch.from_numpy(a)[:, None])  # kept as given
        assert data.labels(s).tolist() == list(range(len(a)))


def test_npz_without_valid_carves_it_from_train(tmp_path):
    train, test = _grey(30, 4), _grey(5, 4, seed=1)
    np.savez(tmp_path / "tt.npz", train=train, test=test)
    data = load_dataset("array", path=tmp_path / "tt.npz")
    perm = torch.from_numpy(rng.fixed_permutation(30, 0))
    assert torch.equal(data.valid, torch.from_numpy(train)[perm[27:]])
    assert torch.equal(data.train, torch.from_numpy(train)[perm[:27]])
    assert torch.equal(data.test, torch.from_numpy(test))


def test_empty_valid_split_is_kept(tmp_path):
    np.savez(tmp_path / "e.npz", train=_grey(4, 2), valid=np.zeros((0, 2), np.float32),
             test=_grey(2, 2))
    data = load_dataset("array", path=tmp_path / "e.npz")
    assert data.valid.shape == (0, 2)


def test_uint8_is_divided_by_255_and_binary_uint8_kept(tmp_path):
    grey = (np.arange(60) * 4 % 256).astype(np.uint8).reshape(10, 6)
    np.save(tmp_path / "grey.npy", grey)
    data = load_dataset("array", path=tmp_path / "grey.npy")
    joined = torch.cat([data.train, data.valid, data.test])
    perm = rng.fixed_permutation(10, 0)
    assert torch.equal(joined, torch.from_numpy(grey[perm].astype(np.float32) / 255))
    binary = (np.arange(60) % 2).astype(np.uint8).reshape(10, 6)  # 0/1: binary data
    np.save(tmp_path / "binary.npy", binary)
    data = load_dataset("array", path=tmp_path / "binary.npy")
    assert data.is_binary and data.train.sum() > 0
    np.save(tmp_path / "bool.npy", binary.astype(bool))
    assert torch.equal(load_dataset("array", path=tmp_path / "bool.npy").train, data.train)
    ints = binary.astype(np.int64)  # other integer types: fine when in [0, 1]
    np.save(tmp_path / "ints.npy", ints)
    assert torch.equal(load_dataset("array", path=tmp_path / "ints.npy").train, data.train)


@pytest.mark.parametrize(
    "array, found",
    [
        (np.full((10, 3), 2.5, np.float32), "values from 2.5 to 2.5"),
        (np.arange(30, dtype=np.float64).reshape(10, 3) - 1, "values from -1 to 28"),
        (np.full((10, 3), 300, np.int64), "values from 300 to 300"),
        (np.array([[np.nan, 0.5, 1.0]] * 10, np.float32), "values from 0.5 to 1 and NaN"),
    ],
)
def test_values_outside_the_unit_interval_are_refused(tmp_path, array, found):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DataError) as err:
        load_dataset("array", path=path)
    message = str(err.value)
    assert str(path) in message and found in message and "outside [0, 1]" in message
    assert "rescale the data to [0, 1]" in message


def test_mixed_uint8_and_float_splits_are_refused(tmp_path):
    np.savez(tmp_path / "m.npz", train=np.full((4, 2), 200, np.uint8), test=_grey(2, 2))
    with pytest.raises(DataError, match=r"\['train'\] are uint8 grey levels.*'test': 'float32'"):
        load_dataset("array", path=tmp_path / "m.npz")


@pytest.mark.parametrize(
    "arrays, pattern",
    [
        ({"x": _grey(10, 3), "y": np.arange(9)}, r"labels 'y'.*shape \(10,\).*int64 \(9,\)"),
        ({"x": _grey(10, 3), "y": np.arange(10.0)}, r"labels 'y' must be an integer.*float64"),
        ({"x": _grey(10, 3), "y": np.arange(10)[:, None]}, r"'y'.*\(10,\).*\(10, 1\)"),
        ({"train": _grey(5, 2), "test": _grey(3, 2), "train_labels": np.arange(5)},
         r"labels for \['train'\] but not for \['test'\]"),
        ({"train": _grey(5, 2), "test": _grey(3, 2), "train_labels": np.arange(5),
          "test_labels": np.arange(4)}, r"'test_labels'.*\(3,\).*\(4,\)"),
        ({"train": _grey(5, 2), "test": _grey(3, 3)}, "differ in shape"),
        ({"train": _grey(5, 2), "valid": _grey(5, 2)}, r"found the arrays \['train', 'valid'\]"),
        ({"x": _grey(5, 2), "train": _grey(5, 2), "test": _grey(5, 2)}, "found the arrays"),
        ({"images": _grey(5, 2)}, r"'x' and optionally labels 'y'.*\['images'\]"),
        ({"x": _grey(10)}, r"array 'x' has shape \(10,\); expected rows of vectors"),
        ({"x": _grey(4, 1, 2, 3, 4)}, r"shape \(4, 1, 2, 3, 4\)"),
        ({"x": _grey(2, 3)}, "2 rows cannot be split.*at least 3"),
        ({"x": np.array([["a", "b"]] * 4)}, "not numbers"),
    ],
)
def test_ill_formed_npz_files_are_refused(tmp_path, arrays, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset("array", path=path)
    assert str(path) in str(err.value)


def test_missing_unreadable_and_pickled_files(tmp_path):
    with pytest.raises(DataError, match=r"cannot find the array file \S*nope\.npy.*\.npz"):
        load_dataset("array", path=tmp_path / "nope.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"junk\.npz.*corrupt.*\.npy or \.npz file numpy can read"):
        load_dataset("array", path=tmp_path / "junk.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"objects\.npy.*no pickles"):
        load_dataset("array", path=tmp_path / "objects.npy")
    with pytest.raises(DataError, match='name = "array" needs path'):
        load_dataset("array")
    with pytest.raises(DataError, match='only for name = "torchvision"'):
        load_dataset("array", path=tmp_path / "objects.npy", dataset="MNIST")


def test_array_with_binarize_and_subsets(tmp_path):
    np.save(tmp_path / "g.npy", _grey(50, 4))
    full = load_dataset("array", path=tmp_path / "g.npy", binarize="static", seed=2)
    part = load_dataset("array", path=tmp_path / "g.npy", binarize="static", seed=2, train_size=7)
    assert part.train.shape == (7, 4) and full.is_binary
    assert torch.equal(part.valid, full.valid)
