"""One config entry chooses the algorithm: what runs really changes (checked on the
model's and guide's calls, not on class names), bad names and incompatible combinations
fail with clear errors, every algorithm trains and resumes through the loop, and the
families' declared capabilities are what the refusals read."""

import dataclasses
import os
import signal

import pyro
import pytest
import torch
from toy_models import DIGITS_SHAPE, BernoulliLatent, SpyVAE, fresh_vae

from pyro_vae import checkpoint, train as train_module
from pyro_vae.capabilities import LATENT_VARIABLE_MODEL, Capabilities, capabilities_of
from pyro_vae.config import Config, ConfigError
from pyro_vae.inference import IWAE, MCEM, RWS, VIMCO, WakeSleep
from pyro_vae.loop import Callback, Interrupted
from pyro_vae.models import GAE, VAE
from pyro_vae.registry import ALGORITHMS, FAMILIES, build_inference, check_compatible, family_of
from pyro_vae.train import build, make_inference, read_log, train

B, N = 20, 1297


def _calls_of_one_step(name, digits, **settings):
    """The model's and guide's calls during the *second* step of ``name`` (the first
    also sets up: parameter split, plate nesting)."""
    vae = fresh_vae(cls=SpyVAE)
    config = Config().with_overrides([f"inference.name={name}", *(f"inference.{k}={v}" for k, v in settings.items())])
    inference = build_inference(config, vae)
    x, index = digits.train[:B], torch.arange(B)
    inference.step(x, index, N)
    vae.calls.clear()
    inference.step(x, index, N)
    return vae.calls


def test_svi_samples_z_from_the_guide_with_gradients(digits):
    # "meanfield", Pyro's ELBO on the story (the default "auto" is the VAE's own objective,
    # which calls the encoder and decoder, not the Python model and guide).
    calls = _calls_of_one_step("svi", digits, elbo="meanfield")
    assert {c["program"] for c in calls} == {"model", "guide"}
    assert all(c["z_shape"] == (B, 2) and not c["generative"] and not c["z_observed"] for c in calls)
    assert all(c["z_requires_grad"] for c in calls if c["program"] == "model")  # reparameterized


def test_wake_sleep_dreams_and_feeds_dreams_to_the_guide(digits):
    calls = _calls_of_one_step("wake_sleep", digits, sleep_batch_size=7)
    wake_model = [c for c in calls if c["program"] == "model" and not c["generative"]]
    dreams = [c for c in calls if c["program"] == "model" and c["generative"]]
    assert len(dreams) == 1 and dreams[0]["z_shape"] == (7, 2)
    assert any(c["program"] == "guide" and c["x_shape"] == (7, *DIGITS_SHAPE) for c in calls)  # sleep: q(z|x_dream)
    assert wake_model and not any(c["z_requires_grad"] for c in wake_model)  # wake: z is data


def test_rws_uses_k_particles_without_pathwise_gradients(digits):
    calls = _calls_of_one_step("rws", digits, num_particles=3)
    model_calls = [c for c in calls if c["program"] == "model"]
    assert model_calls and all(c["z_shape"] == (3, B, 2) for c in model_calls)
    assert not any(c["z_requires_grad"] for c in model_calls)  # RWS detaches the particles
    assert not any(c["generative"] for c in calls)  # insomnia = 1: no sleep phase


def test_iwae_and_vimco_use_k_reparameterized_particles(digits):
    for name in ("iwae", "vimco"):
        calls = _calls_of_one_step(name, digits, num_particles=3)
        model_calls = [c for c in calls if c["program"] == "model"]
        assert model_calls and all(c["z_shape"] == (3, B, 2) and c["z_requires_grad"] for c in model_calls)


