"""WGAN and WGAN-GP: the critic's constraint (clipping, the penalty against finite
differences), the parameter roles, the generator as the model's story, resuming, and the
refusals of bad settings."""

import pytest
import torch
from toy_models import DIGITS_SHAPE, fresh_vae

from pyro_vae import checkpoint
from pyro_vae.capabilities import Capabilities
from pyro_vae.config import Config, ConfigError
from pyro_vae.inference.adversarial import WGAN, StoryGenerator, gradient_penalty
from pyro_vae.nets.critic import Critic
from pyro_vae.train import build, make_inference, train

N = 1297
FAST = ["model.hidden=[16]", "eval.num_samples=0", "eval.plots=false", "data.binarize=none",
        "inference.critic_hidden=[16]"]


def _batch(digits, b=20, start=0):
    return digits.train[start:start + b], torch.arange(start, start + b)


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_weight_clipping_keeps_every_critic_weight_in_range(digits):
    wgan = WGAN(fresh_vae(), critic_hidden=[16], clip=0.01, lr=0.5, n_critic=2)  # a huge rate: weights would leave
    c = wgan.clip
    assert all(p.abs().max() <= c for p in wgan.critic.parameters())  # clipped from the start
    for k in range(4):
        wgan.step(*_batch(digits, start=20 * k), N)
        assert all(float(p.detach().abs().max()) <= c for p in wgan.critic.parameters())
    assert any(float(p.detach().abs().max()) == pytest.approx(c) for p in wgan.critic.parameters())  # it did bind


def test_the_gradient_penalty_equals_a_finite_difference_check():
    torch.manual_seed(0)
    critic = Critic((3,), "mlp", [5]).double()
    real, fake, u = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), torch.rand(4)
    got = gradient_penalty(critic, real, fake, u.double())
    x_hat = u.double()[:, None] * real + (1 - u.double()[:, None]) * fake
    h = 1e-6
    with torch.no_grad():
        grad = torch.stack([(critic(x_hat + h * e) - critic(x_hat - h * e)) / (2 * h)
                            for e in torch.eye(3, dtype=torch.float64)], -1)  # (4, 3)
    expected = (grad.norm(dim=-1) - 1) ** 2
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
    # ... and its graph reaches the critic's weights (the penalty is trained, not just reported)
    got.sum().backward()
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


@pytest.mark.parametrize("gp", [False, True])
def test_each_role_is_updated_only_by_its_own_optimizer(digits, gp):
    vae = fresh_vae()
    wgan = WGAN(vae, critic_hidden=[16], n_critic=1, **({"clip": None, "gp_weight": 10.0, "optimizer": "adam",
                                                          "lr": 1e-3} if gp else {"lr": 1e-2}))
    x, _ = _batch(digits)
    generator = wgan.generator.parameters
    assert {id(p) for p in generator} == {id(p) for p in vae.decoder.parameters()}  # θ: the decoder alone
    module_before, critic_before = _snapshot(vae.parameters()), _snapshot(wgan.critic.parameters())
    wgan.critic_step(x)
    assert _same(module_before, vae.parameters())  # the critic's step moves no parameter of the model
    assert not _same(critic_before, wgan.critic.parameters())
    guide_before, critic_before = _snapshot(vae.guide.parameters()), _snapshot(wgan.critic.parameters())
    decoder_before = _snapshot(vae.decoder.parameters())
    wgan.generator_step(len(x))
    assert _same(critic_before, wgan.critic.parameters())  # the generator's step moves no critic weight
    assert not _same(decoder_before, vae.decoder.parameters())
    assert _same(guide_before, vae.guide.parameters())  # and not the guide, which has no role here


def test_the_generator_is_the_story_run_at_the_prior_noise(digits):
    vae = fresh_vae()
    eps = torch.randn(6, 2)
    mean = StoryGenerator(vae, "mean")(eps)
    torch.testing.assert_close(mean, vae.decoder.mean(eps))  # N(0, I) prior: z = eps; E[x|z]
    relaxed = StoryGenerator(vae, "relaxed", temperature=0.1)(eps)
    assert relaxed.shape == (6, *DIGITS_SHAPE) and bool(((relaxed >= 0) & (relaxed <= 1)).all())
    assert not torch.allclose(relaxed, mean)
    relaxed.sum().backward()  # reparameterized: gradients reach the decoder
    assert vae.decoder.head.weight.grad is not None


