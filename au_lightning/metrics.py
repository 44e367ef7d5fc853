"""Evaluation metrics for facial action unit detection and intensity estimation.

Conventions:

* Occurrence targets are integer tensors ``(N, L)`` with ``1`` present, ``0`` absent and
  ``-1`` unknown. Unknown labels are masked out of every metric, never counted as negatives.
* Occurrence predictions are probabilities in ``[0, 1]``; an AU is predicted present when
  ``prob > threshold`` (the same strict comparison torchmetrics uses).
* Intensity targets are non-negative; any ``target < 0`` marks an unknown label.

Frame F1, accuracy and AUROC are computed by torchmetrics so that they synchronise under DDP.
F1 is on a 0..1 scale (papers report it x100).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryStatScores,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
    MultilabelStatScores,
)
from torchmetrics.functional.classification import binary_f1_score, multilabel_f1_score
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.wrappers.abstract import WrapperMetric

__all__ = [
    "AUDetectionMetrics",
    "AUIntensityMetrics",
    "EpisodeAccuracy",
    "ThresholdCriterion",
    "ThresholdSearch",
    "event_f1",
    "f1_at_thresholds",
    "final_scores",
    "icc3_1",
    "icc3_1_ratings",
    "intensity_mae",
    "mean_over_folds",
    "search_thresholds",
]

ThresholdsLike = float | Sequence[float] | Tensor
#: what a threshold search maximises per AU: F1, or ``score`` = (accuracy + F1) / 2
ThresholdCriterion = Literal["f1", "score"]


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`{name}` must be a tensor or array-like, got {type(x).__name__}"
        ) from err


def _check_probs(probs: Tensor, num_labels: int | None = None) -> Tensor:
    probs = _as_tensor(probs, "probs")
    if probs.ndim != 2 or (num_labels is not None and probs.shape[1] != num_labels):
        expected = "(B, L)" if num_labels is None else f"(B, {num_labels})"
        raise ValueError(f"`probs` must have shape {expected}, got {_shape(probs)}")
    if not torch.is_floating_point(probs):
        raise ValueError(
            f"`probs` must be a floating-point tensor of probabilities, got {probs.dtype}"
        )
    if probs.numel() and (torch.isnan(probs).any() or probs.min() < 0 or probs.max() > 1):
        raise ValueError("`probs` must contain probabilities in [0, 1] (no NaN)")
    return probs


def _check_detection_target(target: Tensor, shape: tuple[int, ...], name: str = "target") -> Tensor:
    target = _as_tensor(target, name)
    if _shape(target) != shape:
        raise ValueError(
            f"`{name}` must have the same shape as the predictions {shape}, got {_shape(target)}"
        )
    bad = (target != -1) & (target != 0) & (target != 1)
    if bad.any():
        values = sorted(torch.unique(target[bad]).tolist())[:5]
        raise ValueError(
            f"`{name}` must contain only -1 (unknown), 0 (absent) or 1 (present); got {values}"
        )
    return target.long()


def _check_binary_pred(pred: Tensor, name: str = "pred") -> Tensor:
    pred = _as_tensor(pred, name)
    if pred.ndim not in (1, 2):
        raise ValueError(f"`{name}` must have shape (N,) or (N, L), got {_shape(pred)}")
    bad = (pred != 0) & (pred != 1)
    if bad.any():
        raise ValueError(f"`{name}` must be binary (0/1 or bool); threshold probabilities first")
    return pred.bool()


def _threshold_vector(thresholds: ThresholdsLike, num_labels: int) -> Tensor:
    thr = _as_tensor(thresholds, "thresholds").to(torch.float64)
    thr = thr.expand(num_labels) if thr.ndim == 0 else thr.flatten()
    if thr.numel() != num_labels:
        raise ValueError(
            f"`thresholds` must be a scalar or have one value per AU (length {num_labels}), got "
            f"length {thr.numel()}"
        )
    if torch.isnan(thr).any():
        raise ValueError("`thresholds` must not contain NaN")
    return thr.clone()


def _binarize(probs: Tensor, thresholds: Tensor) -> Tensor:
    return (probs > thresholds.to(device=probs.device, dtype=probs.dtype)).long()


class AUDetectionMetrics(WrapperMetric):
    """Per-AU frame F1, accuracy and AUROC with unknown (-1) labels masked out.

    Wraps torchmetrics' ``MultilabelF1Score``, ``MultilabelAccuracy`` and ``MultilabelAUROC``
    (``average=None``, ``ignore_index=-1``; the ``Binary*`` versions when there is a single
    AU, since torchmetrics' multilabel metrics need two or more labels) plus a
    ``MultilabelStatScores`` used to detect one-class AUs; each child synchronises its own
    state under DDP.
    F1 and accuracy are computed on probabilities binarised per AU (``prob > threshold``);
    AUROC on the raw probabilities.

    Degenerate AUs (all known targets in one class): F1 follows torchmetrics'
    ``zero_division=0`` (F1 = 0 when there are no true and no predicted positives), AUROC is
    undefined and reported as NaN, and ``auc_mean`` is the NaN-aware mean over the other AUs.

    ``compute()`` returns ``f1_AU<n>``, ``acc_AU<n>``, ``auc_AU<n>`` for each AU ``n`` and
    ``f1_mean``, ``acc_mean``, ``auc_mean`` (means over AUs). Extra keyword arguments are
    passed to the wrapped torchmetrics metrics (e.g. ``sync_on_compute``).
    """

    def __init__(self, aus: Sequence[int], thresholds: ThresholdsLike = 0.5, **kwargs: Any) -> None:
        super().__init__()
        aus = [int(a) for a in aus]
        if not aus:
            raise ValueError("`aus` must list at least one AU number, got an empty sequence")
        if len(set(aus)) != len(aus):
            raise ValueError(f"`aus` must not contain duplicates, got {aus}")
        self.aus: list[int] = aus
        num_labels = len(aus)
        self.register_buffer(
            "thresholds", _threshold_vector(thresholds, num_labels), persistent=False
        )
        if num_labels == 1:
            common: dict[str, Any] = {"ignore_index": -1, **kwargs}
            self.f1 = BinaryF1Score(**common)
            self.acc = BinaryAccuracy(**common)
            self.auc = BinaryAUROC(**common)
            self.stats = BinaryStatScores(**common)
        else:
            common = {"num_labels": num_labels, "average": None, "ignore_index": -1, **kwargs}
            self.f1 = MultilabelF1Score(**common)
            self.acc = MultilabelAccuracy(**common)
            self.auc = MultilabelAUROC(**common)
            self.stats = MultilabelStatScores(**common)

    @property
    def num_labels(self) -> int:
        return len(self.aus)

    def _prepare(self, probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = _check_probs(probs, self.num_labels)
        target = _check_detection_target(target, _shape(probs))
        binary = _binarize(probs, self.thresholds)
        if self.num_labels == 1:
            return probs[:, 0], binary[:, 0], target[:, 0]
        return probs, binary, target

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Accumulate a batch of probabilities ``(B, L)`` and targets ``(B, L)`` in {-1, 0, 1}."""
        probs, binary, target = self._prepare(probs, target)
        self.f1.update(binary, target)
        self.acc.update(binary, target)
        self.stats.update(binary, target)
        self.auc.update(probs, target)

    def forward(self, probs: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Accumulate the batch and return the metrics on this batch alone."""
        probs, binary, target = self._prepare(probs, target)
        return self._format(
            self.f1(binary, target),
            self.acc(binary, target),
            self.auc(probs, target),
            self.stats(binary, target),
        )

    def compute(self) -> dict[str, Tensor]:
        """Metrics over everything accumulated since the last reset."""
        return self._format(
            self.f1.compute(), self.acc.compute(), self.auc.compute(), self.stats.compute()
        )

    def reset(self) -> None:
        for metric in (self.f1, self.acc, self.auc, self.stats):
            metric.reset()
        super().reset()

    def _format(self, f1: Tensor, acc: Tensor, auc: Tensor, stats: Tensor) -> dict[str, Tensor]:
        f1, acc, auc, stats = f1.reshape(-1), acc.reshape(-1), auc.reshape(-1), stats.reshape(-1, 5)
        tp, fp, tn, fn = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
        one_class = ((tp + fn) == 0) | ((tn + fp) == 0)
        auc = torch.where(one_class.to(auc.device), torch.full_like(auc, float("nan")), auc)
        out: dict[str, Tensor] = {}
        for i, au in enumerate(self.aus):
            out[f"f1_AU{au}"] = f1[i]
            out[f"acc_AU{au}"] = acc[i]
            out[f"auc_AU{au}"] = auc[i]
        out["f1_mean"] = f1.mean()
        out["acc_mean"] = acc.mean()
        out["auc_mean"] = auc.nanmean()
        return out


def f1_at_thresholds(probs: Tensor, target: Tensor, thresholds: ThresholdsLike = 0.5) -> Tensor:
    """Per-AU frame F1 = 2PR/(P+R) on known labels, shape ``(L,)``, with per-AU thresholds.

    ``probs`` ``(N, L)`` are binarised as ``prob > thresholds[l]``; targets equal to -1 are
    ignored. Uses torchmetrics' ``multilabel_f1_score`` (``zero_division=0``).
    """
    probs = _check_probs(probs)
    target = _check_detection_target(target, _shape(probs))
    thr = _threshold_vector(thresholds, probs.shape[1])
    binary = _binarize(probs, thr)
    if probs.shape[1] == 1:
        return binary_f1_score(binary[:, 0], target[:, 0], ignore_index=-1).reshape(1)
    return multilabel_f1_score(
        binary, target, num_labels=probs.shape[1], average=None, ignore_index=-1
    )


def final_scores(scores: Mapping[str, float], aus: Sequence[int]) -> dict[str, float]:
    """The final score of Ji et al. (Sec. 4.3; the EmotioNet challenge's): the mean of accuracy
    and F1, as ``score_AU<n>`` per AU and ``score_mean`` = (``acc_mean`` + ``f1_mean``) / 2,
    from the ``f1_*`` and ``acc_*`` keys of :class:`AUDetectionMetrics` scores."""
    out = {f"score_AU{a}": (scores[f"acc_AU{a}"] + scores[f"f1_AU{a}"]) / 2 for a in aus}
    out["score_mean"] = (scores["acc_mean"] + scores["f1_mean"]) / 2
    return out


def _snap(
    candidates: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype: torch.dtype
) -> np.ndarray:
    """Round cut points to ``dtype`` so that ``lower <= t < upper`` still holds after rounding.

    ``prob > t`` is evaluated in the probabilities' dtype, so a float64 midpoint that rounds up
    onto ``upper`` would move the cut; fall back to ``lower`` (same cut) in that case.
    """
    t = torch.from_numpy(candidates).to(dtype).to(torch.float64).numpy()
    return np.where(t >= upper, lower, t)


def _search_one(
    p: np.ndarray, y: np.ndarray, dtype: torch.dtype, criterion: ThresholdCriterion = "f1"
) -> tuple[float, float]:
    """Best ``(threshold, F1)`` for one AU's known probabilities ``p`` and 0/1 labels ``y``,
    best by F1 or, with ``criterion="score"``, by (accuracy + F1) / 2."""
    n_pos = int(y.sum())
    if n_pos == 0:
        return 0.5, 0.0
    p_all = np.sort(p)
    starts = np.flatnonzero(np.append(True, p_all[1:] != p_all[:-1]))
    values = p_all[starts]  # distinct values, ascending
    # Rule g: predict positive every value >= values[g]; its threshold lies below values[g].
    pred_pos = p.size - starts
    tp = n_pos - np.searchsorted(np.sort(p[y == 1]), values)
    mids = _snap((values[:-1] + values[1:]) / 2, values[:-1], values[1:], dtype)
    if values[0] > 0:  # predict everything positive with v_min / 2
        low = _snap(values[:1] / 2, np.zeros(1), values[:1], dtype)
    else:  # would need a negative threshold: not a candidate
        low, pred_pos, tp = np.zeros(0), pred_pos[1:], tp[1:]
    thr = np.concatenate((low, mids, values[-1:]))  # v_max: predict nothing positive
    tp, pred_pos = np.append(tp, 0), np.append(pred_pos, 0)
    f1 = 2 * tp / (pred_pos + n_pos)  # 2TP / (2TP + FP + FN)
    if criterion == "score":
        true_neg = p.size - n_pos - (pred_pos - tp)
        value = ((tp + true_neg) / p.size + f1) / 2
    else:
        value = f1
    best_at = np.flatnonzero(value == value.max())
    ties = thr[best_at]
    pick = best_at[np.lexsort((ties, np.abs(ties - 0.5)))[0]]  # nearest 0.5, then the smaller
    return float(thr[pick]), float(f1[pick])


def search_thresholds(
    probs: Tensor, target: Tensor, criterion: ThresholdCriterion = "f1"
) -> tuple[Tensor, Tensor]:
    """Per-AU decision thresholds maximising frame F1 on known labels (Ji et al. 2020, Sec. 3.6),
    or, with ``criterion="score"``, the mean of accuracy and F1 (Ji et al.'s final score,
    Sec. 4.3, which is the EmotioNet challenge's).

    "Soft thresholding" from Ji et al., "Multiple Transfer Learning and Multi-label Balanced
    Training Strategies for Facial AU Detection In the Wild" (CVPRW 2020): every output
    probability on the validation set is a candidate threshold and the one with the best F1 is
    kept per AU. The search here is exhaustive: the known probabilities of each AU are sorted
    and every cut between distinct values is scored at once from cumulative TP/FP counts, so
    Ji's speed-up of starting near the ground-truth positive rate is unnecessary.

    Candidates per AU are the midpoints between consecutive distinct values, ``v_min / 2`` when
    the smallest value ``v_min > 0`` (predict all positive) and ``v_max`` (predict none; F1 0),
    applied as ``prob > threshold``. Ties of the criterion are broken by the threshold closest to
    0.5, then the smaller one. Targets equal to -1 are ignored. An AU without a known positive
    keeps threshold 0.5 with F1 0.0 (torchmetrics' ``zero_division=0``).

    Since the criterion is per AU, the thresholds also maximise its mean over AUs.

    Returns ``(thresholds, f1)``, both float64 of shape ``(L,)`` on the CPU; ``f1`` equals
    :func:`f1_at_thresholds` at ``thresholds``.
    """
    if criterion not in ("f1", "score"):
        raise ValueError(f"`criterion` must be 'f1' or 'score', got {criterion!r}")
    probs = _check_probs(probs)
    target = _check_detection_target(target, _shape(probs))
    p = probs.detach().cpu().to(torch.float64).T.contiguous().numpy()  # (L, N)
    t = target.cpu().T.contiguous().numpy()
    results = [
        _search_one(p_j[t_j >= 0], t_j[t_j >= 0], probs.dtype, criterion)
        for p_j, t_j in zip(p, t, strict=True)
    ]
    thresholds = torch.tensor([r[0] for r in results], dtype=torch.float64)
    f1 = torch.tensor([r[1] for r in results], dtype=torch.float64)
    return thresholds, f1


class ThresholdSearch(Metric):
    """Accumulating :func:`search_thresholds` (Ji et al. 2020, Sec. 3.6 "soft thresholding").

    ``update(probs, target)`` stores ``(B, num_labels)`` probabilities and {-1, 0, 1} targets;
    the states are concatenated across DDP ranks (``dist_reduce_fx="cat"``). ``compute()``
    returns ``(thresholds, f1)``, float64 ``(num_labels,)``, from an exhaustive search over
    every distinct accumulated probability for the best ``criterion`` (see
    :func:`search_thresholds`). As for every
    torchmetrics metric, one-element results are squeezed: with ``num_labels=1`` both are 0-d.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    probs: list[Tensor]
    target: list[Tensor]

    def __init__(
        self, num_labels: int, criterion: ThresholdCriterion = "f1", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if criterion not in ("f1", "score"):
            raise ValueError(f"`criterion` must be 'f1' or 'score', got {criterion!r}")
        self.criterion = criterion
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"`num_labels` must be a positive integer, got {num_labels!r}")
        self.num_labels = num_labels
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Accumulate probabilities ``(B, num_labels)`` and targets ``(B, num_labels)``."""
        probs = _check_probs(probs, self.num_labels)
        target = _check_detection_target(target, _shape(probs))
        self.probs.append(probs.detach())
        self.target.append(target)

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(thresholds, f1)`` over everything accumulated since the last reset."""
        # List states become one tensor after a DDP sync; ranks without data add empty tensors.
        probs = dim_zero_cat(self.probs) if len(self.probs) else None
        if probs is None or probs.numel() == 0:
            raise ValueError(
                "ThresholdSearch.compute() has no samples: call update() with a non-empty batch"
            )
        return search_thresholds(probs, dim_zero_cat(self.target), self.criterion)


def _runs(positive: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and inclusive end indices of maximal runs of True not crossing a boundary."""
    n = positive.shape[0]
    prev = np.zeros(n, dtype=bool)
    prev[1:] = positive[:-1] & ~boundary[1:]
    nxt = np.zeros(n, dtype=bool)
    nxt[:-1] = positive[1:] & ~boundary[1:]
    return np.flatnonzero(positive & ~prev), np.flatnonzero(positive & ~nxt)


def _event_f1_1d(pred: np.ndarray, true: np.ndarray, boundary: np.ndarray, overlap: float) -> float:
    ps, pe = _runs(pred, boundary)
    gs, ge = _runs(true, boundary)
    n_pred, n_true = ps.size, gs.size
    if n_pred == 0 and n_true == 0:
        return math.nan
    if n_pred == 0 or n_true == 0:
        return 0.0
    # Events of one kind are disjoint and sorted, so the predicted events overlapping true
    # event g form the contiguous index range [lo[g], hi[g]).
    lo = np.searchsorted(pe, gs, side="left")
    hi = np.searchsorted(ps, ge, side="right")
    counts = np.clip(hi - lo, 0, None)
    g_idx = np.repeat(np.arange(n_true), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    p_idx = np.repeat(lo, counts) + offsets
    inter = np.minimum(pe[p_idx], ge[g_idx]) - np.maximum(ps[p_idx], gs[g_idx]) + 1
    union = (pe[p_idx] - ps[p_idx] + 1) + (ge[g_idx] - gs[g_idx] + 1) - inter
    hit = inter / union >= overlap
    er = np.unique(g_idx[hit]).size / n_true
    ep = np.unique(p_idx[hit]).size / n_pred
    return 0.0 if er + ep == 0 else 2 * er * ep / (er + ep)


def event_f1(
    pred: Tensor,
    target: Tensor,
    sequence_ids: Tensor | None = None,
    overlap: float = 0.5,
) -> Tensor:
    """Event-based F1 = 2·ER·EP/(ER+EP) per AU (Ding et al., ICCV 2013; Chu et al. 2019).

    An event is a maximal run of consecutive positive frames within one sequence (frames in
    temporal order; a change of ``sequence_ids`` between neighbours ends a run). Frames with an
    unknown target (-1) are removed from both the true and the predicted positives, so they
    split runs. A predicted event P matches a true event G when |P∩G|/|P∪G| >= ``overlap``.
    ER is the fraction of true events matched by some predicted event, EP the fraction of
    predicted events matching some true event.

    Returns float64 of shape ``(L,)`` for ``(N, L)`` inputs, a 0-d tensor for ``(N,)`` inputs.
    An AU with neither true nor predicted events is NaN; if only one side has events, F1 is 0.
    """
    pred_b = _check_binary_pred(pred)
    target_l = _check_detection_target(target, _shape(pred_b))
    if not 0 < overlap <= 1:
        raise ValueError(f"`overlap` must be in (0, 1], got {overlap}")
    squeeze = pred_b.ndim == 1
    p = pred_b.reshape(pred_b.shape[0], -1).cpu().numpy()
    t = target_l.reshape(target_l.shape[0], -1).cpu().numpy()
    n = p.shape[0]
    boundary = np.zeros(n, dtype=bool)
    if sequence_ids is not None:
        seq = _as_tensor(sequence_ids, "sequence_ids")
        if _shape(seq) != (n,):
            raise ValueError(f"`sequence_ids` must have shape ({n},), got {_shape(seq)}")
        seq_np = seq.cpu().numpy()
        boundary[1:] = seq_np[1:] != seq_np[:-1]
    known = t >= 0
    result = torch.tensor(
        [
            _event_f1_1d(p[:, j] & known[:, j], t[:, j] == 1, boundary, overlap)
            for j in range(p.shape[1])
        ],
        dtype=torch.float64,
    )
    return result[0] if squeeze else result


def icc3_1_ratings(ratings: Tensor) -> Tensor:
    """ICC(3,1) of an ``(n_targets, k_judges)`` table (Shrout & Fleiss 1979, Case 3, single rater).

    Two-way mixed model, consistency: ICC(3,1) = (BMS - EMS) / (BMS + (k-1)·EMS), with BMS the
    between-targets mean square and EMS the residual mean square. Returns a float64 0-d
    tensor; NaN when the denominator is zero (e.g. constant ratings).
    """
    r = _as_tensor(ratings, "ratings")
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise ValueError(
            f"`ratings` must have shape (n_targets, k_judges) with n_targets >= 2 and "
            f"k_judges >= 2, got {_shape(r)}"
        )
    r = r.to(torch.float64)
    if torch.isnan(r).any():
        raise ValueError("`ratings` must not contain NaN")
    n, k = r.shape
    grand = r.mean()
    ss_rows = k * ((r.mean(dim=1) - grand) ** 2).sum()
    ss_cols = n * ((r.mean(dim=0) - grand) ** 2).sum()
    ss_err = ((r - grand) ** 2).sum() - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    denom = bms + (k - 1) * ems
    if denom == 0:
        return torch.tensor(math.nan, dtype=torch.float64)
    return (bms - ems) / denom


def _check_intensity_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    if pred.ndim not in (1, 2):
        raise ValueError(f"`pred` must have shape (N,) or (N, L), got {_shape(pred)}")
    if _shape(target) != _shape(pred):
        raise ValueError(
            f"`target` must have the same shape as `pred` {_shape(pred)}, got {_shape(target)}"
        )
    return pred.to(torch.float64), target.to(torch.float64)


def icc3_1(pred: Tensor, target: Tensor) -> Tensor:
    """Per-AU ICC(3,1) between predicted and true intensities (Shrout & Fleiss 1979).

    Prediction and target are the k=2 judges of :func:`icc3_1_ratings`. For each AU, rows with
    ``target < 0`` (unknown) are dropped. Returns float64 ``(L,)`` for ``(N, L)`` inputs or a
    0-d tensor for ``(N,)``; NaN for an AU with fewer than two known rows or zero variance.
    """
    pred, target = _check_intensity_pair(pred, target)
    squeeze = pred.ndim == 1
    p = pred.reshape(pred.shape[0], -1)
    t = target.reshape(target.shape[0], -1)
    values = []
    for j in range(p.shape[1]):
        known = t[:, j] >= 0
        if int(known.sum()) < 2:
            values.append(torch.tensor(math.nan, dtype=torch.float64))
            continue
        values.append(icc3_1_ratings(torch.stack([p[known, j], t[known, j]], dim=1)))
    result = torch.stack(values).cpu()
    return result[0] if squeeze else result


def intensity_mae(pred: Tensor, target: Tensor) -> Tensor:
    """Per-AU mean absolute error |pred - target| over known rows (``target >= 0``).

    Returns float64 ``(L,)`` for ``(N, L)`` inputs or a 0-d tensor for ``(N,)``; NaN for an AU
    without known rows.
    """
    pred, target = _check_intensity_pair(pred, target)
    known = target >= 0
    err = torch.where(known, (pred - target).abs(), torch.zeros_like(pred))
    return (err.sum(dim=0) / known.sum(dim=0)).cpu()


class AUIntensityMetrics(Metric):
    """Per-AU ICC(3,1) (:func:`icc3_1`) and MAE (:func:`intensity_mae`) of predicted
    intensities, unknown targets (-1) masked.

    ``update(pred, target)`` takes ``(B, L)`` predicted and true intensities; the frames are
    kept (concatenated across DDP ranks), since ICC needs them all. ``compute()`` returns
    ``icc_AU<n>``, ``mae_AU<n>`` and their NaN-aware means ``icc_mean``, ``mae_mean``.
    """

    full_state_update = False
    is_differentiable = False

    preds: list[Tensor]
    targets: list[Tensor]

    def __init__(self, aus: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aus = [int(a) for a in aus]
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = _check_intensity_pair(pred, target)
        if pred.ndim != 2 or pred.shape[1] != len(self.aus):
            raise ValueError(f"`pred` must have shape (N, {len(self.aus)}), got {_shape(pred)}")
        self.preds.append(pred)
        self.targets.append(target)

    def compute(self) -> dict[str, Tensor]:
        pred, target = dim_zero_cat(self.preds), dim_zero_cat(self.targets)
        icc, mae = icc3_1(pred, target), intensity_mae(pred, target)
        out = {f"icc_AU{a}": icc[i] for i, a in enumerate(self.aus)}
        out |= {f"mae_AU{a}": mae[i] for i, a in enumerate(self.aus)}
        return out | {"icc_mean": icc.nanmean(), "mae_mean": mae.nanmean()}


def mean_over_folds(per_fold: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-key mean over cross-validation folds (papers average each AU's score over folds).

    Every fold must have the same keys. The mean is NaN-aware (``nanmean``): a fold whose
    value is NaN (e.g. an AU absent from that test fold) is skipped for that key; a key that
    is NaN in every fold stays NaN. Values may be floats or 0-d tensors.
    """
    if isinstance(per_fold, Mapping) or len(per_fold) == 0:
        raise ValueError("`per_fold` must be a non-empty sequence of mappings (one per fold)")
    keys = list(per_fold[0].keys())
    key_set = set(keys)
    for i, fold in enumerate(per_fold):
        if not isinstance(fold, Mapping):
            raise ValueError(f"`per_fold[{i}]` must be a mapping, got {type(fold).__name__}")
        missing = [k for k in keys if k not in fold]
        if missing:
            raise ValueError(f"key {missing[0]!r} is missing from fold {i} (present in fold 0)")
        extra = [k for k in fold if k not in key_set]
        if extra:
            raise ValueError(f"key {extra[0]!r} is missing from fold 0 (present in fold {i})")
    out: dict[str, float] = {}
    for k in keys:
        values = [float(fold[k]) for fold in per_fold]
        finite = [v for v in values if not math.isnan(v)]
        out[k] = sum(finite) / len(finite) if finite else math.nan
    return out


class EpisodeAccuracy(Metric):
    """Few-shot adaptation accuracy per task and per adaptation step (Lee et al. 2019,
    Sec. 4.2.2: adapt on D[tea], then the accuracy on the balanced evaluation set D[te],
    averaged over the episodes of a task).

    ``update(task, correct, count)`` adds episodes: ``task`` ``(E,)`` task positions,
    ``correct`` ``(E, steps + 1)`` correct decisions on D[te] after 0..steps adaptation
    steps, ``count`` ``(E,)`` the size of each D[te]. ``compute()`` is ``(num_tasks,
    steps + 1)`` accuracy, NaN for a task without episodes; ``episodes`` counts each task's
    episodes. Sums, so it synchronises across DDP ranks.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    correct: Tensor
    total: Tensor
    episodes: Tensor

    def __init__(self, num_tasks: int, steps: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1 or steps < 0:
            raise ValueError(f"need num_tasks >= 1 and steps >= 0, got {num_tasks}, {steps}")
        self.num_tasks, self.steps = num_tasks, steps
        zeros = torch.zeros(num_tasks, steps + 1, dtype=torch.float64)
        self.add_state("correct", default=zeros, dist_reduce_fx="sum")
        for name in ("total", "episodes"):
            self.add_state(name, default=torch.zeros(num_tasks, dtype=torch.float64),
                           dist_reduce_fx="sum")  # fmt: skip

    def update(self, task: Tensor, correct: Tensor, count: Tensor) -> None:
        task = torch.as_tensor(task, device=self.correct.device).long()
        correct = torch.as_tensor(correct, device=self.correct.device, dtype=torch.float64)
        if correct.shape != (len(task), self.steps + 1):
            raise ValueError(
                f"`correct` must be (episodes, steps + 1) = ({len(task)}, {self.steps + 1}), "
                f"got {_shape(correct)}"
            )
        if len(task) and (task.min() < 0 or task.max() >= self.num_tasks):
            raise ValueError(f"task positions must lie in 0..{self.num_tasks - 1}")
        count = torch.as_tensor(count, device=self.total.device, dtype=torch.float64)
        self.correct.index_add_(0, task, correct)
        self.total.index_add_(0, task, count.expand(len(task)))
        self.episodes.index_add_(0, task, torch.ones_like(count).expand(len(task)))

    def compute(self) -> Tensor:
        return self.correct / self.total.unsqueeze(1)