def test_mcem_conditions_the_model_on_hmc_samples_without_the_guide(digits):
    calls = _calls_of_one_step("mcem", digits, fit_guide="false", hmc_leapfrog_steps=4, m_steps=2)
    # E-step: 1 gradient at the chains' states + 4 leapfrog steps; M-step: 2 steps.
    em, report = calls[:1 + 4 + 2], calls[1 + 4 + 2:]
    assert all(c["program"] == "model" and c["z_observed"] for c in em)
    assert [c["z_requires_grad"] for c in em] == [True] * 5 + [False] * 2  # HMC needs ∇z; M-step not
    # Then only the reported ELBO (no gradient): one guide draw scored by the model.
    assert [c["program"] for c in report] == ["guide", "model"]
    assert not any(c["z_requires_grad"] for c in report)
    with_guide = _calls_of_one_step("mcem", digits, hmc_leapfrog_steps=4, m_steps=2)
    fit = [c for c in with_guide if c["program"] == "guide"]
    assert len(fit) == 1 and fit[0]["z_requires_grad"]  # the side fit of q: a gradient step


def test_make_inference_is_the_config_entry(digits):
    vae = fresh_vae()
    a = make_inference(vae, "rws", num_particles=3, optimizer="adagrad", lr=0.1)
    assert a.rws.num_particles == 3 and a.optimizer_name == "adagrad" and a.lr == 0.1
    with pytest.raises(ConfigError, match="unknown setting.*num_particle"):
        make_inference(vae, "iwae", num_particle=3)


def test_unknown_names_list_the_choices():
    # The [inference] dataclass is chosen by its name: an unknown one is refused when the
    # config is made, before anything is built.
    with pytest.raises(ConfigError, match="'hmc_em' is unknown.*'mcem'.*'wake_sleep'"):
        Config().with_overrides(["inference.name=hmc_em"])
    with pytest.raises(ConfigError, match="'hmc_em' is unknown.*'mcem'.*'wake_sleep'"):
        make_inference(fresh_vae(), "hmc_em")
    # "em" (the GAE's EM) is an algorithm of the registry too.
    assert set(ALGORITHMS) == {"svi", "wake_sleep", "rws", "mcem", "iwae", "vimco", "em", "mle", "wgan", "wgan_gp",
                               "adversarial_ae"}


class EnumeratedVAE(torch.nn.Module):
    capabilities = Capabilities(enumerated_latents=True)

    def __init__(self):
        super().__init__()
        self.inner = fresh_vae()
        self.model, self.guide = self.inner.model, self.inner.guide


@pytest.mark.parametrize("name", ["wake_sleep", "rws", "mcem", "iwae", "vimco"])
def test_enumerated_models_are_refused_outside_svi(name):
    particles = {"num_particles": 2} if "num_particles" in _fields(name) else {}
    with pytest.raises(ConfigError, match="cannot train EnumeratedVAE: it needs every latent sampled.*collapsible"):
        make_inference(EnumeratedVAE(), name, **particles)
    # Built directly (past the registry's check), the algorithm refuses it too: no objective sums its latents out.
    cls = {"wake_sleep": WakeSleep, "rws": RWS, "mcem": MCEM, "iwae": IWAE, "vimco": VIMCO}[name]
    with pytest.raises(ConfigError, match="enumerated discrete latents have no training objective that sums them out"):
        cls(EnumeratedVAE())


def _fields(name):
    return {f.name for f in dataclasses.fields(ALGORITHMS[name].config)}


def test_incompatible_combinations_fail_clearly(digits):
    pyro.clear_param_store()
    with pytest.raises(ConfigError, match="MCEM.*continuous latents"):
        make_inference(BernoulliLatent(64, 4, 8), "mcem")
    with pytest.raises(ConfigError, match="vimco"):
        make_inference(BernoulliLatent(64, 4, 8), "iwae", num_particles=2).step(
            digits.train[:4].flatten(1), torch.arange(4), N)
    with pytest.raises(ConfigError, match="optimizer"):
        make_inference(fresh_vae(), "wake_sleep", optimizer="sgd")
    with pytest.raises(ConfigError, match="target_accept"):
        make_inference(fresh_vae(), "mcem", target_accept=1.5)


