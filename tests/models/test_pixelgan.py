"""The PixelGAN autoencoder: its story (sites, shapes, the exact log p(x|z)), its
adversarial training through the config (figures improve, every role moves only its
own parameters, an interrupted run resumes exactly), sampling per class, and refusals."""

import pytest
import torch
from pyro import poutine

from pyro_vae import checkpoint
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError
from pyro_vae.models.pixelgan import PixelGAN
from pyro_vae.train import build, train

SMALL = dict(hidden=(16,), channels=8, layers=2)
FAST = ["model.name=pixelgan", "model.hidden=[32]", "model.channels=8", "model.layers=2",
        "inference.name=adversarial_ae", "inference.discriminator_hidden=[16]", "eval.num_samples=0",
        "eval.plots=false"]


@pytest.mark.parametrize("prior,code", [("gaussian", 3), ("categorical", 4)])
def test_the_story_scores_x_exactly_given_z(digits, prior, code):
    pg = PixelGAN((1, 8, 8), prior, z_dim=3, num_classes=4, **SMALL)
    x = digits.train[:5]
    tr = poutine.trace(pg.model).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (5, code) and tr.nodes["x"]["value"] is x
    z = tr.nodes["z"]["value"]
    torch.testing.assert_close(tr.nodes["x"]["fn"].log_prob(x), pg.log_px_given_z(x, z))
    expected = torch.distributions.Bernoulli(logits=pg.decoder.logits(x, z)).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(pg.log_px_given_z(x, z), expected)
    if prior == "categorical":
        assert set(z.sum(-1).tolist()) == {1.0} and pg.cluster(x).shape == (5,)
    generated = poutine.trace(pg.model).get_trace(None, None, 3).nodes["x"]["value"]
    assert generated.shape == (3, 1, 8, 8) and set(generated.unique().tolist()) <= {0.0, 1.0}


def test_samples_per_class_and_the_prior_codes():
    pg = PixelGAN((1, 8, 8), "categorical", num_classes=3, **SMALL)
    assert pg.sample(4, classes=torch.tensor([0, 1, 2, 2])).shape == (4, 1, 8, 8)
    codes = pg.prior_code(torch.tensor([[0.1, 0.9, 0.5], [0.5, 0.0, 0.0], [0.99, 0.0, 0.0]]))
    assert codes.argmax(-1).tolist() == [0, 1, 2] and codes.sum(-1).tolist() == [1.0, 1.0, 1.0]


def test_bad_settings_fail_clearly():
    with pytest.raises(ConfigError, match="num_classes = 1: a categorical prior needs K >= 2"):
        build(Config().with_overrides(FAST + ["model.prior=categorical", "model.num_classes=1"]))
    with pytest.raises(DataError, match="PixelCNN models binary pixels"):
        build(Config().with_overrides(FAST + ["data.binarize=none"]))
    with pytest.raises(ConfigError, match="'svi' cannot train \\[model\\] name = 'pixelgan': it needs a guide"):
        build(Config().with_overrides(FAST[:4] + ["inference.name=svi"]))
    with pytest.raises(ConfigError, match="'adversarial_ae' cannot train \\[model\\] name = 'gae': it needs a prior "
                                          "apart from the encoder's codes"):
        build(Config().with_overrides(["model.name=gae", "model.hidden=[8]", "inference.name=adversarial_ae"]))
    with pytest.raises(ConfigError, match="'wgan' cannot train \\[model\\] name = 'pixelgan': it needs a story "
                                          "that is a differentiable function of noise"):
        build(Config().with_overrides(FAST[:4] + ["inference.name=wgan"]))


def test_each_phase_moves_only_its_roles_parameters(digits):
    exp = build(Config().with_overrides(FAST + ["model.prior=categorical", "model.num_classes=5"]))
    pg, aae = exp.module, exp.inference
    x = digits.train[:20]
    aae.noise.rows(len(x), None)

    def snap(m):
        return [p.detach().clone() for p in m.parameters()]

    def moved(before, m):
        return [not torch.equal(a, b) for a, b in zip(before, m.parameters())]

    enc, dec, disc = snap(pg.encoder), snap(pg.decoder), snap(aae.discriminator)
    aae.reconstruction_step(x)
    assert any(moved(enc, pg.encoder)) and any(moved(dec, pg.decoder)) and not any(moved(disc, aae.discriminator))
    enc, dec = snap(pg.encoder), snap(pg.decoder)
    aae.discriminator_step(x)
    assert not any(moved(enc, pg.encoder) + moved(dec, pg.decoder)) and any(moved(disc, aae.discriminator))
    disc = snap(aae.discriminator)
    aae.generator_step(x)
    assert any(moved(enc, pg.encoder)) and not any(moved(dec, pg.decoder) + moved(disc, aae.discriminator))


def test_training_improves_the_exact_reconstruction_and_resumes_exactly(tmp_path):
    config = Config().with_overrides(FAST + ["model.prior=categorical", "model.num_classes=4", "optim.lr=3e-3"])
    whole, state = train(config.with_overrides(["budget.epochs=3"]), tmp_path / "whole", progress=False)
    assert state.history[-1]["valid_log_px_given_z"] > state.history[0]["valid_log_px_given_z"]
    train(config.with_overrides(["budget.epochs=2"]), tmp_path / "split", progress=False)
    ckpt = checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    ckpt["state"]["stopped"] = None
    checkpoint.save(ckpt, tmp_path / "split" / "checkpoint.pt")
    resumed, again = train(config.with_overrides(["budget.epochs=3"]), tmp_path / "split", progress=False)
    assert [r["train_log_px_given_z"] for r in again.history] == [r["train_log_px_given_z"] for r in state.history]
    for (key, t), u in zip(whole.inference.discriminator.state_dict().items(),
                           resumed.inference.discriminator.state_dict().values()):
        assert torch.equal(t, u), key
