"""Windows of consecutive frames of one video, for temporal models (Chu et al. 2019, Sec. 4.2).

A *segment* is a maximal run of consecutive frame numbers of one video (a gap in the labelled
frames ends it), so a window never crosses a video, a subject or a gap. Training windows of
``window`` frames start every ``stride`` frames of a segment, plus one window ending at the
segment's last frame so that every frame is covered; evaluation uses whole segments.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from au_lightning.data.index import FrameIndex
from au_lightning.errors import ConfigError

__all__ = [
    "WindowDataset",
    "active_aus_per_frame",
    "consecutive_segments",
    "sequence_windows",
]

logger = logging.getLogger("au_lightning.data")


def consecutive_segments(index: FrameIndex, rows: np.ndarray) -> list[np.ndarray]:
    """The rows of ``index`` among ``rows`` grouped into runs of consecutive frames of one
    video of one subject, each in frame order; segments are ordered by (subject, video,
    first frame)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    subject = index.subject_code[rows].astype(np.int64)
    video = index.video_code[rows].astype(np.int64)
    frame = index.frame[rows].astype(np.int64)
    order = np.lexsort((frame, video, subject))
    rows, subject, video, frame = rows[order], subject[order], video[order], frame[order]
    same_video = (subject[1:] == subject[:-1]) & (video[1:] == video[:-1])
    duplicate = same_video & (frame[1:] == frame[:-1])
    if duplicate.any():
        at = int(np.flatnonzero(duplicate)[0])
        raise ConfigError(
            f"subject {str(index.subject_names[subject[at]])!r}, video "
            f"{str(index.video_names[video[at]])!r} lists frame {frame[at]} twice "
            f"(rows {rows[at]} and {rows[at + 1]}); frames of one video must be unique"
        )
    breaks = ~same_video | (frame[1:] != frame[:-1] + 1)
    return np.split(rows, np.flatnonzero(breaks) + 1)


def sequence_windows(segments: list[np.ndarray], window: int, stride: int) -> list[np.ndarray]:
    """Windows of ``window`` consecutive rows, every ``stride`` rows of each segment, plus one
    ending at the segment's last frame when the stride does not reach it. Segments shorter
    than ``window`` give no window (their frames are counted in the log)."""
    if window < 1 or stride < 1:
        raise ConfigError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    windows: list[np.ndarray] = []
    short = 0
    for segment in segments:
        if len(segment) < window:
            short += len(segment)
            continue
        starts = list(range(0, len(segment) - window + 1, stride))
        if starts[-1] + window < len(segment):
            starts.append(len(segment) - window)
        windows += [segment[s : s + window] for s in starts]
    if short:
        logger.info("%d frames are in segments shorter than window=%d: no window", short, window)
    return windows


def active_aus_per_frame(occurrence: np.ndarray) -> float:
    """The mean number of present AUs per frame of a window's labels ``(T, L)`` (Chu et al.
    Sec. 4.2 leave out training sequences with fewer than 1.5)."""
    return float((np.asarray(occurrence) == 1).sum(1).mean())


class WindowDataset(Dataset[dict[str, Any]]):
    """Items are windows (or whole segments) of rows, without images: ``rows`` (T,) int64
    rows of the FrameIndex, ``occurrence`` (T, L) int8 with -1 unknown, ``loss_mask`` (T,)
    bool, False for the first ``burn_in`` frames (Sec. 4.2: "the first 10 frames were
    disregarded during the backward pass"), and ``video`` the video code. A temporal
    model looks its inputs up by row (e.g. CNN features extracted once)."""

    def __init__(self, index: FrameIndex, windows: list[np.ndarray], burn_in: int = 0) -> None:
        self.index = index
        self.windows = windows
        self.burn_in = burn_in

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rows = self.windows[i]
        mask = np.ones(len(rows), dtype=bool)
        mask[: self.burn_in] = False
        return {
            "rows": torch.from_numpy(rows),
            "occurrence": torch.from_numpy(self.index.occurrence[rows]),
            "loss_mask": torch.from_numpy(mask),
            "video": int(self.index.video_code[rows[0]]),
        }
