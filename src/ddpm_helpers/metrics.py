r"""How good are generated digits? Scores computed with a small MNIST classifier shipped in the package.

The classifier (:class:`MNISTClassifier`, trained by ``scripts/train_classifier.py``, weights in
``assets/mnist_classifier.safetensors``) gives 128-dimensional penultimate features and class
probabilities. From them:

* **Frechet distance** (the "FID" idea, Heusel et al. 2017, on this classifier's features instead of
  Inception's): :math:`\lVert\mu_1-\mu_2\rVert^2 + \mathrm{tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1\Sigma_2)^{1/2})`
  between generated images and the MNIST test set. It depends on the sample count, so it is always
  reported beside the **real-data floor**: the same distance for as many *training* images.
* **KID** (Binkowski et al. 2018): an unbiased squared MMD with the kernel :math:`(x^\top y/d + 1)^3`,
  averaged over random subsets; less biased than FD for small samples.
* **confidence**: the classifier's mean top-class probability, the share above 0.9, and the class
  histogram (a good generator covers all ten digits evenly).
* **accuracy** for class-conditional samples: the share classified as the requested digit.
* **in distribution**: the share of samples whose features lie where real digits' features lie. Confidence
  alone cannot say so: like most classifiers, this one is *more* confident on pure noise (1.00) than on real
  test digits (0.94), because features far from any training image give extreme logits. So each class's
  features are modelled as a Gaussian with one shared covariance (Lee et al. 2018, "A simple unified framework
  for detecting out-of-distribution samples"), and a sample counts as in distribution when its smallest
  squared Mahalanobis distance to a class mean is within the 99th percentile of held-out real digits'. Real
  digits score about 0.99, noise 0.

The numbers are comparable within this course, not with FID values published for other data sets.

The reference features (the classifier run on the 10,000 MNIST test images: about 10 s on a 2-core CPU) are
computed once per classifier, data and device and kept in ``~/.cache/ddpm_helpers/features/`` (or under
``$XDG_CACHE_HOME``), so that a new process or notebook scores at once. A file's name is a hash of the
classifier's weights, the images, the device type and the torch version: change any of them and the features
are computed afresh. Delete the folder to start over; if it cannot be written, nothing is cached on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import (_show, check_available_device, check_float, check_int, check_path, check_pixel_range,
                        check_tensor)
from .checkpoint import save_atomically
from .data import cache_dir, load_mnist

CLASSIFIER_FILE = "mnist_classifier.safetensors"
MAX_KID_SUBSETS = 10_000   # KID's usual count is 50 (100 in torch-fidelity); 10**12 subsets would run for ever


class MNISTClassifier(nn.Module):
    """Five 3x3 conv layers with BatchNorm (32-32-pool-64-64-pool-128), global average pooling, a linear head.
    Input: (B, 1, 28, 28) in [-1, 1]. About 140k parameters."""

    num_features = 128

    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, (B, 128). Checks the shape only (not the pixel range: :func:`classify` does)."""
        check_tensor("x", x, ndim=4, floating=True)
        if x.shape[1:] != (1, 28, 28):
            raise ValueError(f"x must have shape (N, 1, 28, 28): a batch of MNIST digits, got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def load_classifier(path: str | None = None, device: torch.device | str = "cpu") -> MNISTClassifier:
    """The shipped classifier (or weights at ``path``), in eval mode. Loads a safetensors file: no code runs."""
    from safetensors.torch import load_file

    if path is None:
        with resources.as_file(resources.files("ddpm_helpers.assets").joinpath(CLASSIFIER_FILE)) as p:
            state = load_file(str(p))
    else:
        path = check_path("path", path, "a .safetensors file", optional=True)
        if not path.is_file():
            raise FileNotFoundError(f"classifier weights not found: path={str(path)!r}")
        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors' own words ("header too large") name no file and no format
            raise ValueError(f"path={str(path)!r} is not a safetensors file of classifier weights ({err})") from None
    model = MNISTClassifier()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # another network's weights: torch lists every missing and unexpected key
        raise ValueError(f"path={str(path)!r} holds weights of another network, not of MNISTClassifier "
                         f"({str(err).splitlines()[-1].strip()[:200]})") from None
    return model.to(check_available_device("device", device)).eval()


def classify(
    classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the classifier on images in [-1, 1]; returns (features (N, 128), probabilities (N, 10)) in float64 on CPU.
    The classifier runs in eval mode (and is given back in the mode it came in)."""
    _check_classifier(classifier)
    _check_digits("images", images)
    check_int("batch_size", batch_size, min_value=1)
    return _classify(classifier, images, batch_size)


def _check_digits(name: str, images: torch.Tensor) -> torch.Tensor:
    """The checks of every image the classifier sees: finite, (N, 1, 28, 28), pixels in [-1, 1]."""
    check_tensor(name, images, ndim=4, floating=True, finite=True)
    if images.shape[1:] != (1, 28, 28):
        raise ValueError(f"{name} must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    return check_pixel_range(name, images)


def _check_classifier(classifier) -> None:
    if not (isinstance(classifier, nn.Module) and callable(getattr(classifier, "features", None))
            and isinstance(getattr(classifier, "head", None), nn.Module)
            and next(classifier.parameters(), None) is not None):
        raise TypeError("classifier must be an MNISTClassifier (load_classifier()) or a torch.nn.Module with "
                        f"parameters, a .features(x) method and a .head layer, got {_show(classifier)}")


@torch.no_grad()
def _classify(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`classify` without the checks (for images checked already). In training mode, BatchNorm would
    normalise by each chunk's own statistics (features depending on the batch size) and update its running
    statistics: so eval mode, then the mode the classifier came in."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    feats, probs = [], []
    try:
        for chunk in images.split(batch_size):
            f = classifier.features(chunk.to(device).float())
            # to the CPU before float64: Apple's MPS has no float64 at all
            feats.append(f.cpu().double())
            probs.append(F.softmax(classifier.head(f).cpu().double(), dim=1))
    finally:
        classifier.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def _check_features(name: str, f: torch.Tensor) -> torch.Tensor:
    check_tensor(name, f, ndim=2, floating=True, finite=True)
    if f.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows (samples) to estimate a covariance, got {f.shape[0]}")
    return f.detach().cpu().double()  # the metrics run in float64 on the CPU, wherever the features were made


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    r"""Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D).

    :math:`\mathrm{tr}((\Sigma_a\Sigma_b)^{1/2})` is the sum of the square roots of the eigenvalues of
    :math:`\Sigma_a\Sigma_b`, which are real and non-negative (it is similar to a PSD matrix).
    """
    a, b = _check_features("features_a", features_a), _check_features("features_b", features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same width, got {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))  # one feature: 0-D
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    value = float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum())
    return max(0.0, value)  # a set against itself can come out at -1e-6 (rounding in the eigenvalues): a distance is >= 0


def kernel_inception_distance(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    subsets: int = 50,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID: mean and standard deviation over ``subsets`` of the unbiased MMD^2 with a cubic polynomial kernel.
    ``subset_size`` is capped at the smaller sample count. Deterministic for a given ``generator``.

    The standard deviation is the sample one (divided by ``subsets - 1``); torchmetrics and torch-fidelity divide by
    ``subsets``, so theirs is ``sqrt((subsets - 1) / subsets)`` times this one (1 % smaller at 50 subsets)."""
    a, b = _check_features("features_a", features_a), _check_features("features_b", features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same width, got {a.shape[1]} and {b.shape[1]}")
    check_int("subsets", subsets, min_value=1, max_value=MAX_KID_SUBSETS)   # each subset is one kernel matrix
    check_int("subset_size", subset_size, min_value=2)
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise TypeError("generator must be None or a torch.Generator on the CPU (the subsets are drawn there), got "
                        + (_show(generator) if not isinstance(generator, torch.Generator) else f"one on {generator.device}"))
    m = min(subset_size, a.shape[0], b.shape[0])
    d = a.shape[1]
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off = 1 - torch.eye(m, dtype=x.dtype)
        mmd = (kxx * off).sum() / (m * (m - 1)) + (kyy * off).sum() / (m * (m - 1)) - 2 * kxy.mean()
        values.append(float(mmd))
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class DigitGaussians:
    """Class-conditional Gaussians with one shared covariance, fitted to classifier features of real digits.

    ``means`` (K, D); ``whitening`` (D, D), a matrix W with W W^T = Sigma^{-1}, so that the squared Mahalanobis
    distance (f - mu)^T Sigma^{-1} (f - mu) is ``|((f - mu) @ W)|^2``; ``threshold``: the ``quantile`` of held-out
    real digits' distances, below which a sample counts as in distribution.
    """

    means: torch.Tensor
    whitening: torch.Tensor
    threshold: float
    quantile: float

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Smallest squared Mahalanobis distance to a class mean, (N,), for features (N, D)."""
        check_tensor("features", features, ndim=2, floating=True, finite=True)
        if features.shape[1] != self.means.shape[1]:
            raise ValueError(f"features must have {self.means.shape[1]} columns, got {features.shape[1]}")
        z, m = features.detach().cpu().double() @ self.whitening, self.means @ self.whitening
        return torch.cdist(z, m).pow(2).min(1).values

    def in_distribution(self, features: torch.Tensor) -> torch.Tensor:
        """Boolean (N,): is each sample's distance within the real digits' ``quantile``?"""
        return self.distance(features) <= self.threshold


def fit_digit_gaussians(
    features: torch.Tensor,
    labels: torch.Tensor,
    held_out: torch.Tensor,
    quantile: float = 0.99,
) -> DigitGaussians:
    """Fit :class:`DigitGaussians` to ``features`` (N, D) of real digits with their ``labels`` (N,), and set its
    threshold at the ``quantile`` of the distances of ``held_out`` (M, D), other real digits (Lee et al. 2018).
    The covariance gets a ridge of 1e-6 of its mean eigenvalue, so a feature that never varies cannot break it."""
    f = _check_features("features", features)
    check_tensor("labels", labels, ndim=1, floating=False)
    if labels.shape[0] != f.shape[0]:
        raise ValueError(f"labels must hold one label per row of features ({f.shape[0]}), got {labels.shape[0]}")
    labels = labels.cpu()  # with the features, which _check_features has put on the CPU
    held = _check_features("held_out", held_out)
    if held.shape[1] != f.shape[1]:
        raise ValueError(f"held_out must have the width of features ({f.shape[1]} columns), got {held.shape[1]}")
    check_float("quantile", quantile, min_value=0.0, max_value=1.0)
    classes = torch.unique(labels)
    means = torch.stack([f[labels == c].mean(0) for c in classes])  # (K, D), one row per class present
    centred = f - means[torch.searchsorted(classes, labels.contiguous())]
    cov = centred.T @ centred / f.shape[0]
    if not cov.trace() > 0:
        raise ValueError(
            "features must vary within a class to fit a covariance: each of the "
            f"{classes.numel()} classes in labels has only identical rows ({f.shape[0]} rows in all); "
            "pass several different samples per class"
        )
    cov = cov + 1e-6 * cov.trace() / cov.shape[0] * torch.eye(cov.shape[0], dtype=f.dtype)
    whitening = torch.linalg.cholesky(torch.linalg.inv(cov))  # L L^T = Sigma^{-1}
    gaussians = DigitGaussians(means, whitening, 0.0, quantile)
    threshold = float(gaussians.distance(held).quantile(quantile))
    return DigitGaussians(means, whitening, threshold, quantile)


_MEMO: OrderedDict[tuple, object] = OrderedDict()  # reference features and Gaussians of this process, newest last
_MEMO_SIZE = 8


def _memo(key: tuple, compute):
    """``compute()`` once per ``key`` in this process (the ``_MEMO_SIZE`` most recent keys are kept)."""
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    value = compute()
    _MEMO[key] = value
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value


def _fingerprint(*parts: torch.Tensor | str) -> str:
    """A hash of tensors' values (and of strings): equal for equal content, whichever object holds it."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
            digest.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(str(part).encode())
        digest.update(b"|")
    return digest.hexdigest()


def _classifier_fingerprint(classifier: nn.Module) -> str:
    state = classifier.state_dict()
    return _fingerprint(type(classifier).__name__, *[x for k in sorted(state) for x in (k, state[k])])


def _cached_features(classifier: nn.Module, fingerprint: str, images: torch.Tensor, tag: str) -> torch.Tensor:
    """The features of ``images`` under ``classifier`` (whose :func:`_classifier_fingerprint` is ``fingerprint``),
    read from the disk cache if they were computed before."""
    device = next(classifier.parameters()).device
    key = _fingerprint(fingerprint, images, device.type, torch.__version__, "features-v1")
    path = cache_dir() / "features" / f"{tag}-{key[:24]}.pt"
    try:
        feats = torch.load(path, weights_only=True)
        if isinstance(feats, torch.Tensor) and feats.ndim == 2 and feats.shape[0] == len(images) \
                and feats.dtype == torch.float64 and bool(feats.isfinite().all()):
            return feats
    except Exception:  # absent, unreadable or damaged: compute it again (and replace it below)
        pass
    feats = _classify(classifier, images)[0]
    with contextlib.suppress(OSError):  # a read-only home, say: just no cache
        save_atomically(feats, path)
    return feats


def _reference(classifier: nn.Module, split: str, root: str | None, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of the first ``limit`` images of ``split``, under ``classifier`` (the whole test split's
    features are also kept on disk: see the module docstring)."""
    device, fingerprint = str(next(classifier.parameters()).device), _classifier_fingerprint(classifier)

    def compute():
        images, labels = load_mnist(split, root, allow_subset=True, limit=limit)
        if limit is None:
            return _cached_features(classifier, fingerprint, images, f"mnist-{split}"), labels
        return _classify(classifier, images)[0], labels

    return _memo(("features", fingerprint, split, root, limit, device), compute)


def reference_digit_gaussians(
    root: str | None = None, device: str = "cpu", classifier: nn.Module | None = None
) -> DigitGaussians:
    """:class:`DigitGaussians` of a classifier's features (the shipped one on ``device`` by default), fitted on
    the even-numbered MNIST test images and thresholded at the 99th percentile of the odd-numbered ones (the test
    features are computed for the Frechet distance anyway, so this costs no extra classifier pass)."""
    if classifier is None:
        classifier = load_classifier(device=device)
    _check_classifier(classifier)

    def compute():
        features, labels = _reference(classifier, "test", root, None)
        return fit_digit_gaussians(features[0::2], labels[0::2], features[1::2], quantile=0.99)

    return _memo(("gaussians", _classifier_fingerprint(classifier), root, str(next(classifier.parameters()).device)),
                 compute)


def evaluate_samples(
    samples: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    root: str | None = None,
    classifier: nn.Module | None = None,
    kid_subsets: int = 50,
    seed: int = 0,
) -> dict:
    """All the scores for generated images ``samples`` (N, 1, 28, 28) in [-1, 1], as a JSON-ready dict.

    ``labels`` (N,) are the requested classes of class-conditional samples (adds ``accuracy``).
    The reference is the MNIST test set; the floor compares N training images with it. ``classifier`` (the
    shipped one by default) gives the features of the samples and of both references alike.
    """
    _check_digits("samples", samples)
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"samples must hold at least 2 images, got {n}")
    if labels is not None:
        check_tensor("labels", labels, ndim=1, floating=False)
        if labels.shape[0] != n:
            raise ValueError(f"labels must hold one label per sample ({n}), got {labels.shape[0]}")
        if int(labels.min()) < 0 or int(labels.max()) > 9:
            raise ValueError(f"labels must be the requested digits, 0 to 9, got values from {int(labels.min())} "
                             f"to {int(labels.max())}")
    check_int("kid_subsets", kid_subsets, min_value=1, max_value=MAX_KID_SUBSETS)
    seed = check_int("seed", seed)
    check_path("root", root, "a folder that holds MNIST", optional=True)   # before it keys the cache
    if classifier is None:
        classifier = load_classifier()
    _check_classifier(classifier)
    feats, probs = _classify(classifier, samples)
    test_feats = _reference(classifier, "test", root, None)[0]  # the same classifier's features throughout
    train_feats = _reference(classifier, "train", root, n)[0]
    # one generator each, seeded alike: the floor is measured on the same test-set subsets as the samples
    kid, kid_std = kernel_inception_distance(feats, test_feats, kid_subsets, 1000, torch.Generator().manual_seed(seed))
    kid_floor, _ = kernel_inception_distance(train_feats, test_feats, kid_subsets, 1000,
                                             torch.Generator().manual_seed(seed))
    fd, fd_floor = frechet_distance(feats, test_feats), frechet_distance(train_feats, test_feats)
    conf, pred = probs.max(1)
    gaussians = reference_digit_gaussians(root, classifier=classifier)
    inside, inside_floor = gaussians.in_distribution(feats), gaussians.in_distribution(train_feats)
    result = {
        "num_samples": n,
        "num_reference": int(test_feats.shape[0]),
        "frechet_distance": fd,
        "frechet_distance_floor": fd_floor,
        "frechet_ratio": fd / fd_floor if fd_floor > 0 else float("inf"),
        "kid": kid,
        "kid_std": kid_std,
        "kid_floor": kid_floor,
        "mean_confidence": float(conf.mean()),
        "frac_confident_0.9": float((conf > 0.9).double().mean()),
        "frac_in_distribution": float(inside.double().mean()),
        "frac_in_distribution_floor": float(inside_floor.double().mean()),  # the same share for N real images
        "frac_confident_0.9_in_distribution": float((inside & (conf > 0.9)).double().mean()),
        "class_histogram": torch.bincount(pred, minlength=10).tolist(),
    }
    if labels is not None:
        result["accuracy"] = float((pred == labels.cpu()).double().mean())
    return result
