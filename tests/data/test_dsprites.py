"""dSprites rendered here: the factor grid and its order, the sprites' geometry, the
checksum of all 737,280 images, random access, the original file's layout check, the
registry's splits."""

import hashlib
import math

import numpy as np
import pytest
import torch

from pyro_vae.data import DataError, load_dataset
from pyro_vae.data import dsprites as ds
from pyro_vae.data.factors import FactorData, check_factor_data


@pytest.fixture(scope="module")
def data():
    return ds.DSprites()


# --- the factor grid -----------------------------------------------------------------


def test_factor_grid_sizes_and_values():
    assert ds.FACTOR_SIZES == (1, 3, 6, 40, 32, 32) and ds.NUM_IMAGES == 737280
    values = ds.factor_values()
    assert [v.size for v in values] == list(ds.FACTOR_SIZES)
    # numpy's linspace, bit for bit (our formula keeps them fixed across releases).
    for v, (a, b, n) in zip(values[2:], [(0.5, 1, 6), (0, 2 * np.pi, 40), (0, 1, 32), (0, 1, 32)]):
        assert np.array_equal(v, np.linspace(a, b, n))
    assert values[0].tolist() == [1.0] and values[1].tolist() == [1.0, 2.0, 3.0]


def test_index_is_the_mixed_radix_number_of_the_classes_posY_fastest():
    c = ds.latents_classes(np.arange(ds.NUM_IMAGES))
    assert c.shape == (737280, 6) and c.dtype == np.int64
    assert c[:33, 5].tolist() == list(range(32)) + [0] and c[31:33, 4].tolist() == [0, 1]
    assert c[1024, 3] == 1 and c[40960, 2] == 1 and c[245760, 1] == 1
    assert c[-1].tolist() == [0, 2, 5, 39, 31, 31]
    # Row i is the i-th point of the grid in C order: np.indices flattened.
    grid = np.indices(ds.FACTOR_SIZES).reshape(6, -1).T
    assert np.array_equal(c, grid)
    assert np.array_equal(ds.index_of(c), np.arange(ds.NUM_IMAGES))
    v = ds.latents_values([ds.NUM_IMAGES - 1])
    assert np.allclose(v, [[1, 3, 1, 2 * np.pi, 1, 1]])


def test_cos_sin_agree_with_libm_to_an_ulp():
    for theta in ds.factor_values()[3]:
        c, s = ds.cos_sin(theta)
        assert abs(c - math.cos(theta)) <= 2.3e-16 and abs(s - math.sin(theta)) <= 2.3e-16


# --- the sprites and the images ------------------------------------------------------


def test_sprites_checksum_and_fit():
    s = ds.sprites()
    assert s.shape == (3, 6, 40, 33, 33) and s.dtype == np.uint8 and s.max() == 1
    assert ds.sprites_checksum() == ds.SPRITES_CHECKSUM
    # Never clipped: the patch's border rows and columns stay black.
    assert not s[..., [0, -1], :].any() and not s[..., :, [0, -1]].any()


def test_each_shapes_area_grows_with_scale():
    area = ds.sprites().sum(axis=(3, 4)).astype(np.int64)  # (shape, scale, orientation)
    assert (np.diff(area, axis=1) > 0).all()
    # About s² times the scale-1 area (~300 pixels), within pixelation.
    ideal = np.array([289.0, 98 * np.pi, 296.5])[:, None] * ds.factor_values()[2] ** 2
    assert np.abs(area.mean(axis=2) / ideal - 1).max() < 0.05


def _crop_key(m: np.ndarray) -> tuple:
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    crop = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return crop.shape, crop.tobytes()


def test_sprites_differ_up_to_translation_but_the_documented_twins():
    s = ds.sprites()
    # Orientation 2π turns a sprite as 0 does.
    assert np.array_equal(s[:, :, 39], s[:, :, 0])
    first, twins = {}, []
    for shape in range(3):
        for scale in range(6):
            for o in range(39):
                key = _crop_key(s[shape, scale, o])
                if key in first:
                    twins.append((first[key], (shape, scale, o)))
                else:
                    first[key] = (shape, scale, o)
    assert tuple(twins) == ds.TWIN_SPRITES
    step = 2 * np.pi / 39  # each twin pair: a quarter turn apart, within 2.31 degrees
    for (_, _, a), (_, _, b) in twins:
        off = ((b - a) * step) % (np.pi / 2)
        assert min(off, np.pi / 2 - off) < np.radians(2.31)


def test_checksum_and_distinct_images_of_the_whole_set():
    """One pass over all 737,280 images (~6 s): the checksum on record, and every image
    distinct but orientation 2π's and the twins'."""
    digest, seen = hashlib.sha256(), set()
    for start, block in ds.iter_blocks():
        packed = np.packbits(block, axis=-1)
        digest.update(packed.tobytes())
        seen.update(map(bytes, packed.reshape(len(block), -1)))
    assert digest.hexdigest() == ds.CHECKSUM
    assert len(seen) == ds.NUM_DISTINCT == 737280 - 3 * 6 * 1024 - len(ds.TWIN_SPRITES) * 1024


