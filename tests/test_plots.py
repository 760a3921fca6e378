"""Tests for pyro_vae.plots: every figure is a readable PNG and its content is right."""

import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from pyro_vae import plots

SHAPE = (6, 4)  # (H, W): non-square, so a transposed layout would show
D = SHAPE[0] * SHAPE[1]


def _png(path, min_side=50, max_side=4000):
    """Read ``path`` back as a PNG and check its size is sensible; returns the grey image."""
    assert path.exists() and path.suffix == ".png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min_side <= img.shape[0] <= max_side and min_side <= img.shape[1] <= max_side
    return img[..., :3].mean(axis=2)


@pytest.fixture
def figures(monkeypatch):
    """Records every Figure that a plot function saves, to inspect its artists."""
    saved = []
    original = plots._save

    def recording_save(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", recording_save)
    return saved


# ----------------------------------------------------------------------------- tile_images


def test_tile_images_places_image_k_at_row_k_div_nrow_col_k_mod_nrow():
    n, nrow, (h, w) = 7, 3, SHAPE
    images = (np.arange(n)[:, None] + 1) / 10 * np.ones((n, D))  # image k is constant (k+1)/10
    mosaic = plots.tile_images(images, SHAPE, nrow=nrow, pad=1, pad_value=1.0)
    assert mosaic.shape == (3 * h + 2, 3 * w + 2)
    for k in range(n):
        r, c = divmod(k, nrow)
        tile = mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w]
        np.testing.assert_allclose(tile, (k + 1) / 10)
    # 1-pixel separators and the two empty tiles after the last image hold pad_value
    assert (mosaic[h, :] == 1.0).all() and (mosaic[:, w] == 1.0).all()
    assert (mosaic[2 * (h + 1) :, 1 * (w + 1) :] == 1.0).all()


def test_tile_images_pixel_order_within_a_tile_and_input_forms():
    image = np.arange(D, dtype=float) / D  # row-major (H, W) ramp
    tensor = torch.tensor(np.stack([image, 1 - image]), dtype=torch.float32)
    mosaic = plots.tile_images(tensor, SHAPE, pad=0)  # default nrow = ceil(sqrt(2)) = 2
    np.testing.assert_allclose(mosaic[:, : SHAPE[1]], image.reshape(SHAPE), atol=1e-6)
    np.testing.assert_allclose(mosaic[:, SHAPE[1] :], 1 - image.reshape(SHAPE), atol=1e-6)
    # (n, H, W) is accepted as well as (n, D)
    np.testing.assert_allclose(plots.tile_images(tensor.reshape(2, *SHAPE), SHAPE, pad=0), mosaic)
    assert plots.tile_images(np.zeros((10, D)), SHAPE).shape == (3 * 6 + 2, 4 * 4 + 3)  # 4 per row, 3 rows


