"""The ``"data"`` plate every model and guide in the package shares."""

from __future__ import annotations

from typing import Optional

import pyro
import torch


def data_plate(batch_size: int, index: Optional[torch.Tensor], num_data: Optional[int]) -> pyro.plate:
    """The ``"data"`` plate over a batch of ``batch_size`` rows.

    ``index`` holds the rows' positions in a data set of ``num_data`` points (a minibatch);
    without it the batch is taken to be the whole data set, or a uniformly drawn
    subsample of ``num_data`` points when only ``num_data`` is given.
    """
    if num_data is None or num_data == batch_size:
        return pyro.plate("data", batch_size)
    if index is None:
        index = torch.arange(batch_size)
    return pyro.plate("data", num_data, subsample=index)
