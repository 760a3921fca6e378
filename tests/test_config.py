"""Experiment configs: TOML round trip, overrides, the [model] and [inference] dataclasses
chosen by name, refusals that name the entry (when read, or when built), and configs
written by pyro-vae 0.1."""

import copy
import tomllib

import pytest
import torch

from pyro_vae.config import Config, ConfigError, migrate_legacy
from pyro_vae.inference import IWAEConfig, MCEMConfig, SVIConfig, VIMCOConfig, WakeSleepConfig
from pyro_vae.models import GAEConfig, VAEConfig
from pyro_vae.train import build, resolve_device
from tests.legacy import legacy_inference_toml


def test_toml_round_trip_keeps_every_entry(tmp_path):
    config = Config().with_overrides(["model.hidden=[500, 500]", "budget.patience=5", "guide.activation=relu",
                                      "optim.lr=0.02", "eval.plots=false", 'data.data_dir="/x y"'])
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert Config.from_toml(path) == config


def test_overrides_parse_toml_values_and_bare_words():
    c = Config().with_overrides(["model.z_dim=20", "inference.elbo=jit_trace", "optim.lr=1", "budget.patience=3"])
    assert (c.model.z_dim, c.inference.elbo, c.optim.lr, c.budget.patience) == (20, "jit_trace", 1.0, 3)
    assert isinstance(c.optim.lr, float)
    assert c.with_overrides(["budget.patience=none"]).budget.patience is None
    assert c.with_overrides(["data.binarize=none"]).data.binarize == "none"


@pytest.mark.parametrize("text,message", [
    ("[model]\nzdim = 3\n", r"\[model\]: unknown key\(s\) \['zdim'\]"),
    ("[modle]\n", r"unknown key\(s\) \['modle'\]"),
    ("[model]\nz_dim = 'two'\n", "z_dim must be of type int"),
    ("[model]\nhidden = 500\n", "hidden must be a list"),
    ("[budget]\nepochs = true\n", "epochs must be of type int"),
    ("model = 3\n", r"\[model\]: expected a table"),
    ("[model\n", "is not valid TOML"),
])
def test_bad_files_are_refused_naming_the_file_and_entry(tmp_path, text, message):
    assert_file_refused(tmp_path, text, message)


