"""Whether a data set suits a decoder likelihood, checked before training starts."""

from __future__ import annotations

from pyro_vae.data.errors import DataError
from pyro_vae.data.splits import SPLITS, DataSplits

LIKELIHOODS = ("bernoulli", "gaussian")


def _is_binary(x) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _in_unit_interval(x) -> bool:
    return bool(((x >= 0) & (x <= 1)).all())  # False for NaN too


def check_likelihood(data: DataSplits, likelihood: str) -> None:
    """Raise :class:`DataError` unless ``data`` can be modelled with ``likelihood``.

    ``"bernoulli"`` needs values in {0, 1} in every split, except the training split of
    ``binarize="dynamic"`` data, which the loader samples per batch (it must be in
    [0, 1]). ``"gaussian"`` needs values in [0, 1] because its mean is a sigmoid.
    Elementwise, so any event shape; an empty split passes.
    """
    if likelihood not in LIKELIHOODS:
        raise DataError(f"unknown likelihood {likelihood!r}: choose one of {list(LIKELIHOODS)}")
    for split in SPLITS:
        x = data.split(split)
        if not _in_unit_interval(x):
            raise DataError(
                f"data set {data.name!r} ({split} split) has values outside [0, 1] "
                f"(min {x.min().item():.4g}, max {x.max().item():.4g}), but the decoders "
                "need values in [0, 1] (the Gaussian mean is a sigmoid, the Bernoulli "
                "takes {0, 1}): rescale the data to [0, 1]"
            )
        dynamic_train = data.binarize == "dynamic" and split == "train"
        if likelihood == "bernoulli" and not dynamic_train and not _is_binary(x):
            raise DataError(
                f"data set {data.name!r} has grey-level values in [0, 1] ({split} split), "
                "but a Bernoulli decoder needs values in {0, 1}: set binarize = \"static\" "
                'or "dynamic" (data section of the config / --binarize), or use '
                'likelihood = "gaussian"'
            )