def test_bad_images_raise_clear_value_errors(tmp_path):
    with pytest.raises(ValueError, match=r"D = 25.*image_shape = \(6, 4\).*D = 24"):
        plots.image_grid(np.zeros((3, 25)), SHAPE, tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plots.image_grid(np.full((3, D), 255.0), SHAPE, tmp_path / "g.png")
    with pytest.raises(ValueError, match="NaN"):
        plots.tile_images(np.full((3, D), np.nan), SHAPE)
    with pytest.raises(ValueError, match="image_shape"):
        plots.tile_images(np.zeros((3, D)), (24,))
    with pytest.raises(ValueError, match=r"\.png"):
        plots.image_grid(np.zeros((3, D)), SHAPE, tmp_path / "g.pdf")
    assert not (tmp_path / "g.png").exists()


# ----------------------------------------------------------------------------- image grids


def test_image_grid_400_images_creates_parent_dirs(tmp_path):
    images = torch.rand(400, 28 * 28)
    path = plots.image_grid(images, (28, 28), tmp_path / "a" / "b" / "samples.png", title="samples")
    assert path == tmp_path / "a" / "b" / "samples.png"
    grey = _png(path, min_side=500)
    assert 0.3 < grey.mean() < 0.7  # uniform noise, not a blank canvas


def test_image_grid_draws_one_image_artist(tmp_path, figures):
    plots.image_grid(np.ones((5, D)) * 0.5, SHAPE, tmp_path / "g.png", nrow=5)
    (fig,) = figures
    (ax,) = fig.axes
    (im,) = ax.get_images()
    assert im.get_array().shape == (SHAPE[0], 5 * SHAPE[1] + 4)


def test_reconstructions_originals_on_top(tmp_path):
    x = np.zeros((12, D))  # black originals
    x_rec = np.full((12, D), 0.5)  # grey reconstructions
    grey = _png(plots.reconstructions(torch.tensor(x), x_rec, SHAPE, tmp_path / "rec.png", n=10), min_side=20)
    black_rows = np.nonzero((grey < 0.1).sum(axis=1) > 20)[0]
    grey_rows = np.nonzero((np.abs(grey - 0.5) < 0.05).sum(axis=1) > 20)[0]
    assert len(black_rows) and len(grey_rows)
    assert black_rows.max() < grey_rows.min()


def test_reconstructions_layout_and_errors(tmp_path, figures):
    plots.reconstructions(np.zeros((3, D)), np.ones((3, D)), SHAPE, tmp_path / "rec.png", n=10)
    mosaic = figures[0].axes[0].get_images()[0].get_array()
    assert mosaic.shape == (2 * SHAPE[0] + 1, 3 * SHAPE[1] + 2)  # n clipped to the batch
    assert (mosaic[: SHAPE[0]] == 0).sum() == 3 * D and (mosaic[SHAPE[0] + 1 :] == 1).all()
    with pytest.raises(ValueError, match="same shape"):
        plots.reconstructions(np.zeros((3, D)), np.zeros((4, D)), SHAPE, tmp_path / "r.png")


# ----------------------------------------------------------------------------- manifold


class RecordingDecode:
    """Records the z it is given; returns images whose brightness is Φ(z[dim])."""

    def __init__(self, dim):
        self.dim, self.calls = dim, []

    def __call__(self, z):
        self.calls.append(z.clone())
        u = torch.distributions.Normal(0.0, 1.0).cdf(z[:, self.dim])
        return u[:, None].expand(len(z), D)


@pytest.mark.parametrize("z_dim, dims", [(2, (0, 1)), (5, (3, 1))])
def test_manifold_decodes_the_icdf_grid_once(tmp_path, z_dim, dims):
    n = 7
    decode = RecordingDecode(dims[1])
    _png(plots.manifold(decode, SHAPE, tmp_path / "m.png", n=n, dims=dims, z_dim=z_dim))
    (z,) = decode.calls
    assert z.shape == (n * n, z_dim)
    q = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(n) + 0.5) / n)
    grid = z.reshape(n, n, z_dim)  # (row from top, column) in tile order
    a, b = dims
    torch.testing.assert_close(grid[:, :, a], q.expand(n, n))  # z[a] increases to the right
    torch.testing.assert_close(grid[:, :, b], q.flip(0)[:, None].expand(n, n))  # z[b] upward
    others = [d for d in range(z_dim) if d not in dims]
    assert (grid[:, :, others] == 0).all()
    # the set of points is exactly the n*n grid icdf(u_i) x icdf(u_j)
    expected = {(float(qi), float(qj)) for qi in q for qj in q}
    assert {(float(p[a]), float(p[b])) for p in z} == expected


def test_manifold_png_has_z_b_increasing_upward(tmp_path, figures):
    n = 5
    plots.manifold(RecordingDecode(1), SHAPE, tmp_path / "m.png", n=n)
    mosaic = figures[0].axes[0].get_images()[0].get_array()
    tile_rows = mosaic[:: SHAPE[0] + 1, 0]  # top-left pixel of each tile row
    assert (np.diff(tile_rows) < 0).all()  # brightness Φ(z[1]) falls going down
    ax = figures[0].axes[0]
    assert ax.get_xlabel() == "z[0]" and ax.get_ylabel() == "z[1]"


