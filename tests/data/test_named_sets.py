"""The named data sets on the real files of the shared data directory, and on bad copies.

The real-data tests need the shared copy (``<repo>/../shared/data``, found through
:func:`resolve_data_dir`); they are skipped with a reason when it is absent.
"""

from __future__ import annotations

import gzip
import io
import os
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
    get_spec,
    load_dataset,
    resolve_data_dir,
)
from pyro_vae.data import paths as data_paths
from pyro_vae.data import rng
from pyro_vae.data.readers import read_text_matrix
from shared_data import SHARED, needs_shared

REPO_ROOT = Path(pyro_vae.__file__).resolve().parents[1]
MNIST_RAW = "MNIST/raw"
BINARIZED = "binarized_mnist"

EVENT_SHAPES = {
    "digits": (1, 8, 8),
    "binarized_mnist": (1, 28, 28),
    "mnist": (1, 28, 28),
    "frey_face": (1, 28, 20),
    "fashion_mnist": (1, 28, 28),
    "kmnist": (1, 28, 28),
    "moons": (2,),
    "circles": (2,),
    "ring": (2,),
    "dsprites": (1, 64, 64),
    "dsprites_original": (1, 64, 64),
    "power": (6,),
    "gas": (8,),
    "hepmass": (21,),
    "miniboone": (43,),
    "bsds300": (63,),
}


@pytest.fixture(scope="module")
def mnist() -> DataSplits:
    return load_dataset("mnist", data_dir=SHARED)


@pytest.fixture(scope="module")
def binarized() -> DataSplits:
    return load_dataset("binarized_mnist", data_dir=SHARED)


@pytest.fixture(scope="module")
def frey() -> DataSplits:
    return load_dataset("frey_face", data_dir=SHARED)


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


def test_resolve_data_dir_searches_a_named_directory_alone(monkeypatch, tmp_path):
    # data_dir over the variable, the variable over the fallbacks: a named place is authoritative.
    monkeypatch.setenv(data_paths.ENV_VAR, f"{tmp_path / 'env'}{os.pathsep}{tmp_path / 'env2'}")
    assert resolve_data_dir(tmp_path / "explicit") == [tmp_path / "explicit"]
    assert resolve_data_dir() == [tmp_path / "env", tmp_path / "env2"]
    monkeypatch.delenv(data_paths.ENV_VAR)
    assert resolve_data_dir() == [REPO_ROOT.parent / "shared" / "data", Path.home() / ".pyro_vae" / "data"]


@needs_shared
def test_shared_dir_is_found_without_arguments(monkeypatch):
    monkeypatch.delenv(data_paths.ENV_VAR, raising=False)
    assert load_dataset("frey_face").train.shape == (1565, 1, 28, 20)


# --- the registry ----------------------------------------------------------------------


def test_registry_event_shapes():
    assert {name: spec.event_shape for name, spec in DATASETS.items()} == EVENT_SHAPES
    for spec in DATASETS.values():
        if len(spec.event_shape) == 3:  # images; the 2-D toy sets are points
            assert spec.image_shape == spec.event_shape[1:]
        assert spec.x_dim == int(np.prod(spec.event_shape))
    assert DATASETS["mnist"].fetchable and not DATASETS["fashion_mnist"].fetchable
    assert not DATASETS["digits"].fetchable and not DATASETS["digits"].files
    assert [f.relpath for f in DATASETS["kmnist"].files][0] == "KMNIST/raw/train-images-idx3-ubyte.gz"


def test_dataset_names_are_normalized():
    assert load_dataset("Digits").name == "digits"
    assert get_spec("Fashion-MNIST").name == "fashion_mnist" and get_spec(" KMNIST ").name == "kmnist"
    assert DATASETS["binarized_mnist"].files and not DATASETS["digits"].files


@pytest.mark.parametrize(
    "name, fixture",
    [("digits", "digits"), ("binarized_mnist", "binarized"), ("mnist", "mnist"), ("frey_face", "frey")],
)
def test_event_shape_of_every_named_set(name, fixture, request):
    if fixture != "digits" and SHARED is None:
        pytest.skip("shared data directory not found")
    data = request.getfixturevalue(fixture)
    event = EVENT_SHAPES[name]
    assert data.event_shape == event and data.is_image
    assert all(data.split(s).shape[1:] == event for s in ("train", "valid", "test"))
    assert data.image_shape == event[1:] and data.x_dim == int(np.prod(event))
    assert f"event_shape={event}" in repr(data)


# --- each data set on the real files ---------------------------------------------------


def test_digits_needs_no_files(isolated, digits):
    data = load_dataset("digits")
    assert _shapes(data) == [(1297, 1, 8, 8), (250, 1, 8, 8), (250, 1, 8, 8)]
    assert data.event_shape == (1, 8, 8)
    assert data.image_shape == (8, 8) and data.x_dim == 64
    assert data.train.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    all_x = torch.cat([data.train, data.valid, data.test])
    assert all_x.min() == 0 and all_x.max() == 1 and not data.is_binary
    # Every grey level is a multiple of 1/16.
    assert torch.equal(all_x * 16, torch.round(all_x * 16))
    labels = torch.cat([data.train_labels, data.valid_labels, data.test_labels])
    bunch = _sklearn_digits()
    expected = torch.bincount(torch.as_tensor(bunch.target))
    assert torch.equal(torch.bincount(labels), expected)
    # The images themselves, in the fixed permutation's order, each (1, 8, 8).
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16)[:, None]
    perm = torch.from_numpy(rng.fixed_permutation(1797, 0))
    assert torch.equal(all_x, images[perm])
    # The split is fixed: it does not depend on the seed argument.
    assert torch.equal(load_dataset("digits", seed=7).train, data.train)