def test_random_access_matches_the_blocks_in_index_order(data):
    rng = np.random.default_rng(0)
    index = rng.integers(0, ds.NUM_IMAGES, 300)
    images = data.images(index)
    assert images.shape == (300, 64, 64) and images.dtype == np.uint8
    for i, image in zip(index[:40], images):
        b, r = divmod(int(i), 1024)
        shape, rest = divmod(b, 240)
        assert np.array_equal(image, ds.sprite_block(shape, *divmod(rest, 40))[r])
    # The posY step moves the sprite one row down, the posX step one column right.
    a, down, right = data.images(ds.index_of([[0, 2, 5, 7, 3, 4], [0, 2, 5, 7, 3, 5], [0, 2, 5, 7, 4, 4]]))
    assert np.array_equal(a[:-1], down[1:]) and np.array_equal(a[:, :-1], right[:, 1:])


def test_ground_truth_interface(data):
    assert isinstance(data, FactorData) and check_factor_data(data) is data
    assert data.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert data.factor_sizes == (3, 6, 40, 32, 32) and data.event_shape == (1, 64, 64)
    f = data.sample_factors(500, np.random.default_rng(1))
    assert f.shape == (500, 5) and f.dtype == np.int64
    assert (f.min(axis=0) == 0).all() and (f.max(axis=0) == np.array(data.factor_sizes) - 1).all()
    x = data.observations(f[:8])
    assert x.shape == (8, 1, 64, 64) and x.dtype == torch.float32
    full = np.concatenate([np.zeros((8, 1), np.int64), f[:8]], axis=1)
    assert np.array_equal(x[:, 0].numpy(), data.images(ds.index_of(full)).astype(np.float32))


def test_bad_indices_and_factors_are_refused(data):
    with pytest.raises(DataError, match=r"indices must be integers in \[0, 737280\)"):
        data.images([737280])
    with pytest.raises(DataError, match="factor 'orientation' has classes 0..39"):
        data.observations(np.array([[0, 0, 40, 0, 0]]))
    with pytest.raises(DataError, match=r"shape \(n, 5\)"):
        data.observations(np.zeros((2, 6), np.int64))


# --- the original file -----------------------------------------------------------------


def _original_arrays():
    """Arrays in the original's layout (images all black, broadcast: no 3 GB)."""
    index = np.arange(ds.NUM_IMAGES)
    imgs = np.broadcast_to(np.zeros((1, 64, 64), np.uint8), (ds.NUM_IMAGES, 64, 64))
    return imgs, ds.latents_classes(index), ds.latents_values(index)


def test_original_arrays_are_accepted_and_served():
    imgs, classes, values = _original_arrays()
    original = ds.DSprites.from_arrays(imgs, classes, values)
    assert not original.rendered and original.images([5, 6]).shape == (2, 64, 64)
    assert original.observations(np.array([[2, 5, 39, 31, 31]])).sum() == 0


def test_original_arrays_in_another_layout_are_refused():
    imgs, classes, values = _original_arrays()
    swapped = classes[:, [0, 1, 2, 3, 5, 4]]  # posX fastest
    with pytest.raises(DataError, match=r"not in dSprites' order .* row 1 has \[0, 0, 0, 0, 1, 0\]"):
        ds.DSprites.from_arrays(imgs, swapped, values)
    shifted = values.copy()
    shifted[:, 1] -= 1  # shapes 0, 1, 2 instead of 1, 2, 3
    with pytest.raises(DataError, match="latents_values of factor 'shape'"):
        ds.DSprites.from_arrays(imgs, classes, shifted)
    with pytest.raises(DataError, match=r"imgs has shape \(10, 64, 64\), expected \(737280, 64, 64\)"):
        ds.DSprites.from_arrays(imgs[:10], classes, values)


def test_unreadable_original_files_are_refused(tmp_path):
    path = tmp_path / "dsprites.npz"
    np.savez(path, imgs=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(DataError, match=r"dsprites.npz.*missing \['latents_classes', 'latents_values'\]"):
        ds.DSprites.from_npz(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="dsprites.npz.*corrupt"):
        ds.DSprites.from_npz(path)


# --- the registry ----------------------------------------------------------------------


def test_registry_splits_are_a_fixed_subset(data):
    splits = load_dataset("dsprites")
    assert [len(splits.split(s)) for s in ("train", "valid", "test")] == list(ds.SPLIT_SIZES)
    assert splits.event_shape == (1, 64, 64) and splits.is_binary
    train, valid, test = ds.split_indices()
    assert len(np.intersect1d(train, np.concatenate([valid, test]))) == 0
    assert np.array_equal(splits.test[:, 0].numpy(), data.images(test, np.float32))
    assert np.array_equal(splits.valid_labels.numpy(), ds.latents_classes(valid)[:, 1])


def test_registry_original_without_its_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"dsprites/dsprites_ndarray.*github.com/deepmind/dsprites-dataset"):
        load_dataset("dsprites_original", data_dir=tmp_path)
