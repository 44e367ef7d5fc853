"""Subject-exclusive protocols: published lists, k-fold balance, LOSO, validation reserves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from au_lightning.data import (
    PUBLISHED_PARTS,
    Fold,
    FrameIndex,
    SplitError,
    cross_dataset_fold,
    fold_rows,
    folds_from_parts,
    leave_one_subject_out,
    published_folds,
    select_fold,
    subject_folds,
    validation_reserve,
)

# Published BP4D 3-fold subject sets, typed from shared/reference/datasets.md.
BP4D_TABLE = [
    "F001 M007 F018 F008 F002 M004 F010 F009 M012 M001 F016 M014 F023 M008",
    "M011 F003 M010 M002 F005 F022 M018 M017 F013 M016 F020 F011 M013 M005",
    "F007 F015 F006 F019 M006 M009 F012 M003 F004 F021 F017 M015 F014",
]


def index_of(frames_per_subject: dict[str, int], dataset: str = "toy") -> FrameIndex:
    subjects = np.repeat(list(frames_per_subject), list(frames_per_subject.values()))
    n = len(subjects)
    return FrameIndex.from_columns(
        path=np.char.add(subjects, "/x.png"),
        subject=subjects,
        video=subjects,
        frame=np.arange(n),
        aus=(1,),
        occurrence=np.zeros((n, 1)),
        dataset=dataset,
    )


def bp4d_fixture() -> FrameIndex:
    ids = [f"F{i:03d}" for i in range(1, 24)] + [f"M{i:03d}" for i in range(1, 19)]
    rng = np.random.default_rng(0)
    return index_of({s: int(rng.integers(5, 30)) for s in ids}, dataset="bp4d")


def test_bp4d_published_folds_reproduce_table() -> None:
    ix = bp4d_fixture()
    folds = published_folds("bp4d_3fold")
    assert [f.name for f in folds] == ["part1", "part2", "part3"]
    for k, fold in enumerate(folds):
        train, test = fold_rows(ix, fold)
        assert sorted(set(ix.subject[test])) == sorted(BP4D_TABLE[k].split())
        others = [s for j, row in enumerate(BP4D_TABLE) if j != k for s in row.split()]
        assert sorted(set(ix.subject[train])) == sorted(others)
        assert not set(ix.subject[train]) & set(ix.subject[test])
        assert len(train) + len(test) == len(ix)
    all_subjects = [s for part in PUBLISHED_PARTS["bp4d_3fold"].values() for s in part]
    assert len(all_subjects) == len(set(all_subjects)) == 41


def test_disfa_published_lists_are_disjoint() -> None:
    parts = PUBLISHED_PARTS["disfa_3fold"]
    subjects = [s for p in parts.values() for s in p]
    assert len(subjects) == len(set(subjects)) == 27


def test_subject_on_both_sides_cannot_be_constructed() -> None:
    with pytest.raises(SplitError, match="subject\\(s\\) S2 on both the training and the test"):
        Fold("bad", train=("S1", "S2"), test=("S2",))
    with pytest.raises(SplitError, match="S1 is in both part 'a' and part 'b'"):
        folds_from_parts({"a": ["S1"], "b": ["S1", "S2"]})


def test_fold_must_place_every_subject() -> None:
    ix = index_of({"S1": 3, "S2": 3, "S3": 3})
    with pytest.raises(SplitError, match="does not place subject\\(s\\) S3"):
        fold_rows(ix, Fold("f", train=("S1",), test=("S2",)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kfold_is_balanced_exclusive_and_seeded(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    counts = {f"S{i:02d}": int(rng.integers(10, 500)) for i in range(23)}
    ix = index_of(counts)
    folds = subject_folds(ix, 4, seed=seed)
    sizes = [len(fold_rows(ix, f)[1]) for f in folds]
    assert sum(sizes) == len(ix)
    assert max(sizes) - min(sizes) <= max(counts.values())  # greedy list-scheduling bound
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(counts)  # every subject tested exactly once
    assert [f.test for f in subject_folds(ix, 4, seed=seed)] == [f.test for f in folds]
    assert any(
        [f.test for f in subject_folds(ix, 4, seed=s)] != [f.test for f in folds]
        for s in range(seed + 1, seed + 4)
    )


def test_loso_and_fold_selection() -> None:
    ix = index_of({"S2": 2, "S1": 3, "S3": 1})
    folds = leave_one_subject_out(ix)
    assert [f.test for f in folds] == [("S1",), ("S2",), ("S3",)]
    assert select_fold(folds, "S3").train == ("S1", "S2")
    assert select_fold(folds, 1).name == "S2"
    with pytest.raises(ValueError, match=r"fold 3 out of range: this protocol has 3 folds \(0..2"):
        select_fold(folds, 3)
    with pytest.raises(ValueError, match="fold 'S9' not found"):
        select_fold(folds, "S9")


def test_numeric_subject_ids_are_names_before_positions() -> None:
    """Issue 23 item 6: LOSO fold "2" on subjects 2, 3, 10 tests subject 2, not position 2."""
    folds = leave_one_subject_out(index_of({"2": 2, "3": 2, "10": 2}))
    assert [f.name for f in folds] == ["10", "2", "3"]
    assert select_fold(folds, "2").test == ("2",)
    assert select_fold(folds, 2).test == ("2",)  # the CLI parses --data.fold 2 as an int
    assert select_fold(folds, "#2").test == ("3",)
    with pytest.raises(ValueError, match=r"no fold is named '1'.* write '#1'"):
        select_fold(folds, 1)
    with pytest.raises(ValueError, match=r"fold 5 out of range"):
        select_fold(folds, "#5")


def test_cross_dataset_fold() -> None:
    a = index_of({"F001": 2}, dataset="bp4d")
    b = index_of({"SN001": 2, "F001": 1}, dataset="disfa")
    fold = cross_dataset_fold(a, b)
    assert fold.name == "bp4d->disfa" and len(fold.test) == 2
    with pytest.raises(SplitError, match="F001 on both"):
        cross_dataset_fold(a, index_of({"F001": 1}, dataset="bp4d"))


def test_validation_reserve_subjects() -> None:
    ix = index_of({f"S{i}": 10 for i in range(10)})
    train, val = validation_reserve(ix, np.arange(len(ix)), "subjects", 0.2, seed=3)
    assert len(set(ix.subject[val])) == 2
    assert not set(ix.subject[val]) & set(ix.subject[train])
    assert len(train) + len(val) == len(ix)
    again = validation_reserve(ix, np.arange(len(ix)), "subjects", 0.2, seed=3)[1]
    np.testing.assert_array_equal(val, again)


def test_validation_reserve_frames_per_subject() -> None:
    ix = index_of({"S1": 100, "S2": 300, "S3": 50})
    rows = np.arange(len(ix))
    train, val = validation_reserve(ix, rows, "frames", 0.02, seed=0)
    per_subject = {s: int((ix.subject[val] == s).sum()) for s in ("S1", "S2", "S3")}
    assert per_subject == {"S1": 2, "S2": 6, "S3": 1}
    assert not set(train) & set(val) and len(train) + len(val) == len(ix)
    assert validation_reserve(ix, rows, "none", 0.2)[1].size == 0
    with pytest.raises(ValueError, match="expected 0 < fraction < 1"):
        validation_reserve(ix, rows, "frames", 1.5)


def test_cross_protocol_refuses_two_readers_of_one_folder(tmp_path: Path) -> None:
    """Issue 23 item 7: bp4d -> bp4dplus on one root put every subject on both sides."""
    a = index_of({"F001": 2, "M001": 2}, dataset="bp4d").replace(root=str(tmp_path))
    b = index_of({"F001": 2, "M001": 2}, dataset="bp4dplus").replace(root=str(tmp_path))
    with pytest.raises(SplitError, match=r"2 images are on both the training side \(bp4d"):
        cross_dataset_fold(a, b)
    # other files under the same root: the same people, so the shared ids are refused
    c = b.replace(path=np.array([f"other/{p}" for p in b.path.tolist()]))
    with pytest.raises(SplitError, match="F001, M001 on both"):
        cross_dataset_fold(a, c)
    elsewhere = b.replace(root=str(tmp_path / "elsewhere"))
    assert cross_dataset_fold(a, elsewhere).test == ("bp4dplus:F001", "bp4dplus:M001")