def test_manifold_spans_the_grid_it_is_given(tmp_path, figures):
    """A prior's quantiles (here N(3, 2²) in z[0], N(-5, 0.5²) in z[2]) replace N(0, 1)'s."""
    n, dims = 6, (2, 0)
    u = plots.grid_levels(n)
    normal = torch.distributions.Normal(0.0, 1.0).icdf(u)
    grid = torch.stack([3 + 2 * normal, torch.zeros(n), -5 + 0.5 * normal], 1)  # (n, z_dim=3)
    decode = RecordingDecode(0)
    plots.manifold(decode, SHAPE, tmp_path / "m.png", dims=dims, z_dim=3, grid=grid)
    (z,) = decode.calls
    tiles = z.reshape(n, n, 3)
    torch.testing.assert_close(tiles[:, :, 2], grid[:, 2].expand(n, n))  # z[a] to the right
    torch.testing.assert_close(tiles[:, :, 0], grid[:, 0].flip(0)[:, None].expand(n, n))  # z[b] upward
    assert (tiles[:, :, 1] == 0).all()
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == f"{grid[0, 2]:.2f}"
    assert [t.get_text() for t in ax.get_yticklabels()][0] == f"{grid[-1, 0]:.2f}"


def test_manifold_default_grid_is_the_normal_quantiles_of_grid_levels(tmp_path):
    decode = RecordingDecode(0)
    plots.manifold(decode, SHAPE, tmp_path / "m.png")  # n = 20, as always
    q = torch.distributions.Normal(0.0, 1.0).icdf(plots.grid_levels(20))
    assert torch.equal(decode.calls[0].reshape(20, 20, 2)[0, :, 0], q)


def test_manifold_bad_grid(tmp_path):
    q = torch.distributions.Normal(0.0, 1.0).icdf(plots.grid_levels(4))[:, None].expand(4, 2)
    with pytest.raises(ValueError, match=r"grid must be \(n, z_dim=3\).*got shape \(4, 2\)"):
        plots.manifold(RecordingDecode(0), SHAPE, tmp_path / "m.png", z_dim=3, grid=q)
    with pytest.raises(ValueError, match=r"grid must be \(5, z_dim=2\)"):
        plots.manifold(RecordingDecode(0), SHAPE, tmp_path / "m.png", n=5, grid=q)
    with pytest.raises(ValueError, match="finite and ascending"):
        plots.manifold(RecordingDecode(0), SHAPE, tmp_path / "m.png", grid=q.flip(0))
    with pytest.raises(ValueError, match="finite and ascending"):
        plots.manifold(RecordingDecode(0), SHAPE, tmp_path / "m.png", grid=torch.full((4, 2), float("nan")))


def test_manifold_bad_input(tmp_path):
    with pytest.raises(ValueError, match="dims"):
        plots.manifold(RecordingDecode(0), SHAPE, tmp_path / "m.png", dims=(0, 2), z_dim=2)
    with pytest.raises(ValueError, match="dims"):
        plots.manifold(RecordingDecode(0), SHAPE, tmp_path / "m.png", dims=(1, 1), z_dim=3)
    with pytest.raises(ValueError, match=r"decode\(z\).*D = 24"):
        plots.manifold(lambda z: torch.zeros(len(z), 10), SHAPE, tmp_path / "m.png", n=3)
    with pytest.raises(ValueError, match="returned 4 images for 9"):
        plots.manifold(lambda z: torch.zeros(4, D), SHAPE, tmp_path / "m.png", n=3)


# ----------------------------------------------------------------------------- latent scatter


def test_principal_components_recover_dominant_directions():
    rng = np.random.default_rng(0)
    d, n = 6, 500
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))  # random orthonormal directions
    coeff = rng.normal(size=(n, d)) * np.array([10.0, 4.0, 0.3, 0.2, 0.1, 0.1])
    z = coeff @ basis.T + 3.0  # strongest along basis[:, 0], then basis[:, 1]; offset mean
    proj, comps, ratio = plots._principal_components(z)
    assert proj.shape == (n, 2) and comps.shape == (2, d)
    assert abs(comps[0] @ basis[:, 0]) > 0.999 and abs(comps[1] @ basis[:, 1]) > 0.999
    np.testing.assert_allclose(proj, (z - z.mean(0)) @ comps.T)
    np.testing.assert_allclose(np.abs(proj[:, 0]), np.abs(coeff[:, 0] - coeff[:, 0].mean()), atol=0.5)
    assert ratio[0] > ratio[1] > 0.1 and ratio.sum() < 1
    assert (comps[np.arange(2), np.abs(comps).argmax(1)] > 0).all()  # deterministic signs


