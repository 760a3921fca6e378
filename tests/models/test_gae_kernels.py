"""The GAE's numerical pieces: the blocked mixture kernel, the distribution of z given
the enumerated index (every path), and the neighbour searches."""

import math

import pyro.distributions as dist
import torch

from pyro_vae.models.gae.distribution import ExemplarMixture, ExemplarNormal, UniformIndex
from pyro_vae.models.gae.kernels import component_features, features_to_params, log_mixture
from pyro_vae.models.gae.search import clustered_neighbours, nearest_exemplars


def test_log_mixture_is_blocked_exactly():
    torch.manual_seed(12)
    z, loc, scale = torch.randn(37, 4), torch.randn(101, 4), torch.rand(101, 4) + 0.2
    full = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))
    torch.testing.assert_close(log_mixture(z, loc, scale, max_elements=50), full.logsumexp(-1) - math.log(101))
    ex = torch.randint(0, 101, (37,))
    dropped = full.masked_fill(torch.nn.functional.one_hot(ex, 101).bool(), -math.inf).logsumexp(-1)
    torch.testing.assert_close(log_mixture(z, loc, scale, exclude=ex, max_elements=50), dropped - math.log(101))


def test_exemplar_normal_paths_agree():
    torch.manual_seed(13)
    loc, scale = torch.randn(12, 3), torch.rand(12, 3) + 0.3
    row_loc, row_scale = torch.randn(5, 4, 3), torch.rand(5, 4, 3) + 0.3
    z = torch.randn(5, 3)
    d = ExemplarNormal(loc, scale, torch.arange(16).unsqueeze(-1), row_loc=row_loc, row_scale=row_scale)
    table = d.log_prob(z)  # (16, 5): enumerated path
    for y in range(16):
        yy = torch.full((5,), y)
        torch.testing.assert_close(ExemplarNormal(loc, scale, yy, row_loc=row_loc, row_scale=row_scale).log_prob(z),
                                   table[y], rtol=1e-5, atol=1e-4)
    draws = torch.randn(2, 5, 3)  # several z per row (e.g. vectorised particles): the einsum path
    tables = ExemplarNormal(loc, scale, torch.arange(16).view(16, 1, 1), row_loc=row_loc,
                            row_scale=row_scale).log_prob(draws)
    for i in range(2):
        torch.testing.assert_close(tables[:, i], ExemplarNormal(loc, scale, torch.arange(16).unsqueeze(-1), row_loc=row_loc,
                                                                row_scale=row_scale).log_prob(draws[i]))
    w, c = component_features(loc, scale)
    back = features_to_params(w)
    torch.testing.assert_close(back[0], loc) and torch.testing.assert_close(back[1], scale)
    shared = torch.rand(3) + 0.3  # a shared bandwidth broadcasts: same features as expanded
    for got, want in zip(component_features(row_loc, shared), component_features(row_loc, shared.expand(5, 4, 3))):
        torch.testing.assert_close(got, want)
    log_w = torch.full((12,), -math.log(4))
    g = ExemplarNormal(loc, scale, torch.arange(3).unsqueeze(-1), group_size=4, log_weights=log_w)
    comps = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2)).view(5, 3, 4)
    torch.testing.assert_close(g.log_prob(z), (comps.logsumexp(-1) - math.log(4)).T, rtol=1e-5, atol=1e-4)
    assert g.rsample().shape == (3, 1, 3)
    sampled = ExemplarNormal(loc, scale * 1e-4, torch.tensor([0, 3, 4, 15, 7]), row_loc=row_loc,
                             row_scale=row_scale * 1e-4).rsample((2,))
    assert sampled.shape == (2, 5, 3)
    torch.testing.assert_close(sampled[0, :2], torch.stack([row_loc[0, 0], row_loc[1, 3]]), atol=1e-2, rtol=0)
    torch.testing.assert_close(sampled[0, 2:], loc[[0, 11, 3]], atol=1e-2, rtol=0)