FAST = ["model.hidden=[32]", "eval.num_samples=0", "eval.plots=false", "optim.lr=3e-3"]


#: The GAE, small: its cache, lists and deferred gradients resume too.
GAE_SMALL = ["model.name=gae", "model.neighbours=8", "model.tail=50", "data.binarize=static", "data.train_size=300"]


#: Every algorithm but SVI, on the VAE and on the small GAE.
EVERY_ALGORITHM = [
    ("wake_sleep", []), ("rws", ["inference.num_particles=3", "inference.insomnia=0.5"]),
    ("mcem", ["inference.hmc_leapfrog_steps=5", "inference.m_steps=2"]),
    ("iwae", ["inference.num_particles=3"]), ("vimco", ["inference.num_particles=3"]),
    ("wake_sleep", GAE_SMALL), ("rws", GAE_SMALL + ["inference.num_particles=3", "inference.insomnia=0.5"]),
    ("mcem", GAE_SMALL + ["inference.hmc_leapfrog_steps=5", "inference.m_steps=2", "inference.num_chains=2"]),
    ("iwae", GAE_SMALL + ["inference.num_particles=3"]), ("vimco", GAE_SMALL + ["model.estimator=exact", "inference.num_particles=3"]),
]


def algorithm_id(value):
    return value if isinstance(value, str) else ("gae" if "model.name=gae" in value else "")


@pytest.mark.parametrize("name,extra", EVERY_ALGORITHM, ids=algorithm_id)
def test_every_algorithm_trains_and_resumes_exactly_through_the_loop(tmp_path, name, extra):
    config = Config().with_overrides(FAST + [f"inference.name={name}", *extra])
    _, whole = train(config.with_overrides(["budget.epochs=3"]), tmp_path / "whole", progress=False)
    train(config.with_overrides(["budget.epochs=2"]), tmp_path / "split", progress=False)
    # Make the finished 2-epoch run an interrupted 3-epoch one, then resume it.
    ckpt = checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    ckpt["state"]["stopped"] = None
    checkpoint.save(ckpt, tmp_path / "split" / "checkpoint.pt")
    (tmp_path / "split" / "config.toml").unlink()
    exp, resumed = train(config.with_overrides(["budget.epochs=3"]), tmp_path / "split", progress=False)
    assert [r["train_elbo"] for r in resumed.history] == [r["train_elbo"] for r in whole.history]
    assert whole.history[-1]["valid_elbo"] > whole.history[0]["valid_elbo"]


