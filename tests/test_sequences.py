"""Windows of consecutive frames (au_lightning.data.sequences) and SequenceDataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from au_lightning import ConfigError, FrameIndex
from au_lightning.data import (
    SequenceDataModule,
    WindowDataset,
    active_aus_per_frame,
    consecutive_segments,
    sequence_windows,
)

TINY_SYNTH = {"subjects": 6, "videos": 2, "frames": 16, "size": 32, "workers": 1}


def _index() -> FrameIndex:
    """Two subjects who both have a video named T1 (as BP4D's tasks), frames listed out of
    order, and a gap (frame 5 missing) in s1/T1."""
    rows = [("s1", "T1", f) for f in (3, 1, 2, 4, 6, 7, 8)]
    rows += [("s2", "T1", f) for f in (2, 1, 3)]
    rows += [("s1", "T2", f) for f in (1, 2)]
    subject, video, frame = (list(c) for c in zip(*rows, strict=True))
    occurrence = np.zeros((len(rows), 2), dtype=np.int8)
    return FrameIndex.from_columns(
        path=[f"{s}/{v}/{f}.jpg" for s, v, f in rows],
        subject=subject,
        video=video,
        frame=frame,
        aus=(1, 2),
        occurrence=occurrence,
    )


def _describe(index: FrameIndex, segment: np.ndarray) -> tuple[str, str, list[int]]:
    subjects = set(index.subject[segment])
    videos = set(index.video[segment])
    assert len(subjects) == 1 and len(videos) == 1
    return subjects.pop(), videos.pop(), index.frame[segment].tolist()


def test_segments_split_at_videos_subjects_and_gaps() -> None:
    index = _index()
    segments = consecutive_segments(index, np.arange(len(index)))
    described = [_describe(index, s) for s in segments]
    assert described == [
        ("s1", "T1", [1, 2, 3, 4]),
        ("s1", "T1", [6, 7, 8]),
        ("s1", "T2", [1, 2]),
        ("s2", "T1", [1, 2, 3]),
    ]
    # a subset of rows: only those rows, split where the subset has a gap
    subset = np.flatnonzero(index.frame != 2)
    assert [_describe(index, s)[2] for s in consecutive_segments(index, subset)] == [
        [1],
        [3, 4],
        [6, 7, 8],
        [1],
        [1],
        [3],
    ]


def test_a_frame_listed_twice_is_an_error_naming_the_video() -> None:
    index = _index()
    twice = index.take(np.array([0, 0, 1]))
    with pytest.raises(ConfigError, match="subject 's1', video 'T1' lists frame 3 twice"):
        consecutive_segments(twice, np.arange(3))


def test_windows_cover_every_frame_of_long_enough_segments() -> None:
    segments = [np.arange(10), np.arange(100, 103), np.arange(200, 208)]
    windows = sequence_windows(segments, window=4, stride=3)
    assert [w.tolist()[0] for w in windows] == [0, 3, 6, 200, 203, 204]
    assert all(len(w) == 4 and (np.diff(w) == 1).all() for w in windows)
    covered = np.unique(np.concatenate(windows))
    assert set(covered) == set(range(10)) | set(range(200, 208))  # 100..102: too short
    with pytest.raises(ConfigError, match="window and stride"):
        sequence_windows(segments, window=0, stride=1)


def test_window_items_mask_the_burn_in_frames() -> None:
    index = _index()
    index.occurrence[:, 0] = 1
    index.occurrence[0, 1] = -1
    window = consecutive_segments(index, np.arange(len(index)))[0]
    item = WindowDataset(index, [window], burn_in=2)[0]
    assert item["rows"].tolist() == window.tolist()
    assert item["loss_mask"].tolist() == [False, False, True, True]
    np.testing.assert_array_equal(item["occurrence"].numpy(), index.occurrence[window])
    assert active_aus_per_frame(index.occurrence[window]) == 1.0  # -1 is not present


@pytest.fixture
def data(cache: Path) -> SequenceDataModule:
    module = SequenceDataModule(
        dataset="bp4d",
        synth=TINY_SYNTH,
        protocol="kfold",
        num_folds=3,
        val_fraction=0.34,
        window=6,
        stride=4,
        burn_in=2,
    )
    module.setup()
    return module


def test_windows_never_cross_videos_or_subjects_and_stay_in_their_split(
    data: SequenceDataModule,
) -> None:
    index = data.index
    windows = data.train_windows()
    assert windows and all(len(w) == 6 for w in windows)
    for window in windows:
        assert len(set(index.subject_code[window])) == 1
        assert len(set(index.video_code[window])) == 1
        assert (np.diff(index.frame[window]) == 1).all()
    assert set(np.concatenate(windows)) == set(data.train_rows)  # 16-frame videos: all covered
    for name, rows in (("val", data.val_rows), ("test", data.test_rows)):
        segments = data.segments(name)
        assert sorted(np.concatenate(segments)) == sorted(rows)
        assert all(len(set(index.video_code[s])) == 1 for s in segments)
    # the splits are subject-exclusive, so no window or segment shares a subject with another
    train_subjects = set(index.subject[data.train_rows])
    assert not train_subjects & set(index.subject[data.val_rows])
    assert not train_subjects & set(index.subject[data.test_rows])


def test_min_active_aus_keeps_the_active_windows_and_names_an_impossible_value(
    data: SequenceDataModule,
) -> None:
    index = data.index
    every = data.train_windows()
    activity = np.array([active_aus_per_frame(index.occurrence[w]) for w in every])
    threshold = float(activity[activity > 0].min())  # leaves out the windows without AUs
    data.hparams.min_active_aus = threshold
    kept = data.train_windows()
    assert len(kept) == int((activity >= threshold).sum()) < len(every)
    assert all(active_aus_per_frame(index.occurrence[w]) >= threshold for w in kept)
    data.hparams.min_active_aus = 13.0
    with pytest.raises(ConfigError, match=f"most active has {activity.max():.2f}"):
        data.train_windows()


def test_without_a_sequence_model_the_loaders_serve_frames(data: SequenceDataModule) -> None:
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].ndim == 4


def test_option_errors() -> None:
    with pytest.raises(ConfigError, match="burn_in"):
        SequenceDataModule(window=4, burn_in=4)
    with pytest.raises(ConfigError, match="val_strategy 'frames'"):
        SequenceDataModule(val_strategy="frames")
