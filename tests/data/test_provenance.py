"""Every load records what it read: each file with its sha256 and size, or a checksum of
the arrays for data that come from no file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.data import DataError, DataSource, from_torch_datasets, load_dataset
from pyro_vae.data import provenance
from pyro_vae.data.idx import STEMS
from shared_data import SHARED, needs_shared


def _file(path: Path) -> DataSource:
    """What the record of ``path`` must be, computed here independently."""
    path = path.resolve()
    return DataSource("file", str(path), hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _idx_folder(folder: Path) -> list[Path]:
    """A small IDX folder (40 + 10 images of 5x4); its four files in STEMS order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 5, 4)), rng.integers(0, 10, 40),
              rng.integers(0, 256, (10, 5, 4)), rng.integers(0, 10, 10)]
    for stem, a in zip(STEMS, arrays):
        _idx(folder / stem, a)
    return [folder / stem for stem in STEMS]


def test_idx_folder_records_its_four_files_through_binarization_and_subsets(tmp_path):
    files = _idx_folder(tmp_path / "mine")
    data = load_dataset("idx", path=tmp_path / "mine", binarize="static", train_size=5)
    assert list(data.sources) == [_file(p) for p in files]
    assert data.sources[0].line() == (f"data file {files[0].resolve()}  sha256 "
                                      f"{data.sources[0].sha256}  {files[0].stat().st_size} bytes")


def test_array_file_records_itself(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(0).random((30, 3)))
    assert load_dataset("array", path=path).sources == (_file(path),)


@needs_shared
def test_named_set_records_its_files_in_order():
    data = load_dataset("frey_face", data_dir=SHARED)
    assert data.sources == (_file(SHARED / "frey_face" / "frey_rawface.mat"),)


def test_embedded_digits_record_a_checksum_of_their_arrays():
    data = load_dataset("digits", binarize="dynamic")
    (source,) = data.sources
    assert (source.kind, source.label) == ("arrays", "sklearn.datasets.load_digits")
    plain = load_dataset("digits")
    expected = provenance.array_source(
        "sklearn.datasets.load_digits",
        [plain.train, plain.valid, plain.test, plain.train_labels, plain.valid_labels, plain.test_labels])
    assert source == expected and source.size == 1797 * 64 * 4 + 1797 * 8
    assert source.line().startswith("data arrays sklearn.datasets.load_digits  sha256 ")


def test_torch_datasets_record_a_checksum_of_their_arrays():
    train = torch.utils.data.TensorDataset(torch.rand(20, 1, 2, 2), torch.arange(20))
    test = torch.utils.data.TensorDataset(torch.rand(5, 1, 2, 2), torch.arange(5))
    (source,) = load_dataset((train, test)).sources
    assert source.kind == "arrays" and source.label == "torch datasets (in memory)"
    assert from_torch_datasets(train, test).sources == ()  # built by hand: nothing claimed


def test_a_changed_file_is_hashed_again(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = provenance.file_source(path)
    path.write_bytes(b"other")  # another size: not the cached digest
    assert provenance.file_source(path) == _file(path) != first


def test_an_unreadable_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"cannot read data file .*gone.*checksum"):
        provenance.file_source(tmp_path / "gone")
