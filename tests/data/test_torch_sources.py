"""torch datasets as splits: a generic ``torch.utils.data.Dataset``, and torchvision
classes through a fake ``torchvision`` module (the real one is never imported here)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae.data import DataError, from_torch_datasets, load_dataset
from pyro_vae.data import rng


class Pairs(torch.utils.data.Dataset):
    """Items ``(image, label)`` (or the image alone) from stored arrays."""

    def __init__(self, images, labels=None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i] if self.labels is None else (self.images[i], self.labels[i])


def _pil_grey(n: int, h: int = 4, w: int = 3, offset: int = 0) -> list[Image.Image]:
    return [
        Image.fromarray(((np.arange(h * w) * 9 + 17 * i + offset) % 256).astype(np.uint8).reshape(h, w))
        for i in range(n)
    ]


def _as_float(images: list[Image.Image]) -> torch.Tensor:
    """The images as float32 ``(n, C, H, W)`` / 255, written out independently."""
    a = np.stack([np.asarray(im) for im in images]).astype(np.float32) / 255
    return torch.from_numpy(a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2).copy())


# --- generic datasets ------------------------------------------------------------------


def test_from_torch_datasets_train_and_test(tmp_path):
    train_images, test_images = _pil_grey(30), _pil_grey(6, offset=5)
    train = Pairs(train_images, list(range(30)))
    test = Pairs(test_images, [torch.tensor(i) for i in range(6)])  # 0-d tensors
    data = from_torch_datasets(train, test, name="mine")
    assert data.name == "mine" and data.event_shape == (1, 4, 3)
    perm = torch.from_numpy(rng.fixed_permutation(30, 0))
    assert torch.equal(data.train, _as_float(train_images)[perm[:27]])
    assert torch.equal(data.valid_labels, perm[27:])  # the valid rule: a tenth, by permutation
    assert torch.equal(data.test, _as_float(test_images))
    assert data.test_labels.tolist() == list(range(6))


def test_from_torch_datasets_with_valid_and_tensor_images():
    x = torch.rand(10, 2, 3, 3)
    data = from_torch_datasets(Pairs(x), Pairs(x[:4]), Pairs(x[:2]))
    assert data.event_shape == (2, 3, 3) and data.train_labels is None
    assert torch.equal(data.train, x) and torch.equal(data.valid, x[:2])
    assert torch.equal(data.test, x[:4])


def test_load_dataset_takes_dataset_objects():
    x = torch.rand(20, 5)  # (D,) images
    y = torch.arange(20) % 4
    single = load_dataset(Pairs(x, y), binarize="static", seed=1, test_size=1)
    assert single.event_shape == (5,) and single.is_binary
    assert [single.split(s).shape[0] for s in ("train", "valid", "test")] == [16, 2, 1]
    pair = load_dataset((Pairs(x, y), Pairs(x[:3], y[:3])))
    assert pair.test.shape == (3, 5) and pair.valid.shape == (2, 5)
    triple = load_dataset([Pairs(x, y), Pairs(x[:2], y[:2]), Pairs(x[:3], y[:3])])
    assert torch.equal(triple.valid, x[:2]) and torch.equal(triple.train_labels, y)
    with pytest.raises(DataError, match="a data set name.*torch.utils.data.Dataset.*got int"):
        load_dataset(3)
    with pytest.raises(DataError, match="path and dataset are for data set names"):
        load_dataset(Pairs(x), path="somewhere")


def test_colour_and_palette_pil_images():
    rgb = [Image.fromarray(np.full((2, 3, 3), 10 * i, np.uint8)) for i in range(5)]
    data = from_torch_datasets(Pairs(rgb), Pairs(rgb[:1]))
    assert data.event_shape == (3, 2, 3) and torch.equal(data.test, _as_float(rgb[:1]))
    palette = [im.convert("P") for im in rgb]
    assert from_torch_datasets(Pairs(palette), Pairs(palette[:1])).event_shape == (3, 2, 3)


def test_uint8_and_binary_tensors():
    grey = torch.arange(40, dtype=torch.uint8).view(10, 4) * 5
    data = from_torch_datasets(Pairs(grey), Pairs(grey[:2]))
    assert torch.equal(data.test, grey[:2].float() / 255)
    binary = (torch.arange(40).view(10, 4) % 2).to(torch.uint8)
    assert from_torch_datasets(Pairs(binary), Pairs(binary[:2])).is_binary


@pytest.mark.parametrize(
    "train, test, pattern",
    [
        (Pairs(torch.rand(5, 3) * 4), Pairs(torch.rand(2, 3)), r"outside \[0, 1\].*rescale"),
        (Pairs(["a"] * 5), Pairs(["a"]), r"\(train\), item 0: the image is a str"),
        (Pairs(torch.rand(5, 3), [0.5] * 5), Pairs(torch.rand(2, 3), [0, 1]),
         r"item 0: the label 0.5 is not an integer"),
        (Pairs([torch.rand(3)] * 4 + [torch.rand(4)]), Pairs(torch.rand(2, 3)),
         r"item 0 \(3,\), item 4 \(4,\)"),
        (Pairs(torch.rand(5, 3), list(range(5))), Pairs(torch.rand(2, 3)),
         "some datasets have labels and some do not"),
        (Pairs(torch.rand(5, 3)), Pairs(torch.rand(2, 4)), "images differ in shape"),
        (Pairs(torch.rand(5, 2, 2, 2, 2)), Pairs(torch.rand(2, 3)), r"shape \(2, 2, 2, 2\)"),
        ([(torch.rand(3), 1, 2)] * 3, Pairs(torch.rand(2, 3)), "an item of 3 parts"),
        (iter([]), Pairs(torch.rand(2, 3)), "has no len"),
    ],
)
def test_ill_formed_datasets_are_refused(train, test, pattern):
    with pytest.raises(DataError, match=pattern):
        from_torch_datasets(train, test)


def test_valid_without_test_is_refused():
    with pytest.raises(DataError, match="valid dataset without a test dataset"):
        from_torch_datasets(Pairs(torch.rand(5, 2)), valid=Pairs(torch.rand(2, 2)))


# --- torchvision, faked ----------------------------------------------------------------


class FakeMNIST:
    """Like torchvision's MNIST without transforms: ``(PIL image, int)`` items, files
    under ``root``; raises as torchvision does when they are missing."""

    calls: list[dict] = []

    def __init__(self, root, train=True, download=False):
        FakeMNIST.calls.append(dict(root=root, train=train, download=download))
        if not (Path(root) / "FakeMNIST").is_dir():
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        self.images = _pil_grey(25 if train else 4, 5, 5, offset=0 if train else 1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 10


class FakeSVHN(FakeMNIST):
    """A class that takes ``split=`` instead of ``train=`` (as SVHN does)."""

    def __init__(self, root, split="train", download=False):
        super().__init__(root, train=split == "train", download=download)


@pytest.fixture
def fake_torchvision(monkeypatch):
    package = types.ModuleType("torchvision")
    datasets = types.ModuleType("torchvision.datasets")
    datasets.FakeMNIST, datasets.FakeSVHN = FakeMNIST, FakeSVHN
    datasets.not_a_class = 3
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    FakeMNIST.calls = []
    return datasets


def test_torchvision_class_is_built_from_files_on_disk(fake_torchvision, tmp_path):
    (tmp_path / "FakeMNIST").mkdir()
    data = load_dataset("torchvision", dataset="FakeMNIST", path=tmp_path, valid_size=1)
    assert FakeMNIST.calls == [
        dict(root=str(tmp_path), train=True, download=False),
        dict(root=str(tmp_path), train=False, download=False),
    ]
    assert data.name == "torchvision:FakeMNIST" and data.event_shape == (1, 5, 5)
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [23, 1, 4]
    assert torch.equal(data.test, _as_float(_pil_grey(4, 5, 5, offset=1)))
    assert data.test_labels.tolist() == [0, 1, 2, 3]
    perm = torch.from_numpy(rng.fixed_permutation(25, 0))
    assert torch.equal(data.train_labels, perm[:23] % 10)
    assert load_dataset("TorchVision", dataset="FakeSVHN", path=tmp_path).test.shape == (4, 1, 5, 5)


def test_torchvision_errors(fake_torchvision, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("torchvision", dataset="FakeMNIST", path=tmp_path / "none")
    message = str(err.value)
    assert "Dataset not found" in message and str(tmp_path / "none") in message
    assert "FakeMNIST(root, download=True)" in message and "machine with internet" in message
    with pytest.raises(DataError, match="no data set class 'Nope'"):
        load_dataset("torchvision", dataset="Nope", path=tmp_path)
    with pytest.raises(DataError, match="no data set class 'not_a_class'"):
        load_dataset("torchvision", dataset="not_a_class", path=tmp_path)
    with pytest.raises(DataError, match="needs dataset = the class name"):
        load_dataset("torchvision", path=tmp_path)
    with pytest.raises(DataError, match='name = "torchvision" needs path'):
        load_dataset("torchvision", dataset="FakeMNIST")


def test_torchvision_not_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes the import fail
    monkeypatch.delitem(sys.modules, "torchvision.datasets", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset("torchvision", dataset="MNIST", path=tmp_path)
    message = str(err.value)
    assert "torchvision cannot be imported" in message and "pip install torchvision" in message
    assert '"idx"' in message and '"array"' in message


def test_data_package_does_not_import_torchvision():
    code = "import sys, pyro_vae.data; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
