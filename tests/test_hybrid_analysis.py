"""Chu et al.'s representation analyses (Sec. 4.3: Eq. 2's JS divergence between subjects,
Fig. 4's sums, Fig. 3's t-SNE) and the linear-SVM comparison rows (Sec. 4.4: HOG + one linear
SVM per AU), against scipy / scikit-image references and hand-worked values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from au_hybrid.analysis import (
    SubjectDivergence,
    fig4_scores,
    format_fig4,
    js_divergence,
    median_scale,
    subject_distributions,
    subject_divergence,
    subject_means,
    tsne_embedding,
    tsne_figure,
    tsne_figure_size,
)
from au_hybrid.svm import LinearSVMDetector, hog_features


def _random_distribution(rng: np.random.Generator, size: int, zeros: int = 0) -> np.ndarray:
    p = rng.dirichlet(np.ones(size))
    p[rng.choice(size, zeros, replace=False)] = 0.0
    return p / p.sum()


# --- Eq. 2: JS divergence -------------------------------------------------------------------


def test_js_divergence_is_scipy_jensenshannon_squared() -> None:
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(0)
    for trial in range(30):
        size = int(rng.integers(2, 60))
        zeros = int(rng.integers(0, size // 2 + 1)) if trial % 2 else 0  # 0 log 0 = 0
        p, q = _random_distribution(rng, size, zeros), _random_distribution(rng, size, zeros)
        expected = distance.jensenshannon(p, q) ** 2  # base e, the square root of Eq. 2
        assert js_divergence(p, q) == pytest.approx(expected, rel=1e-9, abs=1e-14)
        assert js_divergence(p, q) == js_divergence(q, p)
        assert js_divergence(p, p) == 0.0
    # disjoint supports: the maximum, log 2 in nats
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        ([0.5, 0.6], [0.5, 0.5], "summing to 1"),
        ([1.5, -0.5], [0.5, 0.5], "non-negative"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], "differ in length"),
        ([[0.5, 0.5]], [[0.5, 0.5]], "1-D"),
    ],
)
def test_js_divergence_rejects_non_distributions(p: list, q: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        js_divergence(np.array(p), np.array(q))


# --- the subject distributions and the median heuristic -------------------------------------


def test_subject_distributions_hand_worked() -> None:
    # subject "a": rows (1, 3), (3, 1) -> mean (2, 2); subject "b": row (0, 4) -> mean (0, 4)
    features = np.array([[1.0, 3.0], [0.0, 4.0], [3.0, 1.0]])
    subjects = np.array(["a", "b", "a"])
    names, means = subject_means(features, subjects)
    assert names == ["a", "b"]
    np.testing.assert_allclose(means, [[2.0, 2.0], [0.0, 4.0]])
    # m = median of all entries {2, 2, 0, 4} = 2; σ(a) = 1 / (1 + exp(-a / 2))
    assert median_scale(means) == 2.0
    sigma = [1 / (1 + math.exp(-v / 2)) for v in (0.0, 4.0)]  # 0.5, 0.8808
    names, dists = subject_distributions(features, subjects)
    assert names == ["a", "b"]
    np.testing.assert_allclose(dists[0], [0.5, 0.5])
    np.testing.assert_allclose(dists[1], np.array(sigma) / sum(sigma), rtol=1e-12)
    # an explicit scale overrides the heuristic: m = 4 -> σ(0), σ(1)
    _, dists = subject_distributions(features, subjects, scale=4.0)
    sigma = [0.5, 1 / (1 + math.exp(-1.0))]
    np.testing.assert_allclose(dists[1], np.array(sigma) / sum(sigma), rtol=1e-12)
    with pytest.raises(ValueError, match="positive finite scale"):
        subject_distributions(features, subjects, scale=0.0)


def test_median_scale_guards_zero_and_negative_medians() -> None:
    # median of entries {0, 0, 0, 0, 2, -4} is 0 -> median of |non-zero| entries {2, 4} = 3
    assert median_scale(np.array([[0.0, 0.0, 0.0], [0.0, 2.0, -4.0]])) == 3.0
    # negative median -2 -> median of |entries| = 2 (the scale's sign would mirror σ)
    assert median_scale(np.array([[-1.0, -3.0], [-2.0, -2.0]])) == 2.0
    assert median_scale(np.zeros((3, 4))) == 1.0
    assert median_scale(np.array([[1.0, 5.0, 7.0]])) == 5.0


def test_subject_distributions_are_distributions() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(0.0, 50.0, size=(300, 17))  # large values: no entry underflows
    subjects = rng.integers(0, 7, size=300)
    names, dists = subject_distributions(features, subjects)
    assert names == [str(s) for s in range(7)] and dists.shape == (7, 17)
    assert (dists > 0).all()
    np.testing.assert_allclose(dists.sum(axis=1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(300,\)"):
        subject_distributions(features, subjects[:-1])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        subject_distributions(features[:, 0], subjects)


# --- Fig. 4: summed divergences -------------------------------------------------------------


def _subject_features(offset: float, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """8 subjects x 300 frames of 24-D features from one distribution, plus ``offset`` times a
    subject-specific direction (the subject's "identity")."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"S{i:02d}" for i in range(8)], 300)
    features = rng.gamma(2.0, 1.0, size=(len(subjects), 24))
    identity = rng.normal(size=(8, 24))
    return features + offset * np.repeat(identity, 300, axis=0), subjects


def test_subject_divergence_zero_for_identical_subjects() -> None:
    rng = np.random.default_rng(3)
    frames = rng.gamma(2.0, 1.0, size=(50, 10))
    # every subject has the very same frames, in another order
    features = np.concatenate([frames[rng.permutation(50)] for _ in range(4)])
    subjects = np.repeat(["p", "q", "r", "s"], 50)
    result = subject_divergence(features, subjects)
    np.testing.assert_allclose(result.per_subject, 0.0, atol=1e-12)


def test_subject_divergence_grows_with_subject_offsets() -> None:
    same = subject_divergence(*_subject_features(0.0))
    shifted = subject_divergence(*_subject_features(1.0))
    assert same.per_subject.max() < 1e-3  # sampling noise only
    assert shifted.per_subject.min() > 20 * same.per_subject.max()
    assert shifted.mean > same.mean
    for result in (same, shifted):
        assert result.subjects == [f"S{i:02d}" for i in range(8)]
        assert result.pairwise.shape == (8, 8)
        np.testing.assert_array_equal(result.pairwise, result.pairwise.T)
        np.testing.assert_array_equal(np.diag(result.pairwise), 0.0)
        assert (result.pairwise[~np.eye(8, dtype=bool)] > 0).all()
        np.testing.assert_allclose(result.per_subject, result.pairwise.sum(axis=1))
        assert result.mean == pytest.approx(result.per_subject.mean())
        assert result.std == pytest.approx(result.per_subject.std())
    # each entry is Eq. 2 on the subjects' distributions
    _, dists = subject_distributions(*_subject_features(1.0))
    assert shifted.pairwise[2, 5] == pytest.approx(js_divergence(dists[2], dists[5]), rel=1e-12)
    assert shifted.scale == median_scale(subject_means(*_subject_features(1.0))[1])


def test_subject_divergence_needs_two_subjects() -> None:
    with pytest.raises(ValueError, match="at least 2 subjects"):
        subject_divergence(np.ones((5, 3)), np.array(["a"] * 5))


def test_fig4_log_scale_and_format() -> None:
    np.testing.assert_allclose(fig4_scores(np.array([1e-6, math.e * 1e-6])), [0.0, 1.0])
    np.testing.assert_allclose(fig4_scores(np.array([1e-3]), base=10), [3.0])
    d = np.exp(np.array([3.5, 3.7])) / 1e6  # log(d x 1e6) = 3.5, 3.7: mean 3.6, std 0.1
    result = SubjectDivergence(["a", "b"], np.zeros((2, 2)), d, 1.0)
    assert format_fig4(result) == "3.60±.10"
    with pytest.raises(ValueError, match="non-negative"):
        fig4_scores(np.array([-1.0]))


# --- Fig. 3: t-SNE --------------------------------------------------------------------------


def _two_clusters(n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(n, 12))
    features[: n // 2] += 8.0
    return features


def test_tsne_embedding_shape_determinism_and_clusters() -> None:
    pytest.importorskip("sklearn")
    features = _two_clusters()
    first = tsne_embedding(features, seed=7, perplexity=10.0, threads=1)
    assert first.shape == (60, 2)
    np.testing.assert_array_equal(
        first, tsne_embedding(features, seed=7, perplexity=10.0, threads=1)
    )
    # the two clusters stay apart: every point is nearer its cluster's centre
    a, b = first[:30].mean(axis=0), first[30:].mean(axis=0)
    near_a = np.linalg.norm(first - a, axis=1) < np.linalg.norm(first - b, axis=1)
    np.testing.assert_array_equal(near_a, np.arange(60) < 30)
    # 5 frames: the default perplexity 30 is clipped below N instead of failing
    assert tsne_embedding(features[:5], threads=1).shape == (5, 2)


def test_tsne_figure_writes_two_panels(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    features = _two_clusters()
    au = np.where(np.arange(60) < 30, 1, 0)
    au[::10] = -1
    subjects = np.array(["F001", "M002", "F003"])[np.arange(60) % 3]
    path = tsne_figure(features, au, subjects, tmp_path / "fig" / "tsne.png", threads=1)
    assert tsne_figure_size(3) == (1124, 454)  # 3 margins, 2 panels + gaps, 2 legends
    assert tsne_figure_size(40) == (1234, 454)  # a second subject legend column
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == tsne_figure_size(3)
        pixels = np.asarray(image.convert("RGB"))
    # inside the two 400-pixel plotting squares (no text there): the dots' colours only
    top, au_left, subject_left = 16 + 22, 16, 16 + 400 + 8 + 150 + 16
    panels = [
        pixels[top + 2 : top + 399, x + 2 : x + 399].reshape(-1, 3) for x in (au_left, subject_left)
    ]
    colours = [{tuple(c) for c in np.unique(p, axis=0)} - {(255, 255, 255)} for p in panels]
    # the AU panel: present (red), absent (blue), unknown (grey); the other: 3 subjects
    assert colours[0] == {(200, 50, 50), (70, 110, 180), (200, 200, 200)}
    assert len(colours[1]) == 3 and not colours[1] & colours[0]
    with pytest.raises(ValueError, match="unknown"):
        tsne_figure(features, np.full(60, 2), subjects, tmp_path / "bad.png")


# --- HOG features ---------------------------------------------------------------------------


def test_hog_features_match_skimage() -> None:
    pytest.importorskip("skimage")
    from skimage.color import rgb2gray
    from skimage.feature import hog

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(3, 32, 40, 3), dtype=np.uint8)
    features = hog_features(images, orientations=8, pixels_per_cell=8, cells_per_block=2)
    for i in range(3):
        expected = hog(
            rgb2gray(images[i]), orientations=8, pixels_per_cell=(8, 8), cells_per_block=(2, 2)
        )
        assert features.shape == (3, expected.size)
        np.testing.assert_allclose(features[i], expected, rtol=1e-6, atol=1e-7)
    assert features.dtype == np.float32
    # a (N, 3, H, W) uint8 tensor gives the same features
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(
        hog_features(tensor, orientations=8, pixels_per_cell=8, cells_per_block=2), features
    )


def test_hog_features_reject_bad_input() -> None:
    pytest.importorskip("skimage")
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        hog_features(images.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        hog_features(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        hog_features(images[..., 0])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        hog_features(torch.from_numpy(images))  # channels last, as a tensor
    with pytest.raises(ValueError, match="smaller than one HOG block"):
        hog_features(np.zeros((1, 12, 32, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        hog_features(images.tolist())  # type: ignore[arg-type]


# --- linear SVMs ----------------------------------------------------------------------------


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features whose column j decides AU j with a gap of 2 around 0, at an odd scale."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    y = (x[:, :3] > 0).astype(np.int64)
    x[:, :3] += np.where(y == 1, 1.0, -1.0)
    x *= np.array([1.0, 100.0, 0.01, *[1.0] * 7])  # features of very different scales
    return x, y


def _f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    tp = int(((predicted == 1) & (labels == 1)).sum())
    wrong = int(((predicted == 1) & (labels == 0)).sum() + ((predicted == 0) & (labels == 1)).sum())
    return 2 * tp / (2 * tp + wrong)


def test_linear_svm_separates_separable_aus() -> None:
    pytest.importorskip("sklearn")
    x, y = _separable(300, seed=6)
    y_train = y.copy()
    y_train[::7, 1] = -1  # some unknown labels
    detector = LinearSVMDetector(aus=[1, 2, 4]).fit(x, y_train)
    x_test, y_test = _separable(200, seed=7)
    predicted = detector.predict(x_test)
    assert predicted.shape == (200, 3) and set(np.unique(predicted)) <= {0, 1}
    for j in range(3):
        assert _f1(predicted[:, j], y_test[:, j]) == 1.0
        assert _f1(detector.predict(x)[:, j], y[:, j]) == 1.0
    scores = detector.decision_function(x_test)
    np.testing.assert_array_equal(predicted, (scores > 0).astype(int))


def test_linear_svm_ignores_unknown_labels() -> None:
    pytest.importorskip("sklearn")
    x, y = _separable(200, seed=8)
    x_test, _ = _separable(50, seed=9)
    # adversarial frames: far away, on the wrong side of every AU
    rng = np.random.default_rng(10)
    extra = rng.normal(size=(40, 10)) * 50.0
    extra[:, :3] = -20.0 * np.abs(extra[:, :3])
    reference = LinearSVMDetector().fit(x, y).decision_function(x_test)

    unknown = np.full((40, 3), -1)
    with_unknown = LinearSVMDetector().fit(np.vstack([x, extra]), np.vstack([y, unknown]))
    np.testing.assert_allclose(with_unknown.decision_function(x_test), reference, atol=1e-12)

    # unknown for AU column 0 only (known, negative, for the others): column 0 is unchanged
    partly = np.column_stack([np.full(40, -1), np.zeros((40, 2), dtype=int)])
    mixed = LinearSVMDetector().fit(np.vstack([x, extra]), np.vstack([y, partly]))
    scores = mixed.decision_function(x_test)
    np.testing.assert_allclose(scores[:, 0], reference[:, 0], atol=1e-12)
    # the control: the same frames taken as negatives do move the fit
    assert np.abs(scores[:, 1:] - reference[:, 1:]).max() > 1e-3


def test_linear_svm_names_an_au_with_one_class() -> None:
    pytest.importorskip("sklearn")
    x, y = _separable(60, seed=11)
    y[:, 1] = 0
    y[:5, 1] = -1
    with pytest.raises(ValueError, match=r"AU column 1 \(AU2\).*0 present, 55 absent, 5 unknown"):
        LinearSVMDetector(aus=[1, 2, 4]).fit(x, y)
    y[:, 1] = -1
    with pytest.raises(ValueError, match=r"AU column 1 has only one class.*0 present, 0 absent"):
        LinearSVMDetector().fit(x, y)


def test_linear_svm_rejects_bad_input() -> None:
    pytest.importorskip("sklearn")
    x, y = _separable(40, seed=12)
    with pytest.raises(RuntimeError, match="call fit"):
        LinearSVMDetector().predict(x)
    with pytest.raises(ValueError, match="labels in"):
        LinearSVMDetector().fit(x, np.where(y == 1, 2, 0))
    with pytest.raises(ValueError, match=r"labels of shape \(40, L\)"):
        LinearSVMDetector().fit(x, y[:-1])
    with pytest.raises(ValueError, match="3 label columns but 2 aus"):
        LinearSVMDetector(aus=[1, 2]).fit(x, y)
    with pytest.raises(ValueError, match="dimension 10"):
        LinearSVMDetector().fit(x, y).decision_function(x[:, :5])
    with pytest.raises(ValueError, match="positive cost"):
        LinearSVMDetector(C=0.0)
