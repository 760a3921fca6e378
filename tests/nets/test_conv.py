"""Convolutional encoder/decoder bodies of pyro_vae.nets (network="conv")."""

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.nets import GaussianHead, conv_channels, conv_sizes, decoder_body, encoder_body

SHAPES = {
    (1, 28, 28): [(14, 14), (7, 7)],
    (3, 64, 64): [(32, 32), (16, 16), (8, 8), (4, 4)],
    (1, 8, 8): [(4, 4)],
    (2, 28, 20): [(14, 10), (7, 5)],
}


def _layers(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_rule_halves_while_both_sides_are_even_and_at_least_8(shape):
    assert conv_sizes(shape) == SHAPES[shape]


def test_channel_schedule_first_half_32_then_64():
    assert [conv_channels(n) for n in range(1, 6)] == [
        [32],
        [32, 64],
        [32, 32, 64],
        [32, 32, 64, 64],
        [32, 32, 32, 64, 64],
    ]


@pytest.mark.parametrize(
    "shape, channels, top",
    [((1, 28, 28), [32, 64], (64, 7, 7)), ((3, 64, 64), [32, 32, 64, 64], (64, 4, 4))],
)
def test_standard_stacks(shape, channels, top):
    enc, width = encoder_body(shape, (256,), "relu", "conv")
    convs = _layers(enc, nn.Conv2d)
    assert [c.out_channels for c in convs] == channels
    assert [c.in_channels for c in convs] == [shape[0], *channels[:-1]]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert enc.top_shape == top and enc.mlp[0].in_features == top[0] * top[1] * top[2] and width == 256

    dec = decoder_body(10, shape, (256,), "relu", "conv")
    linears = _layers(dec, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 256), (256, top[0] * top[1] * top[2])]
    deconvs = _layers(dec, nn.ConvTranspose2d)
    assert [(m.in_channels, m.out_channels) for m in deconvs] == list(
        zip(channels[::-1], [*channels[::-1][1:], shape[0]])
    )
    assert deconvs[-1] is dec.head  # the last transposed convolution is the head
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in deconvs)


@pytest.mark.parametrize("batch", [(5,), (3, 2)])
@pytest.mark.parametrize("shape", SHAPES)
def test_output_shapes(shape, batch):
    c = shape[0]
    enc, width = encoder_body(shape, (16,), "relu", "conv")
    assert enc(torch.rand(*batch, *shape)).shape == (*batch, width)
    z = torch.randn(*batch, 4)
    assert decoder_body(4, shape, (16,), "relu", "conv")(z).shape == (*batch, *shape)
    loc, scale = decoder_body(4, shape, (16,), "relu", "conv", gaussian=True)(z)
    assert loc.shape == scale.shape == (*batch, *shape) and (scale > 0).all()
    two_per_channel = decoder_body(4, shape, (), "relu", "conv", out_channels=2 * c)
    assert two_per_channel(z).shape == (*batch, 2 * c, *shape[1:])


def test_no_hidden_layers_means_the_flat_top_map():
    enc, width = encoder_body((2, 28, 20), (), network="conv")
    assert width == 64 * 7 * 5 and enc(torch.rand(3, 2, 28, 20)).shape == (3, width)


def test_leading_dims_do_not_mix_data_points():
    enc, _ = encoder_body((2, 28, 20), (8,), network="conv")
    dec = decoder_body(8, (2, 28, 20), (8,), network="conv")
    x = torch.rand(3, 2, 2, 28, 20)
    feats = enc(x)
    torch.testing.assert_close(feats, enc(x.reshape(6, 2, 28, 20)).reshape(3, 2, 8))
    torch.testing.assert_close(feats[2, 1], enc(x[2, 1]))  # no batch dim at all
    out = dec(feats)
    torch.testing.assert_close(out[1, 0], dec(feats[1, 0]))


