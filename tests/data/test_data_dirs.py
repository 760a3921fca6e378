"""A data directory the user names is the only place looked (issue 17): a missing or
wrong one is refused with a message naming it, the files expected there, what it holds
instead and where a copy was found, never passed over for a fallback copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro_vae.data import DATASETS, DataError, load_dataset
from pyro_vae.data import paths as data_paths
from pyro_vae.data.idx import STEMS
from shared_data import SHARED, needs_shared


def _place(directory: Path, name: str) -> Path:
    """Empty stand-ins for the files of data set ``name`` under ``directory`` (finding
    files looks at names only; these tests never read them)."""
    for f in DATASETS[name].files:
        (directory / f.relpath).parent.mkdir(parents=True, exist_ok=True)
        (directory / f.relpath).touch()
    return directory


@pytest.fixture
def fallback(isolated, monkeypatch, tmp_path) -> Path:
    """A fallback directory (the shared copy's place) holding every named set's files."""
    shared = tmp_path / "shared"
    for name, spec in DATASETS.items():
        if spec.files:
            _place(shared, name)
    monkeypatch.setattr(data_paths, "_repo_data_dir", lambda: shared)
    return shared


def test_a_missing_data_dir_is_refused_naming_the_fallback_copy(fallback, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "no" / "such")
    message = str(err.value)
    assert message.startswith(
        f"cannot find the files of data set 'mnist' in the data directory {tmp_path / 'no' / 'such'} "
        "(which does not exist), named by --data-dir, [data] data_dir or data_dir=: a named data directory "
        "is the only place looked.")
    assert "MNIST/raw/train-images-idx3-ubyte.gz" in message  # the files expected, with their folder
    assert f"A complete copy of 'mnist' is in {fallback}" in message
    assert f"point --data-dir (data_dir=...) or $PYRO_VAE_DATA_DIR at {fallback}" in message
    assert f"`pyro-vae fetch mnist --data-dir {tmp_path / 'no' / 'such'}`" in message


def test_the_environment_variable_is_authoritative_too(fallback, monkeypatch, tmp_path):
    monkeypatch.setenv(data_paths.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        load_dataset("frey_face")
    message = str(err.value)
    assert f"the data directory {tmp_path / 'env'} (which does not exist), named by $PYRO_VAE_DATA_DIR" in message
    assert "frey_face/frey_rawface.mat under" in message and "(each .gz or not)" not in message
    assert f"A complete copy of 'frey_face' is in {fallback}" in message


def test_data_dir_wins_over_the_environment_variable(fallback, monkeypatch, tmp_path):
    monkeypatch.setenv(data_paths.ENV_VAR, str(fallback))  # complete, but not the one named
    with pytest.raises(DataError, match=f"in the data directory {tmp_path / 'mine'} "):
        load_dataset("frey_face", data_dir=tmp_path / "mine")


def test_no_copy_anywhere_says_no_more_than_that(isolated, tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", data_dir=tmp_path / "mine")
    message = str(err.value)
    assert f"the data directory {tmp_path / 'mine'}, named by" in message  # exists: no "does not exist"
    assert "A complete copy" not in message and "holds other data" not in message


def test_a_data_dir_of_another_idx_set_offers_it_not_the_fallback_mnist(fallback, tmp_path):
    mine = _place(tmp_path / "mine", "fashion_mnist")
    other = mine / "EMNIST" / "raw"
    other.mkdir(parents=True)
    for stem in STEMS:
        (other / stem).touch()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=mine)
    message = str(err.value)
    assert (f"{mine} holds other data: the files of 'fashion_mnist' (FashionMNIST/raw/): "
            f'name = "fashion_mnist"; IDX files in {other}: name = "idx" with path = "{other}".') in message
    assert f"A complete copy of 'mnist' is in {fallback}" in message


@needs_shared
def test_a_complete_named_directory_is_read_and_recorded(isolated, monkeypatch, tmp_path):
    monkeypatch.setenv(data_paths.ENV_VAR, str(tmp_path / "elsewhere"))  # data_dir wins
    data = load_dataset("frey_face", data_dir=SHARED)
    assert [s.label for s in data.sources] == [str((SHARED / "frey_face" / "frey_rawface.mat").resolve())]
    monkeypatch.setenv(data_paths.ENV_VAR, f"{tmp_path / 'empty'}{os.pathsep}{SHARED}")
    assert load_dataset("frey_face").sources == data.sources  # the variable's second directory


def test_a_missing_data_dir_is_refused_for_a_built_in_set_too(tmp_path):
    """The embedded digits read no files, but a named directory that does not exist is a
    mistake the user should hear of (it would be recorded in config.toml as if used)."""
    with pytest.raises(DataError, match=r"does not exist, and 'digits' is built in and reads no files"):
        load_dataset("digits", data_dir=tmp_path / "no-such-dir")
    assert len(load_dataset("digits", data_dir=tmp_path).train) == 1297  # an existing one is harmless
