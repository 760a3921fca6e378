"""Hierarchical latents (issue 21): the VLAE, the stacked two-level VAE and the two-level GAE.

Sites and shapes for 1 to 4 layers; the VLAE with one layer is the VAE; the two-level
ELBO against a hand computation; the importance-sampled log-likelihood of a two-level
linear-Gaussian model against its exact marginal; per-layer KL summing to the total;
training from TOML (one and two processes); refusals naming the entry."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch import nn

from pyro_vae import VAE
from pyro_vae.capabilities import Capabilities
from pyro_vae.config import Config, ConfigError
from pyro_vae.evaluation import importance_log_likelihood, layer_kl, log_likelihood
from pyro_vae.models.hvae import HVAE, HierarchicalELBO, HierarchicalGAE, normal_kl
from pyro_vae.models.vae import MeanFieldELBO
from pyro_vae.models.vlae import VLAE, LadderELBO
from pyro_vae.plates import data_plate
from pyro_vae.traces import max_plate_nesting, particle_traces
from pyro_vae.train import build, train


def traces(module, x):
    guide_tr = poutine.trace(module.guide).get_trace(x)
    return guide_tr, poutine.trace(poutine.replay(module.model, trace=guide_tr)).get_trace(x)


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_vlae_sites_and_shapes_for_one_to_four_layers(layers, network):
    z_dims = [2, 1, 3, 2][:layers]
    vlae = VLAE((1, 8, 8), z_dims, [8] * layers, depths=[1, 2, 1, 1][:layers], network=network)
    x = torch.rand(5, 1, 8, 8).round()
    guide_tr, model_tr = traces(vlae, x)
    names = tuple(f"z{l}" for l in range(layers, 0, -1))
    assert vlae.capabilities.latent_sites == vlae.capabilities.latent_layers == names
    for l, d in enumerate(z_dims, start=1):
        assert guide_tr.nodes[f"z{l}"]["value"].shape == (5, d)
        assert model_tr.nodes[f"z{l}"]["fn"].batch_shape == (5,)
    assert model_tr.nodes["x"]["fn"].event_shape == (1, 8, 8)
    assert [n for n, s in model_tr.nodes.items() if s["type"] == "sample" and n != "data"] == [*names, "x"]
    assert vlae.sample(3).shape == (3, 1, 8, 8) and vlae.reconstruct(x).shape == (5, 1, 8, 8)
    assert vlae.encode(x).shape == (5, sum(z_dims))
    kinds = [r.kind for r in vlae.rungs]
    assert kinds == (["fc"] * layers if network == "mlp" else ["conv"] * min(layers - 1, 1) + ["fc"] * (layers - min(layers - 1, 1)))
    # particles: every site vectorizes over a plate left of the data plate
    nesting = max_plate_nesting(vlae.model, vlae.guide, x)
    assert particle_traces(vlae.model, vlae.guide, x, None, None, 7, nesting).log_w.shape == (7, 5)


@pytest.mark.parametrize("prior", ["normal", "exemplar"])
def test_two_level_sites_and_shapes(prior, digits):
    x = digits.train[:6]
    model = (HVAE(digits.event_shape, 3, 2, hidden=(16, 8)) if prior == "normal"
             else HierarchicalGAE(digits.train[:40], 3, 2, hidden=(16, 8)))
    with model.collapsed():
        guide_tr, model_tr = traces(model, x)
    assert guide_tr.nodes["z2"]["value"].shape == (6, 3) and guide_tr.nodes["z1"]["value"].shape == (6, 2)
    assert model_tr.nodes["z1"]["fn"].batch_shape == (6,) and model_tr.nodes["x"]["fn"].event_shape == (1, 8, 8)
    caps = model.capabilities
    assert caps.latent_layers == ("z2", "z1")
    assert caps.latent_sites == (("z2", "z1") if prior == "normal" else ("y", "z2", "z1"))
    assert model.sample(4).shape == (4, 1, 8, 8) and model.encode(x).shape == (6, 5)


def copy_vae_into_vlae(vae: VAE, vlae: VLAE) -> None:
    """The same parameters: one hidden layer each way."""
    enc, dec = vae.guide.encoder, vae.decoder
    up, head = vlae.guide.encoder.up[0], vlae.guide.encoder.heads[0][1]
    with torch.no_grad():
        up[1].weight.copy_(enc.body[0].weight), up[1].bias.copy_(enc.body[0].bias)
        for name in ("loc", "log_var"):
            getattr(head, name).weight.copy_(getattr(enc.head, name).weight)
            getattr(head, name).bias.copy_(getattr(enc.head, name).bias)
        vlae.decoder.embed[0].linear.weight.copy_(dec.body[0].weight)
        vlae.decoder.embed[0].linear.bias.copy_(dec.body[0].bias)
        vlae.decoder.down[0][0].weight.copy_(dec.head.weight), vlae.decoder.down[0][0].bias.copy_(dec.head.bias)


def test_vlae_with_one_layer_is_the_vae(digits):
    """L = 1: the VLAE's objective and Pyro's ELBO on its story equal the VAE's on the
    same parameters and the same draws."""
    x = digits.train[:20]
    vae = VAE(digits.event_shape, z_dim=3, hidden=(16,))
    vlae = VLAE(digits.event_shape, [3], [16], activation="tanh")
    copy_vae_into_vlae(vae, vlae)
    for seed in range(3):
        torch.manual_seed(seed)
        a = MeanFieldELBO(vae, 2).differentiable_loss(x, None, None)
        torch.manual_seed(seed)
        b = LadderELBO(vlae, warmup_steps=0, num_particles=2).differentiable_loss(x, None, None)
        torch.testing.assert_close(a, b)
    pyro.set_rng_seed(1)
    a = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    b = TraceMeanField_ELBO().loss(vlae.model, vlae.guide, x)
    assert a == pytest.approx(b, rel=1e-6)


def test_vlae_warmup_weighs_the_kl_by_steps_and_checkpoints_its_count(digits):
    vlae = VLAE(digits.event_shape, [2, 2], [16, 16])
    objective = LadderELBO(vlae, warmup_steps=10)
    assert objective.weight() == pytest.approx(1 - math.exp(-0.1))
    for _ in range(5):
        objective.differentiable_loss(digits.train[:10], None, None)
    assert objective.weight(0.5) == pytest.approx(0.5 * (1 - math.exp(-0.6)))
    other = LadderELBO(vlae, warmup_steps=10)
    other.load_state_dict(objective.state_dict())
    assert int(other.steps) == 5


def test_two_level_elbo_is_the_hand_written_one():
    """A tiny HVAE: the objective, with the same noise, equals the two-level ELBO written
    out with torch.distributions, and Pyro's mean-field ELBO on the story."""
    hvae = HVAE(4, z_dim=2, z1_dim=3, hidden=(5,))
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    torch.manual_seed(3)
    loss = HierarchicalELBO(hvae).differentiable_loss(x, None, None)
    torch.manual_seed(3)
    with torch.no_grad():
        loc2, scale2 = hvae.guide.encoder(x)
        z2 = loc2 + scale2 * torch.randn(1, 3, 2)
        loc1, scale1 = hvae.guide.lower(x, z2)
        z1 = loc1 + scale1 * torch.randn_like(loc1)
        p_loc, p_scale = hvae.z1_prior(z2)
        log_px = hvae.decoder(z1, z2).log_prob(x)
        kl1 = torch.distributions.kl_divergence(torch.distributions.Normal(loc1, scale1),
                                                torch.distributions.Normal(p_loc, p_scale)).sum(-1)
        kl2 = torch.distributions.kl_divergence(torch.distributions.Normal(loc2, scale2),
                                                torch.distributions.Normal(0.0, 1.0)).sum(-1)
        hand = (log_px - kl1 - kl2).sum()
    torch.testing.assert_close(-loss.detach(), hand)
    torch.testing.assert_close(normal_kl(loc1, scale1, p_loc, p_scale), kl1)
    pyro.set_rng_seed(3)
    assert TraceMeanField_ELBO().loss(hvae.model, hvae.guide, x) == pytest.approx(loss.item(), rel=1e-5)


