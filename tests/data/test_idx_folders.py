"""IDX folders a user brings (``name = "idx"``), and Fashion-MNIST / KMNIST found under
torchvision's folder names, all on tiny files written here."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.data import DATASETS, DataError, fetch, load_dataset
from pyro_vae.data import rng
from pyro_vae.data.idx import STEMS


def _idx_bytes(a: np.ndarray) -> bytes:
    """``a`` (uint8) as an IDX file: magic ``00 00 08 ndim``, big-endian sizes, data."""
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    return header + np.ascontiguousarray(a, np.uint8).tobytes()


def _images(n: int, h: int, w: int, offset: int = 0) -> np.ndarray:
    """``n`` distinct-looking uint8 images ``(n, h, w)``."""
    period = ((np.arange(256) * 7 + offset) % 256).astype(np.uint8)  # (7 i + offset) % 256
    return np.resize(period, n * h * w).reshape(n, h, w)


def _write_folder(
    folder: Path, n_train: int, n_test: int, size=(28, 28), gz: bool = True
) -> dict[str, np.ndarray]:
    """The four IDX files of a tiny data set in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        STEMS[0]: _images(n_train, *size),
        STEMS[1]: (np.arange(n_train) % 10).astype(np.uint8),
        STEMS[2]: _images(n_test, *size, offset=3),
        STEMS[3]: ((np.arange(n_test) + 3) % 10).astype(np.uint8),
    }
    for stem, a in arrays.items():
        content = _idx_bytes(a)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(content, compresslevel=1))
        else:
            (folder / stem).write_bytes(content)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_small_folder_is_split_by_the_fixed_permutation(tmp_path, gz):
    arrays = _write_folder(tmp_path / "mine", 50, 7, gz=gz)
    data = load_dataset("idx", path=tmp_path / "mine")
    assert data.name == "idx:mine" and data.event_shape == (1, 28, 28)
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [45, 5, 7]
    images = torch.from_numpy(arrays[STEMS[0]].astype(np.float32) / 255)[:, None]
    labels = torch.from_numpy(arrays[STEMS[1]].astype(np.int64))
    perm = torch.from_numpy(rng.fixed_permutation(50, 0))
    assert torch.equal(data.train, images[perm[:45]]) and torch.equal(data.valid, images[perm[45:]])
    assert torch.equal(data.train_labels, labels[perm[:45]])
    assert torch.equal(data.valid_labels, labels[perm[45:]])
    test = torch.from_numpy(arrays[STEMS[2]].astype(np.float32) / 255)[:, None]
    assert torch.equal(data.test, test)
    assert data.test_labels.tolist() == [3, 4, 5, 6, 7, 8, 9]


def test_other_image_size_from_the_headers(tmp_path):
    _write_folder(tmp_path / "odd", 12, 4, size=(5, 3), gz=False)
    data = load_dataset("idx", path=tmp_path / "odd", binarize="static")
    assert data.event_shape == (1, 5, 3) and data.image_shape == (5, 3) and data.x_dim == 15
    assert data.train.shape == (11, 1, 5, 3) and data.valid.shape == (1, 1, 5, 3)
    assert data.is_binary and data.binarize == "static"


def test_large_folder_keeps_the_last_10000_rows_for_valid(tmp_path):
    arrays = _write_folder(tmp_path / "big", 20001, 2, size=(2, 2))
    data = load_dataset("idx", path=str(tmp_path / "big"))
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [10001, 10000, 2]
    images = torch.from_numpy(arrays[STEMS[0]].astype(np.float32) / 255)[:, None]
    assert torch.equal(data.train, images[:10001]) and torch.equal(data.valid, images[10001:])
    assert data.valid_labels[0] == 10001 % 10


def test_mixed_gz_and_plain_files(tmp_path):
    folder = tmp_path / "mix"
    _write_folder(folder, 20, 3)
    plain = folder / f"{STEMS[2]}.gz"
    (folder / STEMS[2]).write_bytes(gzip.decompress(plain.read_bytes()))
    plain.unlink()
    assert load_dataset("idx", path=folder).test.shape == (3, 1, 28, 28)


def test_torchvision_raw_folder_is_named_by_its_class_folder(tmp_path):
    _write_folder(tmp_path / "EMNIST" / "raw", 10, 2, size=(4, 4))
    assert load_dataset("idx", path=tmp_path / "EMNIST" / "raw").name == "idx:EMNIST"


