"""Tests for au_lightning.metrics against scikit-learn, hand-worked examples and NumPy ANOVA."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from au_lightning.metrics import (
    AUDetectionMetrics,
    AUIntensityMetrics,
    event_f1,
    f1_at_thresholds,
    icc3_1,
    icc3_1_ratings,
    intensity_mae,
    mean_over_folds,
)

AUS = [1, 2, 4, 6, 12]


@pytest.fixture(autouse=True)
def _quiet_torchmetrics() -> None:
    warnings.filterwarnings("ignore", category=UserWarning, module="torchmetrics")


def _random_batch(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, len(AUS), generator=g) < 0.35).long()
    probs = (0.35 * target + 0.65 * torch.rand(n, len(AUS), generator=g)).clamp(0, 1)
    unknown = torch.rand(n, len(AUS), generator=g) < 0.2
    target[unknown] = -1
    return probs, target


def _sklearn_reference(
    probs: torch.Tensor, target: torch.Tensor, thresholds: np.ndarray
) -> dict[str, np.ndarray]:
    p, t = probs.numpy(), target.numpy()
    f1, acc, auc = [], [], []
    for j in range(t.shape[1]):
        known = t[:, j] >= 0
        yt, yp = t[known, j], p[known, j]
        f1.append(f1_score(yt, yp > thresholds[j], zero_division=0))
        acc.append(accuracy_score(yt, yp > thresholds[j]))
        auc.append(roc_auc_score(yt, yp) if len(np.unique(yt)) == 2 else np.nan)
    return {"f1": np.array(f1), "acc": np.array(acc), "auc": np.array(auc)}


def _as_arrays(out: dict[str, torch.Tensor], prefix: str) -> np.ndarray:
    return np.array([out[f"{prefix}_AU{au}"].item() for au in AUS])


def test_detection_matches_sklearn_on_known_entries() -> None:
    probs, target = _random_batch()
    assert (target == -1).float().mean() > 0.15
    metric = AUDetectionMetrics(AUS)
    metric.update(probs, target)
    out = metric.compute()
    ref = _sklearn_reference(probs, target, np.full(len(AUS), 0.5))
    for name in ("f1", "acc", "auc"):
        np.testing.assert_allclose(_as_arrays(out, name), ref[name], atol=1e-6)
        assert out[f"{name}_mean"].item() == pytest.approx(ref[name].mean(), abs=1e-6)
    assert set(out) == {f"{m}_AU{a}" for m in ("f1", "acc", "auc") for a in AUS} | {
        "f1_mean",
        "acc_mean",
        "auc_mean",
    }


def test_unknown_entries_are_masked_not_negatives() -> None:
    probs, target = _random_batch(seed=1)
    unknown = target == -1
    flipped = torch.where(unknown, 1.0 - probs, probs)
    a, b = AUDetectionMetrics(AUS), AUDetectionMetrics(AUS)
    a.update(probs, target)
    b.update(flipped, target)
    out_a, out_b = a.compute(), b.compute()
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key])
    as_negative = AUDetectionMetrics(AUS)
    as_negative.update(probs, target.clamp(min=0))
    assert not torch.allclose(as_negative.compute()["acc_mean"], out_a["acc_mean"])


def test_per_au_thresholds_match_hand_binarized_sklearn() -> None:
    probs, target = _random_batch(seed=2)
    thr = np.array([0.2, 0.4, 0.5, 0.6, 0.8])
    metric = AUDetectionMetrics(AUS, thresholds=torch.tensor(thr))
    metric.update(probs, target)
    out = metric.compute()
    ref = _sklearn_reference(probs, target, thr)
    np.testing.assert_allclose(_as_arrays(out, "f1"), ref["f1"], atol=1e-6)
    np.testing.assert_allclose(_as_arrays(out, "acc"), ref["acc"], atol=1e-6)
    np.testing.assert_allclose(f1_at_thresholds(probs, target, thr.tolist()), ref["f1"], atol=1e-6)
    at_half = _sklearn_reference(probs, target, np.full(len(AUS), 0.5))
    assert not np.allclose(ref["f1"], at_half["f1"])


def test_threshold_is_strict() -> None:
    probs = torch.tensor([[0.5], [0.7]])
    target = torch.tensor([[1], [1]])
    assert f1_at_thresholds(probs, target, 0.5).item() == pytest.approx(2 * 0.5 / 1.5)


def test_single_class_au_auc_is_nan_and_excluded_from_mean() -> None:
    probs, target = _random_batch(seed=3)
    target[:, 1] = torch.where(target[:, 1] == -1, -1, 0)
    target[:, 3] = torch.where(target[:, 3] == -1, -1, 1)
    metric = AUDetectionMetrics(AUS)
    metric.update(probs, target)
    out = metric.compute()
    assert math.isnan(out["auc_AU2"].item())
    assert math.isnan(out["auc_AU6"].item())
    ref = _sklearn_reference(probs, target, np.full(len(AUS), 0.5))
    assert out["auc_mean"].item() == pytest.approx(np.nanmean(ref["auc"]), abs=1e-6)
    assert not math.isnan(out["auc_mean"].item())
    assert out["f1_AU2"].item() == 0.0
    assert out["f1_AU6"].item() == pytest.approx(ref["f1"][3], abs=1e-6)


def test_single_au_matches_sklearn() -> None:
    probs, target = _random_batch(seed=6)
    metric = AUDetectionMetrics([12], thresholds=[0.4])
    metric.update(probs[:, 4:], target[:, 4:])
    out = metric.compute()
    ref = _sklearn_reference(probs[:, 4:], target[:, 4:], np.array([0.4]))
    assert out["f1_AU12"].item() == pytest.approx(ref["f1"][0], abs=1e-6)
    assert out["acc_AU12"].item() == pytest.approx(ref["acc"][0], abs=1e-6)
    assert out["auc_mean"].item() == pytest.approx(ref["auc"][0], abs=1e-6)
    torch.testing.assert_close(
        f1_at_thresholds(probs[:, 4:], target[:, 4:], 0.4), out["f1_AU12"].reshape(1)
    )


def test_two_updates_equal_one_update() -> None:
    probs, target = _random_batch(seed=4)
    whole, halves = (
        AUDetectionMetrics(AUS, [0.3, 0.5, 0.5, 0.5, 0.7]),
        AUDetectionMetrics(AUS, [0.3, 0.5, 0.5, 0.5, 0.7]),
    )
    whole.update(probs, target)
    halves.update(probs[:150], target[:150])
    halves.update(probs[150:], target[150:])
    out_whole, out_halves = whole.compute(), halves.compute()
    for key in out_whole:
        torch.testing.assert_close(out_whole[key], out_halves[key])


def test_forward_returns_batch_value_and_reset_clears() -> None:
    probs, target = _random_batch(seed=5)
    metric = AUDetectionMetrics(AUS)
    first = metric(probs[:200], target[:200])
    fresh = AUDetectionMetrics(AUS)
    fresh.update(probs[:200], target[:200])
    torch.testing.assert_close(first["f1_mean"], fresh.compute()["f1_mean"])
    metric(probs[200:], target[200:])
    full = AUDetectionMetrics(AUS)
    full.update(probs, target)
    torch.testing.assert_close(metric.compute()["auc_mean"], full.compute()["auc_mean"])
    metric.reset()
    metric.update(probs[:200], target[:200])
    torch.testing.assert_close(metric.compute()["acc_mean"], fresh.compute()["acc_mean"])


@pytest.mark.parametrize(
    ("probs", "target", "match"),
    [
        (torch.rand(4, 5), torch.zeros(4, 4, dtype=torch.long), "target"),
        (torch.rand(4, 3), torch.zeros(4, 3, dtype=torch.long), r"probs.*\(B, 5\)"),
        (torch.rand(4, 5), torch.full((4, 5), 2), r"target.*-1.*\[2\]"),
        (torch.rand(4, 5) + 1.0, torch.zeros(4, 5, dtype=torch.long), r"probs.*\[0, 1\]"),
    ],
)
def test_detection_bad_input(probs: torch.Tensor, target: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AUDetectionMetrics(AUS).update(probs, target)


def test_threshold_length_must_match_aus() -> None:
    with pytest.raises(ValueError, match=r"thresholds.*length 5.*got length 3"):
        AUDetectionMetrics(AUS, thresholds=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="thresholds"):
        f1_at_thresholds(torch.rand(3, 2), torch.zeros(3, 2, dtype=torch.long), [0.1, 0.2, 0.3])


def _seq(s: str) -> torch.Tensor:
    return torch.tensor([int(c) for c in s])


def test_event_f1_partial_overlaps_all_match() -> None:
    # true 0011100011 -> events {2-4}, {8-9}; pred 0011000001 -> events {2-3}, {9}.
    # IoU({2-3},{2-4}) = 2/3 >= 0.5, IoU({9},{8-9}) = 1/2 >= 0.5 -> ER = 2/2, EP = 2/2, F1 = 1.
    true, pred = _seq("0011100011"), _seq("0011000001")
    assert event_f1(pred, true).item() == pytest.approx(1.0)
    # With overlap 0.7 neither pair matches: ER = 0, EP = 0 -> F1 = 0.
    assert event_f1(pred, true, overlap=0.7).item() == 0.0


def test_event_f1_miss_and_false_alarms() -> None:
    # true 1100011100000 -> {0-1}, {5-7}; pred 1100000001101 -> {0-1}, {9-10}, {12}.
    # {0-1} matches (IoU 1); {5-7} is missed; {9-10} and {12} are false alarms.
    # ER = 1/2, EP = 1/3 -> F1 = 2 * (1/2)(1/3) / (1/2 + 1/3) = (1/3) / (5/6) = 0.4.
    true, pred = _seq("1100011100000"), _seq("1100000001101")
    assert event_f1(pred, true).item() == pytest.approx(0.4)


def test_event_f1_one_prediction_spanning_two_events() -> None:
    # true 1101100 -> {0-1}, {3-4}; pred 1111100 -> {0-4}. IoU with each = 2/5 = 0.4.
    # overlap 0.5: no match, F1 = 0. overlap 0.4: both true events matched by the one
    # prediction (ER = 2/2) and the prediction matches (EP = 1/1) -> F1 = 1.
    true, pred = _seq("1101100"), _seq("1111100")
    assert event_f1(pred, true).item() == 0.0
    assert event_f1(pred, true, overlap=0.4).item() == pytest.approx(1.0)


def test_event_f1_sequence_boundary_splits_runs() -> None:
    # Frames 0-2 belong to sequence 7, frames 3-5 to sequence 9.
    # Column 0: true 011110, pred 000110.
    #   One sequence: true {1-4}, pred {3-4}, IoU 2/4 = 0.5 -> ER = 1, EP = 1, F1 = 1.
    #   Split: true {1-2}, {3-4}; pred {3-4} matches {3-4} (IoU 1); {1-2} missed.
    #   ER = 1/2, EP = 1 -> F1 = 2 * 0.5 / 1.5 = 2/3.
    # Column 1: true 000110, pred 011110.
    #   One sequence: pred {1-4} vs true {3-4}: IoU 0.5 -> F1 = 1.
    #   Split: pred {1-2}, {3-4}; {3-4} matches, {1-2} is a false alarm.
    #   ER = 1, EP = 1/2 -> F1 = 2/3.
    true = torch.stack([_seq("011110"), _seq("000110")], dim=1)
    pred = torch.stack([_seq("000110"), _seq("011110")], dim=1)
    seq = torch.tensor([7, 7, 7, 9, 9, 9])
    torch.testing.assert_close(event_f1(pred, true), torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        event_f1(pred, true, sequence_ids=seq), torch.tensor([2 / 3, 2 / 3], dtype=torch.float64)
    )


def test_event_f1_unknown_frame_splits_runs() -> None:
    # target 1 1 -1 1 1 0, pred 1 1 1 1 0 0. Frame 2 is removed from both sides:
    #   true {0-1}, {3-4}; pred {0-1}, {3}. IoU 1 and 1/2 -> ER = 1, EP = 1, F1 = 1.
    # Had the unknown frame been kept in pred (or counted as a negative), pred {0-3} would have
    #   IoU 2/4 with {0-1} and 1/5 with {3-4}: ER = 1/2, EP = 1 -> F1 = 2/3.
    target = torch.tensor([1, 1, -1, 1, 1, 0])
    pred = _seq("111100")
    assert event_f1(pred, target).item() == pytest.approx(1.0)
    assert event_f1(pred, target.clamp(min=0)).item() == pytest.approx(2 / 3)


def test_event_f1_empty_cases_and_shapes() -> None:
    zeros = torch.zeros(6, dtype=torch.long)
    some = _seq("011000")
    assert math.isnan(event_f1(zeros, zeros).item())
    assert event_f1(some, zeros).item() == 0.0
    assert event_f1(zeros, some).item() == 0.0
    assert event_f1(some, some).shape == ()
    out = event_f1(torch.stack([some, zeros], 1), torch.stack([some, some], 1))
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0], dtype=torch.float64))


def _brute_event_f1(pred: np.ndarray, true: np.ndarray, seq: np.ndarray, overlap: float) -> float:
    def events(x: np.ndarray) -> list[set[int]]:
        out: list[set[int]] = []
        for i in range(len(x)):
            if not x[i]:
                continue
            if i > 0 and x[i - 1] and seq[i - 1] == seq[i]:
                out[-1].add(i)
            else:
                out.append({i})
        return out

    known = true >= 0
    p, g = events(pred.astype(bool) & known), events(true == 1)
    if not p and not g:
        return math.nan
    hit = [[len(a & b) / len(a | b) >= overlap for b in g] for a in p]
    er = sum(any(hit[i][j] for i in range(len(p))) for j in range(len(g))) / len(g) if g else 0
    ep = sum(any(row) for row in hit) / len(p) if p else 0
    return 0.0 if er + ep == 0 else 2 * er * ep / (er + ep)


def test_event_f1_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    n, num_labels = 300, 6
    true = (rng.random((n, num_labels)) < 0.4).astype(int)
    true[rng.random((n, num_labels)) < 0.05] = -1
    pred = (rng.random((n, num_labels)) < 0.4).astype(int)
    seq = np.repeat(np.arange(6), 50)
    for overlap in (0.2, 0.5):
        got = event_f1(torch.tensor(pred), torch.tensor(true), torch.tensor(seq), overlap)
        ref = [_brute_event_f1(pred[:, j], true[:, j], seq, overlap) for j in range(num_labels)]
        np.testing.assert_allclose(got.numpy(), ref)


def test_event_f1_bad_input() -> None:
    with pytest.raises(ValueError, match=r"pred.*binary"):
        event_f1(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"sequence_ids.*\(3,\)"):
        event_f1(_seq("010"), _seq("010"), sequence_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"target.*same shape"):
        event_f1(_seq("010"), _seq("0101"))


SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


def _anova_icc3_1(x: np.ndarray) -> float:
    n, k = x.shape
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    ems = (resid**2).sum() / ((n - 1) * (k - 1))
    bms = k * x.mean(axis=1).var(ddof=1)
    return (bms - ems) / (bms + (k - 1) * ems)


def test_icc_shrout_fleiss_table() -> None:
    assert icc3_1_ratings(torch.tensor(SHROUT_FLEISS)).item() == pytest.approx(0.715, abs=1e-3)


def test_icc3_1_matches_numpy_anova_with_masking() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 6, size=(80, 3)).astype(float)
    pred = target + rng.normal(0, 1.0, size=target.shape) + 0.3
    target[rng.random(target.shape) < 0.2] = -1
    got = icc3_1(torch.tensor(pred), torch.tensor(target))
    assert got.shape == (3,)
    for j in range(3):
        known = target[:, j] >= 0
        ref = _anova_icc3_1(np.stack([pred[known, j], target[known, j]], axis=1))
        assert got[j].item() == pytest.approx(ref, abs=1e-10)
    col = icc3_1(torch.tensor(SHROUT_FLEISS[:, 0]), torch.tensor(SHROUT_FLEISS[:, 3]))
    assert col.shape == ()
    assert col.item() == pytest.approx(_anova_icc3_1(SHROUT_FLEISS[:, [0, 3]]), abs=1e-10)


def test_icc_is_consistency_not_agreement() -> None:
    target = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert icc3_1(target + 2.0, target).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"ratings.*\(n_targets, k_judges\)"):
        icc3_1_ratings(torch.ones(5, 1))
    assert math.isnan(icc3_1(torch.ones(3), torch.tensor([1.0, -1.0, -1.0])).item())


def test_intensity_mae_hand_example() -> None:
    pred = torch.tensor([[1.0, 0.5], [2.0, 3.0], [0.0, 1.0]])
    target = torch.tensor([[2.0, -1.0], [2.0, 1.0], [1.0, -1.0]])
    # AU 0: (|1-2| + |2-2| + |0-1|) / 3 = 2/3; AU 1: only row 1 known: |3-1| = 2.
    torch.testing.assert_close(
        intensity_mae(pred, target), torch.tensor([2 / 3, 2.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match=r"target.*same shape"):
        intensity_mae(pred, target[:2])


def test_intensity_metrics_accumulate_batches_like_the_functions() -> None:
    rng = np.random.default_rng(2)
    target = rng.integers(0, 6, size=(60, 2))
    pred = np.clip(target + rng.integers(-1, 2, size=target.shape), 0, 5)
    target[rng.random(target.shape) < 0.15] = -1
    metric = AUIntensityMetrics([6, 12])
    for rows in np.array_split(np.arange(60), 4):
        metric.update(torch.tensor(pred[rows]), torch.tensor(target[rows]))
    scores = metric.compute()
    icc = icc3_1(torch.tensor(pred), torch.tensor(target))
    for j, au in enumerate((6, 12)):
        known = target[:, j] >= 0
        assert scores[f"icc_AU{au}"].item() == pytest.approx(icc[j].item(), abs=1e-12)
        mae = np.abs(pred[known, j] - target[known, j]).mean()
        assert scores[f"mae_AU{au}"].item() == pytest.approx(mae, abs=1e-12)
    assert scores["icc_mean"].item() == pytest.approx(icc.mean().item(), abs=1e-12)
    with pytest.raises(ValueError, match=r"pred.*\(N, 2\)"):
        metric.update(torch.zeros(3, 3), torch.zeros(3, 3))


def test_mean_over_folds() -> None:
    folds = [
        {"f1_AU1": 0.5, "f1_AU2": math.nan, "f1_AU4": math.nan},
        {"f1_AU1": 0.7, "f1_AU2": 0.4, "f1_AU4": math.nan},
        {"f1_AU1": torch.tensor(0.9), "f1_AU2": 0.6, "f1_AU4": math.nan},
    ]
    out = mean_over_folds(folds)
    assert out["f1_AU1"] == pytest.approx(0.7)
    assert out["f1_AU2"] == pytest.approx(0.5)
    assert math.isnan(out["f1_AU4"])
    with pytest.raises(ValueError, match=r"'f1_AU2' is missing from fold 1"):
        mean_over_folds([{"f1_AU1": 0.5, "f1_AU2": 0.1}, {"f1_AU1": 0.5}])
    with pytest.raises(ValueError, match=r"'f1_AU9' is missing from fold 0.*fold 2"):
        mean_over_folds([{"a": 1.0}, {"a": 1.0}, {"a": 1.0, "f1_AU9": 2.0}])
    with pytest.raises(ValueError, match="per_fold"):
        mean_over_folds([])