def test_the_vae_decoder_trained_as_a_gan_is_one_config_entry(tmp_path):
    config = Config().with_overrides(FAST + ["inference.name=wgan_gp", "budget.epochs=2"])
    exp, state = train(config, tmp_path / "run", progress=False)
    row = state.history[-1]
    assert {"train_wasserstein", "train_critic_loss", "train_gradient_penalty", "valid_wasserstein"} <= set(row)
    assert state.stopped == "budget" and state.best_module is None  # the latest parameters, no monitor
    assert exp.inference.critic_steps == state.step
    assert exp.module.sample(5).shape == (5, *DIGITS_SHAPE)


@pytest.mark.parametrize("name,extra", [("wgan", []), ("wgan_gp", ["inference.critic=conv"])])
def test_a_checkpointed_run_resumes_to_the_same_parameters(tmp_path, name, extra):
    config = Config().with_overrides(FAST + [f"inference.name={name}", "inference.n_critic=2", *extra])
    whole, _ = train(config.with_overrides(["budget.epochs=3"]), tmp_path / "whole", progress=False)
    train(config.with_overrides(["budget.epochs=2"]), tmp_path / "split", progress=False)
    ckpt = checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    ckpt["state"]["stopped"] = None  # the finished 2-epoch run becomes an interrupted 3-epoch one
    checkpoint.save(ckpt, tmp_path / "split" / "checkpoint.pt")
    resumed, _ = train(config.with_overrides(["budget.epochs=3"]), tmp_path / "split", progress=False)
    for a, b in ((whole.module, resumed.module), (whole.inference.critic, resumed.inference.critic)):
        for (key, t), u in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(t, u), key


class CannotSample(torch.nn.Module):
    capabilities = Capabilities(has_guide=True, can_sample=False)

    def __init__(self):
        super().__init__()
        self.inner = fresh_vae()
        self.model, self.guide = self.inner.model, self.inner.guide


@pytest.mark.parametrize("settings,match", [
    ({"n_critic": 0}, "n_critic must be a positive integer"),
    ({"n_critic": 2.5}, "n_critic must be of type int"),
    ({"clip": 0.0}, "clip must be positive"),
    ({"clip": -0.01}, "clip must be positive"),
    ({"output": "sample"}, "output = 'sample'"),
])
def test_bad_wgan_settings_fail_clearly(settings, match):
    with pytest.raises(ConfigError, match=match):
        make_inference(fresh_vae(), "wgan", **settings)


def test_bad_wgan_gp_settings_and_models_fail_clearly():
    with pytest.raises(ConfigError, match="gp_weight \\(λ\\) must be >= 0"):
        make_inference(fresh_vae(), "wgan_gp", gp_weight=-1.0)
    with pytest.raises(ConfigError, match="cannot train CannotSample: it needs a model that can sample x given z"):
        make_inference(CannotSample(), "wgan_gp")
    with pytest.raises(ConfigError, match="name = 'wgan' cannot train \\[model\\] name = 'nice'"):
        build(Config().with_overrides(["model.name=nice", "inference.name=wgan", "data.binarize=none"]))
    with pytest.raises(ConfigError, match="critic = 'rnn'"):
        make_inference(fresh_vae(), "wgan", critic="rnn")


def test_the_generator_draws_the_gae_index_then_z_given_it_from_noise(digits):
    from pyro_vae.models.gae import GAE

    gae = GAE(digits.train[:10], z_dim=2, hidden=(16,))
    gen = StoryGenerator(gae, "mean")
    assert gen.z_shape == (3,) and list(gen.layout.blocks) == ["y", "z"]  # one entry for y, two for z
    eps = torch.randn(6, 3)
    y = (torch.special.ndtr(eps[:, 0]) * 10).floor().long()  # the uniform index by its inverse CDF
    loc, scale = gae.prior.exact_components()
    expected = gae.decoder.mean(loc[y] + scale[y] * eps[:, 1:])
    torch.testing.assert_close(gen(eps), expected)
    assert {id(p) for p in gae.guide.parameters()} <= {id(p) for p in gen.parameters}  # the prior's encoder


