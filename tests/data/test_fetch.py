"""``fetch`` against a local HTTP mirror (127.0.0.1 only) serving copies of the shared data."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

from pyro_vae.data import DATASETS, DataError, fetch, load_dataset
from pyro_vae.data import paths as data_paths
from pyro_vae.data.fetch import content_sha256, fetch_file
from shared_data import SHARED

FREY = "frey_face/frey_rawface.mat"
T10K_LABELS = "MNIST/raw/t10k-labels-idx1-ubyte.gz"


pytestmark = pytest.mark.skipif(SHARED is None, reason="shared data directory not found")


class _Mirror:
    """A running local server: its base URL and the paths it was asked for."""

    def __init__(self, url: str, requests: list[str]):
        self.url = url
        self.requests = requests


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[_Mirror]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port) for the block's duration."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield _Mirror(f"http://127.0.0.1:{server.server_address[1]}/", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def no_proxy_no_fallbacks(monkeypatch, tmp_path):
    """Talk to 127.0.0.1 directly, and load only from the directory under test."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv(data_paths.ENV_VAR, raising=False)
    monkeypatch.setattr(data_paths, "_repo_data_dir", lambda: tmp_path / "no-shared")
    monkeypatch.setattr(data_paths, "_home_data_dir", lambda: tmp_path / "no-home")


@pytest.fixture
def shared_mirror() -> Iterator[_Mirror]:
    with _serve(SHARED) as mirror:
        yield mirror


def _leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".part")]


def test_hard_coded_checksums_match_the_shared_files():
    fetchable = [spec for spec in DATASETS.values() if spec.fetchable]
    assert [s.name for s in fetchable] == ["binarized_mnist", "mnist", "frey_face"]
    for spec in fetchable:
        for f in spec.files:
            assert content_sha256(SHARED / f.relpath) == f.sha256, f.relpath


def test_fetch_all_means_the_sets_with_checksums(monkeypatch, tmp_path):
    module = sys.modules["pyro_vae.data.fetch"]  # the package re-exports the function
    asked = []
    monkeypatch.setattr(module, "fetch_file", lambda f, *args: asked.append(f.relpath) or f.relpath)
    fetch(None, tmp_path)
    expected = [f.relpath for n in ("binarized_mnist", "mnist", "frey_face") for f in DATASETS[n].files]
    assert asked == expected
    with pytest.raises(DataError, match=r"'kmnist' cannot be downloaded.*KMNIST/raw/"):
        fetch(["mnist", "kmnist"], tmp_path)
    assert asked == expected  # refused before any download


def test_fetch_file_refuses_a_file_without_checksum(tmp_path):
    with pytest.raises(DataError, match="FashionMNIST/raw/train-images-idx3-ubyte.gz has no checksum"):
        fetch_file(DATASETS["fashion_mnist"].files[0], tmp_path)


def test_fetch_from_mirror_then_load(shared_mirror, tmp_path):
    target = tmp_path / "data"
    names = ["frey_face", "mnist", "binarized_mnist"]
    got = fetch(names, target, mirror=shared_mirror.url, timeout=10)
    expected = [f.relpath for name in names for f in DATASETS[name].files]
    assert got == [target / rel for rel in expected]
    assert sorted(shared_mirror.requests) == sorted("/" + rel for rel in expected)
    for rel in expected:
        assert (target / rel).read_bytes() == (SHARED / rel).read_bytes()
    assert not _leftovers(target)
    for name in names:
        fetched = load_dataset(name, data_dir=target)
        reference = load_dataset(name, data_dir=SHARED)
        assert torch.equal(fetched.test, reference.test)
        assert torch.equal(fetched.train, reference.train)


def test_verified_files_are_not_downloaded_again(shared_mirror, tmp_path):
    first = fetch(["frey_face", "digits"], tmp_path, mirror=shared_mirror.url)
    assert first == [tmp_path / FREY] and len(shared_mirror.requests) == 1
    assert fetch(["frey_face"], tmp_path, mirror=shared_mirror.url) == first
    assert len(shared_mirror.requests) == 1
    assert fetch(["digits"], tmp_path, mirror=shared_mirror.url) == []