def _sklearn_digits():
    from sklearn.datasets import load_digits

    return load_digits()


@needs_shared
def test_binarized_mnist(binarized):
    assert _shapes(binarized) == [(50000, 1, 28, 28), (10000, 1, 28, 28), (10000, 1, 28, 28)]
    assert binarized.train.dtype == torch.float32 and binarized.image_shape == (28, 28)
    assert binarized.is_binary
    assert binarized.train_labels is None and binarized.labels("test") is None
    assert 0.12 < binarized.train.mean().item() < 0.14
    # Exactly the file's rows, in the file's order, each row a row-major 28x28 image.
    raw = scipy.io.loadmat(io.BytesIO(gzip.open(SHARED / _binarized_names()[2]).read()))["X"]
    assert torch.equal(binarized.test, torch.from_numpy(raw.astype(np.float32)).view(-1, 1, 28, 28))


@needs_shared
def test_mnist(mnist):
    assert _shapes(mnist) == [(50000, 1, 28, 28), (10000, 1, 28, 28), (10000, 1, 28, 28)]
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
    assert torch.equal(mnist.train[0], torch.from_numpy(first).view(1, 28, 28))
    assert torch.equal(mnist.valid[-1], torch.from_numpy(last).view(1, 28, 28))
    assert mnist.train_labels[0] == 5 and mnist.test_labels[0] == 7  # MNIST's first digits


@needs_shared
def test_frey_face(frey):
    assert _shapes(frey) == [(1565, 1, 28, 20), (200, 1, 28, 20), (200, 1, 28, 20)]
    assert frey.image_shape == (28, 20) and frey.train_labels is None
    all_x = torch.cat([frey.train, frey.valid, frey.test])
    assert 0 < all_x.min() and all_x.max() < 1 and not frey.is_binary
    # Splits are consecutive blocks of one fixed permutation of the images: disjoint, and
    # together every image once; column j of ff is image j, 28 rows of 20.
    ff = scipy.io.loadmat(SHARED / "frey_face/frey_rawface.mat")["ff"]
    images = torch.from_numpy(ff.T.astype(np.float32) / 255).reshape(-1, 1, 28, 20)
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


# --- bad input -------------------------------------------------------------------------


def test_unknown_dataset_lists_known_ones():
    known = "'digits', 'binarized_mnist', 'mnist', 'frey_face', 'fashion_mnist', 'kmnist'"
    with pytest.raises(DataError, match=f"unknown data set 'cifar'.*{known}") as err:
        load_dataset("cifar")
    assert "'idx'" in str(err.value) and "'array'" in str(err.value)
    assert "'torchvision'" in str(err.value)


def test_path_and_dataset_are_refused_for_named_sets(tmp_path):
    with pytest.raises(DataError, match="only for the sources.*'digits'.*data_dir"):
        load_dataset("digits", path=tmp_path)
    with pytest.raises(DataError, match="only for the sources"):
        load_dataset("mnist", dataset="MNIST")


def test_missing_files_list_every_path_looked_at(isolated, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "mine")
    message = str(err.value)
    for f in DATASETS["mnist"].files:
        assert str(tmp_path / "mine" / f.relpath) in message
        assert str(tmp_path / "mine" / f.relpath[: -len(".gz")]) in message
    assert "no-shared" not in message and "no-home" not in message  # a named directory alone
    assert "pyro-vae fetch mnist --data-dir" in message
    with pytest.raises(DataError) as err:  # nothing named: the fallbacks are searched
        load_dataset("mnist")
    message = str(err.value)
    for directory in (tmp_path / "no-shared", tmp_path / "no-home"):
        for f in DATASETS["mnist"].files:
            assert str(directory / f.relpath) in message
            assert str(directory / f.relpath[: -len(".gz")]) in message
    assert "--data-dir" in message and "PYRO_VAE_DATA_DIR" in message
    assert "pyro-vae fetch mnist" in message


@needs_shared
def test_partial_named_directory_is_refused_naming_the_complete_copy(monkeypatch, tmp_path):
    # Only one of three files in the named directory: refused, not made up from the shared copy.
    _copy_tree(_binarized_names()[:1], tmp_path)
    monkeypatch.setattr(data_paths, "_repo_data_dir", lambda: SHARED)
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", data_dir=tmp_path)
    message = str(err.value)
    assert f"in the data directory {tmp_path}, named by --data-dir" in message
    assert str(tmp_path / _binarized_names()[1]) in message  # a missing file
    assert f"A complete copy of 'binarized_mnist' is in {SHARED}" in message


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
    assert "pyro-vae fetch mnist" in message

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
    """``x`` (n, ...) of 0/1 as lines of space-separated digits (one row of the flattened
    data per line), like Larochelle's files."""
    x = x.flatten(1)
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
