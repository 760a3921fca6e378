"""Map-style torch datasets as splits: any ``torch.utils.data.Dataset``, or a class of
``torchvision.datasets`` built from files already on disk.

An item is ``(image, label)`` or ``image`` alone. Images may be PIL images (grey
``(H, W)`` -> ``(1, H, W)``; colour ``(H, W, C)`` -> ``(C, H, W)``; palette images are
converted to RGB), or tensors / numpy arrays, read channels first as torch does:
``(D,)`` kept, ``(H, W)`` -> ``(1, H, W)``, ``(C, H, W)`` kept. Values as for arrays
(:func:`~pyro_vae.data.arrays.unit_scale`): uint8 grey levels divided by 255, uint8 0/1
and bool kept, other numbers must lie in [0, 1]. Labels: Python or numpy ints, or 0-d
integer tensors.

torchvision is imported only when asked for, never at module level: it is an optional
dependency (the ``vision`` extra) that need not import where pyro-vae runs.
"""

from __future__ import annotations

import importlib
import numbers
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from pyro_vae.data.arrays import unit_scale
from pyro_vae.data.errors import DataError
from pyro_vae.data.paths import PathLike
from pyro_vae.data.provenance import with_file_sources
from pyro_vae.data.splits import (
    DataSplits,
    labels_tensor,
    permutation_split,
    split_off_valid,
    three_way_sizes,
    to_tensor,
)


def _is_pil(image: Any) -> bool:
    return type(image).__module__.startswith("PIL.")


def _image_array(image: Any, where: str) -> np.ndarray:
    """One item's image as a numpy array of its event shape (``(D,)`` or ``(C, H, W)``)."""
    if _is_pil(image):
        if image.mode == "P":  # palette indices are not grey levels
            image = image.convert("RGB")
        a = np.asarray(image)
        return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    if isinstance(image, torch.Tensor):
        a = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        a = image
    else:
        raise DataError(
            f"{where}: the image is a {type(image).__name__}; items must be (image, label) "
            "or image, the image a PIL image, a tensor or a numpy array"
        )
    if a.ndim not in (1, 2, 3):
        raise DataError(
            f"{where}: an image of shape {a.shape}; expected (D,), (H, W) or channels-first "
            "(C, H, W)"
        )
    return a[None] if a.ndim == 2 else a


def _label(label: Any, where: str) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        label = label.item()
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise DataError(
            f"{where}: the label {label!r} is not an integer class label; return "
            "(image, int label) or the image alone"
        )
    return int(label)


def _split_item(item: Any, where: str) -> tuple[Any, Any]:
    """``(image, label)`` of one item; label None when the item is the image alone."""
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1]
        raise DataError(f"{where}: an item of {len(item)} parts; expected (image, label) or image")
    return item, None


