"""MLP networks of pyro_vae.nets: the old names, and encoder/decoder bodies with network="mlp"."""

import pytest
import torch
from torch import nn

from pyro_vae.nets import (
    ACTIVATIONS,
    GATED,
    GaussianHead,
    activation,
    decoder_body,
    encoder_body,
    mlp,
)


class TodaysDecoder(nn.Module):
    """The layout of models.vae.Decoder before event shapes: body = mlp, head = Linear or GaussianHead."""

    def __init__(self, z_dim, x_dim, hidden, act, gaussian):
        super().__init__()
        self.body, width = mlp(z_dim, hidden, act)
        self.head = GaussianHead(width, x_dim) if gaussian else nn.Linear(width, x_dim)

    def forward(self, z):
        return self.head(self.body(z))


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)


def test_old_names_still_import_from_the_package():
    assert set(ACTIVATIONS) == {"tanh", "relu", "softplus", "elu", "sigmoid", "glu"}
    assert GATED == {"glu"}
    assert isinstance(activation("relu"), nn.ReLU)
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        activation("nope")
    net, width = mlp(6, (5, 4), "glu")
    assert width == 4 and [m.out_features for m in net if isinstance(m, nn.Linear)] == [10, 8]
    loc, scale = GaussianHead(4, 3)(torch.randn(2, 4))
    assert loc.shape == scale.shape == (2, 3) and (scale > 0).all()


@pytest.mark.parametrize("act", ["tanh", "glu"])
def test_flat_encoder_is_todays_mlp_same_init_keys_and_values(act):
    torch.manual_seed(0)
    old, old_width = mlp(12, (8, 5), act)
    torch.manual_seed(0)
    new, width = encoder_body((12,), (8, 5), act)
    assert width == old_width == 5
    _assert_same_state(old, new)  # keys "0.weight", ... as GaussianEncoder.body's today
    x = torch.randn(4, 12)
    torch.testing.assert_close(new(x), old(x), rtol=0, atol=0)


def test_encoder_on_an_image_event_is_the_mlp_on_the_flattened_image():
    new, width = encoder_body((2, 3, 4), (7,), "relu")
    old, _ = mlp(24, (7,), "relu")
    old.load_state_dict(new.state_dict())  # strict: the same parameter names and shapes
    x = torch.randn(3, 5, 2, 3, 4)
    out = new(x)
    assert out.shape == (3, 5, 7) and width == 7
    torch.testing.assert_close(out, old(x.reshape(3, 5, 24)), rtol=0, atol=0)


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("act", ["tanh", "glu"])
def test_flat_decoder_reproduces_todays_decoder(gaussian, act):
    torch.manual_seed(1)
    old = TodaysDecoder(3, 10, (8, 6), act, gaussian)
    torch.manual_seed(1)
    new = decoder_body(3, (10,), (8, 6), act, gaussian=gaussian)
    _assert_same_state(old, new)  # same init under the same seed, same keys
    keys = set(new.state_dict())
    assert {"body.0.weight", "body.2.weight"} <= keys
    assert ({"head.loc.weight", "head.log_var.weight"} if gaussian else {"head.weight", "head.bias"}) <= keys
    new.load_state_dict(old.state_dict())  # an old checkpoint loads
    z = torch.randn(2, 4, 3)
    want, got = old(z), new(z)
    for w, g in zip(want if gaussian else [want], got if gaussian else [got]):
        assert g.shape == (2, 4, 10)
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_a_decoder_keeping_body_and_head_as_its_own_attributes_keeps_todays_keys():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            net = decoder_body(3, (10,), (8,), gaussian=True)
            self.body, self.head = net.body, net.head

    assert list(Decoder().state_dict()) == list(TodaysDecoder(3, 10, (8,), "tanh", True).state_dict())


@pytest.mark.parametrize("batch", [(), (5,), (3, 2)])
def test_mlp_decoder_on_image_events_and_leading_dims(batch):
    z = torch.randn(*batch, 4)
    logits = decoder_body(4, (2, 3, 5), (6,))(z)
    assert logits.shape == (*batch, 2, 3, 5)
    loc, scale = decoder_body(4, (2, 3, 5), (6,), gaussian=True)(z)
    assert loc.shape == scale.shape == (*batch, 2, 3, 5) and (scale > 0).all()
    assert decoder_body(4, (2, 3, 5), (6,), out_channels=4)(z).shape == (*batch, 4, 3, 5)
    enc, width = encoder_body((2, 3, 5), (6,))
    assert enc(torch.randn(*batch, 2, 3, 5)).shape == (*batch, width)


def test_leading_dims_do_not_mix_data_points():
    enc, _ = encoder_body((2, 3), (5,))
    dec = decoder_body(5, (2, 3), (4,), gaussian=True)
    x = torch.randn(3, 2, 2, 3)
    feats = enc(x)
    torch.testing.assert_close(feats[2, 1], enc(x[2, 1]))
    torch.testing.assert_close(dec(feats)[1][2, 1], dec(feats[2, 1])[1])


def test_glu_gates_the_last_dim_of_mlp_layers():
    enc, width = encoder_body((6,), (4,), "glu")
    linear, gate = enc[0], enc[1]
    assert linear.out_features == 8 and width == 4
    h = linear(torch.randn(3, 6))
    a, b = h.chunk(2, -1)
    torch.testing.assert_close(gate(h), a * torch.sigmoid(b))


@pytest.mark.parametrize("gaussian", [False, True])
def test_gradients_reach_every_parameter_mlp(gaussian):
    enc, width = encoder_body((2, 4), (5,), "elu")
    head = GaussianHead(width, 3)
    dec = decoder_body(3, (2, 4), (5,), "elu", gaussian=gaussian)
    loc, scale = head(enc(torch.randn(6, 2, 4)))
    out = dec(loc + scale * torch.randn_like(loc))
    sum(o.square().sum() for o in (out if gaussian else [out])).backward()
    for module in (enc, head, dec):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_give_clear_errors():
    for shape in [(), (0,), (3, -1), (2.5,)]:
        with pytest.raises(ValueError, match="event shape"):
            encoder_body(shape, (4,))
    with pytest.raises(ValueError, match="unknown network 'cnn'"):
        encoder_body((4,), (4,), network="cnn")
    with pytest.raises(ValueError, match="unknown network 'cnn'"):
        decoder_body(2, (4,), (4,), network="cnn")
    with pytest.raises(ValueError, match=r"out_channels=3 .* \(10,\)"):
        decoder_body(2, (10,), (4,), out_channels=3)
    enc, _ = encoder_body((2, 3), (4,))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 3\), got \(5, 6\)"):
        enc(torch.randn(5, 6))


def test_outputs_follow_the_input_dtype_and_device():
    enc, _ = encoder_body((2, 3), (4,))
    dec = decoder_body(4, (2, 3), (4,), gaussian=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    loc, scale = dec.double()(enc.double()(x))
    assert loc.dtype == scale.dtype == torch.float64
    loc, _ = dec.to("meta")(enc.to("meta")(x.to("meta")))
    assert loc.device.type == "meta" and loc.shape == (5, 2, 3)
