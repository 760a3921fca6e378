"""NICE and MAF as Pyro density models: every transform inverts and its log-determinant is
the autograd Jacobian's, an affine flow is the closed-form Gaussian, MADE's masks are
autoregressive, the story is a plain Pyro model, flows train and resume through the
package's loop from a TOML file, and bad input is refused with the fix."""

import json
import math
import tomllib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.transforms import BatchNorm

from pyro_vae import cli
from pyro_vae.config import Config, ConfigError
from pyro_vae.data import DataError, load_dataset
from pyro_vae.data.transforms import DataTransform
from pyro_vae.models.flow import (
    MAF,
    NICE,
    AffineAutoregressiveLayer,
    AutoregressiveMixture,
    Coupling,
    DiagonalScaling,
    Flow,
    StandardBase,
)
from pyro_vae.nets.made import made
from pyro_vae.registry import FAMILIES, check_compatible
from pyro_vae.train import build, train

D = 5


def _perturbed(module, scale=0.3, seed=1):
    """``module`` with every parameter moved off its initial value (couplings start as the
    identity, which would make the tests trivial), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.eval()


def _batchnorm():
    bn = BatchNorm(D)
    bn.moving_mean.copy_(torch.randn(D))
    bn.moving_variance.copy_(torch.rand(D) + 0.5)
    return _perturbed(bn)


def _transforms():
    """Every transform a flow of the package is made of, in the data -> base direction."""
    return {
        "additive coupling, even": _perturbed(Coupling(D, 0, [16, 16])),
        "additive coupling, odd": _perturbed(Coupling(D, 1, [16])),
        "affine coupling": _perturbed(Coupling(D, 1, [16], affine=True)),
        "diagonal scaling": _perturbed(DiagonalScaling(D)),
        "MAF layer (IAF forward)": _perturbed(AffineAutoregressiveLayer(made(D, [16], order=torch.arange(D).flip(0)))),
        "batch norm (eval)": _batchnorm().inv,
    }


@pytest.mark.parametrize("name", list(_transforms()))
def test_every_transform_inverts_and_its_log_det_is_the_autograd_jacobians(name):
    t = _transforms()[name]
    x = torch.randn(4, D, dtype=torch.float64)
    t = _double(t)
    y = t(x)
    torch.testing.assert_close(t.inv(y), x, atol=1e-5, rtol=0)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: t(v.unsqueeze(0)).squeeze(0), x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        xi = x[i:i + 1]
        torch.testing.assert_close(t.log_abs_det_jacobian(xi, t(xi)).sum(), expected)  # batch norm: per value


def _double(t):
    module = t._inv if hasattr(t, "_inv") and not isinstance(t, torch.nn.Module) else t
    module.double()
    return t


def _flows():
    return {
        "NICE": NICE((D,), couplings=3, hidden=[16, 16]),
        "NICE affine, normal prior": NICE((D,), couplings=2, hidden=[16], coupling="affine", prior="normal"),
        "MAF(2)": MAF((D,), num_flows=2, hidden=[16]),
        "MAF MoG": MAF((D,), num_flows=2, hidden=[16], base="made_mog", components=3),
        "MADE MoG": MAF((D,), num_flows=0, hidden=[16], base="made_mog", components=3),
        "NICE on logit pixels": NICE((1, 1, D), couplings=2, hidden=[16],
                                     data_transform=DataTransform(("dequantize", "logit"), logit_lambda=0.05)),
    }


@pytest.mark.parametrize("name", list(_flows()))
def test_whole_flows_invert_and_score_by_the_change_of_variables(name):
    """``log p(x) = log p_U(f(x)) + log |det ∂f/∂x|`` with the Jacobian of the whole map by
    autograd; sampling then mapping back to the base recovers the draws."""
    flow = _perturbed(_flows()[name]).double()
    x = flow.sample(3)
    if flow.data_transform.bounded:
        x = x.clamp(0.05, 0.95)
    flat = x.reshape(3, -1)

    def f(v):  # data -> base, one point
        return flow.to_base(v.reshape(1, *flow.event_shape)).squeeze(0)

    for i in range(3):
        jac = torch.autograd.functional.jacobian(f, flat[i])
        expected = flow.base().log_prob(f(flat[i])) + torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(flow.log_prob(x[i:i + 1]).reshape(()), expected)
    u = flow.to_base(x)
    back = flow.distribution().transforms
    for t in back:
        u = t(u)
    torch.testing.assert_close(u, x, atol=1e-5, rtol=0)


def test_an_affine_flow_with_a_gaussian_base_is_the_closed_form_gaussian():
    # An affine coupling whose network is only its bias (constant shift m, log-scale s) and
    # a diagonal scaling exp(c): x -> u = exp(c) ⊙ (x ⊙ exp(s·[C]) + m·[C]), u ~ N(0, I), so
    # x ~ N(-m·[C] exp(-s·[C]), diag exp(-c - s·[C])²).
    coupling, scaling = Coupling(D, 0, [4], affine=True), DiagonalScaling(D)
    m, s, c = torch.randn(2), 0.3 * torch.randn(2), 0.2 * torch.randn(D)
    with torch.no_grad():
        coupling.net.layers[-1].bias.copy_(torch.cat([m, s]))
        scaling.log_scale.copy_(c)
    flow = Flow((D,), [coupling, scaling], StandardBase(D, "normal"))
    changed = coupling.changed
    loc, log_sd = torch.zeros(D), -c.clone()
    loc[changed], log_sd[changed] = -m * torch.exp(-s), -c[changed] - s
    x = torch.randn(6, D)
    torch.testing.assert_close(flow.log_prob(x), dist.Normal(loc, log_sd.exp()).log_prob(x).sum(-1))
    # The same through the rescale data transform: z = lo + (hi - lo) y is affine too.
    rescaled = Flow((D,), [scaling], StandardBase(D, "normal"), DataTransform(("rescale",), rescale_to=(-1.0, 1.0)))
    y = torch.rand(6, D)
    sd = torch.exp(-c) / 2  # y = (z + 1) / 2, z ~ N(0, exp(-c)²)
    torch.testing.assert_close(rescaled.log_prob(y), dist.Normal(0.5, sd).log_prob(y).sum(-1))


@pytest.mark.parametrize("order", [torch.arange(D), torch.arange(D).flip(0), torch.tensor([2, 0, 4, 1, 3])])
def test_made_outputs_depend_only_on_the_inputs_before_them_in_their_order(order):
    net = _perturbed(made(D, [32, 32], (1, 1), order))
    x = torch.randn(D)
    position = torch.empty(D, dtype=torch.long)
    position[order] = torch.arange(D)
    for out in (0, 1):
        jac = torch.autograd.functional.jacobian(lambda v: net(v)[out], x)  # (D outputs, D inputs)
        may = position.unsqueeze(1) > position.unsqueeze(0)  # output i may see input j: j before i
        assert (jac[~may] == 0).all() and (jac[may] != 0).any()
    # A MAF layer's data -> base map is triangular in that order: its log-det is the diagonal's.
    layer = AffineAutoregressiveLayer(net)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v), x)
    assert (jac[order][:, order].triu(1) == 0).all()


def test_made_mog_is_autoregressive_and_normalised():
    density = _perturbed(AutoregressiveMixture(2, [32], components=3, order=torch.tensor([1, 0])), scale=0.1)
    u = torch.randn(2)
    log_w, loc, _ = density.conditionals(u)
    jac = torch.autograd.functional.jacobian(lambda v: density.conditionals(v)[1][:, 1], u)
    assert (jac == 0).all()  # dimension 1 comes first: its conditional sees nothing
    grid = torch.linspace(-20, 20, 801)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = density.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1) < 2e-3
    assert density.sample(torch.Size([7])).shape == (7, 2)


def test_the_story_is_a_plain_pyro_model_whose_x_site_scores_log_p():
    flow = _perturbed(MAF((1, 2, 3), num_flows=2, hidden=[16]))
    x = torch.randn(4, 1, 2, 3)
    tr = poutine.trace(flow.model).get_trace(x, torch.arange(4), 100)
    site = tr.nodes["x"]
    assert site["is_observed"] and site["fn"].event_shape == (1, 2, 3) and site["fn"].batch_shape == (4,)
    torch.testing.assert_close(tr.log_prob_sum(), 25 * flow.log_prob(x).sum())  # N / B = 100 / 4
    latent = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "data"]
    assert latent == [] and tr.observation_nodes == ["x"]  # no latent sites ("data": the plate's subsample)
    generated = poutine.trace(flow.model).get_trace(None, num_data=5).nodes["x"]["value"]
    assert generated.shape == (5, 1, 2, 3)
    caps = flow.capabilities
    assert caps.exact_log_prob and not caps.has_guide and caps.latent_sites == () and caps.event_shape == (1, 2, 3)


def test_a_user_trains_a_flow_with_plain_pyro_svi():
    """An empty guide makes Pyro's ELBO the exact log-likelihood: plain SVI is maximum likelihood."""
    flow = NICE((2,), couplings=2, hidden=[16], prior="normal")
    x = 0.3 * torch.randn(256, 2) + torch.tensor([1.0, -2.0])
    svi = pyro.infer.SVI(flow.model, lambda *a, **k: None, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
    before = float(flow.log_density(x).mean())
    for _ in range(60):
        svi.step(x)
    assert float(flow.log_density(x).mean()) > before + 1


def test_dtype_and_device_follow_the_inputs():
    flow = _perturbed(MAF((3,), num_flows=1, hidden=[8], base="made_mog", components=2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert flow.log_prob(x).dtype == torch.float64 and flow.sample(2).dtype == torch.float64
    nice = NICE((3,), couplings=2, hidden=[8], data_transform=DataTransform(("dequantize", "logit"))).double()
    y = nice.data_transform.dequantize(torch.rand(4, 3, dtype=torch.float64))
    assert y.dtype == torch.float64 and nice.log_prob(y).dtype == torch.float64


# ----------------------------------------------------------------------------- the data transform's accounting


def test_an_untrained_nice_on_logit_pixels_is_uniform_8_bits_per_dim():
    """The standard logistic pushed through the inverse logit is uniform on [0, 1]: a NICE
    that is still the identity gives log p_y(y) = D log(1 − 2λ) and 8 bits per dimension,
    whatever the image; its logit-space figure subtracts the log-Jacobian."""
    lam = 1e-6
    transform = DataTransform(("dequantize", "logit"), logit_lambda=lam)
    flow = NICE((1, 4, 4), couplings=2, hidden=[8], data_transform=transform).eval()
    y = transform.dequantize(torch.full((3, 1, 4, 4), 128 / 255))
    log_p = flow.log_prob(y)
    torch.testing.assert_close(log_p, torch.full((3,), 16 * math.log1p(-2 * lam)), atol=1e-4, rtol=0)
    figures = transform.figures(log_p, y, event_dims=3)
    torch.testing.assert_close(figures["bits_per_dim"], torch.full((3,), 8.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(figures["log_likelihood"], log_p - transform.log_abs_det_jacobian(y, 3))


# ----------------------------------------------------------------------------- training through the package


FLOW_TOML = """
seed = 0
[data]
name = "moons"
binarize = "none"
batch_size = 100
train_size = 1000
valid_size = 300
test_size = 300
[model]
name = "{family}"
{model}
[inference]
name = "mle"
[optim]
lr = 0.005
[budget]
epochs = 3
[eval]
plots = false
"""

MODELS = {"nice": 'couplings = 4\nhidden = [32, 32]\nprior = "normal"',
          "maf": "num_flows = 3\nhidden = [32]"}


@pytest.mark.parametrize("family", ["nice", "maf"])
def test_a_flow_trains_from_a_toml_file_by_exact_maximum_likelihood(tmp_path, family, capsys):
    path = tmp_path / "flow.toml"
    path.write_text(FLOW_TOML.format(family=family, model=MODELS[family]))
    config = Config.from_toml(path)
    exp, state = train(config, tmp_path / "run", progress=False)
    assert exp.config.budget.monitor == "valid_log_likelihood"  # the default follows the algorithm
    assert "valid_log_likelihood" in (tmp_path / "run" / "config.toml").read_text()
    first, last = state.history[0], state.history[-1]
    assert last["valid_log_likelihood"] > first["valid_log_likelihood"]
    assert set(last) >= {"train_log_likelihood", "train_bits_per_dim", "valid_log_likelihood", "valid_bits_per_dim"}
    # Continuous 2-D data: bits/dim is −log p / (D ln 2).
    assert last["valid_bits_per_dim"] == pytest.approx(-last["valid_log_likelihood"] / (2 * math.log(2)))
    assert state.best_score == max(r["valid_log_likelihood"] for r in state.history)
    # The CLI on the run: exact figures, a scatter of samples, the density plots.
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["exact"] and printed["points"] == 300
    assert printed["log_likelihood"] == pytest.approx(exp.inference.evaluate(exp.data.test)["log_likelihood"])
    assert cli.main(["sample", str(tmp_path / "run"), "-n", "50"]) == 0
    assert cli.main(["plot", str(tmp_path / "run")]) == 0
    assert {p.name for p in (tmp_path / "run" / "plots").iterdir()} == {"samples.png", "density.png", "elbo.png"}


def test_an_interrupted_maf_run_on_dequantized_logit_pixels_resumes_bit_for_bit(tmp_path):
    """Batch-norm running averages, the dequantization noise and the optimizer all resume."""
    config = Config().with_overrides([
        "data.name=digits", "data.binarize=none", 'data.transform=["dequantize", "logit"]', "data.logit_lambda=0.05",
        "data.train_size=300", "data.valid_size=100", "data.test_size=100",
        "model.name=maf", "model.num_flows=2", "model.hidden=[64]", "inference.name=mle", "eval.plots=false",
    ])
    whole_exp, whole = train(config.with_overrides(["budget.epochs=2"]), tmp_path / "whole", progress=False)
    train(config.with_overrides(["budget.epochs=1"]), tmp_path / "cut", progress=False)
    cut_exp, resumed = train(config.with_overrides(["budget.epochs=2"]), tmp_path / "cut", progress=False)
    assert resumed.history == [dict(r, seconds=s["seconds"]) for r, s in zip(whole.history, resumed.history)]
    for (name, a), b in zip(whole_exp.module.state_dict().items(), cut_exp.module.state_dict().values()):
        assert torch.equal(a, b), name
    assert any("moving_mean" in name for name in whole_exp.module.state_dict())
    assert all(math.isfinite(v) for v in whole.history[-1].values())


def test_naming_the_family_is_one_entry_and_the_run_records_the_resolved_values(tmp_path, capsys):
    """[model] name = "nice" alone (no [inference], no binarize): the family's defaults
    (mle, binarize = "none") apply, and config.toml records them; a named [inference]
    name = "svi" is kept, and refused with its message."""
    path = tmp_path / "nice.toml"
    path.write_text('[model]\nname = "nice"\n[data]\nname = "moons"\ntrain_size = 200\nvalid_size = 100\n'
                    'test_size = 100\n[eval]\nplots = false\n')
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--epochs", "1", "--run-dir", str(run), "--no-progress"]) == 0
    recorded = tomllib.loads((run / "config.toml").read_text())
    assert recorded["inference"]["name"] == "mle" and recorded["data"]["binarize"] == "none"
    assert "valid_log_likelihood" in (run / "log.csv").read_text()
    capsys.readouterr()
    with pytest.raises(ConfigError, match=r"'svi' cannot train \[model\] name = 'nice'.*name = \"mle\""):
        build(Config.from_toml(path).with_overrides(["inference.name=svi"]))
    path.write_text(path.read_text() + '[inference]\nname = "svi"\n')
    with pytest.raises(ConfigError, match=r"'svi' cannot train \[model\] name = 'nice'.*name = \"mle\""):
        build(Config.from_toml(path).with_overrides(["budget.epochs=1"]))


# ----------------------------------------------------------------------------- refusals


def _flow_config(*overrides):
    return Config().with_overrides(["data.name=moons", "data.binarize=none", "model.name=nice",
                                    "model.hidden=[8]", "model.prior=normal", "inference.name=mle", *overrides])


def test_latent_variable_algorithms_refuse_a_flow_and_name_mle():
    for name in ("svi", "iwae", "wake_sleep"):
        with pytest.raises(ConfigError, match=f"'{name}' cannot train .*'nice'.*a guide to propose latents.*"
                                              r"train it with \[inference\] name = \"mle\""):
            check_compatible(FAMILIES["nice"].capabilities, name, "[model] name = 'nice'")
    with pytest.raises(ConfigError, match=r"'mle' cannot train .*'vae'.*an exact log-density"):
        build(Config().with_overrides(["inference.name=mle"]))


def test_grey_levels_outside_0_1_before_the_logit_are_refused_with_the_value_and_the_fix():
    # moons holds values outside [0, 1]: as pixels for a logit transform they are refused.
    with pytest.raises(DataError, match=r"'moons' \(train split\): row \d+ holds the value -?\d.*outside \[0, 1\], "
                                        r"but \[data\] transform = \['logit'\].*rescale the data to \[0, 1\]"):
        build(_flow_config('data.transform=["logit"]'))


def test_nan_is_refused_with_its_row():
    t = DataTransform()
    x = torch.zeros(5, 2)
    x[3, 1] = float("nan")
    with pytest.raises(DataError, match=r"row 3 holds nan: a density model needs finite values"):
        t.check(x, "my data")
    flow = NICE((2,), couplings=2, hidden=[8], data_transform=DataTransform(("logit",)))
    with pytest.raises(DataError, match=r"x: row 0 holds the value 1.5, outside \[0, 1\]"):
        flow.log_prob(torch.tensor([[1.5, 0.5]]))


def test_binarized_data_and_transforms_for_latent_variable_models_are_refused():
    with pytest.raises(ConfigError, match=r"binarize = 'dynamic', but a flow models continuous values: set "
                                          r"\[data\] binarize = \"none\""):
        build(Config().with_overrides(["model.name=maf", "model.hidden=[64]", "data.binarize=dynamic"]))
    with pytest.raises(ConfigError, match=r"\[data\] transform = \['dequantize'\] maps data for a density model, "
                                          r"but \[model\] name = 'vae'"):
        build(Config().with_overrides(['data.transform=["dequantize"]', "model.hidden=[8]", "eval.num_samples=0"]))


def test_a_flow_asked_for_a_latent_scatter_says_it_has_no_encoder():
    flow = NICE((2,), couplings=2, hidden=[8])
    with pytest.raises(ValueError, match="this model has no encoder: NICE is a normalizing flow.*flow.to_base"):
        flow.encode(torch.zeros(3, 2))


def test_bad_flow_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown coupling 'additve'"):
        build(_flow_config("model.coupling=additve"))
    with pytest.raises(ConfigError, match="unknown key.*'num_flows' belongs to 'maf'"):
        _flow_config("model.num_flows=3")
    with pytest.raises(ConfigError, match=r"num_flows = 0: give at least one layer, or base = \"made_mog\""):
        build(Config().with_overrides(["data.name=moons", "data.binarize=none", "model.name=maf",
                                       "model.num_flows=0", "inference.name=mle"]))


def test_toy_data_are_generated_the_same_every_time():
    a, b = load_dataset("ring"), load_dataset("ring")
    assert torch.equal(a.train, b.train) and a.event_shape == (2,) and len(a.train) == 8000
    assert set(a.train_labels.tolist()) == set(range(8))


@pytest.mark.parametrize("steps", [("dequantize", "logit"), ("dequantize", "rescale"), ()])
def test_score_is_the_storys_log_prob_and_the_data_transforms_jacobian(steps):
    """score(x) computes log p(x) in the model's space plus J(x) once; it is the story's
    TransformedDistribution.log_prob, batch norm in eval mode included."""
    transform = DataTransform(steps, logit_lambda=0.05)
    flow = _perturbed(MAF((1, 2, 2), num_flows=2, hidden=[8], batch_norm=True, data_transform=transform)).double()
    flow.eval()
    x = torch.rand(6, 1, 2, 2, dtype=torch.float64) * 0.9 + 0.05
    log_p, jacobian = flow.score(x)
    torch.testing.assert_close(log_p, flow.distribution().log_prob(x))
    torch.testing.assert_close(jacobian, transform.log_abs_det_jacobian(x, 3))