class LinearGaussian2(nn.Module):
    """z2 ~ N(0, 1), z1 | z2 ~ N(a z2, s1²), x | z1 ~ N(c z1, sx²), 1-D each, and a top-down
    guide q(z2|x) q(z1|x, z2): the exact posterior (``exact=True``) or a cruder one."""

    a, s1, c, sx = 1.5, 0.7, -2.0, 0.5
    capabilities = Capabilities(latent_sites=("z2", "z1"), latent_layers=("z2", "z1"))

    def __init__(self, exact: bool):
        super().__init__()
        self.exact = exact

    def model(self, x, index=None, num_data=None):
        with data_plate(len(x), index, num_data):
            z2 = pyro.sample("z2", dist.Normal(0.0, 1.0).expand([len(x), 1]).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(self.a * z2, self.s1).to_event(1))
            pyro.sample("x", dist.Normal(self.c * z1, self.sx).to_event(1), obs=x)

    def marginal(self, x):
        """Exact: x = c z1 + noise, z1 ~ N(0, a² + s1²)."""
        var = self.c ** 2 * (self.a ** 2 + self.s1 ** 2) + self.sx ** 2
        return dist.Normal(0.0, math.sqrt(var)).log_prob(x).sum(-1)

    def guide(self, x, index=None, num_data=None):
        a, s1, c, sx = self.a, self.s1, self.c, self.sx
        var_z1 = a ** 2 + s1 ** 2
        # p(z2 | x): z2 and x jointly Gaussian with cov(z2, x) = c a
        var_x = c ** 2 * var_z1 + sx ** 2
        m2, v2 = c * a / var_x * x, 1 - (c * a) ** 2 / var_x
        with data_plate(len(x), index, num_data):
            if self.exact:
                z2 = pyro.sample("z2", dist.Normal(m2, math.sqrt(v2)).to_event(1))
                prec = 1 / s1 ** 2 + c ** 2 / sx ** 2  # p(z1 | z2, x)
                mean = (a * z2 / s1 ** 2 + c * x / sx ** 2) / prec
                pyro.sample("z1", dist.Normal(mean, prec ** -0.5).to_event(1))
            else:
                z2 = pyro.sample("z2", dist.Normal(0.8 * m2, 1.3 * math.sqrt(v2)).to_event(1))
                pyro.sample("z1", dist.Normal(x / c, 0.6).expand_by([]).to_event(1))

    def collapsed(self):
        import contextlib
        return contextlib.nullcontext()