def test_corrupt_download_is_refused_and_leaves_no_file(tmp_path):
    served = tmp_path / "served"
    (served / "frey_face").mkdir(parents=True)
    good = (SHARED / FREY).read_bytes()
    (served / FREY).write_bytes(good[:500] + bytes([good[500] ^ 0xFF]) + good[501:])
    target = tmp_path / "data"
    with _serve(served) as mirror, pytest.raises(DataError) as err:
        fetch(["frey_face"], target, mirror=mirror.url)
    message = str(err.value)
    assert f"{mirror.url}{FREY}" in message and "sha256" in message
    assert DATASETS["frey_face"].files[0].sha256 in message and "another mirror" in message
    assert not (target / FREY).exists() and not _leftovers(target)


def test_bad_download_leaves_an_existing_file_untouched(tmp_path):
    served = tmp_path / "served"
    (served / "frey_face").mkdir(parents=True)
    (served / FREY).write_bytes((SHARED / FREY).read_bytes()[:2000])  # truncated
    target = tmp_path / "data"
    (target / "frey_face").mkdir(parents=True)
    stale = b"an older, damaged copy"
    (target / FREY).write_bytes(stale)
    with _serve(served) as mirror, pytest.raises(DataError, match="sha256"):
        fetch(["frey_face"], target, mirror=mirror.url)
    assert (target / FREY).read_bytes() == stale and not _leftovers(target)


def test_damaged_existing_file_is_replaced(shared_mirror, tmp_path):
    (tmp_path / "frey_face").mkdir()
    (tmp_path / FREY).write_bytes(b"garbage")
    assert fetch(["frey_face"], tmp_path, mirror=shared_mirror.url) == [tmp_path / FREY]
    assert content_sha256(tmp_path / FREY) == DATASETS["frey_face"].files[0].sha256


def test_uncompressed_copy_verifies_and_is_stored_without_gz(tmp_path):
    # A mirror serving the uncompressed original under the .gz name: same checksum, and
    # it is stored under the plain name the loader also accepts.
    served = tmp_path / "served"
    (served / "MNIST/raw").mkdir(parents=True)
    for f in DATASETS["mnist"].files:
        shutil.copyfile(SHARED / f.relpath, served / f.relpath)
    (served / T10K_LABELS).write_bytes(gzip.decompress((SHARED / T10K_LABELS).read_bytes()))
    target = tmp_path / "data"
    (target / "MNIST/raw").mkdir(parents=True)
    (target / T10K_LABELS).write_bytes(b"damaged")  # would shadow the new plain file
    with _serve(served) as mirror:
        got = fetch(["mnist"], target, mirror=mirror.url)
    assert got[3] == target / T10K_LABELS[: -len(".gz")] and got[3].is_file()
    assert not (target / T10K_LABELS).exists()
    assert load_dataset("mnist", data_dir=target).test_labels.shape == (10000,)


def test_network_errors_name_the_url(tmp_path):
    with _serve(tmp_path / "empty") as mirror, pytest.raises(DataError) as err:
        fetch(["frey_face"], tmp_path / "data", mirror=mirror.url)
    assert f"{mirror.url}{FREY}" in str(err.value) and "404" in str(err.value)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match=rf"cannot download http://127\.0\.0\.1:{port}/{FREY}"):
        fetch(["frey_face"], tmp_path / "data", mirror=f"http://127.0.0.1:{port}", timeout=5)
    assert not _leftovers(tmp_path / "data")


def test_unwritable_target_is_a_data_error(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DataError, match="cannot write"):
        fetch(["frey_face"], tmp_path / "file" / "data", mirror="http://127.0.0.1:9/")


def test_unknown_name_is_refused_before_any_download(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'svhn'"):
        fetch(["frey_face", "svhn"], tmp_path, mirror="http://127.0.0.1:9/")
    assert not any(tmp_path.iterdir())
