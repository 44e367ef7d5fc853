"""FrameIndex operations, the npz cache and its invalidation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from au_lightning.data import (
    FrameIndex,
    all_positive_f1,
    cache_dir,
    cached_read,
    intensity_threshold,
    resolve_aus,
)
from tests.layouts import write_bp4d_occ


def make_index(subjects=("S1", "S1", "S2", "S3"), dataset="toy") -> FrameIndex:
    n = len(subjects)
    return FrameIndex.from_columns(
        path=[f"{s}/{i}.png" for i, s in enumerate(subjects)],
        subject=list(subjects),
        video=[f"{s}_v" for s in subjects],
        frame=np.arange(n),
        aus=(1, 2, 12),
        occurrence=np.array([[1, 0, -1], [0, 0, 1], [1, 1, 0], [-1, 0, 0]][:n]),
        intensity=np.array([[3, 0, -1], [1, 0, 2], [2, 5, 0], [-1, 0, 1]][:n]),
        extras={"partition": np.array(["a", "b", "a", "b"][:n])},
        dataset=dataset,
    )


def test_categorical_columns_and_views() -> None:
    ix = make_index()
    assert ix.subject_names.tolist() == ["S1", "S2", "S3"]
    assert ix.subject_code.tolist() == [0, 0, 1, 2]
    assert ix.subject.tolist() == ["S1", "S1", "S2", "S3"]
    assert ix.frames_per_subject() == {"S1": 2, "S2": 1, "S3": 1}
    rates = ix.base_rates()
    assert rates[1] == pytest.approx(2 / 3) and rates[12] == pytest.approx(1 / 3)
    assert ix.unknown_counts() == {1: 1, 2: 0, 12: 1}
    assert "4 frames, 3 subjects" in ix.summary()


def test_select_aus_orders_columns_and_rejects_missing() -> None:
    ix = make_index().select_aus([12, 1])
    assert ix.aus == (12, 1)
    np.testing.assert_array_equal(ix.occurrence, [[-1, 1], [1, 0], [0, 1], [0, -1]])
    np.testing.assert_array_equal(ix.intensity[:, 0], [-1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"AU 9 not in the toy labels; it has AUs 1, 2, 12"):
        make_index().select_aus([1, 9])


def test_take_prunes_names_and_select_subjects() -> None:
    ix = make_index().select_subjects(["S3", "S1"])
    assert ix.subject_names.tolist() == ["S1", "S3"] and ix.subject_code.tolist() == [0, 0, 1]
    assert ix.extras["partition"].tolist() == ["a", "b", "b"]
    assert ix.video_names.tolist() == ["S1_v", "S3_v"]
    with pytest.raises(ValueError, match=r"subject\(s\) S9 not in the toy index"):
        make_index().select_subjects(["S9"])


@pytest.mark.parametrize(("rule", "level"), [(">0", 1), (">=1", 1), (">=2", 2), (">1", 2), (3, 3)])
def test_intensity_thresholds(rule, level) -> None:
    assert intensity_threshold(rule) == level
    ix = make_index().with_occurrence_from_intensity(rule)
    raw = make_index().intensity
    np.testing.assert_array_equal(ix.occurrence, np.where(raw < 0, -1, raw >= level))


def test_all_positive_f1_is_sklearns_f1_of_predicting_every_known_frame_positive() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    occurrence = rng.choice([-1, 0, 0, 1], size=(200, 3)).astype(np.int8)
    occurrence[:, 2] = -1  # an AU with no known label
    ours = all_positive_f1(occurrence)
    for j in range(2):
        known = occurrence[:, j] >= 0
        truth = occurrence[known, j]
        expected = f1_score(truth, np.ones_like(truth))
        assert ours[j] == pytest.approx(expected)
    assert np.isnan(ours[2])


def test_threshold_rejects_bad_rules() -> None:
    for rule in ("> 0.5", 0, 6, "big", True):
        with pytest.raises(ValueError, match="intensity threshold"):
            intensity_threshold(rule)


def test_concat_merges_categories() -> None:
    a = make_index(("S2", "S1"))
    b = make_index(("S3", "S1", "S4"))
    ab = FrameIndex.concat([a, b])
    assert ab.subject.tolist() == ["S2", "S1", "S3", "S1", "S4"]
    assert ab.subject_names.tolist() == ["S1", "S2", "S3", "S4"]
    np.testing.assert_array_equal(ab.occurrence, np.concatenate([a.occurrence, b.occurrence]))
    assert ab.extras["partition"].tolist() == ["a", "b", "a", "b", "a"]
    with pytest.raises(ValueError, match="different aus"):
        FrameIndex.concat([a, b.select_aus([1, 2])])


def test_save_load_roundtrip(tmp_path: Path) -> None:
    ix = make_index()
    ix.save(tmp_path / "ix.npz")
    back = FrameIndex.load(tmp_path / "ix.npz")
    for name in ("path", "subject_code", "subject_names", "frame", "occurrence", "intensity"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ix, name))
    assert back.aus == ix.aus and back.expression is None and back.dataset == "toy"
    assert back.extras["partition"].tolist() == ix.extras["partition"].tolist()


def test_constructor_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"occurrence has shape \(2, 2\); expected \(2, 3\)"):
        FrameIndex.from_columns(
            path=["a", "b"],
            subject=["s", "s"],
            video=["v", "v"],
            frame=[0, 1],
            aus=(1, 2, 3),
            occurrence=np.zeros((2, 2)),
        )
    with pytest.raises(ValueError, match="names an AU twice"):
        resolve_aus([1, 1])
    with pytest.raises(ValueError, match="unknown AU set 'bp5d'"):
        resolve_aus("bp5d")


def test_memory_per_frame_is_columnar() -> None:
    n, L = 100_000, 23
    ix = FrameIndex.from_columns(
        path=np.full(n, "x"),
        subject=np.repeat(np.arange(100).astype(str), n // 100),
        video=np.repeat(np.arange(1000).astype(str), n // 1000),
        frame=np.arange(n),
        aus=range(1, L + 1),
        occurrence=np.zeros((n, L)),
        intensity=np.zeros((n, L)),
    )
    per_frame = ix.nbytes(include_paths=False) / n
    assert per_frame < 4 + 4 + 4 + 2 * L + 1  # codes, frame, occurrence + intensity (int8)


def test_cache_hit_and_invalidation(tmp_path: Path) -> None:
    root, cache = tmp_path / "bp4d", tmp_path / "cache"
    write_bp4d_occ(root, "F001", "T1", {1: {1: 1}, 2: {}})
    first = cached_read("bp4d", root, directory=cache)
    assert len(list(cache.glob("bp4d-*.npz"))) == 1
    assert cached_read("bp4d", root, directory=cache).frame.tolist() == [1, 2]
    # an edited label file invalidates the cache: the sizes/mtimes no longer match
    label = root / "AUCoding" / "AU_OCC" / "F001_T1.csv"
    st = label.stat()
    write_bp4d_occ(root, "F001", "T1", {1: {1: 1}, 2: {1: 1}})  # same size, new content
    assert label.stat().st_size == st.st_size
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    edited = cached_read("bp4d", root, directory=cache)
    assert edited.occurrence[1, 0] == 1 and first.occurrence[1, 0] == 0
    # a new label file (the folder's mtime changes) invalidates it too
    write_bp4d_occ(root, "F002", "T1", {5: {}})
    assert cached_read("bp4d", root, directory=cache).subjects == ["F001", "F002"]
    # other options are another cache entry
    cached_read("bp4d", root, directory=cache, aus=[1, 2])
    assert len(list(cache.glob("bp4d-*.npz"))) == 2


def test_an_empty_cache_variable_means_the_default_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AU_LIGHTNING_CACHE", "")  # not the working directory
    assert cache_dir() == Path.home() / ".cache" / "au_lightning"
    monkeypatch.setenv("AU_LIGHTNING_CACHE", "/somewhere")
    assert cache_dir() == Path("/somewhere")


def test_the_cache_sees_image_folders_that_come_back(tmp_path: Path) -> None:
    """Issue 23 item 4: with on_missing_image=skip, a missing image folder skips its frames,
    the summary says so, and restoring the folder makes the cached index stale."""
    root, cache = tmp_path / "bp4d", tmp_path / "cache"
    write_bp4d_occ(root, "F001", "T1", {f: {} for f in range(1, 7)})
    write_bp4d_occ(root, "F001", "T2", {f: {} for f in range(1, 5)})
    shutil.move(root / "F001" / "T2", tmp_path / "T2-aside")
    partial = cached_read("bp4d", root, directory=cache, on_missing_image="skip")
    assert len(partial) == 6
    assert "4 frames skipped: no image under" in partial.summary()
    assert "first: F001_T2.csv:2 (F001/T2/1.jpg)" in partial.summary()
    again = cached_read("bp4d", root, directory=cache, on_missing_image="skip")
    assert len(again) == 6 and again.notes == partial.notes  # the notes survive the cache
    shutil.move(tmp_path / "T2-aside", root / "F001" / "T2")
    restored = cached_read("bp4d", root, directory=cache, on_missing_image="skip")
    assert len(restored) == 10 and restored.notes == ()


def test_the_cache_sees_images_restored_into_a_folder(tmp_path: Path) -> None:
    root, cache = tmp_path / "bp4d", tmp_path / "cache"
    write_bp4d_occ(root, "F001", "T1", {f: {} for f in range(1, 5)})
    image = root / "F001" / "T1" / "0003.jpg"
    image.rename(tmp_path / "aside.jpg")
    assert len(cached_read("bp4d", root, directory=cache, on_missing_image="skip")) == 3
    (tmp_path / "aside.jpg").rename(image)
    assert len(cached_read("bp4d", root, directory=cache, on_missing_image="skip")) == 4
