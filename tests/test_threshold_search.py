"""Tests for the per-AU threshold search (Ji et al. 2020, Sec. 3.6) in au_lightning.metrics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from au_lightning.metrics import ThresholdSearch, f1_at_thresholds, search_thresholds


@pytest.fixture(autouse=True)
def _quiet_torchmetrics() -> None:
    warnings.filterwarnings("ignore", category=UserWarning, module="torchmetrics")


def _random_case(seed: int, n: int = 300, num_labels: int = 4, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    probs = rng.random((n, num_labels))
    if decimals is not None:
        probs = np.round(probs, decimals)  # many ties
    # Labels correlated with the probabilities, with ~15% unknowns.
    target = (rng.random((n, num_labels)) < 0.2 + 0.6 * probs).astype(np.int64)
    target[rng.random((n, num_labels)) < 0.15] = -1
    return torch.from_numpy(probs), torch.from_numpy(target)


def test_hand_worked_example() -> None:
    probs = torch.tensor(
        [
            [0.9, 0.95],
            [0.8, 0.8],
            [0.7, 0.7],
            [0.4, 0.45],
            [0.3, 0.2],
            [0.1, 0.9],
        ],
        dtype=torch.float64,
    )
    target = torch.tensor([[1, 1], [0, 0], [1, 0], [1, 1], [0, 0], [0, -1]])
    # AU 0, P = 3 positives. Predicting the k highest values positive, F1 = 2TP / (k + P):
    #   k=0 (thr 0.9):  0        k=1 (0.85): 2/4      k=2 (0.75): 2/5     k=3 (0.55): 4/6
    #   k=4 (0.35): TP=3 -> 6/7  k=5 (0.2):  6/8      k=6 (0.05): 6/9
    #   -> best threshold 0.35 (between 0.4 and 0.3), F1 = 6/7.
    # AU 1, row 5 unknown, known values 0.95+, 0.8-, 0.7-, 0.45+, 0.2-, P = 2:
    #   k=1 (0.875): 2/3   k=2 (0.75): 2/4   k=3 (0.575): 2/5   k=4 (0.325): 4/6   k=5 (0.1): 4/7
    #   -> tie at 2/3 between 0.875 and 0.325; 0.325 is closer to 0.5, so it wins.
    #   (Were the unknown 0.9 counted as a negative, 0.325 would drop to 4/7 and 0.925 win.)
    thresholds, f1 = search_thresholds(probs, target)
    assert thresholds.dtype == torch.float64 and f1.dtype == torch.float64
    assert thresholds.shape == (2,) and f1.shape == (2,)
    assert thresholds.tolist() == pytest.approx([0.35, 0.325], abs=1e-12)
    assert f1.tolist() == pytest.approx([6 / 7, 2 / 3], abs=1e-12)


def test_tie_prefers_nearest_half_then_smaller() -> None:
    # Dyadic values so the midpoints 0.75, 0.5, 0.25 and the distances to 0.5 are exact.
    values = [0.875, 0.625, 0.375, 0.375, 0.375, 0.125, 0.125, 0.125, 0.125, 0.125]
    labels = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    # P = 3. thr 0.75: TP1, 1 predicted -> 2/4; thr 0.5: 2/5; thr 0.25: TP2, 5 predicted -> 4/8;
    # thr 0.0625: 6/13. Tie 0.5 at 0.75 and 0.25, equally far from 0.5 -> the smaller, 0.25.
    thresholds, f1 = search_thresholds(
        torch.tensor(values, dtype=torch.float64)[:, None], torch.tensor(labels)[:, None]
    )
    assert thresholds.item() == 0.25
    assert f1.item() == 0.5


def test_zero_probability_is_never_predicted_positive() -> None:
    # `prob > threshold` cannot select prob 0 with a threshold >= 0, so with v_min = 0 there is
    # no "predict everything" candidate.
    probs = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.6, 0.6]], dtype=torch.float64)
    target = torch.tensor([[1, 0], [1, 1], [0, 1]])
    # AU 0: thr 0.3 -> TP0 -> F1 0; thr 0.6 -> F1 0. Tie: 0.6 is closer to 0.5.
    # AU 1: thr 0.3 -> TP1, 1 predicted, P=2 -> 2/3 (predicting all would give 4/5).
    thresholds, f1 = search_thresholds(probs, target)
    assert thresholds.tolist() == pytest.approx([0.6, 0.3], abs=1e-12)
    assert f1.tolist() == pytest.approx([0.0, 2 / 3], abs=1e-12)
    torch.testing.assert_close(f1, f1_at_thresholds(probs, target, thresholds).double())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_f1_at_thresholds_and_sklearn(seed: int) -> None:
    probs, target = _random_case(seed)
    thresholds, f1 = search_thresholds(probs, target)
    torch.testing.assert_close(
        f1, f1_at_thresholds(probs, target, thresholds).double(), atol=1e-6, rtol=0
    )
    for j in range(probs.shape[1]):
        known = target[:, j] >= 0
        pred = (probs[known, j] > thresholds[j]).numpy()
        expected = f1_score(target[known, j].numpy(), pred, zero_division=0)
        assert f1[j].item() == pytest.approx(expected, abs=1e-12)


def test_float32_midpoint_that_rounds_onto_the_upper_value() -> None:
    # Two adjacent float32 values whose float64 midpoint rounds (to even) onto the upper one:
    # the threshold must still separate them when compared in float32.
    a = np.nextafter(np.float32(0.5), np.float32(1))
    b = np.nextafter(a, np.float32(1))
    assert np.float32((np.float64(a) + np.float64(b)) / 2) == b
    probs = torch.tensor([[a], [b]], dtype=torch.float32)
    target = torch.tensor([[0], [1]])
    thresholds, f1 = search_thresholds(probs, target)
    assert f1.item() == 1.0
    assert f1_at_thresholds(probs, target, thresholds).item() == 1.0


def _grid_best_f1(probs: torch.Tensor, target: torch.Tensor, grid: np.ndarray) -> np.ndarray:
    """Best F1 over ``grid`` per AU, via one multilabel sklearn call (one column per threshold)."""
    best = []
    for j in range(probs.shape[1]):
        known = (target[:, j] >= 0).numpy()
        p = probs[:, j].numpy()[known]
        y = target[:, j].numpy()[known]
        pred = (p[:, None] > grid[None, :]).astype(int)
        y_rep = np.repeat(y[:, None], grid.size, axis=1)
        best.append(f1_score(y_rep, pred, average=None, zero_division=0).max())
    return np.array(best)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_grid_threshold_beats_the_search(seed: int) -> None:
    grid = np.linspace(0, 1, 1001)
    # Continuous probabilities: the grid can only tie or lose.
    probs, target = _random_case(seed)
    _, f1 = search_thresholds(probs, target)
    assert np.all(_grid_best_f1(probs, target, grid) <= f1.numpy() + 1e-12)
    # Probabilities on a 0.01 grid: the 0.001 grid reaches every cut, so the optimum is equal.
    probs, target = _random_case(seed, decimals=2)
    _, f1 = search_thresholds(probs, target)
    np.testing.assert_allclose(_grid_best_f1(probs, target, grid), f1.numpy(), atol=1e-12)


def test_unknown_rows_are_ignored() -> None:
    probs, target = _random_case(5)
    unknown = target == -1
    assert unknown.any()
    changed = probs.clone()
    changed[unknown] = torch.rand(
        int(unknown.sum()), dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    thresholds, f1 = search_thresholds(probs, target)
    thresholds2, f12 = search_thresholds(changed, target)
    assert torch.equal(thresholds, thresholds2) and torch.equal(f1, f12)
    # Marking rows unknown is the same as dropping them (for an AU, here column 0).
    keep = target[:, 0] >= 0
    t0, f0 = search_thresholds(probs[keep, :1], target[keep, :1])
    assert thresholds[0] == t0[0] and f1[0] == f0[0]


def test_au_without_positives_or_known_rows_keeps_half() -> None:
    probs = torch.tensor([[0.9, 0.2, 0.7], [0.1, 0.8, 0.3], [0.6, 0.4, 0.9]], dtype=torch.float64)
    target = torch.tensor([[1, 0, -1], [0, -1, -1], [1, 0, -1]])
    thresholds, f1 = search_thresholds(probs, target)
    assert thresholds[1:].tolist() == [0.5, 0.5]
    assert f1[1:].tolist() == [0.0, 0.0]
    assert thresholds[0].item() == pytest.approx(0.35) and f1[0].item() == 1.0


def test_metric_accumulates_batches_like_the_concatenation() -> None:
    probs, target = _random_case(7, n=250)
    metric = ThresholdSearch(num_labels=4)
    for start in range(0, 250, 64):
        metric.update(probs[start : start + 64], target[start : start + 64])
    thresholds, f1 = metric.compute()
    expected_thr, expected_f1 = search_thresholds(probs, target)
    assert torch.equal(thresholds, expected_thr) and torch.equal(f1, expected_f1)
    metric.reset()
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()


def test_metric_errors() -> None:
    metric = ThresholdSearch(num_labels=3)
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()
    with pytest.raises(ValueError, match=r"`probs` must have shape \(B, 3\), got \(4, 2\)"):
        metric.update(torch.rand(4, 2), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"same shape as the predictions \(4, 3\), got \(4, 2\)"):
        metric.update(torch.rand(4, 3), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_labels"):
        ThresholdSearch(num_labels=0)


def test_metric_single_label_is_squeezed_by_torchmetrics() -> None:
    probs, target = _random_case(9, num_labels=1)
    metric = ThresholdSearch(num_labels=1)
    metric.update(probs, target)
    thresholds, f1 = metric.compute()
    expected_thr, expected_f1 = search_thresholds(probs, target)
    assert thresholds.shape == () and f1.shape == ()
    assert thresholds == expected_thr[0] and f1 == expected_f1[0]


def test_score_criterion_hand_worked() -> None:
    # One AU, 6 frames, P = 2: values 0.9+, 0.8-, 0.7-, 0.6-, 0.3+, 0.1-.
    #   k highest positive: k=1 (0.85): TP 1, acc 5/6, F1 2/3, score 0.75
    #   k=5 (0.2): TP 2, acc 3/6, F1 4/7, score 0.536; k=0: acc 4/6, F1 0, score 1/3
    # F1 alone prefers k=1 too (2/3 > 4/7); with a 7th negative at 0.95 (acc of "none"
    # rises, F1 at k=2 becomes 1/2): k=2 (0.85): acc 5/7, F1 1/2 -> 0.607; k=0: acc 5/7,
    # F1 0 -> 0.357; k=6 (0.2): TP 2, acc 3/7, F1 4/8 -> 0.464. Best score: 0.85 (k=2).
    probs = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.3], [0.1]], dtype=torch.float64)
    target = torch.tensor([[1], [0], [0], [0], [1], [0]])
    thresholds, f1 = search_thresholds(probs, target, criterion="score")
    assert thresholds.item() == pytest.approx(0.85) and f1.item() == pytest.approx(2 / 3)
    probs7 = torch.cat([probs, torch.tensor([[0.95]], dtype=torch.float64)])
    target7 = torch.cat([target, torch.tensor([[0]])])
    thresholds, f1 = search_thresholds(probs7, target7, criterion="score")
    assert thresholds.item() == pytest.approx(0.85) and f1.item() == pytest.approx(0.5)


def test_score_criterion_matches_sklearn_brute_force() -> None:
    from sklearn.metrics import accuracy_score

    probs, target = _random_case(5, n=200, num_labels=3, decimals=2)
    thresholds, f1 = search_thresholds(probs, target, criterion="score")
    for j in range(3):
        known = target[:, j] >= 0
        p, y = probs[known, j].numpy(), target[known, j].numpy()
        candidates = np.concatenate([[0.0], np.unique(p)])  # prob > t, t at each value

        def score(t: float, p: np.ndarray = p, y: np.ndarray = y) -> float:
            pred = (p > t).astype(int)
            return (accuracy_score(y, pred) + f1_score(y, pred, zero_division=0)) / 2

        best = max(score(t) for t in candidates)
        assert score(float(thresholds[j])) == pytest.approx(best, abs=1e-12)
        pred = (p > float(thresholds[j])).astype(int)
        assert f1[j].item() == pytest.approx(f1_score(y, pred, zero_division=0), abs=1e-12)


def test_score_criterion_through_the_metric_and_bad_criterion() -> None:
    probs, target = _random_case(6)
    metric = ThresholdSearch(num_labels=4, criterion="score")
    metric.update(probs[:150], target[:150])
    metric.update(probs[150:], target[150:])
    for got, expected in zip(
        metric.compute(), search_thresholds(probs, target, "score"), strict=True
    ):
        assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="criterion"):
        ThresholdSearch(num_labels=4, criterion="acc")
    with pytest.raises(ValueError, match="criterion"):
        search_thresholds(probs, target, criterion="auc")