@pytest.mark.parametrize("exact", [True, False])
def test_importance_sampled_likelihood_of_a_two_level_linear_gaussian_is_its_marginal(exact):
    m = LinearGaussian2(exact)
    x = torch.tensor([[0.3], [-2.0], [4.1], [1.0]])
    ll = importance_log_likelihood(m.model, m.guide, x, num_samples=1 if exact else 4000)
    torch.testing.assert_close(ll.per_point, m.marginal(x), atol=1e-5 if exact else 0.02, rtol=0)
    # the per-layer KLs sum to the total KL: E_q[log q(z|x) - log p(z)] = E_q log p(x|z) - log w
    pyro.set_rng_seed(0)
    kl = layer_kl(m, x, num_samples=50)
    pyro.set_rng_seed(0)
    tr = particle_traces(m.model, m.guide, x, None, None, 50, 1, grad_guide=False)
    log_px = tr.model_trace.nodes["x"]["fn"].log_prob(x)
    total = (log_px - tr.log_w).mean().item()
    assert sum(kl.values()) == pytest.approx(total, rel=1e-5)
    assert list(kl) == ["z2", "z1"]


@pytest.mark.parametrize("family", ["hvae", "vlae", "gae2"])
def test_per_layer_kl_sums_to_the_total_kl(family, digits):
    """Σ_l KL_l = E_q log p(x|z) − ELBO on the same draws (the GAE's top level by its
    exact mixture); the VLAE's per-layer KLs approach their closed forms."""
    x = digits.test[:8]
    module = {"hvae": lambda: HVAE(digits.event_shape, 2, 2, hidden=(16,)),
              "vlae": lambda: VLAE(digits.event_shape, [2, 1, 2], [16, 16, 16]),
              "gae2": lambda: HierarchicalGAE(digits.train[:30], 2, 2, hidden=(16,))}[family]()
    pyro.set_rng_seed(0)
    kl = layer_kl(module, x, num_samples=20)
    assert list(kl) == list(module.capabilities.latent_layers)
    pyro.set_rng_seed(0)
    with module.collapsed():
        tr = particle_traces(module.model, module.guide, x, None, None, 20, 1, grad_guide=False)
    log_px = tr.model_trace.nodes["x"]["fn"].log_prob(x)
    assert sum(kl.values()) == pytest.approx((log_px - tr.log_w).mean().item(), rel=1e-5)
    if family == "vlae":
        with torch.no_grad():
            closed = {f"z{l}": float(normal_kl(loc, scale, torch.zeros_like(loc), torch.ones_like(scale)).mean())
                      for l, (loc, scale) in enumerate(module.guide.encoder(x), start=1)}
        pyro.set_rng_seed(1)
        sampled = layer_kl(module, x, num_samples=4000)
        for name in closed:
            assert sampled[name] == pytest.approx(closed[name], abs=0.05)


