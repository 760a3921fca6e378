"""PixelCNN: the raster-order mask property (by autograd), the strips sampling runs on,
and the conditioning's two forms."""

import pytest
import torch

from pyro_vae.nets.masked import PixelCNN, raster_mask


def test_raster_masks():
    assert raster_mask(3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert raster_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="odd kernel"):
        raster_mask(4, "A")


@pytest.mark.parametrize("conditioning", ["global", "local"])
def test_output_pixel_i_depends_on_no_input_pixel_at_or_after_i(conditioning):
    torch.manual_seed(0)
    H = W = 6
    net = PixelCNN((1, H, W), cond_dim=3, channels=4, layers=3, conditioning=conditioning).double()
    x = torch.rand(1, 1, H, W, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, 3, dtype=torch.float64)
    logits = net.logits(x, h).reshape(-1)
    sees_before = 0
    for i in range(H * W):
        (grad,) = torch.autograd.grad(logits[i], x, retain_graph=True)
        grad = grad.reshape(-1)
        assert grad[i:].abs().max() == 0, f"pixel {i} sees input pixels {torch.nonzero(grad[i:]).flatten() + i}"
        sees_before += bool(grad[:i].abs().sum() > 0)
    assert sees_before > H * W // 2  # and it does see pixels before it (a dead ReLU may hide some)


def test_a_strip_of_the_receptive_rows_gives_the_full_image_logits():
    torch.manual_seed(1)
    net = PixelCNN((1, 12, 5), cond_dim=2, channels=4, layers=2, conditioning="local")
    x, h = torch.bernoulli(torch.full((3, 1, 12, 5), 0.4)), torch.randn(3, 2)
    full = net.logits(x, h)
    conds = net.conditions(h)
    R = net.receptive_rows
    for r in range(R, 12):
        strip = [c[:, :, r - R:r + 1] for c in conds]
        torch.testing.assert_close(net.logits(x[:, :, r - R:r + 1], h, strip)[:, :, -1], full[:, :, r])


def test_sampling_draws_every_pixel_with_the_models_probability():
    torch.manual_seed(2)
    net = PixelCNN((1, 5, 4), cond_dim=2, channels=4, layers=2)
    h = torch.randn(7, 2)
    x, probs = net.sample(h, torch.Generator().manual_seed(0), probabilities=True)
    assert x.shape == (7, 1, 5, 4) and set(x.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(probs, torch.sigmoid(net.logits(x, h)).detach())  # drawn from p(x_i | x_<i, h)
    log_p = net.log_prob(x, h)
    torch.testing.assert_close(log_p, torch.distributions.Bernoulli(probs).log_prob(x).flatten(1).sum(-1))
