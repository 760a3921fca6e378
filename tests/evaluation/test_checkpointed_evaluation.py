"""checkpointed_log_likelihood: chunked, saved as it goes, resumed to the same numbers."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_vae import VAE
from pyro_vae import checkpoint
from pyro_vae.evaluation import checkpointed, checkpointed_log_likelihood, evaluation_seconds, log_likelihood


class Interrupted(Exception):
    pass


class CountingVAE(VAE):
    """A VAE whose evaluations are counted (``calls``; see :func:`counting`) and can be made
    to fail at call ``fail_at``."""

    def __init__(self, fail_at=None):
        super().__init__(20, z_dim=3, hidden=(16,))
        self.calls, self.fail_at = 0, fail_at


@pytest.fixture(autouse=True)
def counting(monkeypatch):
    """``log_likelihood`` dispatches on the module's capabilities (a model no longer brings
    its own): the checkpointed evaluator's calls of it are counted on the module."""

    def counted(module, x, num_samples, **kwargs):
        module.calls += 1
        if module.calls == module.fail_at:
            raise Interrupted
        return log_likelihood(module, x, num_samples=num_samples, **kwargs)

    monkeypatch.setattr(checkpointed, "log_likelihood", counted)


@pytest.fixture
def data():
    return torch.bernoulli(torch.full((25, 20), 0.3), generator=torch.Generator().manual_seed(0))


def vae():
    pyro.set_rng_seed(1)
    return CountingVAE()


def test_chunks_are_seeded_and_saved_and_a_rerun_reads_them(data, tmp_path):
    module = vae()
    ll = checkpointed_log_likelihood(module, data, tmp_path, num_samples=30, chunk_size=10, seed=3)
    assert module.calls == 3 and sorted(p.name for p in tmp_path.glob("chunk-*.pt")) == [
        "chunk-0000000.pt", "chunk-0000010.pt", "chunk-0000020.pt"]
    pyro.set_rng_seed(4)  # chunk 1 draws from seed + 1
    assert torch.equal(ll.per_point[10:20], log_likelihood(module, data[10:20], num_samples=30).per_point)
    again = checkpointed_log_likelihood(module, data, tmp_path, num_samples=30, chunk_size=10, seed=3)
    assert module.calls == 3 and torch.equal(again.per_point, ll.per_point) and again.n == 25


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(data, tmp_path):
    whole = checkpointed_log_likelihood(vae(), data, tmp_path / "whole", num_samples=30, chunk_size=10)
    module = vae()
    module.fail_at = 3
    with pytest.raises(Interrupted):
        checkpointed_log_likelihood(module, data, tmp_path / "cut", num_samples=30, chunk_size=10)
    assert len(list((tmp_path / "cut").glob("chunk-*.pt"))) == 2
    resumed = checkpointed_log_likelihood(module, data, tmp_path / "cut", num_samples=30, chunk_size=10)
    assert module.calls == 4  # only the lost chunk was scored again
    assert torch.equal(resumed.per_point, whole.per_point)


def test_the_evaluation_time_sums_every_call_s_chunks(data, tmp_path, monkeypatch):
    clock = iter(range(0, 100, 2))  # each chunk takes 2 "seconds"
    monkeypatch.setattr(checkpointed, "perf_counter", lambda: float(next(clock)))
    module = vae()
    module.fail_at = 3
    with pytest.raises(Interrupted):
        checkpointed_log_likelihood(module, data, tmp_path, num_samples=30, chunk_size=10)
    assert evaluation_seconds(tmp_path) == 4.0
    checkpointed_log_likelihood(module, data, tmp_path, num_samples=30, chunk_size=10)
    assert evaluation_seconds(tmp_path) == 6.0  # the lost chunk is counted once, when it was saved
    first = tmp_path / "chunk-0000000.pt"
    checkpoint.save({"per_point": checkpoint.load(first)["per_point"]}, first)  # a chunk saved before timing
    assert evaluation_seconds(tmp_path) is None and evaluation_seconds(tmp_path / "empty") is None


@pytest.mark.parametrize("change,named", [
    ({"num_samples": 31}, "num_samples 30 there, 31 now"),
    ({"seed": 1}, "seed 0 there, 1 now"),
    ({"chunk_size": 5}, "chunk_size 10 there, 5 now"),
    ({"data": "other"}, "data_sha1"),
    ({"data": "fewer"}, "points 25 there, 24 now"),
    ({"trained": True}, "parameters_sha1"),
])
def test_other_settings_in_the_same_directory_are_refused(data, tmp_path, change, named):
    checkpointed_log_likelihood(vae(), data, tmp_path, num_samples=30, chunk_size=10)
    kwargs = {"num_samples": 30, "chunk_size": 10, "seed": 0, **change}
    x = {"other": 1 - data, "fewer": data[:24]}.get(kwargs.pop("data", None), data)
    module = vae()
    if kwargs.pop("trained", False):
        with torch.no_grad():
            next(module.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match=named) as info:
        checkpointed_log_likelihood(module, x, tmp_path, **kwargs)
    assert "another directory" in str(info.value)


def test_bad_chunk_size(data, tmp_path):
    with pytest.raises(ValueError, match="chunk_size must be a positive number of points"):
        checkpointed_log_likelihood(vae(), data, tmp_path, chunk_size=0)
