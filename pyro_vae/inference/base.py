"""What the training loop needs of an inference algorithm."""

from __future__ import annotations

from typing import Protocol

import torch


class Inference(Protocol):
    """One training algorithm bound to a model and its guide.

    The loop only calls these (and ``start_epoch(epoch)``, with the 0-based epoch,
    before each epoch's steps where an algorithm has it: SVI's warm-up); it knows
    nothing of the model.
    """

    def step(self, x: torch.Tensor, index: torch.Tensor, num_data: int) -> dict[str, float]:
        """One optimisation step on the minibatch ``x = data[index]`` of a set of ``num_data``.

        Returns figures to log; ``"elbo"`` (nats per data point, higher is better) is
        what the progress bar and the log show.
        """

    def evaluate(self, x: torch.Tensor) -> float:
        """The objective on ``x`` (the whole batch is the data set), per data point."""

    def state_dict(self) -> dict:
        """Everything needed to resume: optimizer state (the module is saved apart)."""

    def load_state_dict(self, state: dict) -> None: ...