def assert_file_refused(tmp_path, text: str, message: str) -> None:
    """A config file holding ``text`` is refused with ``message``, naming the file."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        Config.from_toml(path)
    assert str(path) in str(e.value)


def test_bad_overrides_are_refused():
    with pytest.raises(ConfigError, match="section.key=value"):
        Config().with_overrides(["z_dim"])
    with pytest.raises(ConfigError, match="no config section 'nope'"):
        Config().with_overrides(["nope.x=1"])


# ----------------------------------------------------------------------------- chosen by name


@pytest.mark.parametrize("text,message", [
    ('[model]\nname = "vae"\nbandwidth = "shared"\n',
     r"\[model\]: unknown key\(s\) \['bandwidth'\] for name = 'vae' \('bandwidth' belongs to 'gae', 'gae2'\); "
     r"the keys of 'vae' are \['activation', 'hidden', 'likelihood', 'name', 'network', 'prior', 'prior_flows', "
     r"'prior_hidden', 'z_dim'\]"),
    ('[model]\nz_dim = 3\nleave_one_out = false\n', r"'leave_one_out' belongs to 'gae'.*the keys of 'vae' are"),
    ('[inference]\nname = "svi"\nhmc_steps = 2\n',
     r"\[inference\]: unknown key\(s\) \['hmc_steps'\] for name = 'svi' \('hmc_steps' belongs to 'mcem'\); "
     r"the keys of 'svi' are \['capacity_gamma', 'capacity_max', 'capacity_steps', 'dip_factor', 'dip_lambda_od', "
     r"'elbo', 'kl_weight', 'name', 'num_particles', 'regulariser', 'warmup_epochs'\]"),
    ('[inference]\nname = "wake_sleep"\nnum_particles = 3\n',
     r"'num_particles' belongs to 'iwae', 'rws', 'svi', 'vimco'\); the keys of 'wake_sleep' are "
     r"\['name', 'sleep_batch_size'\]"),
    ('[model]\nname = "gae"\nzdim = 3\n', r"unknown key\(s\) \['zdim'\] for name = 'gae' \('zdim' is unknown\)"),
    ('[inference]\nname = "hmc_em"\n',
     r"\[inference\] name = 'hmc_em' is unknown: choose one of \['adversarial_ae', 'em', 'iwae', 'mcem', 'mle', 'rws', "
     r"'svi', 'vimco', 'wake_sleep', 'wgan', 'wgan_gp'\]"),
    ('[model]\nname = "gan"\n', r"\[model\] name = 'gan' is unknown: choose one of \['gae', 'gae2', 'hvae', 'maf', 'nice', "
     r"'pixelgan', 'vae', 'vlae'\]"),
])
def test_keys_of_another_family_or_algorithm_are_refused_naming_it(tmp_path, text, message):
    assert_file_refused(tmp_path, text, message)


def test_the_name_picks_the_dataclass():
    c = Config.from_dict({"model": {"name": "gae", "neighbours": 8}, "inference": {"name": "mcem", "hmc_steps": 3}})
    assert type(c.model) is GAEConfig and c.model.neighbours == 8
    assert type(c.inference) is MCEMConfig and c.inference.hmc_steps == 3
    assert type(Config().model) is VAEConfig and type(Config().inference) is SVIConfig
    assert type(Config.from_dict({"model": {"z_dim": 3}}).model) is VAEConfig  # name defaults to "vae"


def test_switching_the_family_keeps_what_was_set_and_takes_the_new_defaults():
    c = Config().with_overrides(["model.z_dim=5", "model.hidden=[64, 32]", "model.name=gae"])
    assert type(c.model) is GAEConfig
    assert (c.model.z_dim, c.model.hidden) == (5, [64, 32])  # set on purpose: kept
    assert c.model == GAEConfig(z_dim=5, hidden=[64, 32])  # the rest: the GAE's defaults
    back = c.with_overrides(["model.name=vae"])
    assert back.model == VAEConfig(z_dim=5, hidden=[64, 32])  # the GAE's own defaults dropped


def test_switching_the_algorithm_drops_the_old_ones_defaults():
    # SVI's num_particles = 1 is its default: VIMCO's (5) takes over; SVI's elbo is dropped.
    c = Config().with_overrides(["inference.name=vimco"])
    assert c.inference == VIMCOConfig() and c.inference.num_particles == 5
    c = Config().with_overrides(["inference.num_particles=3", "inference.name=iwae"])
    assert c.inference == IWAEConfig(num_particles=3)
    assert Config().with_overrides(["inference.name=wake_sleep"]).inference == WakeSleepConfig()
    # A setting made on purpose that the new algorithm does not take is refused, named.
    with pytest.raises(ConfigError, match=r"\['elbo'\] for name = 'wake_sleep' \('elbo' belongs to 'svi'\)"):
        Config().with_overrides(["inference.elbo=trace", "inference.name=wake_sleep"])


def test_a_switched_config_round_trips_through_toml(tmp_path):
    config = Config().with_overrides(["model.name=gae", "model.bandwidth=shared", "inference.elbo=auto",
                                      "budget.monitor=train_elbo", "budget.monitor_mode=min", "run.device=cpu"])
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert Config.from_toml(path) == config


# ----------------------------------------------------------------------------- refused when built

FAST = ["model.hidden=[16]", "eval.num_samples=0", "eval.plots=false"]


@pytest.mark.parametrize("overrides,columns", [
    (["budget.monitor=valid_iwae"], r"\['train_elbo', 'valid_elbo'\]"),
    (["budget.monitor=elbo"], r"\['train_elbo', 'valid_elbo'\]"),
    (["inference.name=mcem", "budget.monitor=valid_log_joint"],
     r"\['train_log_joint', 'train_accept_prob', 'train_step_size', 'train_elbo', 'valid_elbo'\]"),
])
def test_a_monitor_that_is_not_a_logged_figure_is_refused_listing_the_columns(overrides, columns):
    config = Config().with_overrides(FAST + overrides)
    monitor = config.budget.monitor
    with pytest.raises(ConfigError, match=rf"\[budget\] monitor = '{monitor}' is not a figure this algorithm "
                                          rf"logs: choose one of {columns}"):
        build(config)


@pytest.mark.parametrize("mode", ["maximum", "MAX", "none"])
def test_a_bad_monitor_mode_is_refused(mode):
    with pytest.raises(ConfigError, match=f"monitor_mode must be \"max\" or \"min\", got '{mode}'"):
        build(Config().with_overrides(FAST + [f"budget.monitor_mode={mode}"]))


def test_the_monitored_figures_that_are_logged_are_accepted():
    for monitor in ("train_elbo", "valid_elbo", "none"):
        build(Config().with_overrides(FAST + [f"budget.monitor={monitor}", "budget.monitor_mode=min"]))
    build(Config().with_overrides(FAST + ["inference.name=iwae", "budget.monitor=train_iwae"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU: cuda is a device here")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_gpu_device_on_a_machine_without_one_is_a_clear_config_error(device):
    with pytest.raises(ConfigError, match=rf"\[run\] device = '{device}', but torch sees no GPU on this "
                                          r"machine: use device = \"cpu\" \(or \"auto\"\)"):
        build(Config().with_overrides(FAST + [f"run.device={device}"]))
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("device,message", [
    ("gpu", r"\[run\] device = 'gpu' is not a device: use \"auto\", \"cpu\" or \"cuda\""),
    ("meta", r"\[run\] device = 'meta': the package runs on \"cpu\" or \"cuda\""),
])
def test_a_device_that_is_not_cpu_or_cuda_is_refused(device, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(device)
    assert resolve_device("cpu") == torch.device("cpu")


# ----------------------------------------------------------------------------- release 0.1

#: What pyro-vae 0.1 wrote for a GAE trained by SVI: one flat [inference] record with
#: every algorithm's fields, and the GAE's settings as exemplar_* keys of [model].
LEGACY_GAE = """seed = 0

