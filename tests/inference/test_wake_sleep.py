"""Wake-sleep and reweighted wake-sleep: they learn, each phase touches only its own
parameters, and RWS is Pyro's estimator where Pyro's is right and per-point where it is not."""

import copy
import math

import pyro
import pyro.distributions as dist
import pyro.infer
import pytest
import torch

from toy_models import changed, fresh_vae, run_steps, snapshot

from pyro_vae.config import ConfigError
from pyro_vae.evaluation.marginal_likelihood import log_weights
from pyro_vae.inference import RWS, MinibatchRWS, WakeSleep
from pyro_vae.models.vae import VAE
from pyro_vae.plates import data_plate
from pyro_vae.traces import max_plate_nesting, sleep_log_q
from pyro_vae.train import make_inference


def test_wake_sleep_raises_the_elbo_in_a_few_steps(digits):
    vae = fresh_vae()
    ws = make_inference(vae, "wake_sleep", optimizer="adam", lr=3e-3)
    before = ws.evaluate(digits.valid)["elbo"]
    outs = run_steps(ws, digits, 30)
    after = ws.evaluate(digits.valid)["elbo"]
    assert after > before + 5.0, (before, after)  # nats per point; digits start near -45
    assert all(math.isfinite(o["elbo"]) and math.isfinite(o["sleep_log_q"]) for o in outs)


def test_each_phase_updates_only_its_own_parameters(digits):
    vae = fresh_vae()
    ws = WakeSleep(vae, "adam", 1e-2)
    x, index = digits.train[:50], torch.arange(50)
    theta, phi = list(vae.decoder.parameters()), list(vae.guide.parameters())
    ws.wake(x, index, len(digits.train))  # first call also splits the parameters
    assert {id(p) for p in ws.split.model} == {id(p) for p in theta}
    assert {id(p) for p in ws.split.guide} == {id(p) for p in phi}
    t0, p0 = snapshot(theta), snapshot(phi)
    ws.wake(x, index, len(digits.train))
    assert all(changed(t0, theta)) and not any(changed(p0, phi))
    t0, p0 = snapshot(theta), snapshot(phi)
    ws.sleep(50, len(digits.train))
    assert not any(changed(t0, theta)) and all(changed(p0, phi))


def _steps_taken(optimizer):
    return sorted({int(s["step"]) for s in optimizer.state_dict()["state"].values()})


def test_wake_sleep_has_an_optimizer_per_role_and_each_phase_steps_only_its_own(digits):
    vae = fresh_vae()
    ws = WakeSleep(vae, "adam", 1e-2)
    x, index = digits.train[:50], torch.arange(50)
    ws.wake(x, index, len(digits.train))
    assert set(ws.optimizers.roles) == {"model", "guide"}
    held = {role: {id(p) for g in opt.param_groups for p in g["params"]} for role, opt in ws.optimizers.roles.items()}
    assert held["model"] == {id(p) for p in vae.decoder.parameters()}
    assert held["guide"] == {id(p) for p in vae.guide.parameters()}
    assert _steps_taken(ws.optimizers["model"]) == [1] and _steps_taken(ws.optimizers["guide"]) == []
    ws.sleep(50, len(digits.train))
    assert _steps_taken(ws.optimizers["model"]) == [1] and _steps_taken(ws.optimizers["guide"]) == [1]
    ws.step(x, index, len(digits.train))
    assert _steps_taken(ws.optimizers["model"]) == [2] and _steps_taken(ws.optimizers["guide"]) == [2]
    state = ws.state_dict()
    assert set(state) == {"optimizers"} and set(state["optimizers"]) == {"model", "guide"}


class PriorOnEncoderVAE(VAE):
    """A model whose prior reads the guide's encoder (as the GAE's does): ``z ~ N(0.1 μ_φ(x), 1 + 0.1 σ_φ(x))``."""

    def model(self, x=None, index=None, num_data=None):
        pyro.module("decoder", self.decoder)
        pyro.module("encoder", self.guide.encoder)
        batch = self.batch_size(x, num_data)
        with data_plate(batch, index, num_data):
            loc, scale = self.guide.encoder(x) if x is not None else (torch.zeros(batch, 2), torch.zeros(batch, 2))
            z = pyro.sample("z", dist.Normal(0.1 * loc, 1 + 0.1 * scale).to_event(1))
            return pyro.sample("x", self.decoder(z), obs=x)


