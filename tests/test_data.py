"""The data subpackage on the real files of the shared data directory, and on bad copies.

The real-data tests need the shared copy (``<repo>/../shared/data``, found through
:func:`resolve_data_dir`); they are skipped with a reason when it is absent.
"""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import pyro_vae
from pyro_vae.data import (
    DATASETS,
    DataError,
    DataSplits,
    check_likelihood,
    load_dataset,
    resolve_data_dir,
)
from pyro_vae.data import paths as data_paths
from pyro_vae.data import rng
from pyro_vae.data.readers import read_text_matrix
from shared_data import find_shared_dir

REPO_ROOT = Path(pyro_vae.__file__).resolve().parents[1]
MNIST_RAW = "MNIST/raw"
BINARIZED = "binarized_mnist"


SHARED = find_shared_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared data directory not found")


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No fallback data directories: only an explicit ``data_dir`` is searched."""
    monkeypatch.delenv(data_paths.ENV_VAR, raising=False)
    monkeypatch.setattr(data_paths, "_repo_data_dir", lambda: tmp_path / "no-shared")
    monkeypatch.setattr(data_paths, "_home_data_dir", lambda: tmp_path / "no-home")


@pytest.fixture(scope="module")
def mnist() -> DataSplits:
    return load_dataset("mnist", data_dir=SHARED)


@pytest.fixture(scope="module")
def binarized() -> DataSplits:
    return load_dataset("binarized_mnist", data_dir=SHARED)


@pytest.fixture(scope="module")
def frey() -> DataSplits:
    return load_dataset("frey_face", data_dir=SHARED)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def _copy_tree(names: list[str], dest: Path) -> Path:
    """Copy the shared files ``names`` (relative paths) under ``dest``; returns ``dest``."""
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / name, dest / name)
    return dest


def _shapes(data: DataSplits, labels: bool = False) -> list[tuple[int, ...]]:
    """Shapes of the train, valid and test data (or labels)."""
    get = data.labels if labels else data.split
    return [tuple(get(s).shape) for s in ("train", "valid", "test")]


def _binarized_names() -> list[str]:
    return [f.relpath for f in DATASETS["binarized_mnist"].files]


def _mnist_dir_uncompressed(dest: Path) -> Path:
    """The four MNIST files, gunzipped (no ``.gz``), under ``dest/MNIST/raw``."""
    (dest / MNIST_RAW).mkdir(parents=True)
    for f in DATASETS["mnist"].files:
        content = gzip.decompress((SHARED / f.relpath).read_bytes())
        (dest / f.relpath[: -len(".gz")]).write_bytes(content)
    return dest


# --- where files are looked for --------------------------------------------------------


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv(data_paths.ENV_VAR, str(tmp_path / "env"))
    dirs = resolve_data_dir(tmp_path / "explicit")
    assert dirs[:2] == [tmp_path / "explicit", tmp_path / "env"]
    assert dirs[2] == REPO_ROOT.parent / "shared" / "data"
    assert dirs[3] == Path.home() / ".pyro_vae" / "data"
    monkeypatch.delenv(data_paths.ENV_VAR)
    assert resolve_data_dir()[0] == REPO_ROOT.parent / "shared" / "data"


@needs_shared
def test_shared_dir_is_found_without_arguments(monkeypatch):
    monkeypatch.delenv(data_paths.ENV_VAR, raising=False)
    assert load_dataset("frey_face").train.shape == (1565, 560)


# --- each data set on the real files ---------------------------------------------------


def test_digits_needs_no_files(isolated, digits):
    data = load_dataset("digits")
    assert _shapes(data) == [(1297, 64), (250, 64), (250, 64)]
    assert data.image_shape == (8, 8) and data.x_dim == 64
    assert data.train.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    all_x = torch.cat([data.train, data.valid, data.test])
    assert all_x.min() == 0 and all_x.max() == 1 and not data.is_binary
    # Every grey level is a multiple of 1/16.
    assert torch.equal(all_x * 16, torch.round(all_x * 16))
    labels = torch.cat([data.train_labels, data.valid_labels, data.test_labels])
    expected = torch.bincount(torch.as_tensor(_sklearn_digits().target))
    assert torch.equal(torch.bincount(labels), expected)
    # The split is fixed: it does not depend on the seed argument.
    assert torch.equal(load_dataset("digits", seed=7).train, data.train)


def _sklearn_digits():
    from sklearn.datasets import load_digits

    return load_digits()


@needs_shared
def test_binarized_mnist(binarized):
    assert _shapes(binarized) == [(50000, 784), (10000, 784), (10000, 784)]
    assert binarized.train.dtype == torch.float32 and binarized.image_shape == (28, 28)
    assert binarized.is_binary
    assert binarized.train_labels is None and binarized.labels("test") is None
    assert 0.12 < binarized.train.mean().item() < 0.14
    # Exactly the file's rows, in the file's order.
    raw = scipy.io.loadmat(io.BytesIO(gzip.open(SHARED / _binarized_names()[2]).read()))["X"]
    assert torch.equal(binarized.test, torch.from_numpy(raw.astype(np.float32)))


@needs_shared
def test_mnist(mnist):
    assert _shapes(mnist) == [(50000, 784), (10000, 784), (10000, 784)]
    assert _shapes(mnist, labels=True) == [(50000,), (10000,), (10000,)]
    assert mnist.train.dtype == torch.float32 and mnist.test_labels.dtype == torch.int64
    assert mnist.train.min() == 0 and mnist.train.max() == 1 and not mnist.is_binary
    counts = torch.bincount(torch.cat([mnist.train_labels, mnist.valid_labels]))
    assert counts[:3].tolist() == [5923, 6742, 5958] and counts.sum() == 60000
    assert torch.bincount(mnist.test_labels).sum() == 10000
    # train = first 50000, valid = last 10000 of the training file, in file order.
    raw = gzip.open(SHARED / MNIST_RAW / "train-images-idx3-ubyte.gz").read()
    first = np.frombuffer(raw, np.uint8, count=784, offset=16).astype(np.float32) / 255
    last = np.frombuffer(raw[-784:], np.uint8).astype(np.float32) / 255
    assert torch.equal(mnist.train[0], torch.from_numpy(first))
    assert torch.equal(mnist.valid[-1], torch.from_numpy(last))
    assert mnist.train_labels[0] == 5 and mnist.test_labels[0] == 7  # MNIST's first digits


@needs_shared
def test_frey_face(frey):
    assert _shapes(frey) == [(1565, 560), (200, 560), (200, 560)]
    assert frey.image_shape == (28, 20) and frey.train_labels is None
    all_x = torch.cat([frey.train, frey.valid, frey.test])
    assert 0 < all_x.min() and all_x.max() < 1 and not frey.is_binary
    # Splits are consecutive blocks of one fixed permutation of the images: disjoint, and
    # together every image once.
    ff = scipy.io.loadmat(SHARED / "frey_face/frey_rawface.mat")["ff"]
    images = torch.from_numpy(ff.T.astype(np.float32) / 255)
    assert torch.equal(all_x, images[torch.from_numpy(rng.fixed_permutation(1965, 0))])
    assert torch.equal(load_dataset("frey_face", data_dir=SHARED).valid, frey.valid)


def test_fixed_permutation_is_a_stable_permutation():
    perm = rng.fixed_permutation(1797, 0)
    assert np.array_equal(np.sort(perm), np.arange(1797))
    assert np.array_equal(perm, rng.fixed_permutation(1797, 0))
    assert not np.array_equal(perm, rng.fixed_permutation(1797, 1))
    # Pinned values: a change here changes every published digits/Frey split.
    assert rng.fixed_permutation(10, 0).tolist() == _PINNED_PERMUTATION


_PINNED_PERMUTATION = [1, 4, 5, 7, 6, 9, 0, 3, 2, 8]


def test_dataset_names_are_normalized():
    assert load_dataset("Digits").name == "digits"
    assert DATASETS["binarized_mnist"].files and not DATASETS["digits"].files


# --- the minibatch loader --------------------------------------------------------------


def _batches(data: DataSplits, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.loader("train", 100, **kwargs))


def test_loader_batches_and_indices(digits):
    loader = digits.loader("train", 100)
    assert len(loader) == 13 and loader.num_data == 1297
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [100] * 12 + [97]
    assert torch.equal(torch.cat([i for _, i in batches]), torch.arange(1297))
    for x, index in batches:
        assert x.dtype == torch.float32 and index.dtype == torch.int64
        assert torch.equal(x, digits.train[index])


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
    assert all(x.shape == (100, 64) for x, _ in batches)
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


# --- binarize modes and likelihood checks ----------------------------------------------


def test_static_binarization_is_reproducible_by_seed(digits):
    a = load_dataset("digits", binarize="static", seed=1)
    b = load_dataset("digits", binarize="static", seed=1)
    c = load_dataset("digits", binarize="static", seed=2)
    assert a.binarize == "static" and a.is_binary
    assert all(torch.equal(a.split(s), b.split(s)) for s in ("train", "valid", "test"))
    assert not torch.equal(a.train, c.train)
    assert abs(a.train.mean().item() - digits.train.mean().item()) < 0.01
    assert torch.equal(a.train_labels, digits.train_labels)


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
def test_static_binarization_leaves_binary_data_unchanged(binarized):
    again = load_dataset("binarized_mnist", data_dir=SHARED, binarize="static", seed=5)
    assert torch.equal(again.valid, binarized.valid)


@needs_shared
def test_check_likelihood_refuses_grey_data_for_bernoulli(frey):
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


def test_check_likelihood_refuses_values_outside_unit_interval():
    x = torch.full((4, 4), 2.0)
    data = DataSplits(name="scaled", train=x, valid=x, test=x, image_shape=(2, 2))
    for likelihood in ("gaussian", "bernoulli"):
        with pytest.raises(DataError, match=r"'scaled'.*outside \[0, 1\].*max 2"):
            check_likelihood(data, likelihood)


def test_datasplits_validates_its_tensors():
    x = torch.zeros(3, 4)
    with pytest.raises(DataError, match="float32"):
        DataSplits(name="bad", train=x.double(), valid=x, test=x, image_shape=(2, 2))
    with pytest.raises(DataError, match="labels"):
        DataSplits(
            name="bad", train=x, valid=x, test=x, image_shape=(2, 2), train_labels=torch.zeros(2)
        )
    ok = DataSplits(name="ok", train=x, valid=x, test=x, image_shape=(2, 2))
    assert "train/valid/test=3/3/3" in repr(ok)


# --- bad input -------------------------------------------------------------------------


def test_unknown_dataset_lists_known_ones():
    known = "'digits', 'binarized_mnist', 'mnist', 'frey_face'"
    with pytest.raises(DataError, match=f"unknown data set 'cifar'.*{known}"):
        load_dataset("cifar")


def test_missing_files_list_every_path_looked_at(isolated, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "mine")
    message = str(err.value)
    for directory in (tmp_path / "mine", tmp_path / "no-shared", tmp_path / "no-home"):
        for f in DATASETS["mnist"].files:
            assert str(directory / f.relpath) in message
            assert str(directory / f.relpath[: -len(".gz")]) in message
    assert "--data-dir" in message and "PYRO_VAE_DATA_DIR" in message
    assert "pyro-vae fetch mnist" in message


@needs_shared
def test_partial_directory_is_skipped_for_a_complete_one(monkeypatch, tmp_path):
    # Only one of three files in the explicit directory: the complete shared copy wins.
    _copy_tree(_binarized_names()[:1], tmp_path)
    monkeypatch.setattr(data_paths, "_repo_data_dir", lambda: SHARED)
    assert load_dataset("binarized_mnist", data_dir=tmp_path).train.shape == (50000, 784)


@needs_shared
def test_truncated_gzip(tmp_path):
    names = _binarized_names()
    _copy_tree(names, tmp_path)
    bad = tmp_path / names[1]
    bad.write_bytes((SHARED / names[1]).read_bytes()[:100000])
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", data_dir=tmp_path)
    message = str(err.value)
    assert str(bad) in message and "gzip" in message and "pyro-vae fetch binarized_mnist" in message


@needs_shared
def test_mat_file_with_wrong_shape(tmp_path):
    names = _binarized_names()
    _copy_tree(names[:2], tmp_path)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"X": np.zeros((10000, 783), np.uint8)})
    (tmp_path / names[2]).write_bytes(gzip.compress(buffer.getvalue(), compresslevel=1))
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / names[2]) in message
    assert "(10000, 784)" in message and "(10000, 783)" in message


@needs_shared
def test_not_a_mat_file(tmp_path):
    path = tmp_path / "frey_face" / "frey_rawface.mat"
    path.parent.mkdir()
    path.write_bytes(b"<!DOCTYPE html><html><body>Moved</body></html>\n" * 100)
    with pytest.raises(DataError, match=r"frey_rawface\.mat.*MATLAB \.mat file"):
        load_dataset("frey_face", data_dir=tmp_path)


def test_frey_with_wrong_rows(tmp_path):
    path = tmp_path / "frey_face" / "frey_rawface.mat"
    path.parent.mkdir()
    scipy.io.savemat(path, {"ff": np.zeros((561, 1965), np.uint8)})
    with pytest.raises(DataError, match=r"\(560, 1965\).*\(561, 1965\)"):
        load_dataset("frey_face", data_dir=tmp_path)
    scipy.io.savemat(path, {"faces": np.zeros((560, 1965), np.uint8)})
    with pytest.raises(DataError, match=r"variable 'ff'.*\['faces'\]"):
        load_dataset("frey_face", data_dir=tmp_path)


@needs_shared
def test_uncompressed_mnist_files_load(tmp_path, mnist):
    data = load_dataset("mnist", data_dir=_mnist_dir_uncompressed(tmp_path))
    assert torch.equal(data.test, mnist.test) and torch.equal(data.train_labels, mnist.train_labels)


@needs_shared
def test_idx_errors(tmp_path):
    _mnist_dir_uncompressed(tmp_path)
    labels = tmp_path / MNIST_RAW / "t10k-labels-idx1-ubyte"
    good = labels.read_bytes()

    labels.write_bytes(b"\x00\x00\x08\x03" + good[4:])  # magic of a 3-d file
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert str(labels) in message and "magic" in message and "00000803" in message

    labels.write_bytes(good[:-10])  # truncated
    with pytest.raises(DataError, match=r"t10k-labels.*10000 data bytes.*9990"):
        load_dataset("mnist", data_dir=tmp_path)

    # A well-formed file with one label fewer than there are images.
    labels.write_bytes(b"\x00\x00\x08\x01" + (9999).to_bytes(4, "big") + good[8:-1])
    with pytest.raises(DataError, match=r"t10k-labels.*10000 labels, one per image.*9999 labels"):
        load_dataset("mnist", data_dir=tmp_path)


@needs_shared
def test_text_amat_and_uncompressed_mat_are_read(tmp_path, binarized):
    names = _binarized_names()
    # train: the MAT file uncompressed under the .amat name; valid: Larochelle's text
    # format, gzipped; test: the shared gzipped MAT file.
    (tmp_path / BINARIZED).mkdir()
    plain_mat = gzip.decompress((SHARED / names[0]).read_bytes())
    (tmp_path / names[0][: -len(".gz")]).write_bytes(plain_mat)
    (tmp_path / names[1]).write_bytes(gzip.compress(_as_text(binarized.valid), compresslevel=1))
    shutil.copyfile(SHARED / names[2], tmp_path / names[2])
    data = load_dataset("binarized_mnist", data_dir=tmp_path)
    assert all(torch.equal(data.split(s), binarized.split(s)) for s in ("train", "valid", "test"))


def _as_text(x: torch.Tensor) -> bytes:
    """``x`` (n, D) of 0/1 as lines of space-separated digits, like Larochelle's files."""
    chars = np.full((x.shape[0], 2 * x.shape[1]), ord(" "), np.uint8)
    chars[:, 0::2] = x.numpy().astype(np.uint8) + ord("0")
    chars[:, -1] = ord("\n")
    return chars.tobytes()


def test_text_matrix_reader_general_and_ragged():
    path = Path("m.amat")
    assert read_text_matrix(b"0 1 1\n1 0 0\n\n", path, "t").tolist() == [[0, 1, 1], [1, 0, 0]]
    assert read_text_matrix(b"0.5 1e0\n0 0.25\n", path, "t").tolist() == [[0.5, 1.0], [0.0, 0.25]]
    with pytest.raises(DataError, match=r"m\.amat.*text matrix"):
        read_text_matrix(b"0 1 1\n1 0\n", path, "t")
