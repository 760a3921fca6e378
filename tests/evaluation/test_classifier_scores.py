"""The classifier-feature scores: the Fréchet distance's algebra, the inception-like score's
range, and the classifier's cache (trained once, checksummed, loaded as weights only)."""

import json

import pytest
import torch

from pyro_vae.evaluation.classifier_scores import (
    ClassifierScores,
    MNISTClassifier,
    feature_statistics,
    frechet_distance,
    inception_score,
    load_classifier,
)


@pytest.fixture
def scorer(digits):
    torch.manual_seed(0)
    return ClassifierScores(MNISTClassifier((1, 8, 8)), digits.test)  # untrained: the algebra needs no training


def test_identical_sample_sets_are_at_distance_zero_and_order_and_labels_do_not_matter(scorer, digits):
    x, labels = digits.train[:300], digits.train_labels[:300]
    same = scorer.score(x)
    scorer.reference = feature_statistics(scorer.outputs(x)[0])
    assert scorer.score(x).frechet == pytest.approx(0.0, abs=1e-6)
    perm = torch.randperm(300)
    shuffled_x, shuffled_labels = x[perm], labels[perm]  # the labels go with the images, and are never read
    assert scorer.score(shuffled_x).frechet == pytest.approx(0.0, abs=1e-6)
    assert scorer.score(shuffled_x).inception == pytest.approx(scorer.score(x).inception, rel=1e-9)
    assert same.frechet > 0 and shuffled_labels.shape == labels.shape


def test_the_frechet_distance_of_gaussians_in_closed_form():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    cov = a @ a.T + torch.eye(4, dtype=torch.float64)
    mu = torch.randn(4, dtype=torch.float64)
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu, cov, mu + shift, cov) == pytest.approx(5.0)  # equal covariances: ‖Δμ‖²
    # diagonal covariances: Σ_d (σ1 − σ2)²
    s1, s2 = torch.tensor([1.0, 4.0], dtype=torch.float64), torch.tensor([9.0, 1.0], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    assert frechet_distance(zero, torch.diag(s1), zero, torch.diag(s2)) == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2)


def test_the_inception_like_score_ranges_from_one_to_the_number_of_classes():
    assert inception_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0)
    assert inception_score(torch.eye(10).repeat(5, 1)) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.eye(10)[[3] * 50]) == pytest.approx(1.0, rel=1e-6)  # one confident digit only


def test_the_classifier_is_trained_once_cached_by_checksum_and_retrained_when_changed(digits, tmp_path):
    recipe = {"version": 0, "architecture": "test", "epochs": 3, "batch_size": 32, "lr": 3e-3, "decay": 0.1,
              "decay_epochs": 0, "seed": 0}
    net, record = load_classifier(digits, tmp_path, recipe, progress=None)
    assert 0.5 < record["accuracy"] <= 1.0 and len(record["sha256"]) == 64
    weights = next(tmp_path.glob("*.pt"))
    again, same = load_classifier(digits, tmp_path, recipe, progress=None)  # from the cache
    assert same == record and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                      again.state_dict().values()))
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")  # a changed file is not trusted
    messages = []
    _, renewed = load_classifier(digits, tmp_path, recipe, progress=messages.append)
    assert any("does not match the checksum" in m for m in messages)
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["sha256"] == renewed["sha256"]
    scores = ClassifierScores(net, digits.test, record["sha256"][:16], record["accuracy"]).score(digits.valid)
    assert scores.classifier == record["sha256"][:16] and scores.classifier_accuracy == record["accuracy"]
    assert scores.num_samples == len(digits.valid) and 1.0 <= scores.inception <= 10.0
