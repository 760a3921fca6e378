"""Two-dimensional toy data for density models, generated locally and deterministically:
scikit-learn's ``make_moons`` and ``make_circles``, and a ring of eight Gaussians.

No files: every call draws the same 10000 points (fixed seeds), split by a fixed
permutation into 8000 train / 1000 valid / 1000 test, event shape ``(2,)``, float32, the
values as drawn (not in [0, 1]: use them with ``[data] binarize = "none"`` and no
``[data] transform``). The labels are the moon, the circle or the ring's component.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from pyro_vae.data.paths import DataFile
from pyro_vae.data.splits import DataSplits, labels_tensor, permutation_split, to_tensor

EVENT_SHAPE = (2,)
FILES: tuple[DataFile, ...] = ()
SIZES = (8000, 1000, 1000)
SEED = 0
#: Gaussian noise of the moons and circles (standard deviation).
NOISE = 0.05
#: The ring: this many Gaussians of this standard deviation on a circle of this radius.
RING_MODES, RING_STD, RING_RADIUS = 8, 0.1, 2.0


def moons(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``make_moons(n, noise=0.05)``: two interleaved half circles."""
    from sklearn.datasets import make_moons  # deferred: importing sklearn takes ~1 s

    return make_moons(n, noise=NOISE, random_state=seed)


def circles(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``make_circles(n, noise=0.05, factor=0.5)``: two concentric circles."""
    from sklearn.datasets import make_circles

    return make_circles(n, noise=NOISE, factor=0.5, random_state=seed)


def ring(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A mixture of :data:`RING_MODES` equal Gaussians N(r (cos θ_k, sin θ_k), σ² I),
    θ_k = 2πk / modes; labels are the components."""
    gen = np.random.default_rng(seed)
    k = gen.integers(RING_MODES, size=n)
    angle = 2 * math.pi * k / RING_MODES
    centres = RING_RADIUS * np.stack([np.cos(angle), np.sin(angle)], 1)
    return centres + RING_STD * gen.standard_normal((n, 2)), k


GENERATORS = {"moons": moons, "circles": circles, "ring": ring}


def read(paths: Sequence[Path] = (), name: str = "moons") -> DataSplits:
    """The splits of toy set ``name`` (``paths`` is unused: the points are generated)."""
    x, y = GENERATORS[name](sum(SIZES))
    return permutation_split(name, to_tensor(x, 1.0, EVENT_SHAPE), labels_tensor(y), SIZES, EVENT_SHAPE, SEED)


def reader(name: str):
    """``read`` for toy set ``name``."""
    return functools.partial(read, name=name)