def dataset_arrays(dataset: Any, where: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Images ``(n, *event_shape)`` and int64 labels ``(n,)`` (or None) of a map-style dataset.

    Raises:
        DataError: not a map-style dataset, an item that is not (image, label) or image,
            images of different shapes, labels on some items only.
    """
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(
            f"{where}: {type(dataset).__name__} has no len(): pass a map-style dataset "
            "(with __len__ and __getitem__), not an iterable-style one"
        ) from None
    images, labels = [], []
    for i in range(n):
        image, label = _split_item(dataset[i], f"{where}, item {i}")
        images.append(_image_array(image, f"{where}, item {i}"))
        labels.append(None if label is None else _label(label, f"{where}, item {i}"))
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(i for i, a in enumerate(images) if a.shape != first)
        raise DataError(
            f"{where}: images differ in shape (item 0 {first}, item {odd} {images[odd].shape}): "
            "resize them to one shape, e.g. with a transform"
        )
    if any(y is None for y in labels) and any(y is not None for y in labels):
        raise DataError(f"{where}: some items have labels and some do not")
    event = images[0].shape if images else (1,)
    x = np.stack(images) if images else np.zeros((0, *event), np.float32)
    y = np.asarray(labels, np.int64) if labels and labels[0] is not None else None
    return x, y


def from_torch_datasets(
    train: Any, test: Any = None, valid: Any = None, name: str = "torch"
) -> DataSplits:
    """Splits from map-style datasets (``torch.utils.data.Dataset`` or anything with
    ``__len__`` and ``__getitem__``), each item ``(image, label)`` or ``image``.

    Args:
        train: the training dataset; with ``test`` None, the only dataset, split by a
            fixed permutation into about 80/10/10 (valid and test ``max(1, n // 10)``
            rows each, :func:`~pyro_vae.data.splits.three_way_sizes`).
        test: the test dataset.
        valid: the validation dataset; None: carved from ``train`` by
            :func:`~pyro_vae.data.splits.split_off_valid` (the last 10000 rows when
            train has more than 20000, else a tenth by a fixed permutation).
        name: the :attr:`DataSplits.name`.

    Returns:
        float32 splits ``(n, *event_shape)`` in [0, 1], with int64 labels when the items
        have them. Iterates every item once (the conversions a dataset's transforms do
        included).

    Raises:
        DataError: ill-formed items, values outside [0, 1], splits of different shapes.
    """
    if test is None and valid is not None:
        raise DataError(f"{name}: a valid dataset without a test dataset; pass test too")
    parts = {"train": train, "valid": valid, "test": test}
    arrays = {s: dataset_arrays(d, f"{name} ({s})") for s, d in parts.items() if d is not None}
    events = {s: x.shape[1:] for s, (x, _) in arrays.items()}
    if len(set(events.values())) > 1:
        raise DataError(f"{name}: the datasets' images differ in shape: {events}")
    if len({y is None for _, y in arrays.values()}) > 1:
        raise DataError(f"{name}: some datasets have labels and some do not")
    scale = unit_scale({s: x for s, (x, _) in arrays.items()}, name)
    event = events["train"]
    x = {s: to_tensor(a, scale, event) for s, (a, _) in arrays.items()}
    y = {s: None if b is None else labels_tensor(b) for s, (_, b) in arrays.items()}
    if test is None:
        sizes = three_way_sizes(x["train"].shape[0], name)
        return permutation_split(name, x["train"], y["train"], sizes, event, 0)
    if valid is None:
        x["train"], y["train"], x["valid"], y["valid"] = split_off_valid(
            x["train"], y["train"], name
        )
    return DataSplits(
        name=name, event_shape=event, train=x["train"], valid=x["valid"], test=x["test"],
        train_labels=y["train"], valid_labels=y["valid"], test_labels=y["test"],
    )


def _torchvision_datasets():
    """The ``torchvision.datasets`` module, or a DataError saying how to get it."""
    try:
        return importlib.import_module("torchvision.datasets")
    except Exception as err:  # a broken install raises more than ImportError (OSError, ...)
        raise DataError(
            f"torchvision cannot be imported ({type(err).__name__}: {err}). Fix: install it "
            "(`pip install torchvision`, the pyro-vae[vision] extra) where it imports, or read "
            'the files without it: name = "idx" (an IDX folder), "fashion_mnist", "kmnist" '
            'or "array" (a .npy/.npz file)'
        ) from None


def _build(cls: Any, class_name: str, root: Path, train: bool) -> Any:
    """``cls(root, train=train, download=False)``, or ``split="train"/"test"`` for the
    classes that take a split name instead (e.g. SVHN)."""
    call = f"torchvision.datasets.{class_name}({str(root)!r}, train={train}, download=False)"
    last = None
    for kwargs in ({"train": train}, {"split": "train" if train else "test"}):
        try:
            return cls(str(root), download=False, **kwargs)
        except TypeError as err:  # no such keyword: try the other form
            last = err
        except Exception as err:  # torchvision raises RuntimeError for missing files
            raise DataError(
                f"{call} failed: {type(err).__name__}: {err}. Fix: download the files first "
                f"on a machine with internet (`torchvision.datasets.{class_name}(root, "
                f"download=True)`) and copy root's contents into {root}"
            ) from None
    raise DataError(
        f"torchvision.datasets.{class_name} takes neither train= nor split= ({last}): build "
        "its datasets yourself and pass them to pyro_vae.data.from_torch_datasets"
    )


def load_torchvision(class_name: str, root: PathLike) -> DataSplits:
    """The splits of ``torchvision.datasets.<class_name>`` built from the files under
    ``root`` (never downloaded), train and test as torchvision splits them, valid carved
    from train (:func:`from_torch_datasets`); named ``"torchvision:<class_name>"``.

    Raises:
        DataError: torchvision missing, an unknown class, missing files (the message
            says how to download them), ill-formed items.
    """
    if not isinstance(class_name, str) or not class_name:
        raise DataError(
            f'name = "torchvision" needs dataset = the class name in torchvision.datasets '
            f'(e.g. "FashionMNIST"), got {class_name!r}'
        )
    root = Path(root).expanduser()
    module = _torchvision_datasets()
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise DataError(
            f"torchvision.datasets has no data set class {class_name!r} (names are case "
            'sensitive, e.g. "MNIST", "FashionMNIST", "KMNIST", "CIFAR10")'
        )
    train, test = (_build(cls, class_name, root, flag) for flag in (True, False))
    data = from_torch_datasets(train, test, name=f"torchvision:{class_name}")
    # Which of root's files a class reads is torchvision's business: record them all.
    return with_file_sources(data, sorted(p for p in root.rglob("*") if p.is_file()))


def is_torch_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.utils.data.Dataset``."""
    return isinstance(obj, torch.utils.data.Dataset)


def datasets_from_sequence(obj: Sequence[Any]) -> tuple[Any, Any, Any]:
    """``(train, test, valid)`` from ``(train, test)`` or ``(train, valid, test)``."""
    if len(obj) == 2:
        return obj[0], obj[1], None
    return obj[0], obj[2], obj[1]