def test_exemplar_mixture_is_the_mixture_with_y_summed_out():
    torch.manual_seed(16)
    loc, scale = torch.randn(9, 3), torch.rand(9, 3) + 0.3
    z = torch.randn(2, 5, 3)  # several z per row, e.g. importance particles
    comps = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2))  # (2, 5, 9)
    mix = ExemplarMixture(loc, scale, (5,)).expand((2, 5))
    torch.testing.assert_close(mix.log_prob(z), comps.logsumexp(-1) - math.log(9))
    own = torch.tensor([0, 3, 3, 8, 1])  # leave-one-out rows
    loo = ExemplarMixture(loc, scale, (5,), torch.full((9,), -math.log(8)), own)
    masked = comps.masked_fill(torch.nn.functional.one_hot(own, 9).bool(), -math.inf)
    torch.testing.assert_close(loo.log_prob(z), masked.logsumexp(-1) - math.log(8))
    draws = ExemplarMixture(loc, scale * 1e-4, (5,), torch.full((9,), -math.log(8)), own).sample((200,))
    nearest = torch.cdist(draws.reshape(-1, 3), loc).argmin(-1).view(200, 5)
    assert draws.shape == (200, 5, 3) and not (nearest == own).any()  # never the own component


def counts(values: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(values.reshape(-1), minlength=n).float()


def test_uniform_draws_are_uniform_over_the_index_less_the_excluded_one():
    """A mixture of equal weights draws its components by randint (not the multinomial):
    uniform over all n, or over the other n − 1 for leave-one-out rows; unequal weights
    still draw by them."""
    torch.manual_seed(3)
    loc, scale, draws = torch.arange(4.0).view(4, 1), torch.full((4, 1), 1e-4), 40000
    j = ExemplarMixture(loc, scale, (1,)).sample((draws,)).round().long()  # each draw is its component's loc
    assert ((counts(j, 4) / draws - 0.25).abs() < 0.01).all()
    own = torch.tensor([2])
    loo = ExemplarMixture(loc, scale, (1,), torch.full((4,), -math.log(3)), own).sample((draws,))
    freq = counts(loo.round().long(), 4) / draws
    assert freq[2] == 0 and ((freq[[0, 1, 3]] - 1 / 3).abs() < 0.01).all()
    skewed = ExemplarMixture(loc, scale, (1,), torch.tensor([0.9, 0.1, 1e-9, 1e-9]).log()).sample((draws,))
    assert abs(counts(skewed.round().long(), 4)[0] / draws - 0.9) < 0.01


def test_uniform_index_scores_enumerates_and_expands_as_a_categorical():
    torch.manual_seed(4)
    y = UniformIndex.over(5, torch.zeros((), dtype=torch.float64)).expand((3,))
    assert isinstance(y, UniformIndex) and y.logits.dtype == torch.float64
    draws = y.sample((20000,))
    assert draws.shape == (20000, 3) and ((counts(draws, 5) / draws.numel() - 0.2).abs() < 0.01).all()
    torch.testing.assert_close(y.log_prob(draws[:2]), torch.full((2, 3), -math.log(5), dtype=torch.float64))
    assert y.enumerate_support(expand=False).reshape(-1).tolist() == [0, 1, 2, 3, 4]


def test_neighbour_search():
    torch.manual_seed(14)
    loc = torch.cat([torch.randn(300, 4) + 6 * torch.randn(1, 4) for _ in range(10)])
    scale = torch.rand(3000, 4) * 0.5 + 0.2
    exact = nearest_exemplars(loc, scale, loc, scale, 10, exclude=torch.arange(3000))
    assert not (exact == torch.arange(3000).unsqueeze(1)).any()
    approx, _ = clustered_neighbours(loc, scale, 10)
    recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, approx)) / exact.numel()
    assert recall > 0.7
    assert not (approx == torch.arange(3000).unsqueeze(1)).any()
    # a warm start whose cells the cache has left (all but 3 far from every mean): the
    # empty cells restart at exemplars, so the cells end up populated and the search as good
    stale = torch.cat([loc[:3], torch.full((52, 4), 100.0)])
    lists, centroids = clustered_neighbours(loc, scale, 10, centroids=stale)
    cells = torch.cdist(loc, centroids).argmin(-1).unique()
    assert len(cells) > 40
    again = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, lists)) / exact.numel()
    assert again > 0.7