TOML = """
seed = 0
[data]
name = "digits"
binarize = "static"
batch_size = 50
train_size = 300
[model]
name = "gae2"
z_dim = 2
z1_dim = 2
hidden = [16]
neighbours = 8
[budget]
epochs = 2
[eval]
num_samples = 0
plots = false
"""


def test_two_level_gae_trains_from_a_toml_file(tmp_path):
    path = tmp_path / "gae2.toml"
    path.write_text(TOML)
    exp, state = train(Config.from_toml(path), tmp_path / "run", progress=False)
    assert type(exp.module) is HierarchicalGAE and exp.module.num_exemplars == 300
    elbos = [r["valid_elbo"] for r in state.history]
    assert len(elbos) == 2 and all(math.isfinite(e) for e in elbos) and elbos[1] > elbos[0]
    ll = log_likelihood(exp.module, exp.data.test[:3], num_samples=20)
    assert math.isfinite(ll.mean)


GAE2_WORKER = """
import sys, torch
from pyro_vae import distributed
from pyro_vae.config import Config
from pyro_vae.train import build, train
out, toml = sys.argv[1], sys.argv[2]
exp, state = train(Config.from_toml(toml), f"{out}/run", progress=False)
bank = {k: v for k, v in exp.inference.objective.state_dict().items() if k.startswith("bank.")}
torch.save({"module": exp.module.state_dict(), "bank": bank, "history": state.history},
           f"{out}/rank{distributed.rank()}.pt")
distributed.shutdown(barrier=True)
"""


def test_two_level_gae_trains_in_two_processes(tmp_path):
    """Two processes: the replicas, the GAE caches and the logs are bit-identical."""
    from test_distributed import run_two_ranks, tensors_equal

    path = tmp_path / "gae2.toml"
    path.write_text(TOML.replace("epochs = 2", "epochs = 1"))
    ranks = run_two_ranks(tmp_path, GAE2_WORKER, path)
    assert tensors_equal(ranks[0]["module"], ranks[1]["module"]) == ""
    assert tensors_equal(ranks[0]["bank"], ranks[1]["bank"]) == ""
    assert ranks[0]["history"] == ranks[1]["history"] and math.isfinite(ranks[0]["history"][-1]["valid_elbo"])


@pytest.mark.parametrize("entries,message", [
    (["model.z_dims=[2, 0, 2]"], r"z_dims\[1\] = 0 \(layer z2\): every latent layer needs at least one dimension"),
    (["model.z_dims=[2, 2]"], r"the per-layer lists differ in length: z_dims has 2 \(\[2, 2\]\), hidden has 3 "
                              r"\(\[400, 400, 400\]\), depths has 3 \(\[1, 1, 1\]\)"),
    (["model.depths=[1, 1]"], r"depths has 2 \(\[1, 1\]\)"),
    (["model.depths=[1, 0, 1]"], r"depths\[1\] = 0 \(layer z2\): every rung needs at least one network layer"),
    (["model.activation=glu"], r"activation 'glu' gates"),
])
def test_bad_layer_lists_are_refused_naming_the_entries(entries, message):
    from pyro_vae.data import load_dataset
    from pyro_vae.registry import build_model

    config = Config().with_overrides(["model.name=vlae", *entries])
    with pytest.raises(ConfigError, match=message):
        build_model(config, load_dataset("digits", binarize="static"))