class TermAt(Callback):
    """SIGTERM to this process after step ``at``, as a scheduler would send it."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, loop, figures):
        if loop.state.step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("name,extra", EVERY_ALGORITHM + [("svi", []), ("svi", GAE_SMALL)], ids=algorithm_id)
def test_every_algorithm_resumes_exactly_from_the_step_a_signal_stopped(tmp_path, name, extra):
    """A signal inside an epoch keeps a checkpoint of that step; the resumed run takes the
    epoch's remaining batches and ends where the uninterrupted one does, figures and
    parameters alike (the GAE's cache is not refreshed again mid-epoch)."""
    config = Config().with_overrides(FAST + [f"inference.name={name}", "budget.epochs=2", *extra])
    whole_exp, whole = train(config, tmp_path / "whole", progress=False)
    steps = whole.step // 2
    with pytest.raises(Interrupted):
        train(config, tmp_path / "split", progress=False, callbacks=[TermAt(steps + 2)])
    assert read_log(tmp_path / "split")[-1]["epoch"] == 1
    exp, resumed = train(config, tmp_path / "split", progress=False)
    assert [r["train_elbo"] for r in resumed.history] == [r["train_elbo"] for r in whole.history]
    for a, b in zip(whole_exp.module.state_dict().values(), exp.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- capabilities


SAMPLING = ["wake_sleep", "rws", "mcem", "iwae", "vimco"]


@pytest.mark.parametrize("name", SAMPLING)
def test_sampling_algorithms_take_the_gae_and_refuse_enumerated_latents_no_family_sums_out(name):
    check_compatible(FAMILIES["gae"].capabilities, name, "the GAE")  # its y sums out (collapsible)
    check_compatible(FAMILIES["vae"].capabilities, name, "the VAE")
    with pytest.raises(ConfigError, match=f"name = '{name}' cannot train a mixture: it needs every latent "
                                          "sampled .*Capabilities\\(collapsible=True\\)"):
        check_compatible(Capabilities(enumerated_latents=True), name, "a mixture")


def test_check_compatible_refuses_em_on_the_vae():
    with pytest.raises(ConfigError, match="name = 'em' cannot train the VAE: it needs enumerated discrete "
                                          "latents \\(an exemplar prior\\)"):
        check_compatible(FAMILIES["vae"].capabilities, "em", "the VAE")
    check_compatible(FAMILIES["gae"].capabilities, "em", "the GAE")
    for family in ("vae", "gae"):
        check_compatible(FAMILIES[family].capabilities, "svi", family)


@pytest.fixture
def nothing_built(monkeypatch):
    """Loading data or building a model fails the test: a refusal must come before both."""
    def reached(*args, **kwargs):
        raise AssertionError("train.build loaded data or built a model before refusing the config")

    monkeypatch.setattr(train_module, "load_dataset", reached)
    monkeypatch.setattr(train_module, "build_model", reached)


@pytest.mark.parametrize("model,name", [("vae", "em"), ("vae", "mle"), ("nice", "iwae")])
def test_build_refuses_an_incompatible_family_up_front(nothing_built, model, name):
    config = Config().with_overrides([f"model.name={model}", f"inference.name={name}"])
    with pytest.raises(ConfigError, match=f"\\[inference\\] name = '{name}' cannot train "
                                          f"\\[model\\] name = '{model}': it needs"):
        build(config)


def test_capabilities_of_vae_and_gae_instances_are_their_families(digits):
    vae = VAE(digits.event_shape, z_dim=2, hidden=(16,))
    gae = GAE(digits.train[:50], z_dim=2, hidden=(16,))
    assert vae.capabilities == Capabilities(has_guide=True, exact_log_prob=False, enumerated_latents=False,
                                            can_sample=True, latent_sites=("z",), event_shape=(1, 8, 8))
    assert gae.capabilities == Capabilities(has_guide=True, exact_log_prob=False, enumerated_latents=True,
                                            collapsible=True, can_sample=True, aggregate_prior=True,
                                            latent_sites=("y", "z"), event_shape=(1, 8, 8))
    for module, name in ((vae, "vae"), (gae, "gae")):
        assert capabilities_of(module) == module.capabilities
        # what the registry declares (before the data set fixes the event shape)
        assert dataclasses.replace(module.capabilities, event_shape=None) == FAMILIES[name].capabilities
        assert family_of(module) is FAMILIES[name]
    assert family_of(fresh_vae(cls=SpyVAE)) is None  # a subclass is a user's own model


def test_a_module_that_declares_nothing_is_a_plain_latent_variable_model():
    class Plain(torch.nn.Module):
        def model(self, x=None, index=None, num_data=None): ...

        def guide(self, x, index=None, num_data=None): ...

    assert capabilities_of(Plain()) is LATENT_VARIABLE_MODEL
    assert LATENT_VARIABLE_MODEL == Capabilities(has_guide=True, enumerated_latents=False, latent_sites=("z",))
    assert Capabilities().with_event_shape(torch.Size([1, 8, 8])).event_shape == (1, 8, 8)


def test_family_defaults_name_entries_of_other_sections_with_valid_values():
    for name, family in FAMILIES.items():
        for key, value in family.defaults:
            section, leaf = key.split(".")
            assert section not in ("model", "seed"), (name, key)
            # the value reads as that entry does when a user writes it
            assert getattr(getattr(Config.from_dict({section: {leaf: value}}), section), leaf) == value, (name, key)