@pytest.mark.parametrize("gaussian", [False, True])
def test_encoder_decoder_round_trip_with_particles(gaussian):
    shape, particles, batch = (1, 28, 28), 4, 3
    enc, width = encoder_body(shape, (32,), "relu", "conv")
    head = GaussianHead(width, 5)
    dec = decoder_body(5, shape, (32,), "relu", "conv", gaussian=gaussian)
    x = torch.rand(batch, *shape).round()
    loc, scale = head(enc(x))
    z = dist.Normal(loc, scale).rsample((particles,))  # (K, B, z_dim)
    out = dec(z)
    if gaussian:
        p = dist.Normal(out[0], out[1]).to_event(3)
    else:
        p = dist.Bernoulli(logits=out).to_event(3)
    assert p.batch_shape == (particles, batch) and p.event_shape == shape
    assert p.log_prob(x).shape == (particles, batch)


@pytest.mark.parametrize("act", ["tanh", "glu"])
def test_gradients_reach_every_parameter_conv(act):
    shape = (2, 16, 12)
    enc, width = encoder_body(shape, (8,), act, "conv")
    head = GaussianHead(width, 3)
    dec = decoder_body(3, shape, (8,), act, "conv", gaussian=True)
    loc, scale = head(enc(torch.rand(2, 4, *shape)))
    out_loc, out_scale = dec(loc + scale * torch.randn_like(loc))
    (out_loc.square().sum() + out_scale.sum()).backward()
    for module in (enc, head, dec):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_glu_gates_over_channels():
    enc, _ = encoder_body((1, 28, 20), (8,), "glu", "conv")
    conv, gate = enc.conv[0], enc.conv[1]
    assert conv.out_channels == 64 and gate.dim == 1
    h = conv(torch.rand(3, 1, 28, 20))
    a, b = h.chunk(2, dim=1)
    torch.testing.assert_close(gate(h), a * torch.sigmoid(b))
    assert enc.mlp[0].out_features == 16  # the dense layers still gate their last dim
    dec = decoder_body(8, (1, 28, 20), (8,), "glu", "conv")
    assert [m.out_channels for m in _layers(dec, nn.ConvTranspose2d)] == [64, 1]
    assert dec.body.deconv[1].dim == 1
    assert dec(torch.randn(2, 3, 8)).shape == (2, 3, 1, 28, 20)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((784,), r'image event shape \(C, H, W\), got \(784,\).*network="mlp"'),
        ((28, 28), r'got \(28, 28\).*network="mlp"'),
        ((1, 7, 7), r'7 x 7 images of event shape \(1, 7, 7\).*network="mlp"'),
        ((1, 28, 27), r'\(1, 28, 27\).*even.*network="mlp"'),
        ((1, 6, 6), r'\(1, 6, 6\).*at least 8.*network="mlp"'),
    ],
)
def test_shapes_the_rule_cannot_handle_are_refused(shape, match):
    with pytest.raises(ValueError, match=match):
        encoder_body(shape, (8,), network="conv")
    with pytest.raises(ValueError, match=match):
        decoder_body(2, shape, (8,), network="conv")


def test_wrong_input_shape_is_refused():
    enc, _ = encoder_body((1, 8, 8), (4,), network="conv")
    with pytest.raises(ValueError, match=r"\(\.\.\., 1, 8, 8\), got \(5, 64\)"):
        enc(torch.rand(5, 64))


def test_outputs_follow_the_input_dtype_and_device():
    enc, _ = encoder_body((1, 8, 8), (4,), network="conv")
    dec = decoder_body(4, (1, 8, 8), (4,), network="conv", gaussian=True)
    x = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)
    loc, scale = dec.double()(enc.double()(x))
    assert loc.dtype == scale.dtype == torch.float64
    loc, _ = dec.to("meta")(enc.to("meta")(x.to("meta")))
    assert loc.device.type == "meta" and loc.shape == (2, 3, 1, 8, 8)