def test_parameters_shared_by_model_and_guide_step_with_both_phases_gradients(digits, monkeypatch):
    """A prior built on the guide's encoder (the GAE's): the encoder is the guide's role,
    and its one step per minibatch applies its wake gradient plus its sleep gradient."""
    vae = fresh_vae(cls=PriorOnEncoderVAE)
    ws = WakeSleep(vae, "adam", 1e-3)
    x, index, n = digits.train[:20], torch.arange(20), len(digits.train)
    ws.wake(x, index, n)
    encoder = list(vae.guide.encoder.parameters())
    held = {role: {id(p) for g in opt.param_groups for p in g["params"]} for role, opt in ws.optimizers.roles.items()}
    assert held["guide"] == {id(p) for p in encoder} and held["model"] == {id(p) for p in vae.decoder.parameters()}
    wake = {id(p): g.clone() for p, g in ws._carried}
    assert set(wake) == {id(p) for p in encoder} and all(g.abs().sum() > 0 for g in wake.values())
    stepped = {}
    monkeypatch.setattr(ws.optimizers["guide"], "step", lambda: stepped.update({id(p): p.grad.clone() for p in encoder}))
    pyro.set_rng_seed(3)
    ws.sleep(10, n)
    pyro.set_rng_seed(3)
    sleep_loss = -(n / 10) * sleep_log_q(vae.model, vae.guide, "x", 10).sum()
    sleep = torch.autograd.grad(sleep_loss, encoder)
    for p, g in zip(encoder, sleep):
        torch.testing.assert_close(stepped[id(p)], wake[id(p)] + g)
    assert not ws._carried


def _rws_losses(rws_cls, vae, x, index=None, num_data=None, seed=0, **kw):
    pyro.set_rng_seed(seed)
    rws = rws_cls(num_particles=4, insomnia=1.0, **kw)
    with torch.no_grad():
        theta, phi = rws.loss(vae.model, vae.guide, x, index, num_data)
    return float(theta), float(phi)


def test_rws_equals_pyros_estimator_for_one_data_point(digits):
    """Pyro's ReweightedWakeSleep is right when the batch is one point: ours agrees."""
    vae = fresh_vae()
    x = digits.train[:1]
    ours = _rws_losses(MinibatchRWS, vae, x)
    theirs = _rws_losses(pyro.infer.ReweightedWakeSleep, vae, x)
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_rws_takes_the_log_sum_exp_per_point_and_scales_minibatches(digits):
    vae = fresh_vae()
    x, index, n = digits.train[:100], torch.arange(100), len(digits.train)
    full = _rws_losses(MinibatchRWS, vae, x)
    mini = _rws_losses(MinibatchRWS, vae, x, index, n)
    assert mini[0] == pytest.approx(full[0] * n / 100, rel=1e-5)  # same draws, scaled
    # The per-point K-sample bound, as the evaluation module computes it:
    pyro.set_rng_seed(0)
    lw = log_weights(vae.model, vae.guide, x, 4, max_plate_nesting(vae.model, vae.guide, x))
    iwae = (torch.logsumexp(lw, 0) - math.log(4)).mean().item()
    assert -full[0] / 100 == pytest.approx(iwae, abs=1.0)
    # Pyro's own estimator puts the subsample scale N/B inside the log-sum-exp: its
    # minibatch loss is not N/B times its loss on the same draws.
    theirs_full = _rws_losses(pyro.infer.ReweightedWakeSleep, vae, x)
    theirs_mini = _rws_losses(pyro.infer.ReweightedWakeSleep, vae, x, index, n)
    assert theirs_mini[0] != pytest.approx(theirs_full[0] * n / 100, rel=1e-4)


def test_rws_learns_with_and_without_sleep(digits):
    for insomnia in (1.0, 0.5):
        vae = fresh_vae()
        rws = make_inference(vae, "rws", num_particles=4, insomnia=insomnia, optimizer="adam", lr=3e-3)
        before = rws.evaluate(digits.valid)["elbo"]
        outs = run_steps(rws, digits, 25)
        assert rws.evaluate(digits.valid)["elbo"] > before + 5.0
        assert all(o["iwae"] >= o["elbo"] - 1e-4 for o in outs)  # log-mean-exp >= mean
        assert ("sleep_log_q" in outs[-1]) == (insomnia < 1)


def test_rws_needs_two_particles():
    with pytest.raises(ConfigError, match="num_particles >= 2"):
        make_inference(fresh_vae(), "rws", num_particles=1)
    with pytest.raises(ConfigError, match="insomnia"):
        RWS(fresh_vae(), num_particles=3, insomnia=1.5)


def test_state_loaded_before_the_first_step_is_applied(digits):
    vae = fresh_vae()
    ws = WakeSleep(vae, "adagrad", 0.05)
    run_steps(ws, digits, 3)
    state, params = copy.deepcopy(ws.state_dict()), copy.deepcopy(vae.state_dict())
    x, index = digits.train[:100], torch.arange(100)
    pyro.set_rng_seed(5)
    a = ws.step(x, index, len(digits.train))

    vae2 = fresh_vae()  # clears Pyro's param store, where vae's parameters were registered
    vae2.load_state_dict(params)
    ws2 = WakeSleep(vae2, "adagrad", 0.05)
    ws2.load_state_dict(state)  # no parameter split yet: applied at the first step
    pyro.set_rng_seed(5)
    b = ws2.step(x, index, len(digits.train))
    assert a == b
    for p, q in zip(vae.parameters(), vae2.parameters()):
        torch.testing.assert_close(p, q)