def test_missing_idx_files_name_the_folder_and_the_fix(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / f"{STEMS[0]}.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_dataset("idx", path=folder)
    message = str(err.value)
    assert str(folder) in message and STEMS[1] in message and STEMS[3] in message
    assert "raw/" in message and "torchvision.datasets.FashionMNIST(root, download=True)" in message
    with pytest.raises(DataError, match='name = "idx" needs path'):
        load_dataset("idx")


def test_inconsistent_idx_folders(tmp_path):
    folder = tmp_path / "bad"
    arrays = _write_folder(folder, 10, 3, size=(4, 4), gz=False)
    (folder / STEMS[2]).write_bytes(_idx_bytes(_images(3, 4, 5)))
    with pytest.raises(DataError, match=r"t10k-images.*\(n, 4, 4\).*\(3, 4, 5\)"):
        load_dataset("idx", path=folder)
    (folder / STEMS[2]).write_bytes(_idx_bytes(arrays[STEMS[2]]))
    (folder / STEMS[1]).write_bytes(_idx_bytes(arrays[STEMS[1]][:9]))
    with pytest.raises(DataError, match=r"train-labels.*10 labels, one per image.*9 labels"):
        load_dataset("idx", path=folder)
    (folder / STEMS[1]).write_bytes(_idx_bytes(arrays[STEMS[1]])[:-1])
    with pytest.raises(DataError) as err:
        load_dataset("idx", path=folder)
    message = str(err.value)
    assert str(folder / STEMS[1]) in message and "truncated" in message
    assert "pyro-vae fetch" not in message and "good copy" in message
    (folder / STEMS[1]).write_bytes(_idx_bytes(arrays[STEMS[1]][:1]))
    (folder / STEMS[0]).write_bytes(_idx_bytes(arrays[STEMS[0]][:1]))
    with pytest.raises(DataError, match="1 rows cannot give a valid split"):
        load_dataset("idx", path=folder)


# --- Fashion-MNIST and KMNIST under torchvision's folder names --------------------------


@pytest.mark.parametrize("name, folder", [("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_named_idx_sets_are_found_under_their_folder(tmp_path, isolated, name, folder):
    arrays = _write_folder(tmp_path / "data" / folder / "raw", 60000, 10000, gz=False)
    data = load_dataset(name.replace("_", "-").upper(), data_dir=tmp_path / "data")
    assert data.name == name and data.event_shape == (1, 28, 28) == DATASETS[name].event_shape
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [50000, 10000, 10000]
    # The mnist protocol: first 50000 / last 10000 of the training file, labels kept.
    first = torch.from_numpy(arrays[STEMS[0]][0].astype(np.float32) / 255)
    assert torch.equal(data.train[0, 0], first) and data.valid_labels[0] == 50000 % 10
    assert data.test_labels.shape == (10000,)


@pytest.mark.parametrize("name, folder", [("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_named_idx_sets_missing_say_where_and_how(tmp_path, isolated, name, folder):
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path / "mine")
    message = str(err.value)
    assert str(tmp_path / "mine" / folder / "raw" / f"{STEMS[0]}.gz") in message
    assert str(tmp_path / "mine" / folder / "raw" / STEMS[3]) in message
    assert f"<data dir>/{folder}/raw/" in message
    assert f"torchvision.datasets.{folder}(root, download=True)" in message
    assert "pyro-vae fetch" in message and "no checksums" in message  # says fetch cannot


def test_named_idx_set_of_the_wrong_size_is_refused(tmp_path, isolated):
    _write_folder(tmp_path / "FashionMNIST" / "raw", 10, 2)
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "(60000, 28, 28)" in message and "(10, 28, 28)" in message
    assert "Replace it with a good copy" in message and "FashionMNIST(root, download=True)" in message


def test_fetch_refuses_sets_without_checksums(tmp_path):
    for name in ("fashion_mnist", "kmnist"):
        with pytest.raises(DataError, match=f"'{name}' cannot be downloaded.*no checksums"):
            fetch([name], tmp_path, mirror="http://127.0.0.1:9/")
    assert not any(tmp_path.iterdir())


def test_missing_named_set_lists_the_folders_looked_in(tmp_path, isolated):
    with pytest.raises(DataError, match="Folders looked in: " + str(tmp_path / "a" / "KMNIST" / "raw")):
        load_dataset("kmnist", data_dir=tmp_path / "a")
    with pytest.raises(DataError, match=r"in the folder \S*nowhere \(no such folder\)"):
        load_dataset("idx", path=tmp_path / "nowhere")
