r"""Sample-quality scores that work offline: a Fréchet distance and an "inception-like"
score in the feature space of an MNIST classifier that the package trains itself.

The FID (Heusel et al. 2017) and the Inception score (Salimans et al. 2016) read
features and class probabilities of an ImageNet Inception network, which is neither
here nor meaningful for digits. The same two statistics are computed with a small conv
net trained on MNIST (:class:`MNISTClassifier`; its test accuracy goes with every score,
so a reader sees how good the feature space is):

* **Fréchet distance** between Gaussians fitted to the 128-d penultimate features of the
  samples and of the test images:

  .. math:: d^2 = \lVert μ_s − μ_r \rVert^2 + \operatorname{tr}\bigl(Σ_s + Σ_r − 2 (Σ_r^{1/2} Σ_s Σ_r^{1/2})^{1/2}\bigr)

  (lower is better; 0 for identical sets; it reads no labels).
* **inception-like score** ``exp E_x KL(p(y|x) ‖ p(y))`` with the classifier's ``p(y|x)``
  and ``p(y)`` their mean over the samples: between 1 and 10 (the number of classes);
  high when each sample is a confident digit and the digits are diverse.

**The classifier's weights are not committed.** :func:`load_classifier` trains it on
demand on the MNIST training split (a fixed recipe, :data:`RECIPE`, about two minutes on
one CPU core) and caches it in a user directory (``$PYRO_VAE_CACHE_DIR`` or
``~/.pyro_vae/cache``) under a key of the recipe and the data files' checksums; the
weights file's sha256 is recorded beside it and checked at every load, the weights are
read by :func:`pyro_vae.checkpoint.load` (weights only, no code), and every score carries
that checksum (:attr:`SampleScores.classifier`), so scores from different classifiers
are never mixed unknowingly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae import checkpoint

#: How the classifier is trained; any change makes a new cache entry.
#: A quick check's recipe (smoke runs, fast tutorials): scores not comparable with the real one's.
QUICK_RECIPE = None  # set below
#: The last ``decay_epochs`` run at ``lr * decay``; the training images are MNIST's 60000
#: (the package's train and validation splits: the scores compare with the test images).
RECIPE = {"version": 2, "architecture": "conv5x5-16-32-fc128", "epochs": 4, "batch_size": 128, "lr": 1e-3,
          "decay": 0.1, "decay_epochs": 1, "seed": 0}
QUICK_RECIPE = {**RECIPE, "version": "quick", "epochs": 1, "decay_epochs": 0, "max_train": 2000}
FEATURES = 128


class MNISTClassifier(nn.Module):
    """``x: (B, 1, H, W) -> (B, classes)`` logits; :meth:`features` the 128-d layer before.

    Two 5x5 convolutions (16 and 32 channels, each followed by ReLU and 2x2 max-pooling),
    a 128-unit ReLU layer, a linear layer to the classes. H and W divisible by 4.
    """

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"the classifier pools twice by 2: H and W must be multiples of 4, got {h} x {w}")
        self.image_shape = tuple(image_shape)
        self.conv = nn.Sequential(nn.Conv2d(c, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.hidden = nn.Sequential(nn.Linear(32 * (h // 4) * (w // 4), FEATURES), nn.ReLU())
        self.out = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.conv(x.reshape(-1, *self.image_shape)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


# ----------------------------------------------------------------------------- the statistics


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (float64, unbiased) of ``features (n, D)``."""
    f = features.double()
    if len(f) < 2:
        raise ValueError(f"a covariance needs at least 2 points, got {len(f)}")
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (len(f) - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2):
    ``‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}``, in float64.
    ``tr (A B)^{1/2}`` is computed as ``tr (A^{1/2} B A^{1/2})^{1/2}``, which is symmetric:
    no complex parts to discard (as scipy's ``sqrtm`` of the product has)."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    s1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross
    return max(float(d2), 0.0)


def inception_score(probs: torch.Tensor) -> float:
    """``exp E_x KL(p(y|x) ‖ p(y))`` for class probabilities ``probs (n, classes)``."""
    p = probs.double().clamp(min=1e-12)
    marginal = p.mean(0, keepdim=True)
    return math.exp(float((p * (p.log() - marginal.log())).sum(-1).mean()))


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class SampleScores:
    """The scores of one sample set.

    Attributes:
        frechet: the classifier-feature Fréchet distance to the reference images (lower is better).
        inception: the inception-like score (higher is better, at most the number of classes).
        num_samples: samples scored.
        classifier: the sha256 of the classifier's weights file (the first 16 hex digits).
        classifier_accuracy: its accuracy on the MNIST test images.
    """

    frechet: float
    inception: float
    num_samples: int
    classifier: str
    classifier_accuracy: float

    def as_dict(self) -> dict:
        return asdict(self)


class ClassifierScores:
    """Scores sample sets against reference images in a classifier's feature space.

    Args:
        classifier: a trained :class:`MNISTClassifier`.
        reference: ``(n, 1, H, W)`` images (the test split) whose feature statistics the
            Fréchet distance compares with.
        checksum, accuracy: the classifier's weights checksum and test accuracy, carried by
            every score.
    """

    def __init__(self, classifier: MNISTClassifier, reference: torch.Tensor, checksum: str = "untracked",
                 accuracy: float = float("nan"), batch_size: int = 1000):
        self.classifier = classifier.eval()
        self.checksum, self.accuracy, self.batch_size = checksum, accuracy, batch_size
        self.reference = feature_statistics(self.outputs(reference)[0])

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(n, 128)`` and class probabilities ``(n, classes)`` of images ``x``."""
        device = next(self.classifier.parameters()).device
        feats, probs = [], []
        for s in range(0, len(x), self.batch_size):
            f = self.classifier.features(x[s:s + self.batch_size].to(device, torch.float32))
            feats.append(f.cpu())
            probs.append(torch.softmax(self.classifier.out(f), -1).cpu())
        return torch.cat(feats), torch.cat(probs)

    def score(self, samples: torch.Tensor) -> SampleScores:
        """The scores of ``samples (n, 1, H, W)`` (or flat ``(n, H·W)``), values in [0, 1]."""
        feats, probs = self.outputs(samples)
        fd = frechet_distance(*feature_statistics(feats), *self.reference)
        return SampleScores(fd, inception_score(probs), len(samples), self.checksum, self.accuracy)

    def score_model(self, sample: Union[Callable[[int], torch.Tensor], nn.Module], num_samples: int = 10000,
                    batch: int = 1000) -> SampleScores:
        """The scores of ``num_samples`` draws of ``sample(n)`` (or ``model.sample(n)``)."""
        draw = sample.sample if hasattr(sample, "sample") else sample
        parts = [draw(min(batch, num_samples - s)).detach().cpu() for s in range(0, num_samples, batch)]
        return self.score(torch.cat([p.reshape(len(p), -1) for p in parts]))


# ----------------------------------------------------------------------------- training and the cache


def cache_dir(directory: Optional[Union[str, Path]] = None) -> Path:
    """Where trained classifiers are kept: ``directory``, ``$PYRO_VAE_CACHE_DIR``, or ``~/.pyro_vae/cache``."""
    return Path(directory or os.environ.get("PYRO_VAE_CACHE_DIR") or Path.home() / ".pyro_vae" / "cache")


def cache_key(recipe: dict, data) -> str:
    """The cache entry's name: a digest of the recipe and the data's file checksums."""
    text = json.dumps({"recipe": recipe, "data": sorted(s.sha256 for s in data.sources)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_classifier(data, recipe: dict = RECIPE, max_train: Optional[int] = None,
                     progress: Optional[Callable[[str], None]] = None) -> tuple[MNISTClassifier, float]:
    """Train :class:`MNISTClassifier` on ``data.train`` and ``data.valid`` (grey levels,
    labels) by ``recipe``; returns it (in eval mode) and its accuracy on ``data.test``.
    ``max_train``: the first rows only (a quick check; the cached classifier uses all)."""
    if data.train_labels is None or data.test_labels is None:
        raise ValueError(f"data set {data.name!r} has no labels: the classifier is trained on labelled MNIST")
    gen = torch.Generator().manual_seed(recipe["seed"])
    with torch.random.fork_rng():
        torch.manual_seed(recipe["seed"])
        net = MNISTClassifier(tuple(data.event_shape))
    max_train = max_train or recipe.get("max_train")  # a quick recipe trains on fewer images
    x, y = torch.cat([data.train, data.valid])[:max_train], torch.cat([data.train_labels, data.valid_labels])[:max_train]
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    started = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        if epoch == recipe["epochs"] - recipe.get("decay_epochs", 0):
            for group in opt.param_groups:
                group["lr"] = recipe["lr"] * recipe["decay"]
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), recipe["batch_size"]):
            i = order[s:s + recipe["batch_size"]]
            loss = F.cross_entropy(net(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if progress is not None:
            progress(f"classifier epoch {epoch + 1}/{recipe['epochs']}: loss {float(loss.detach()):.4f}, "
                     f"{time.perf_counter() - started:.0f} s")
    net.eval()
    return net, accuracy(net, data.test, data.test_labels)


@torch.no_grad()
def accuracy(net: MNISTClassifier, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    correct = sum(int((net(x[s:s + batch]).argmax(-1) == y[s:s + batch]).sum()) for s in range(0, len(x), batch))
    return correct / len(x)


def load_classifier(data=None, directory: Optional[Union[str, Path]] = None, recipe: dict = RECIPE,
                    progress: Optional[Callable[[str], None]] = print) -> tuple[MNISTClassifier, dict]:
    """The classifier of ``recipe`` for ``data`` (default: grey-level MNIST), from the
    cache or trained and cached; and its record (``sha256`` of the weights file,
    ``accuracy`` on the test images, the recipe, the data's checksums).

    A cached weights file whose sha256 differs from its record is refused (trained anew).
    """
    if data is None:
        from pyro_vae.data import load_dataset

        data = load_dataset("mnist")
    folder = cache_dir(directory)
    key = cache_key(recipe, data)
    weights, record_path = folder / f"mnist_classifier-{key}.pt", folder / f"mnist_classifier-{key}.json"
    net = MNISTClassifier(tuple(data.event_shape))
    if weights.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if file_sha256(weights) == record.get("sha256"):
            net.load_state_dict(checkpoint.load(weights)["classifier"])
            return net.eval(), record
        if progress is not None:
            progress(f"{weights} does not match the checksum in {record_path.name}: training anew")
    if progress is not None:
        progress(f"training the MNIST classifier of the sample-quality scores (cached in {folder})")
    net, acc = train_classifier(data, recipe, progress=progress)
    checkpoint.save({"classifier": net.state_dict()}, weights)
    record = {"sha256": file_sha256(weights), "accuracy": acc, "recipe": recipe,
              "data": [s.sha256 for s in data.sources]}
    checkpoint.write_text(record_path, json.dumps(record, indent=1))
    return net, record


def mnist_scores(data=None, directory: Optional[Union[str, Path]] = None,
                 progress: Optional[Callable[[str], None]] = print, recipe: dict = RECIPE) -> ClassifierScores:
    """:class:`ClassifierScores` against the MNIST test images with the cached classifier."""
    if data is None:
        from pyro_vae.data import load_dataset

        data = load_dataset("mnist")
    net, record = load_classifier(data, directory, recipe, progress=progress)
    return ClassifierScores(net, data.test, record["sha256"][:16], record["accuracy"])


__all__ = ["FEATURES", "QUICK_RECIPE", "RECIPE", "ClassifierScores", "MNISTClassifier", "SampleScores", "accuracy", "cache_dir",
           "cache_key", "feature_statistics", "frechet_distance", "inception_score", "load_classifier",
           "mnist_scores", "train_classifier"]
