import math

import pytest
import torch

from pyro_vae.ops import logsumexp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spread", [1.0, 50.0, 5000.0])
def test_logsumexp_matches_torch(dtype, spread):
    # spread 5000: most terms underflow (the fast path's floor); the result must not move
    x = (torch.randn(64, 300, generator=torch.Generator().manual_seed(0)) * spread).to(dtype)
    for dim in (0, 1, -1):
        torch.testing.assert_close(logsumexp(x, dim), torch.logsumexp(x, dim), rtol=0,
                                   atol=4 * torch.finfo(dtype).eps * (1 + spread))


def test_logsumexp_infinite_rows():
    x = torch.full((4, 5), -math.inf)
    x[1, 2] = 0.0
    x[2, 0] = math.inf
    x[3, 1] = math.nan
    out = logsumexp(x)
    assert out[0] == -math.inf and out[1] == 0.0 and out[2] == math.inf and out[3].isnan()


def test_logsumexp_floored_terms_are_bounded():
    # a term just above the floor and one far below it: both are ~e-38 next to the max's 1
    x = torch.tensor([[0.0, -86.0, -1000.0, -math.inf]])
    assert logsumexp(x).item() == 0.0
    # a row whose terms are all far below a single large one keeps the large one exactly
    x = torch.cat([torch.zeros(1, 1), torch.full((1, 10 ** 6), -500.0)], 1)
    assert logsumexp(x).item() == 0.0


def test_logsumexp_gradient_is_softmax():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    logsumexp(x).sum().backward()
    torch.testing.assert_close(x.grad, x.detach().softmax(-1))
    # under no_grad the input is left untouched by the in-place work
    y = torch.randn(3, 7)
    copy = y.clone()
    with torch.no_grad():
        logsumexp(y)
    assert torch.equal(y, copy)
