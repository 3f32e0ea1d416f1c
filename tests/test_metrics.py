"""Metrics: the shipped classifier's accuracy, and FD / KID checked against torchmetrics."""

import json
import math
from collections import OrderedDict
from importlib import resources

import pytest
import torch

from ddpm_helpers import metrics
from ddpm_helpers.data import load_mnist
from ddpm_helpers.metrics import (MNISTClassifier, classify, evaluate_samples, fit_digit_gaussians, frechet_distance,
                                  kernel_inception_distance, load_classifier)


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
    from torchmetrics.image import fid as tm   # a test dependency: missing, the test fails instead of skipping
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(400, 16, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    expected = tm._compute_fid(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert abs(frechet_distance(a, b) - float(expected)) < 1e-6 * max(1.0, float(expected))
    assert abs(frechet_distance(a, a)) < 1e-8


def test_kid_matches_torchmetrics_formula():
    from torchmetrics.image import kid as tm
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(200, 8, generator=gen, dtype=torch.float64) + 0.5
    mine, _ = kernel_inception_distance(a, b, subsets=1, subset_size=200)  # all samples: no randomness left
    expected = tm.poly_mmd(a, b, degree=3, gamma=1 / 8, coef=1.0)
    assert abs(mine - float(expected)) < 1e-9 * max(1.0, abs(float(expected)))


def test_kid_std_is_the_sample_standard_deviation_over_subsets():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(60, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(60, 8, generator=gen, dtype=torch.float64) + 0.3
    one_at_a_time = torch.Generator().manual_seed(5)  # k calls of one subset draw the same subsets as one call of k
    values = torch.tensor([kernel_inception_distance(a, b, 1, 20, one_at_a_time)[0] for _ in range(4)],
                          dtype=torch.float64)
    mean, std = kernel_inception_distance(a, b, 4, 20, torch.Generator().manual_seed(5))
    assert values.std() > 0 and math.isclose(mean, float(values.mean()), rel_tol=1e-12)
    assert math.isclose(std, float(values.std(correction=1)), rel_tol=1e-12)  # divided by subsets - 1, as documented
    assert not math.isclose(std, float(values.std(correction=0)), rel_tol=1e-3)  # not torchmetrics' population one


def test_evaluate_samples_on_real_and_bad_images(classifier, data_dir):
    real, labels = load_mnist("train", data_dir, download=False, limit=12000)
    good = evaluate_samples(real[-500:], labels[-500:], root=data_dir, classifier=classifier, kid_subsets=5)
    noise = evaluate_samples(torch.rand(500, 1, 28, 28) * 2 - 1, root=data_dir, classifier=classifier, kid_subsets=5)
    assert good["accuracy"] > 0.98 and good["mean_confidence"] > 0.9
    assert good["frechet_distance"] < 3 * good["frechet_distance_floor"]
    assert noise["frechet_distance"] > 50 * good["frechet_distance"]
    assert noise["kid"] > 50 * max(good["kid"], 1e-3)
    assert sum(good["class_histogram"]) == 500 and min(good["class_histogram"]) > 20
    # entry d counts the images called d: at most 10 of the 500 are misread (accuracy > 0.98), and each misread
    # image moves one count, so the histogram is within 20 (summed) of the labels' own counts (52 if reversed)
    true_counts = torch.bincount(labels[-500:], minlength=10)
    assert sum(abs(h - int(n)) for h, n in zip(good["class_histogram"], true_counts)) <= 2 * round(
        (1 - good["accuracy"]) * 500)
    assert good["num_reference"] == 10000
    # the classifier is more confident on noise than on real digits; the in-distribution share is not fooled
    assert noise["frac_confident_0.9"] > good["frac_confident_0.9"]
    assert good["frac_in_distribution"] > 0.95 and good["frac_in_distribution_floor"] > 0.95
    assert noise["frac_in_distribution"] == 0 and noise["frac_confident_0.9_in_distribution"] == 0


def test_digit_gaussians_threshold_and_distance_follow_the_definitions():
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    scale = torch.tensor([1.0, 3.0], dtype=torch.float64)           # a shared, non-isotropic covariance
    labels = torch.arange(4000) % 2
    feats = means[labels] + torch.randn(4000, 2, generator=gen, dtype=torch.float64) * scale
    held = means[torch.arange(4000) % 2] + torch.randn(4000, 2, generator=gen, dtype=torch.float64) * scale
    g = fit_digit_gaussians(feats, labels, held, quantile=0.9)
    assert torch.allclose(g.means, means, atol=0.3)      # 4.5 standard errors (3 / sqrt(2000)) in y
    # the squared Mahalanobis distance, computed independently from the fitted means and the pooled covariance
    centred = feats - g.means[labels]
    cov = centred.T @ centred / len(feats)
    points = torch.tensor([[10.0, 3.0], [0.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
    diff = points[:, None, :] - g.means[None]                     # (3, K, 2)
    expected = (diff @ torch.linalg.inv(cov) * diff).sum(-1).min(1).values
    assert torch.allclose(g.distance(points), expected, rtol=1e-4)
    # and near the true one, covariance diag(1, 9): 3 along y from class 1 is 1.0; halfway between the means, 25
    assert torch.allclose(g.distance(points), torch.tensor([1.0, 0.0, 25.0], dtype=torch.float64), atol=1.5)
    # for 2-D Gaussians the squared distance is chi-square with 2 degrees of freedom: its 0.9 quantile is 4.605
    assert abs(g.threshold - 4.605) < 0.4
    assert abs(float(g.in_distribution(held).double().mean()) - 0.9) < 1e-3   # the held-out set defines it
    assert float(g.in_distribution(feats).double().mean()) > 0.87


@pytest.mark.parametrize("call, words", [
    (lambda f, y: fit_digit_gaussians(f, y[:-1], f), ["labels", "one label per row"]),
    (lambda f, y: fit_digit_gaussians(f, y, f, quantile=1.5), ["quantile", "1.5"]),
    (lambda f, y: fit_digit_gaussians(f, y, f[:1]), ["held_out", "at least 2"]),
    (lambda f, y: fit_digit_gaussians(f, y, f).distance(f[:, :1]), ["features", "2 columns"]),
])
def test_digit_gaussians_bad_input_is_named(call, words):
    f = torch.randn(20, 2, dtype=torch.float64)
    y = torch.arange(20) % 2
    with pytest.raises((ValueError, TypeError)) as info:
        call(f, y)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.fixture()
def subset_only(tmp_path, monkeypatch):
    """No full MNIST and no network (so the shipped 1,000-image test subset), an empty cache, a fresh process memo.
    Returns the folder where reference features are cached."""
    import ddpm_helpers.data as data

    monkeypatch.delenv("DDPM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_try_download", lambda split: False)
    monkeypatch.setattr(metrics, "_MEMO", OrderedDict())
    return tmp_path / "cache" / "ddpm_helpers" / "features"


@pytest.mark.filterwarnings("ignore:ddpm_helpers. full MNIST not found")
def test_reference_features_are_kept_on_disk_and_computed_again_when_anything_changes(subset_only, monkeypatch):
    calls, classify_ = [], metrics._classify
    monkeypatch.setattr(metrics, "_classify", lambda c, x, *a: calls.append(len(x)) or classify_(c, x, *a))
    first, labels = metrics._reference(load_classifier(), "test", None, None)
    assert calls == [1000] and first.shape == (1000, 128) and labels.shape == (1000,)
    [file] = subset_only.iterdir()  # one file, and no temporary file left beside it
    assert file.name.startswith("mnist-test-") and file.suffix == ".pt"

    metrics._MEMO.clear()  # as a new process would: the features come from the disk
    again, _ = metrics._reference(load_classifier(), "test", None, None)
    assert calls == [1000] and torch.equal(again, first)

    other = load_classifier()
    with torch.no_grad():
        other.body[0].weight.mul_(1.5)
    changed, _ = metrics._reference(other, "test", None, None)  # other weights: computed, and kept apart
    assert calls == [1000, 1000] and not torch.allclose(changed, first) and len(list(subset_only.iterdir())) == 2

    file.write_bytes(b"half a file")  # damaged: computed again and replaced
    metrics._MEMO.clear()
    repaired, _ = metrics._reference(load_classifier(), "test", None, None)
    assert calls == [1000] * 3 and torch.equal(repaired, first)
    metrics._MEMO.clear()
    assert torch.equal(metrics._reference(load_classifier(), "test", None, None)[0], first) and len(calls) == 3

    # a cache that cannot be written (here: a file where the folder should be) only means no cache
    blocked = subset_only.parent.parent.parent / "blocked"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    metrics._MEMO.clear()
    assert torch.equal(metrics._reference(load_classifier(), "test", None, None)[0], first) and len(calls) == 4


@pytest.mark.filterwarnings("ignore:ddpm_helpers. full MNIST not found")
def test_evaluate_samples_scores_the_references_with_the_classifier_it_is_given(subset_only):
    """Samples and references must go through the same network, or the distances compare two feature spaces."""
    real, labels = load_mnist("train", None, allow_subset=True, download=False)
    torch.manual_seed(0)
    other = MNISTClassifier().eval()  # random weights: a feature space unlike the shipped classifier's
    scores = evaluate_samples(real[-500:], classifier=other, kid_subsets=5)
    assert scores["frechet_distance"] < 3 * scores["frechet_distance_floor"]  # real digits score as real
    # both sides through `other`: a reference scored with the shipped classifier would leave the ratio above
    # unchanged (the floor moves with it), so check the distance itself (review, 2026-12-05)
    test_images = load_mnist("test", None, allow_subset=True, download=False)[0]
    want = frechet_distance(classify(other, real[-500:])[0], classify(other, test_images)[0])
    assert math.isclose(scores["frechet_distance"], want, rel_tol=1e-6, abs_tol=1e-12)
    assert scores["frac_in_distribution"] > 0.9


def test_a_classifier_in_training_mode_is_run_in_eval_mode_and_given_back_unchanged(classifier, data_dir):
    """Review, 2026-12-04: in training mode BatchNorm normalised by each chunk and updated its running statistics,
    so features depended on the batch size and the classifier changed under torch.no_grad()."""
    images = load_mnist("test", data_dir, limit=60)[0]
    want = classify(classifier, images)[0]
    classifier.train()
    try:
        before = {k: v.clone() for k, v in classifier.state_dict().items()}
        got = classify(classifier, images, batch_size=7)[0]
        assert classifier.training                                   # given back in the mode it came in
        assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    finally:
        classifier.eval()
    assert torch.allclose(got, want, atol=1e-5)


def test_frechet_distance_of_a_set_with_itself_is_zero_not_negative():
    features = torch.randn(10, 128, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance(features, features) == 0.0


@pytest.mark.skipif(not (torch.cuda.is_available() or torch.backends.mps.is_available()), reason="needs a GPU")
def test_metrics_take_features_made_on_a_gpu(classifier, data_dir):
    """The metrics run in float64 on the CPU, wherever the features come from: Apple's MPS has no float64, and
    KID's and the digit Gaussians' CPU matrices must not meet CUDA features."""
    device = "cuda" if torch.cuda.is_available() else "mps"
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 8, generator=gen), torch.randn(40, 8, generator=gen) + 0.5
    on_gpu = a.to(device), b.to(device)
    assert frechet_distance(*on_gpu) == pytest.approx(frechet_distance(a, b))
    assert metrics.kernel_inception_distance(*on_gpu, subsets=3, subset_size=20) == pytest.approx(
        metrics.kernel_inception_distance(a, b, subsets=3, subset_size=20))
    gaussians = fit_digit_gaussians(on_gpu[0], (torch.arange(40) % 2).to(device), on_gpu[1])
    assert gaussians.distance(on_gpu[1]).shape == (40,)
    images = load_mnist("test", root=data_dir)[0][:8]
    try:
        feats, probs = classify(classifier.to(device), images)
    finally:
        classifier.to("cpu")  # the fixture is shared with the other tests
    assert feats.device.type == "cpu" and probs.dtype == torch.float64


@pytest.mark.parametrize("call,error,words", [
    (lambda c: evaluate_samples(-torch.ones(4, 1, 28, 28), torch.tensor([0, 1, 42, 3]), classifier=c), ValueError,
     "labels must be the requested digits, 0 to 9, got values from 0 to 42"),
    (lambda c: evaluate_samples(-torch.ones(4, 1, 28, 28), seed="abc", classifier=c), TypeError, "seed must be an integer"),
    (lambda c: evaluate_samples(-torch.ones(4, 1, 28, 28), kid_subsets=0, classifier=c), ValueError, "kid_subsets must be"),
    (lambda c: evaluate_samples(-torch.ones(4, 1, 28, 28), classifier="resnet"), TypeError, "classifier must be an MNISTClassifier"),
    (lambda c: classify(None, -torch.ones(4, 1, 28, 28)), TypeError, "classifier must be an MNISTClassifier"),
    (lambda c: metrics.kernel_inception_distance(torch.randn(5, 4), torch.randn(5, 4), generator=123), TypeError,
     "generator must be None or a torch.Generator"),
    (lambda c: fit_digit_gaussians(torch.randn(20, 4, dtype=torch.float64), torch.arange(20) % 2,
                                   torch.randn(10, 3, dtype=torch.float64)), ValueError,
     r"held_out must have the width of features \(4 columns\), got 3"),
    (lambda c: metrics.load_classifier(device="gpu"), ValueError, "device must be a torch device"),
])
def test_scoring_bad_input_is_named(classifier, call, error, words):
    with pytest.raises(error, match=words):
        call(classifier)
