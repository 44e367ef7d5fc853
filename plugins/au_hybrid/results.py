"""The hybrid model's results: event F1 per AU, and the table of Chu et al.'s Tables 1/2."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np
from torch import Tensor

from au_lightning import event_f1, reports

Head = Literal["cnn", "lstm", "fused"]
HEADS: tuple[Head, ...] = get_args(Head)
#: the column names of the paper's tables
HEAD_NAMES: dict[Head, str] = {"cnn": "ANet", "lstm": "LSTM", "fused": "Ours"}


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