def test_latent_scatter_projects_high_dim_z(tmp_path, figures):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 5)) * np.array([0.1, 5.0, 0.1, 2.0, 0.1])
    labels = torch.tensor(rng.integers(0, 10, size=300))
    _png(plots.latent_scatter(torch.tensor(z), labels, tmp_path / "s.png", title="codes"))
    ax = figures[0].axes[0]
    assert ax.get_xlabel().startswith("PC 1") and ax.get_ylabel().startswith("PC 2")
    xy = np.concatenate([c.get_offsets() for c in ax.collections])
    # PC1 is latent axis 1 and PC2 latent axis 3 (up to sign): their spreads show in the plot
    assert xy[:, 0].std() == pytest.approx(z[:, 1].std(), rel=0.05)
    assert xy[:, 1].std() == pytest.approx(z[:, 3].std(), rel=0.05)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(map(str, range(10)))


def test_latent_scatter_2d_unlabelled_and_many_classes(tmp_path, figures):
    z = np.random.default_rng(2).normal(size=(100, 2))
    _png(plots.latent_scatter(z, None, tmp_path / "plain.png"))
    ax = figures[0].axes[0]
    assert ax.get_xlabel() == "z[0]" and ax.get_legend() is None
    np.testing.assert_allclose(ax.collections[0].get_offsets(), z)
    _png(plots.latent_scatter(z, np.arange(100) % 20, tmp_path / "many.png"))
    assert len(figures[1].axes) == 2  # scatter + colour bar for > 10 classes


def test_latent_scatter_bad_input(tmp_path):
    with pytest.raises(ValueError, match="d >= 2"):
        plots.latent_scatter(np.zeros((5, 1)), None, tmp_path / "s.png")
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        plots.latent_scatter(np.zeros((5, 2)), np.zeros(4), tmp_path / "s.png")
    with pytest.raises(ValueError, match="integers"):
        plots.latent_scatter(np.zeros((5, 2)), np.full(5, 0.5), tmp_path / "s.png")


# ----------------------------------------------------------------------------- ELBO curves