@pytest.mark.parametrize("entries,message", [
    (["model.name=hvae", "model.z1_dim=0"], r"z1_dim must be an integer >= 1"),
    (["model.name=gae2", "model.z_dim=0"], r"z_dim must be >= 1"),
    (["model.name=hvae", "model.hidden=[]"], r"hidden must list at least one width"),
])
def test_bad_two_level_sizes_are_refused(entries, message):
    from pyro_vae.data import load_dataset
    from pyro_vae.registry import build_model

    with pytest.raises(ConfigError, match=message):
        build_model(Config().with_overrides(entries), load_dataset("digits", binarize="static"))


@pytest.mark.parametrize("model,algorithm", [("hvae", "iwae"), ("hvae", "rws"), ("vlae", "iwae"), ("vlae", "rws")])
def test_sampling_algorithms_train_the_hierarchies(tmp_path, model, algorithm):
    hidden = "[16]" if model == "hvae" else "[16, 16, 16]"
    config = Config().with_overrides([f"model.name={model}", f"model.hidden={hidden}", f"inference.name={algorithm}",
                                      "inference.num_particles=3", "budget.epochs=2", "eval.num_samples=0",
                                      "eval.plots=false"])
    _, state = train(config, tmp_path / "run", progress=False)
    assert state.history[-1]["valid_elbo"] > state.history[0]["valid_elbo"]


def test_gae2_sums_its_index_out_for_the_sampling_algorithms(digits):
    """As the GAE: with y summed out the two-level GAE is a continuous-latent story (the top
    level from the exemplar mixture, then z1, then x), which IWAE, RWS, wake-sleep and MCEM
    sample (tests/test_matrix.py trains each)."""
    from pyro_vae.registry import FAMILIES, check_compatible

    for name in ("iwae", "vimco", "rws", "wake_sleep", "mcem"):
        check_compatible(FAMILIES["gae2"].capabilities, name, "the two-level GAE")
    gae2 = HierarchicalGAE(digits.train[:40], z_dim=2, z1_dim=2, hidden=(16,))
    with gae2.collapsed():
        sites = [n for n, s in poutine.trace(gae2.model).get_trace(digits.train[:5]).nodes.items()
                 if s["type"] == "sample"]
    assert "y" not in sites and {"z2", "z1", "x"} <= set(sites)


def test_vlae_resumes_exactly(tmp_path, monkeypatch):
    """Interrupted after an epoch, the VLAE (its warm-up count in the checkpoint) resumes
    to the uninterrupted run's parameters bit for bit."""
    from pyro_vae.loop import Loop

    overrides = ["model.name=vlae", "model.hidden=[16, 16, 16]", "model.warmup_steps=20", "budget.epochs=3",
                 "eval.num_samples=0", "eval.plots=false"]
    whole, _ = train(Config().with_overrides(overrides), tmp_path / "whole", progress=False)
    saves, real_save = [], Loop._save

    def save_then_stop(self):
        real_save(self)
        saves.append(1)
        if len(saves) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Loop, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(Config().with_overrides(overrides), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(Loop, "_save", real_save)
    resumed, _ = train(Config().with_overrides(overrides), tmp_path / "resumed", progress=False)
    for name, t in whole.module.state_dict().items():
        assert torch.equal(t, resumed.module.state_dict()[name]), name
    assert int(resumed.inference.objective.steps) == int(whole.inference.objective.steps) > 0


def test_layer_plots_are_drawn_for_a_hierarchy(tmp_path):
    from pyro_vae.report import write_plots

    config = Config().with_overrides(["model.name=vlae", "model.hidden=[16, 16, 16]", "model.z_dims=[2, 1, 2]",
                                      "budget.epochs=1", "eval.num_samples=0", "eval.plots=false"])
    exp, state = train(config, tmp_path / "run", progress=False)
    names = [p.name for p in write_plots(exp, state.history, tmp_path / "plots")]
    assert {"layers_traversal.png", "layers_kl.png", "layers_latent.png"} <= set(names)
    assert "manifold.png" not in names


@pytest.mark.parametrize("name", ["hvae", "gae2"])
def test_the_two_level_models_refuse_the_vaes_flow_prior(name):
    config = Config().with_overrides([f'model.name="{name}"', 'model.prior="maf"', "model.hidden=[16]"])
    with pytest.raises(ConfigError, match=r"\[model\] prior = 'maf': the two-level models' top prior is N\(0, I\)"):
        build(config)
