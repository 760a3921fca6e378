"""Fixtures every test shares: a fresh Pyro state per test, one torch thread, the
embedded digits (statically binarized). Helper models are in ``toy_models.py``."""

import pyro
import pytest
import torch

from pyro_vae.data import load_dataset


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts from an empty param store and the same seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tests time nothing, but a contended 2-thread pool is several times slower for
    small networks than one thread; the setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", binarize="static")
