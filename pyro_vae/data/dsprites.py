"""dSprites (Matthey, Higgins, Hassabis & Lerchner 2017), rendered here.

737,280 binary 64x64 images of one white sprite on black, every combination of six
factors once, in the layout of DeepMind's ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``:

=============  =======  ======================================  =============
factor         classes  values (``latents_values``)             index stride
=============  =======  ======================================  =============
color          1        1.0                                     737280
shape          3        1, 2, 3 (square, ellipse, heart)        245760
scale          6        linspace(0.5, 1, 6)                     40960
orientation    40       linspace(0, 2π, 40)                     1024
posX           32       linspace(0, 1, 32)                      32
posY           32       linspace(0, 1, 32)                      1
=============  =======  ======================================  =============

Image ``i`` is the mixed-radix number of its classes, posY fastest:
``i = ((((color·3 + shape)·6 + scale)·40 + orientation)·32 + posX)·32 + posY``
(:func:`index_of`, :func:`latents_classes`, :func:`latents_values`).

**A re-rendering, not DeepMind's pixels.** Their generator was never released, so the
images here follow the published factor grid with a geometry of our own, and are
not pixel-identical to the original file. When you have that file, :meth:`DSprites.from_npz`
reads it (its factor layout checked against the table above) and serves it through
the same interface; ``[data] name = "dsprites_original"`` loads it like any named set.

Geometry (pixel units; x to the right, y up on screen, rows counted downwards, so posY
grows downwards and posX rightwards):

* the 3 x 6 x 40 = 720 sprites (shape, scale, orientation) are pre-rendered once
  (:func:`sprites`, ~0.5 s) into 33x33 patches, the shape's centre at :data:`CENTRE`
  (16.75, 16.8125) from the patch's corner; an image is its sprite's patch pasted with
  its top-left corner at row ``posY``, column ``posX``: one pixel per position step,
  the centre moving across 31 of the 64 pixels, the sprite never clipped. So any image
  costs microseconds and the full set never needs to sit in memory (3 GB as uint8).
* shapes at scale 1 (about 300 pixels each, so the mean intensity, ~0.043, is the
  original's): a square of side 17; an ellipse of semi-axes 14 x 7, the long axis
  horizontal at orientation 0; the heart ``(X² + Y² − 1)³ − X² Y³ ≤ 0`` with
  ``(X, Y) = (x, y) / 9 + (0, 0.3)``, lobes up, turned about its centroid.
  Scale ``s`` shrinks a shape about its centre by ``s``; orientation ``θ`` turns it
  counterclockwise as displayed.
* a pixel is on when at least half of its 4x4 sample points lie in the shape.
* deterministic: the inside tests are polynomials in exactly rounded float64
  operations, the factor values follow numpy's linspace formula in Python floats and
  the cosines and sines are computed in 50-digit decimal arithmetic, not by the
  platform's libm; so every machine renders the same bytes (:data:`CHECKSUM`).

Distinct images. Orientations 0 and 2π (classes 0 and 39) turn a sprite by the same
angle, so those two images are the same for every (shape, scale, position), as the
values say. Beyond them, the grid's step 2π/39 divides neither the square's quarter turn
nor the ellipse's half turn, yet it brings some orientations within 2.3 degrees of each
other modulo those symmetries: too little for 64x64 binary pixels to show on the
smallest squares. Three sprite pairs coincide (:data:`TWIN_SPRITES`: square, scale 0.5
or 0.6, orientations 3 and 32 or 5 and 34), and so do their 1024 images each; every
other pair of the 737,280 images differs (tested: :data:`NUM_DISTINCT` distinct images).

Registry: ``[data] name = "dsprites"`` is a fixed random subset of 10000 / 1000 / 1000
images (:data:`SPLIT_SIZES`, float32 ``(n, 1, 64, 64)``, labels the shape), small enough
for CPU runs; the metrics draw from the whole grid through :class:`DSprites`.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import math
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from pyro_vae.data import rng
from pyro_vae.data.errors import DataError, corrupt_file_error
from pyro_vae.data.factors import FactorGrid, check_classes
from pyro_vae.data.paths import DataFile, PathLike
from pyro_vae.data.splits import DataSplits

NAME = "dsprites"
ORIGINAL_NAME = "dsprites_original"
EVENT_SHAPE = (1, 64, 64)
FILES: tuple[DataFile, ...] = ()
ORIGINAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
# No checksum on record for DeepMind's file, so `pyro-vae fetch` does not download it.
ORIGINAL_FILES = (DataFile(f"dsprites/{ORIGINAL_FILE}"),)
ORIGINAL_FIX = (
    f"download {ORIGINAL_FILE} from https://github.com/deepmind/dsprites-dataset into "
    '<data dir>/dsprites/ (or use name = "dsprites", rendered here without files)'
)

FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737280
IMAGE_SIZE = 64
SPRITE_SIZE = 33  # 33 + 31 position steps of one pixel = 64
SUPERSAMPLE = 4  # sample points per pixel side

# Scale-1 geometry, pixels (see the module docstring).
SQUARE_HALF_SIDE = 8.5
ELLIPSE_AXES = (14.0, 7.0)
HEART_UNIT = 9.0  # pixels per unit of the heart's curve
HEART_CENTRE = 0.3  # the curve's y at the centre of rotation (its centroid is 0.293)
# The shape's centre in its patch, (column, row) from the patch's top-left corner. Off the
# patch's centre (16.5, 16.5) by a quarter and five sixteenths of a pixel: with a centre
# on a pixel centre the grid's 90-degree symmetry makes squares a quarter turn apart
# (2.3 degrees apart modulo it) pixelate alike at any scale; of the offsets in 1/16 px
# this one leaves the fewest such pairs, three, all among the two smallest squares.
CENTRE = (16.75, 16.8125)

#: sha256 of the 720 pre-rendered sprites' bytes, uint8 (3, 6, 40, 33, 33) C order.
SPRITES_CHECKSUM = "a2a853c300af4071d05ce8917b4a81e79b0df9ac7cf58104122d5c0e500c7584"
#: sha256 of all 737,280 images in index order, each row of 64 pixels packed into 8
#: bytes (``np.packbits(images, axis=-1)``): :func:`checksum`.
CHECKSUM = "b3ee9701f2add597c907e6af7dddd929c45a0b2422593c35ebd4c15bce6cb197"

#: Sprites (shape, scale, orientation) equal to another one: ``(a, b)`` pairs, ``a`` first
#: in index order; each pair's 1024 images coincide (see the module docstring).
TWIN_SPRITES = (((0, 0, 3), (0, 0, 32)), ((0, 1, 3), (0, 1, 32)), ((0, 1, 5), (0, 1, 34)))
#: Distinct images: all but orientation 2π's (3 x 6 x 1024) and the twins' (3 x 1024).
NUM_DISTINCT = 715776

#: The registry's splits: a fixed random subset of the images (rows of
#: ``rng.fixed_permutation(NUM_IMAGES, SPLIT_SEED)``), labels the shape class.
SPLIT_SIZES = (10000, 1000, 1000)
SPLIT_SEED = 0


# --- the factor grid ---------------------------------------------------------------


def linspace(start: float, stop: float, num: int) -> np.ndarray:
    """``np.linspace(start, stop, num)`` by its own formula in Python floats:
    ``start + k·((stop − start)/(num − 1))``, the last value ``stop`` exactly; float64
    ``(num,)``, the same bits on every platform and numpy release."""
    if num == 1:
        return np.array([start], np.float64)
    step = (stop - start) / (num - 1)
    return np.array([k * step + start for k in range(num - 1)] + [stop], np.float64)


@functools.lru_cache(maxsize=None)
def _values() -> tuple[np.ndarray, ...]:
    values = (
        np.array([1.0]),
        np.array([1.0, 2.0, 3.0]),
        linspace(0.5, 1.0, 6),
        linspace(0.0, 2 * math.pi, 40),
        linspace(0.0, 1.0, 32),
        linspace(0.0, 1.0, 32),
    )
    for v in values:
        v.flags.writeable = False
    return values


def factor_values() -> tuple[np.ndarray, ...]:
    """The values of each of the 6 factors' classes, float64 arrays (read-only) of
    sizes :data:`FACTOR_SIZES`, as in the original's ``latents_values``."""
    return _values()


