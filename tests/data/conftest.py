"""Fixtures of the data tests."""

from __future__ import annotations

import pytest

from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.data import paths as data_paths


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No fallback data directories: only an explicit ``data_dir`` is searched."""
    monkeypatch.delenv(data_paths.ENV_VAR, raising=False)
    monkeypatch.setattr(data_paths, "_repo_data_dir", lambda: tmp_path / "no-shared")
    monkeypatch.setattr(data_paths, "_home_data_dir", lambda: tmp_path / "no-home")


@pytest.fixture(scope="session")
def digits() -> DataSplits:
    return load_dataset("digits")