[data]
name = "digits"
binarize = "dynamic"
batch_size = 100

[model]
name = "gae"
z_dim = 2
hidden = [200]
activation = "tanh"
likelihood = "bernoulli"
exemplar_estimator = "knn"
exemplar_neighbours = 16
exemplar_tail = 100
exemplar_fresh = 2
exemplar_refresh = 50
exemplar_bandwidth = "shared"

[guide]
name = "diagonal_normal"

""" + legacy_inference_toml("svi", "auto") + """

[optim]
name = "adam"
lr = 0.001

[budget]
epochs = 100
lr_decays = 0
lr_decay_factor = 0.1

[eval]
num_samples = 100
plots = true
"""


def test_migrate_legacy_renames_the_gae_keys_and_drops_what_the_algorithm_never_read():
    legacy = tomllib.loads(LEGACY_GAE)
    before = copy.deepcopy(legacy)
    d = migrate_legacy(legacy)
    assert legacy == before  # the input is left as it was
    assert d["model"] == {"name": "gae", "z_dim": 2, "hidden": [200], "activation": "tanh",
                          "likelihood": "bernoulli", "estimator": "knn", "neighbours": 16, "tail": 100,
                          "fresh": 2, "refresh_every": 50, "bandwidth": "shared"}
    assert d["inference"] == {"name": "svi", "elbo": "auto", "num_particles": 1, "kl_weight": 1.0,
                              "warmup_epochs": 0}
    assert {k: v for k, v in d.items() if k not in ("model", "inference")} == \
        {k: v for k, v in before.items() if k not in ("model", "inference")}
    config = Config.from_dict(d)
    assert config.model == GAEConfig(hidden=[200], neighbours=16, tail=100, fresh=2, refresh_every=50,
                                     bandwidth="shared")
    assert config.inference == SVIConfig()


def test_migrate_legacy_keeps_the_named_algorithms_own_settings():
    d = tomllib.loads(LEGACY_GAE.replace('name = "svi"', 'name = "mcem"').replace("hmc_steps = 1", "hmc_steps = 3"))
    d["model"] = {"name": "vae", "z_dim": 2}
    migrated = migrate_legacy(d)
    assert migrated["inference"] == {"name": "mcem", "hmc_steps": 3, "hmc_leapfrog_steps": 10, "hmc_step_size": 0.1,
                                     "target_accept": 0.9, "hmc_backend": "batched", "num_chains": 1,
                                     "m_steps": 5, "fit_guide": True}
    assert Config.from_dict(migrated).inference == MCEMConfig(hmc_steps=3)
    no_name = migrate_legacy({"inference": {"elbo": "trace", "hmc_steps": 2}})  # 0.1's default: svi
    assert no_name["inference"] == {"elbo": "trace"}


def test_a_legacy_config_file_reads_with_legacy_and_is_refused_without(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(LEGACY_GAE)
    assert Config.from_toml(path, legacy=True).model.bandwidth == "shared"
    with pytest.raises(ConfigError,
                       match=r"unknown key\(s\) \['exemplar_bandwidth', .*'exemplar_tail'\] for name = 'gae'"):
        Config.from_toml(path)


# ----------------------------------------------------------------------------- a family's defaults


def test_a_flow_brings_its_algorithm_and_binarization_where_the_user_named_none():
    for config in (Config.from_dict({"model": {"name": "nice"}}), Config().with_overrides(["model.name=maf"])):
        assert (config.inference.name, config.data.binarize) == ("mle", "none")
    # a latent-variable family declares none: its configs are what they were
    assert Config.from_dict({}) == Config() and Config.from_dict({"model": {"name": "gae"}}).inference.name == "svi"
    assert Config().with_overrides(["model.name=vae", "budget.epochs=2"]).data.binarize == "dynamic"


def test_a_named_entry_is_kept_whatever_the_family_declares(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "nice"\n[inference]\nname = "svi"\n[data]\nbinarize = "static"\n')
    for config in (Config.from_toml(path), Config.from_toml(path).with_overrides(["budget.epochs=2"])):
        assert (config.inference.name, config.data.binarize) == ("svi", "static")
    assert Config().with_overrides(["inference.name=svi", "model.name=nice"]).inference.name == "svi"
    # an [inference] section without a name takes the family's, and its keys are checked against it
    assert Config.from_dict({"model": {"name": "maf"}, "inference": {"eval_chunk": 50}}).inference.eval_chunk == 50
    with pytest.raises(ConfigError, match=r"'num_particles' belongs to .*the keys of 'mle'"):
        Config.from_dict({"model": {"name": "maf"}, "inference": {"num_particles": 5}})


def test_switching_away_from_a_flow_takes_the_new_familys_defaults_back():
    config = Config.from_dict({"model": {"name": "nice"}, "inference": {"eval_chunk": 50}})
    vae = Config.from_dict({"model": {"name": "nice"}}).with_overrides(["model.name=vae"])
    assert vae == Config()
    # a setting of the flow's algorithm the user made goes along, and is refused for the new one
    with pytest.raises(ConfigError, match=r"'eval_chunk' belongs to 'mle'"):
        config.with_overrides(["model.name=vae"])


def test_the_resolved_values_round_trip_through_toml(tmp_path):
    config = Config.from_dict({"model": {"name": "maf"}})
    text = config.to_toml()
    assert '[inference]\nname = "mle"' in text and 'binarize = "none"' in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert Config.from_toml(path) == config