def test_elbo_curves_tolerates_missing_validation(tmp_path, figures):
    history = [
        {"epoch": 1, "train_elbo": -200.0, "valid_elbo": -205.0},
        {"epoch": 2, "train_elbo": torch.tensor(-150.0)},  # key missing
        {"epoch": 3, "train_elbo": -120.0, "valid_elbo": None},
        {"epoch": 4, "train_elbo": -110.0, "valid_elbo": float("nan")},
        {"epoch": 5, "train_elbo": -100.0, "valid_elbo": -104.0},
    ]
    _png(plots.elbo_curves(history, tmp_path / "elbo.png"))
    ax = figures[0].axes[0]
    train, valid = ax.get_lines()
    assert train.get_label() == "train" and valid.get_label() == "validation"
    np.testing.assert_allclose(train.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(train.get_ydata(), [-200, -150, -120, -110, -100])
    np.testing.assert_allclose(valid.get_xdata(), [1, 5])
    np.testing.assert_allclose(valid.get_ydata(), [-205, -104])
    assert ax.get_xlabel() == "epoch" and "nats" in ax.get_ylabel()


def test_elbo_curves_other_x_key_and_train_only(tmp_path, figures):
    history = [{"epoch": e, "samples_seen": 1000 * e, "train_elbo": -100.0 / e} for e in (1, 2, 3)]
    _png(plots.elbo_curves(history, tmp_path / "elbo.png", x="samples_seen"))
    ax = figures[0].axes[0]
    (train,) = ax.get_lines()
    np.testing.assert_allclose(train.get_xdata(), [1000, 2000, 3000])
    assert ax.get_xlabel() == "samples seen"


def test_elbo_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.elbo_curves([], tmp_path / "e.png")
    with pytest.raises(ValueError, match="'samples_seen'"):
        plots.elbo_curves([{"epoch": 1, "train_elbo": -1.0}], tmp_path / "e.png", x="samples_seen")
    with pytest.raises(ValueError, match="no train_elbo or valid_elbo"):
        plots.elbo_curves([{"epoch": 1, "valid_elbo": None}], tmp_path / "e.png")


# ----------------------------------------------------------------------------- import hygiene


def test_import_leaves_backend_alone_and_skips_pyplot():
    code = (
        "import sys, matplotlib; matplotlib.use('svg'); import pyro_vae.plots; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_images_keep_their_channels_grey_or_rgb(tmp_path, figures):
    """(n, 1, H, W) images draw as grey, (n, 3, H, W) as colour; a channel count other
    than 1 or 3 is refused."""
    grey = torch.rand(6, 1, 5, 4)
    flat = plots.tile_images(grey.reshape(6, -1), (5, 4), nrow=3)
    np.testing.assert_allclose(plots.tile_images(grey, (1, 5, 4), nrow=3), flat)
    rgb = torch.rand(6, 3, 5, 4)
    mosaic = plots.tile_images(rgb, (3, 5, 4), nrow=3)
    assert mosaic.shape == (2 * 5 + 1, 3 * 4 + 2, 3)
    np.testing.assert_allclose(mosaic[:5, :4], rgb[0].permute(1, 2, 0).numpy())  # image 0, HWC
    np.testing.assert_allclose(mosaic[6:, 5:9], rgb[4].permute(1, 2, 0).numpy())  # image 4: row 1, col 1
    plots.image_grid(rgb, (3, 5, 4), tmp_path / "rgb.png")
    (im,) = figures[0].axes[0].get_images()
    assert im.get_array().shape[-1] == 3 and _png(tmp_path / "rgb.png") is not None
    with pytest.raises(ValueError, match=r"1 \(grey\) or 3 \(RGB\) channels"):
        plots.tile_images(torch.rand(2, 2, 5, 4), (2, 5, 4))


def test_figure_curves_draw_every_logged_figure(tmp_path, figures):
    history = [{"epoch": 1, "train_elbo": -40.0, "train_accept_prob": 0.9, "valid_elbo": -41.0},
               {"epoch": 2, "train_elbo": -35.0, "train_accept_prob": 0.8, "valid_elbo": None}]
    plots.figure_curves(history, tmp_path / "c.png")
    _png(tmp_path / "c.png")
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes] == ["elbo", "accept_prob"]
    assert [len(ax.lines) for ax in axes] == [2, 1]  # elbo: train + validation; accept_prob: train
    with pytest.raises(ValueError, match="no train_<figure>"):
        plots.figure_curves([{"epoch": 1, "seconds": 2.0}], tmp_path / "x.png")


def test_layer_panels_keep_their_labels_and_titles_apart(tmp_path, monkeypatch):
    # layer_scatter once drew each panel's y label over its left neighbour, and the
    # suptitle over the panel titles (tutorial 06)
    from pyro_vae import layer_plots

    saved = []
    original = layer_plots._save
    monkeypatch.setattr(layer_plots, "_save", lambda fig, path: saved.append(fig) or original(fig, path))
    g = torch.Generator().manual_seed(0)
    means = {f"z{k}": 3 * torch.randn(200, 2, generator=g) for k in (3, 2, 1)}
    _png(layer_plots.layer_scatter(means, torch.arange(200) % 10, tmp_path / "s.png", title="posterior means"))
    fig = saved[-1]
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 3
    for left, right in zip(axes, axes[1:]):
        label = right.yaxis.label.get_window_extent(renderer)
        assert label.x0 >= left.get_tightbbox(renderer).x1, "a y label over the panel to its left"
    top = fig._suptitle.get_window_extent(renderer)
    for ax in axes:
        assert not top.overlaps(ax.title.get_window_extent(renderer)), "the suptitle over a panel title"


def test_latent_kde_axes_span_the_density_grid(tmp_path, figures):
    # overlaid codes beyond the default extent (0.5-99.5 percentiles) once widened the axes,
    # leaving a blank strip beside the image
    codes = torch.cat([torch.randn(400, 2), torch.tensor([[12.0, -9.0]])])
    plots.latent_kde({"prior": lambda z: -0.5 * (z ** 2).sum(-1), "codes": codes}, tmp_path / "kde.png",
                     points={"prior": codes})
    plots.latent_kde({"codes": codes}, tmp_path / "given.png", extent=(-1.0, 2.0, -3.0, 0.5), points={"codes": codes})
    for fig in figures:
        for ax in fig.axes:
            (im,) = ax.get_images()
            x0, x1, y0, y1 = im.get_extent()
            assert ax.get_xlim() == pytest.approx((x0, x1)) and ax.get_ylim() == pytest.approx((y0, y1))
    assert figures[1].axes[0].get_images()[0].get_extent() == pytest.approx((-1.0, 2.0, -3.0, 0.5))