def test_the_adversarial_autoencoder_matches_a_hierarchy_s_joint_code(digits):
    from pyro_vae.inference.adversarial_ae import AdversarialAE
    from pyro_vae.models.hvae import HVAE

    hvae = HVAE(digits.event_shape, 2, 3, (16,))
    aae = AdversarialAE(hvae, discriminator_hidden=[8])
    assert aae.story.sites == ["z2", "z1"] and aae.story.code_dim == 5
    ids = {role: {id(p) for p in params} for role, params in aae.story.parameters.items()}
    assert ids["prior"] == {id(p) for p in hvae.z1_prior.parameters()}  # p(z1|z2): fitted in the generator phase
    assert ids["encoder"] == {id(p) for p in hvae.guide.parameters()}
    x = digits.train[:20]
    aae.noise.rows(len(x), None)
    prior_before = _snapshot(hvae.z1_prior.parameters())
    aae.generator_step(x)
    assert not _same(prior_before, hvae.z1_prior.parameters())


def test_the_adversarial_rate_is_raised_from_late_epoch_on_and_after_a_resume(digits):
    from pyro_vae.inference.adversarial_ae import AdversarialAE
    from pyro_vae.models.hvae import HVAE

    def rates(aae):
        return [aae.optimizers[role].param_groups[0]["lr"] for role in ("autoencoder", "discriminator", "generator")]

    def build():
        torch.manual_seed(0)
        return AdversarialAE(HVAE(digits.event_shape, 2, 3, (16,)), discriminator_hidden=[8], late_epoch=3)

    aae = build()
    assert rates(aae) == pytest.approx([1e-3, 2e-4, 2e-4])
    aae.start_epoch(1)
    assert rates(aae) == pytest.approx([1e-3, 2e-4, 2e-4])
    saved = aae.state_dict()  # a checkpoint of epoch 2, at the early rate
    aae.start_epoch(2)  # epoch 3
    assert rates(aae) == pytest.approx([1e-3, 1e-3, 1e-3])
    aae.start_epoch(3)
    assert rates(aae) == pytest.approx([1e-3, 1e-3, 1e-3])
    resumed = build()
    resumed.load_state_dict(saved)
    resumed.start_epoch(2)  # the resumed run crosses the boundary: the schedule, not the saved rate
    assert rates(resumed) == pytest.approx([1e-3, 1e-3, 1e-3])


def test_a_learning_rate_decay_before_late_epoch_carries_through_the_switch(digits):
    """``[budget] lr_decays`` scales every role's rate; the late schedule then multiplies the
    adversarial phases' decayed rate instead of setting its own."""
    from pyro_vae.inference.adversarial_ae import AdversarialAE
    from pyro_vae.loop import scale_learning_rates
    from pyro_vae.models.hvae import HVAE

    aae = AdversarialAE(HVAE(digits.event_shape, 2, 3, (16,)), discriminator_hidden=[8], late_epoch=3)
    aae.start_epoch(1)
    scale_learning_rates(aae, 0.1)  # a plateau at the end of epoch 2
    rates = [[aae.optimizers[r].param_groups[0]["lr"] for r in ("autoencoder", "discriminator", "generator")]]
    for epoch in (2, 3):
        aae.start_epoch(epoch)
        rates.append([aae.optimizers[r].param_groups[0]["lr"] for r in ("autoencoder", "discriminator", "generator")])
    assert rates == [pytest.approx([1e-4, 2e-5, 2e-5]), pytest.approx([1e-4, 1e-4, 1e-4]),
                     pytest.approx([1e-4, 1e-4, 1e-4])]
    with pytest.raises(ConfigError, match="late_epoch = -1: the 1-based epoch"):
        AdversarialAE(HVAE(digits.event_shape, 2, 3, (16,)), late_epoch=-1)
    with pytest.raises(ConfigError, match="late_adversarial_lr = -1.0: the learning rate must be positive"):
        AdversarialAE(HVAE(digits.event_shape, 2, 3, (16,)), late_adversarial_lr=-1.0)
