"""The [data] transforms of density models: dequantization, rescaling and the logit, their
log-Jacobians, and the conversion of published figures to bits per dimension."""

import math

import pytest
import torch

from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError
from pyro_vae.data.transforms import DataTransform, bits_per_dim


def test_the_published_pairs_convert_to_their_bits_per_dim():
    # NICE, MNIST: 1980.50 nats of dequantized [0, 1] pixels = 4.36 bits/dim (8 − LL / (784 ln 2)).
    assert bits_per_dim(1980.50, 784) == pytest.approx(8 - 1980.50 / (784 * math.log(2)))
    assert round(bits_per_dim(1980.50, 784), 2) == 4.36
    # NICE, CIFAR-10 on [−1, 1]: 5371.78 nats; the map from [0, 1] adds D ln 2 = 4.48 bits/dim.
    d = 3 * 32 * 32
    assert round(bits_per_dim(5371.78, d, log_jacobian=d * math.log(2)), 2) == 4.48
    # The same through the transform's own accounting (rescale to [−1, 1]).
    t = DataTransform(("dequantize", "rescale"), rescale_to=(-1.0, 1.0))
    y = torch.rand(1, 3, 32, 32)
    log_p_data = 5371.78 + t.log_abs_det_jacobian(y, 3)  # log p_y = log p_z + J
    figures = t.figures(log_p_data, y, event_dims=3)
    assert float(figures["log_likelihood"]) == pytest.approx(5371.78)
    assert round(float(figures["bits_per_dim"]), 2) == 4.48


def test_dequantization_and_logit_on_a_constant_image():
    """A constant image of grey level 100/255: every dequantized value lies in
    [100/256, 101/256), and the logit's log-Jacobian is the hand-computed sum."""
    lam, d = 1e-6, 28 * 28
    t = DataTransform(("dequantize", "logit"), logit_lambda=lam)
    x = torch.full((2, 1, 28, 28), 100 / 255)
    y = t.dequantize(x, torch.Generator().manual_seed(0))
    assert ((y >= 100 / 256) & (y < 101 / 256)).all() and not torch.equal(y[0], y[1])
    s = lam + (1 - 2 * lam) * y.double()
    by_hand = (math.log(1 - 2 * lam) - s.log() - (1 - s).log()).sum((1, 2, 3))
    torch.testing.assert_close(t.log_abs_det_jacobian(y.double(), 3), by_hand)
    torch.testing.assert_close(t.forward(y.double()), (s / (1 - s)).log())
    # the exact value at the pixel's centre: s = λ + (1 − 2λ)(100.5/256)
    centre = torch.full((1, 1, 28, 28), 100.5 / 256, dtype=torch.float64)
    sc = lam + (1 - 2 * lam) * 100.5 / 256
    expected = d * (math.log(1 - 2 * lam) - math.log(sc * (1 - sc)))
    assert float(t.log_abs_det_jacobian(centre, 3)) == pytest.approx(expected)
    # A flow's figures: bits/dim from the density on [0, 1], log-likelihood in logit space.
    log_p_data = torch.tensor([-100.0, 50.0], dtype=torch.float64)
    figures = t.figures(log_p_data, y.double(), 3)
    torch.testing.assert_close(figures["bits_per_dim"], 8 - log_p_data / (d * math.log(2)))
    torch.testing.assert_close(figures["log_likelihood"], log_p_data - by_hand)


@pytest.mark.parametrize("steps", [("logit",), ("rescale",), ()])
def test_the_data_space_map_inverts_the_transform_and_its_log_det_is_autograds(steps):
    t = DataTransform(steps, rescale_to=(-2.0, 3.0), logit_lambda=0.05)
    y = torch.rand(3, 4, dtype=torch.float64) * 0.9 + 0.05
    z = t.forward(y)
    back = z
    for step in t.to_data_space():
        back = step(back)
    torch.testing.assert_close(back, y)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(t.forward, y[i])
        torch.testing.assert_close(t.log_abs_det_jacobian(y[i:i + 1], 1)[0], torch.linalg.slogdet(jac).logabsdet)


def test_without_dequantization_bits_per_dim_is_the_continuous_densitys():
    t = DataTransform()
    y = torch.randn(2, 2)
    figures = t.figures(torch.tensor([-1.0, -3.0]), y, 1)
    torch.testing.assert_close(figures["bits_per_dim"], torch.tensor([1.0, 3.0]) / (2 * math.log(2)))
    assert torch.equal(t.dequantize(y), y)


@pytest.mark.parametrize("steps,message", [
    (["logit", "dequantize"], r"in the order \['dequantize', 'rescale', 'logit'\]"),
    (["rescale", "logit"], "choose one"),
    (["log"], r"unknown step\(s\) \['log'\]"),
])
def test_bad_transform_lists_are_refused(steps, message):
    with pytest.raises(DataError, match=message):
        DataTransform(tuple(steps))


def test_the_transform_is_a_declared_data_entry():
    config = Config().with_overrides(['data.transform=["dequantize", "logit"]', "data.logit_lambda=0.05"])
    t = DataTransform.from_config(config.data)
    assert t.steps == ("dequantize", "logit") and t.logit_lambda == 0.05
    with pytest.raises(DataError, match=r"logit_lambda = 0.7: λ must lie in \[0, 0.5\)"):
        DataTransform.from_config(Config().with_overrides(["data.logit_lambda=0.7"]).data)
    with pytest.raises(ConfigError, match=r"\[data\]: transform must be a list, got 'logit'"):
        Config().with_overrides(['data.transform="logit"'])


def test_the_inverse_logit_is_torchs_sigmoid_then_affine_in_one_transform():
    """One transform, the same map and log-Jacobian as Sigmoid then Affine (what it replaced),
    and to_model_space is forward and log_abs_det_jacobian in one pass."""
    lam = 0.05
    t = DataTransform(("logit",), logit_lambda=lam)
    (inverse,) = t.to_data_space()
    z = torch.randn(5, 3, dtype=torch.float64) * 3
    sigmoid, affine = torch.distributions.SigmoidTransform(), torch.distributions.AffineTransform(
        -lam / (1 - 2 * lam), 1 / (1 - 2 * lam))
    s = sigmoid(z)
    y = affine(s)
    torch.testing.assert_close(inverse(z), y)
    torch.testing.assert_close(inverse.inv(y), z)
    ladj = sigmoid.log_abs_det_jacobian(z, s) + affine.log_abs_det_jacobian(s, y)
    torch.testing.assert_close(inverse.log_abs_det_jacobian(z, y), ladj)
    z2, jacobian = t.to_model_space(y, 1)
    torch.testing.assert_close(z2, t.forward(y))
    torch.testing.assert_close(jacobian, -ladj.sum(-1))
    torch.testing.assert_close(t.figures(torch.zeros(5, dtype=torch.float64), y, 1, log_jacobian=jacobian),
                               t.figures(torch.zeros(5, dtype=torch.float64), y, 1))