_STRIDES = np.array(
    [math.prod(FACTOR_SIZES[k + 1 :]) for k in range(len(FACTOR_SIZES))], dtype=np.int64
)


def _check_index(index) -> np.ndarray:
    i = np.asarray(index)
    if i.size and (i.dtype.kind not in "iu" or i.min() < 0 or i.max() >= NUM_IMAGES):
        raise DataError(
            f"dSprites image indices must be integers in [0, {NUM_IMAGES}), got "
            f"{i.dtype} values in [{i.min()}, {i.max()}]"
        )
    return i.astype(np.int64, copy=False)


def latents_classes(index) -> np.ndarray:
    """The classes of images ``index (...)``, int64 ``(..., 6)``: ``index``'s digits in
    the mixed radix :data:`FACTOR_SIZES` (posY the least significant)."""
    i = _check_index(index)
    return (i[..., None] // _STRIDES) % np.array(FACTOR_SIZES, dtype=np.int64)


def latents_values(index) -> np.ndarray:
    """The factor values of images ``index (...)``, float64 ``(..., 6)``."""
    classes = latents_classes(index)
    return np.stack([v[classes[..., k]] for k, v in enumerate(factor_values())], axis=-1)


def index_of(classes) -> np.ndarray:
    """The image indices of ``classes (..., 6)``, int64 ``(...)``; the inverse of
    :func:`latents_classes`."""
    c = np.asarray(classes)
    flat = check_classes(c.reshape(-1, c.shape[-1]) if c.ndim else c, FACTOR_SIZES, FACTOR_NAMES)
    return (flat @ _STRIDES).reshape(c.shape[:-1])


# --- rendering ---------------------------------------------------------------------


def cos_sin(theta: float) -> tuple[float, float]:
    """``(cos θ, sin θ)`` rounded to float64 from 50-digit decimal Taylor series of the
    exact binary value of ``theta``: the same bits on every platform (libm's may
    differ by an ulp between systems). For ``|θ| ≤ 2π`` or so."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        x = decimal.Decimal(theta)  # exact
        term, n = decimal.Decimal(1), 0
        sums = [decimal.Decimal(0)] * 4  # the terms x^n/n! with n = 0, 1, 2, 3 mod 4
        tiny = decimal.Decimal(10) ** -48
        while n < 8 or abs(term) > tiny:
            sums[n % 4] += term
            n += 1
            term = term * x / n
        return float(sums[0] - sums[2]), float(sums[1] - sums[3])


def _inside(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points ``(x, y)`` (pixels at scale 1 from the centre, y up) lie in
    shape ``shape``; polynomial tests only (no libm calls), so exactly reproducible."""
    if shape == 0:
        return np.maximum(np.abs(x), np.abs(y)) <= SQUARE_HALF_SIDE
    if shape == 1:
        a, b = ELLIPSE_AXES
        return (x / a) * (x / a) + (y / b) * (y / b) <= 1.0
    hx = x / HEART_UNIT
    hy = y / HEART_UNIT + HEART_CENTRE
    r = hx * hx + hy * hy - 1.0
    return r * r * r - hx * hx * hy * hy * hy <= 0.0


def render_sprites(supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The 720 sprites, uint8 ``(3, 6, 40, 33, 33)`` in {0, 1}: (shape, scale,
    orientation, row, column), the shape's centre at :data:`CENTRE` (column, row).

    Each pixel is on when at least half of its ``supersample²`` sample points
    ``(c + (j + ½)/supersample, ...)`` lie in the shape turned by ``θ``
    counterclockwise and scaled by ``s``: a point ``q`` is in it when
    ``R(−θ) q / s`` is in the scale-1 shape.
    """
    n = SPRITE_SIZE * supersample
    t = (np.arange(n, dtype=np.float64) + 0.5) / supersample  # exact binary fractions
    u = np.broadcast_to((t - CENTRE[0])[None, None, :], (1, n, n))  # x, rightwards
    v = np.broadcast_to((CENTRE[1] - t)[None, :, None], (1, n, n))  # y, upwards (rows go down)
    trig = np.array([cos_sin(theta) for theta in factor_values()[3]])
    c, s = trig[:, 0, None, None], trig[:, 1, None, None]  # (40, 1, 1)
    half = supersample * supersample
    out = np.empty((len(SHAPES), FACTOR_SIZES[2], FACTOR_SIZES[3], SPRITE_SIZE, SPRITE_SIZE), np.uint8)
    for k, scale in enumerate(factor_values()[2]):
        x = (c * u + s * v) / scale  # (40, n, n)
        y = (c * v - s * u) / scale
        for shape in range(len(SHAPES)):
            hits = _inside(shape, x, y).reshape(-1, SPRITE_SIZE, supersample, SPRITE_SIZE, supersample)
            out[shape, k] = 2 * hits.sum(axis=(2, 4)) >= half
    return out


@functools.lru_cache(maxsize=1)
def sprites() -> np.ndarray:
    """:func:`render_sprites`, rendered once per process (read-only)."""
    out = render_sprites()
    out.flags.writeable = False
    return out


def compose(patches: np.ndarray, pos_x: np.ndarray, pos_y: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """Images ``(n, 64, 64)`` of ``dtype``: patch ``patches[i] (33, 33)`` pasted on black
    with its top-left corner at row ``pos_y[i]``, column ``pos_x[i]`` (0..31)."""
    out = np.zeros((len(patches), IMAGE_SIZE, IMAGE_SIZE), dtype)
    # A loop of slice copies: 5x faster than one fancy-indexed scatter of n x 33 x 33.
    for i, (x, y) in enumerate(zip(np.asarray(pos_x).tolist(), np.asarray(pos_y).tolist())):
        out[i, y : y + SPRITE_SIZE, x : x + SPRITE_SIZE] = patches[i]
    return out


def render_images(index, dtype=np.uint8) -> np.ndarray:
    """The rendered images ``index (n,)``, ``(n, 64, 64)`` of ``dtype`` in {0, 1}."""
    c = latents_classes(np.asarray(index).reshape(-1))
    return compose(sprites()[c[:, 1], c[:, 2], c[:, 3]], c[:, 4], c[:, 5], dtype)


def sprite_block(shape: int, scale: int, orientation: int) -> np.ndarray:
    """The 1024 rendered images of one sprite, uint8 ``(1024, 64, 64)`` in index order
    (posX major, posY minor): images ``[1024·b, 1024·(b + 1))`` with
    ``b = (shape·6 + scale)·40 + orientation``.

    Built as windows of one 95x95 canvas holding the patch at (31, 31): the image at
    ``(posX, posY)`` is the window whose corner is ``(31 − posY, 31 − posX)``.
    """
    steps = FACTOR_SIZES[4]
    canvas = np.zeros((IMAGE_SIZE + steps - 1,) * 2, np.uint8)
    canvas[steps - 1 : steps - 1 + SPRITE_SIZE, steps - 1 : steps - 1 + SPRITE_SIZE] = sprites()[
        shape, scale, orientation
    ]
    windows = np.lib.stride_tricks.sliding_window_view(canvas, (IMAGE_SIZE, IMAGE_SIZE))
    # windows[a, b] = canvas[a:a+64, b:b+64]; image (x, y) = windows[31 - y, 31 - x].
    block = windows[::-1, ::-1].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(block).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def iter_blocks():
    """``(first index, sprite_block)`` for the 720 sprites in index order."""
    size = FACTOR_SIZES[4] * FACTOR_SIZES[5]
    for b in range(len(SHAPES) * FACTOR_SIZES[2] * FACTOR_SIZES[3]):
        shape, rest = divmod(b, FACTOR_SIZES[2] * FACTOR_SIZES[3])
        scale, orientation = divmod(rest, FACTOR_SIZES[3])
        yield b * size, sprite_block(shape, scale, orientation)


def checksum() -> str:
    """sha256 of the rendered set: all images in index order, rows bit-packed
    (``np.packbits(images, axis=-1)``, 8 bytes a row, 377 MB in all); ~5 s."""
    digest = hashlib.sha256()
    for _, block in iter_blocks():
        digest.update(np.packbits(block, axis=-1).tobytes())
    return digest.hexdigest()


def sprites_checksum() -> str:
    """sha256 of :func:`sprites`' bytes."""
    return hashlib.sha256(np.ascontiguousarray(sprites()).tobytes()).hexdigest()


# --- the data set ------------------------------------------------------------------


class DSprites(FactorGrid):
    """dSprites as ground-truth data (:class:`~pyro_vae.data.factors.FactorData`):
    rendered here (the default), or the original file's images (:meth:`from_npz`).

    The factors the metrics score are the five that vary, as in disentanglement_lib:
    ``factor_names = ("shape", "scale", "orientation", "posX", "posY")`` with sizes
    ``(3, 6, 40, 32, 32)``; color (one value) is left out. Observations are float32
    ``(n, 1, 64, 64)`` in {0, 1}.

        >>> data = DSprites()
        >>> data.images([0, 737279]).shape                # uint8 (2, 64, 64)
        >>> x = data.observations(data.sample_factors(64, np.random.default_rng(0)))
    """

    factor_names = FACTOR_NAMES[1:]
    factor_sizes = FACTOR_SIZES[1:]
    event_shape = EVENT_SHAPE
    name = NAME

    def __init__(self, imgs: Optional[np.ndarray] = None):
        """``imgs``: the original's ``(737280, 64, 64)`` images (see :meth:`from_arrays`);
        None renders them."""
        self._imgs = imgs
        if imgs is None:
            sprites()  # render now, so the first batch is as fast as the others

    @classmethod
    def from_npz(cls, path: PathLike) -> "DSprites":
        """DeepMind's ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, its layout checked
        (:meth:`from_arrays`); the images are held in memory (3 GB), read once (~10 s).

        Raises:
            DataError: the file cannot be read, lacks ``imgs``, ``latents_classes`` or
                ``latents_values``, or its layout is not dSprites' (naming what differs).
        """
        path = Path(path)
        arrays = _read_npz(path, ("imgs", "latents_classes", "latents_values"))
        return cls.from_arrays(**arrays, where=str(path))

    @classmethod
    def from_arrays(
        cls, imgs: np.ndarray, latents_classes: np.ndarray, latents_values: np.ndarray,
        where: str = "dSprites arrays",
    ) -> "DSprites":
        """dSprites from the original's three arrays, after checking their layout:
        ``imgs`` 0/1 ``(737280, 64, 64)``, ``latents_classes`` the mixed-radix digits of
        each row's index (posY fastest) and ``latents_values`` the factor values (to
        1e-4) of :func:`factor_values`.

        Raises:
            DataError: naming the array and the first row that differs.
        """
        check_layout(imgs, latents_classes, latents_values, where)
        return cls(np.asarray(imgs))

    @property
    def rendered(self) -> bool:
        """Whether the images are rendered here (else they are the original file's)."""
        return self._imgs is None

    def __len__(self) -> int:
        return NUM_IMAGES

    def images(self, index, dtype=np.uint8) -> np.ndarray:
        """Images ``index (n,)`` (ints in ``[0, 737280)``), ``(n, 64, 64)`` of ``dtype``
        in {0, 1}."""
        i = _check_index(np.asarray(index).reshape(-1))
        if self._imgs is None:
            return render_images(i, dtype)
        return self._imgs[i].astype(dtype, copy=False)

    def observations(
        self, factors: np.ndarray, generator: Optional[np.random.Generator] = None
    ) -> torch.Tensor:
        """The images of ``factors (n, 5)`` (classes of shape, scale, orientation, posX,
        posY), float32 ``(n, 1, 64, 64)``; no noise, so ``generator`` is unused."""
        f = check_classes(factors, self.factor_sizes, self.factor_names)
        index = f @ _STRIDES[1:]  # color is class 0
        return torch.from_numpy(self.images(index, np.float32)).unsqueeze(1)

    def splits(self, name: str = NAME) -> DataSplits:
        """The registry's splits: images of a fixed random subset of :data:`SPLIT_SIZES`
        rows (:func:`split_indices`, the same for the rendered and the original set),
        float32 ``(n, 1, 64, 64)``, labels the shape class (0 square, 1 ellipse, 2 heart)."""
        parts = split_indices()
        xs = [torch.from_numpy(self.images(p, np.float32)).unsqueeze(1) for p in parts]
        ys = [torch.from_numpy(latents_classes(p)[:, 1].copy()) for p in parts]
        return DataSplits(
            name=name, train=xs[0], valid=xs[1], test=xs[2], event_shape=EVENT_SHAPE,
            train_labels=ys[0], valid_labels=ys[1], test_labels=ys[2],
        )

    def __repr__(self) -> str:
        return f"DSprites({'rendered' if self.rendered else 'original file'}, {NUM_IMAGES} images)"


def split_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image indices of the train/valid/test splits, int64 of sizes
    :data:`SPLIT_SIZES`: consecutive runs of ``rng.fixed_permutation(737280, 0)``."""
    perm = rng.fixed_permutation(NUM_IMAGES, SPLIT_SEED)
    bounds = np.cumsum((0,) + SPLIT_SIZES)
    return tuple(perm[bounds[i] : bounds[i + 1]] for i in range(3))


def read(paths: Sequence[Path] = ()) -> DataSplits:
    """The registry's ``dsprites``: :meth:`DSprites.splits` of the rendered set."""
    return DSprites().splits(NAME)


def read_original(paths: Sequence[Path]) -> DataSplits:
    """The registry's ``dsprites_original``: the same splits of DeepMind's file ``paths[0]``."""
    (path,) = paths
    return DSprites.from_npz(path).splits(ORIGINAL_NAME)


# --- the original file -------------------------------------------------------------


def _read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of the ``.npz`` file ``path`` (never unpickling anything)."""
    try:
        with np.load(path, allow_pickle=False) as loaded:
            if not hasattr(loaded, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            missing = [k for k in keys if k not in loaded.files]
            if missing:
                raise corrupt_file_error(
                    path, ORIGINAL_NAME, f"the arrays {list(keys)} of dSprites' .npz",
                    f"only {sorted(loaded.files)} (missing {missing})",
                )
            return {k: loaded[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise corrupt_file_error(
            path, ORIGINAL_NAME, "dSprites' .npz archive (numbers only, no pickles)", str(err)
        ) from None


def check_layout(
    imgs: np.ndarray, classes: np.ndarray, values: np.ndarray, where: str,
    sizes: Sequence[int] = FACTOR_SIZES, grid: Optional[Sequence[np.ndarray]] = None,
) -> None:
    """Check arrays against dSprites' layout (or that of the grid ``sizes`` with
    values ``grid``): ``imgs`` 0/1 ``(N, 64, 64)``, ``classes`` int ``(N, K)`` the
    mixed-radix digits of ``arange(N)`` (last factor fastest), ``values`` ``(N, K)``
    equal to ``grid[k][classes[:, k]]`` within 1e-4.

    Raises:
        DataError: naming ``where``, the array, and the first row or factor that differs.
    """
    sizes = tuple(sizes)
    grid = factor_values() if grid is None else grid
    n, k = math.prod(sizes), len(sizes)
    expect = {"imgs": (n, IMAGE_SIZE, IMAGE_SIZE), "latents_classes": (n, k), "latents_values": (n, k)}
    for key, a in zip(expect, (imgs, classes, values)):
        if tuple(np.shape(a)) != expect[key]:
            raise DataError(
                f"{where}: {key} has shape {tuple(np.shape(a))}, expected {expect[key]} for "
                f"dSprites' factors {dict(zip(FACTOR_NAMES, sizes))}"
            )
    if np.asarray(imgs).dtype.kind not in "biu" or np.asarray(imgs).max() > 1:
        raise DataError(f"{where}: imgs must be 0/1 integers (uint8), got {np.asarray(imgs).dtype}")
    strides = np.array([math.prod(sizes[j + 1 :]) for j in range(k)], dtype=np.int64)
    digits = (np.arange(n, dtype=np.int64)[:, None] // strides) % np.array(sizes, dtype=np.int64)
    bad = np.flatnonzero((np.asarray(classes) != digits).any(axis=1))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{where}: latents_classes are not in dSprites' order (each row's index in mixed "
            f"radix {sizes}, the last factor fastest): row {row} has {np.asarray(classes)[row].tolist()}, "
            f"expected {digits[row].tolist()}"
        )
    for j in range(k):
        expected = np.asarray(grid[j], dtype=np.float64)[digits[:, j]]
        off = np.flatnonzero(np.abs(np.asarray(values)[:, j] - expected) > 1e-4)
        if off.size:
            row = int(off[0])
            raise DataError(
                f"{where}: latents_values of factor {FACTOR_NAMES[j]!r} differ from dSprites' "
                f"values: row {row} has {np.asarray(values)[row, j]}, expected {expected[row]}"
            )
