"""Metrics: the shipped classifier's accuracy, and FD / KID checked against torchmetrics."""

import json
from importlib import resources

import pytest
import torch

from ddpm_helpers.data import load_mnist
from ddpm_helpers.metrics import classify, evaluate_samples, frechet_distance, kernel_inception_distance, load_classifier


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_shipped_classifier_is_small_and_accurate(classifier, data_dir):
    path = resources.files("ddpm_helpers.assets").joinpath("mnist_classifier.safetensors")
    assert path.stat().st_size < 2_000_000
    x, y = load_mnist("test", data_dir, download=False)
    _, probs = classify(classifier, x)
    accuracy = float((probs.argmax(1) == y).double().mean())
    assert accuracy >= 0.992
    card = json.loads(resources.files("ddpm_helpers.assets").joinpath("mnist_classifier.json").read_text())
    assert abs(card["test_accuracy"] - accuracy) < 1e-4  # the card reports what the weights do


def test_frechet_distance_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.image.fid")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(400, 16, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    expected = tm._compute_fid(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert abs(frechet_distance(a, b) - float(expected)) < 1e-6 * max(1.0, float(expected))
    assert abs(frechet_distance(a, a)) < 1e-8


def test_kid_matches_torchmetrics_formula():
    tm = pytest.importorskip("torchmetrics.image.kid")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(200, 8, generator=gen, dtype=torch.float64) + 0.5
    mine, _ = kernel_inception_distance(a, b, subsets=1, subset_size=200)  # all samples: no randomness left
    expected = tm.poly_mmd(a, b, degree=3, gamma=1 / 8, coef=1.0)
    assert abs(mine - float(expected)) < 1e-9 * max(1.0, abs(float(expected)))


def test_evaluate_samples_on_real_and_bad_images(classifier, data_dir):
    real, labels = load_mnist("train", data_dir, download=False, limit=12000)
    good = evaluate_samples(real[-500:], labels[-500:], root=data_dir, classifier=classifier, kid_subsets=5)
    noise = evaluate_samples(torch.rand(500, 1, 28, 28) * 2 - 1, root=data_dir, classifier=classifier, kid_subsets=5)
    assert good["accuracy"] > 0.98 and good["mean_confidence"] > 0.9
    assert good["frechet_distance"] < 3 * good["frechet_distance_floor"]
    assert noise["frechet_distance"] > 50 * good["frechet_distance"]
    assert noise["kid"] > 50 * max(good["kid"], 1e-3)
    assert sum(good["class_histogram"]) == 500 and min(good["class_histogram"]) > 20
    assert good["num_reference"] == 10000
