"""The hybrid model's results: event F1 per AU, and the table of Chu et al.'s Tables 1/2."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from au_lightning import event_f1, reports

Head = Literal["cnn", "cnn_smoothed", "lstm", "fused"]
HEADS: tuple[Head, ...] = get_args(Head)
#: the column names of the paper's tables; ``cnn_smoothed`` (the CNN's probabilities under a
#: centred moving average) is this framework's temporal control, not a row of the paper
HEAD_NAMES: dict[Head, str] = {
    "cnn": "ANet",
    "cnn_smoothed": "ANet-MA",
    "lstm": "LSTM",
    "fused": "Ours",
}


def moving_average(probs: Tensor, frames: int) -> Tensor:
    """The centred ``frames``-frame moving average (odd ``frames``) of per-frame values
    (T, L) of one run of consecutive frames: frame t averages frames t - k .. t + k
    (k = frames // 2) that exist, so the first and last k frames average fewer frames,
    and nothing crosses into another video. The temporal control that costs nothing,
    against which the LSTMs and fusion (Sec. 3.2-3.3) are measured."""
    if frames < 1 or frames % 2 == 0:
        raise ValueError(f"the moving average needs an odd number of frames, got {frames}")
    k = frames // 2
    x = probs.double().T[:, None]  # (L, 1, T)
    ones = torch.ones_like(x[:1])
    kernel = torch.ones(1, 1, frames, dtype=x.dtype, device=x.device)
    total = F.conv1d(x, kernel, padding=k)
    count = F.conv1d(ones, kernel, padding=k)
    return (total / count)[:, 0].T.to(probs.dtype)


def event_scores(
    pred: Tensor, target: Tensor, videos: Tensor, aus: Sequence[int], overlap: float = 0.5
) -> dict[str, float]:
    """``event_f1_AU<n>`` and ``event_f1_mean`` (NaN-aware mean over AUs) of binary per-frame
    predictions (N, L) of videos in frame order, ``videos`` (N,) telling them apart (Sec. 4.2,
    F1-event of Ding et al. [37] as :func:`au_lightning.event_f1`)."""
    per_au = event_f1(pred, target, videos, overlap).numpy()
    scores = {f"event_f1_AU{a}": float(v) for a, v in zip(aus, per_au, strict=True)}
    known = per_au[~np.isnan(per_au)]
    scores["event_f1_mean"] = float(known.mean()) if len(known) else math.nan
    return scores


def hybrid_table(scores: Mapping[str, float], aus: Sequence[int]) -> list[list[str]]:
    """Rows AU x (F1-frame, F1-event) x (ANet, LSTM, Ours) and an ``Avg`` row (x100), from
    keys ``<head>/f1_AU<n>`` and ``<head>/event_f1_AU<n>``; heads without scores are left
    out (a run whose LSTMs or fusion were not trained)."""
    heads = [h for h in HEADS if f"{h}/f1_mean" in scores]
    header = ["AU"]
    header += [f"F1-frame {HEAD_NAMES[h]}" for h in heads]
    header += [f"F1-event {HEAD_NAMES[h]}" for h in heads]
    header += [f"AUC {HEAD_NAMES[h]}" for h in heads]
    rows = [header]
    for au in [*aus, None]:
        key = "mean" if au is None else f"AU{au}"
        row = ["Avg" if au is None else str(au)]
        for metric in ("f1", "event_f1", "auc"):
            row += [reports.percent(scores.get(f"{h}/{metric}_{key}")) for h in heads]
        rows.append(row)
    return rows
