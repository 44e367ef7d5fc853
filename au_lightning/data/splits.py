"""Subject-exclusive protocols: k-fold, leave-one-subject-out, published fold lists,
cross-dataset, and the validation reserve.

A :class:`Fold` names its training and test subjects and cannot be built with a subject on
both sides. :func:`fold_rows` applies it to a FrameIndex and refuses to drop subjects the
fold does not mention.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from au_lightning.data.errors import SplitError
from au_lightning.data.index import FrameIndex
from au_lightning.errors import ConfigError

__all__ = [
    "PUBLISHED_PARTS",
    "Fold",
    "ValidationStrategy",
    "cross_dataset_fold",
    "fold_rows",
    "folds_from_parts",
    "leave_one_subject_out",
    "published_folds",
    "select_fold",
    "subject_folds",
    "validation_reserve",
]

logger = logging.getLogger("au_lightning.data")

ValidationStrategy = Literal["subjects", "frames", "none"]

#: The DRML 3-fold subject lists used by JAA-Net, ME-GraphAU, LibreFace and FMAE
#: (``shared/reference/datasets.md``). Fold k tests on part k and trains on the others.
PUBLISHED_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "bp4d_3fold": {
        "part1": tuple(
            "F001 M007 F018 F008 F002 M004 F010 F009 M012 M001 F016 M014 F023 M008".split()
        ),
        "part2": tuple(
            "M011 F003 M010 M002 F005 F022 M018 M017 F013 M016 F020 F011 M013 M005".split()
        ),
        "part3": tuple("F007 F015 F006 F019 M006 M009 F012 M003 F004 F021 F017 M015 F014".split()),
    },
    "disfa_3fold": {
        "part1": tuple("SN002 SN010 SN001 SN026 SN027 SN032 SN030 SN009 SN016".split()),
        "part2": tuple("SN013 SN018 SN011 SN028 SN012 SN006 SN031 SN021 SN024".split()),
        "part3": tuple("SN003 SN029 SN023 SN025 SN008 SN005 SN007 SN017 SN004".split()),
    },
}


@dataclasses.dataclass(frozen=True)
class Fold:
    """Training and test subjects of one fold; a subject on both sides is an error."""

    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        both = sorted(set(self.train) & set(self.test))
        if both:
            raise SplitError(
                f"fold {self.name!r} puts subject(s) {', '.join(both)} on both the training "
                "and the test side; folds must be subject-exclusive"
            )
        if not self.test:
            raise SplitError(f"fold {self.name!r} has no test subjects")


def subject_folds(index: FrameIndex, k: int, seed: int = 0) -> list[Fold]:
    """Seeded subject-exclusive k-fold with balanced frame counts.

    Subjects are taken in a seeded random order and each goes to the fold with the fewest
    frames so far (greedy list scheduling), so the largest and smallest folds differ by at
    most the largest subject's frame count.
    """
    subjects = index.subject_names
    if not 2 <= k <= len(subjects):
        raise ConfigError(f"k={k} folds: need 2 <= k <= the number of subjects ({len(subjects)})")
    counts = np.bincount(index.subject_code, minlength=len(subjects))
    order = np.random.default_rng(seed).permutation(len(subjects))
    load = np.zeros(k, dtype=np.int64)
    members: list[list[str]] = [[] for _ in range(k)]
    for s in order:
        target = int(np.argmin(load))
        load[target] += counts[s]
        members[target].append(str(subjects[s]))
    parts = {f"fold{i}": tuple(sorted(m)) for i, m in enumerate(members)}
    return folds_from_parts(parts)


def leave_one_subject_out(index: FrameIndex) -> list[Fold]:
    """One fold per subject (sorted by name), testing on that subject alone."""
    return folds_from_parts({s: (s,) for s in index.subjects})


def folds_from_parts(parts: Mapping[str, Sequence[str]]) -> list[Fold]:
    """Fold i tests on part i and trains on all other parts."""
    seen: dict[str, str] = {}
    for name, subjects in parts.items():
        for s in subjects:
            if s in seen:
                raise SplitError(f"subject {s} is in both part {seen[s]!r} and part {name!r}")
            seen[s] = name
    return [
        Fold(
            name=name,
            train=tuple(s for other, subs in parts.items() if other != name for s in subs),
            test=tuple(subjects),
        )
        for name, subjects in parts.items()
    ]


def published_folds(name: str) -> list[Fold]:
    """The published 3-fold lists by name: ``"bp4d_3fold"`` or ``"disfa_3fold"``."""
    if name not in PUBLISHED_PARTS:
        raise ConfigError(
            f"unknown published fold list {name!r}; known: {', '.join(PUBLISHED_PARTS)}"
        )
    return folds_from_parts(PUBLISHED_PARTS[name])


def cross_dataset_fold(train: FrameIndex, test: FrameIndex) -> Fold:
    """Train on every subject of one index, test on every subject of another.

    Subject ids of two different datasets name different people; within one dataset a shared
    id is the same person, which the Fold check then rejects. Two readers over one folder
    (``bp4d`` and ``bp4dplus`` on the same root) are one dataset, and two indexes that list
    the same image files overlap whatever their names: both are a :class:`SplitError`.
    """
    train_root, test_root = _resolved_root(train), _resolved_root(test)
    located = bool(train_root and test_root)  # an index built in memory may have no root
    shared = sorted(_image_files(train, train_root) & _image_files(test, test_root))
    if located and shared:
        raise SplitError(
            f"protocol cross: {len(shared)} images are on both the training side "
            f"({train.dataset} at {train.root}) and the test side ({test.dataset} at "
            f"{test.root}), e.g. {shared[0]}; the two data sets overlap"
        )
    same = (train.dataset, train.root) == (test.dataset, test.root) or (
        located and train_root == test_root
    )
    prefix = ("", "") if same else (f"{train.dataset}:", f"{test.dataset}:")
    return Fold(
        name=f"{train.dataset}->{test.dataset}",
        train=tuple(prefix[0] + s for s in train.subjects),
        test=tuple(prefix[1] + s for s in test.subjects),
    )


def _resolved_root(index: FrameIndex) -> str:
    return str(Path(index.root).expanduser().resolve()) if index.root else ""


def _image_files(index: FrameIndex, root: str) -> set[str]:
    """The image (or video) files an index reads, as normalised absolute paths."""
    return {os.path.normpath(os.path.join(root, p)) for p in np.unique(index.path).tolist()}


def select_fold(folds: Sequence[Fold], fold: int | str) -> Fold:
    """A fold by name (e.g. ``"part1"``, a LOSO subject ``"2"``) or by 0-based position.

    A name wins: ``2`` is the fold named ``"2"`` whenever there is one, since a LOSO fold is
    named after its subject and a subject id may be a number. Otherwise an integer is a
    position, except among numeric fold names, where a position must be written ``"#2"``
    (a bare ``1`` there may mean a subject that is not in the data). Out of range, or no such
    name, is an error.
    """
    names = [f.name for f in folds]
    listed = f"{', '.join(names[:6])}{'...' if len(names) > 6 else ''}"
    given = str(fold).strip()
    if given in names:
        return folds[names.index(given)]
    explicit = given.startswith("#")
    number = given.removeprefix("#")
    if not number.lstrip("-").isdigit():
        raise ConfigError(f"fold {fold!r} not found; folds are named {listed}")
    if not explicit and any(name.isdigit() for name in names):
        raise ConfigError(
            f"fold {fold!r}: no fold is named {given!r}, and these fold names are numbers "
            f"({listed}), so a position must be explicit: write '#{given}' for the fold at "
            "0-based position " + given
        )
    i = int(number)
    if not 0 <= i < len(folds):
        raise ConfigError(
            f"fold {i} out of range: this protocol has {len(folds)} folds "
            f"(0..{len(folds) - 1}: {listed})"
        )
    return folds[i]


def fold_rows(index: FrameIndex, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (train, test) of ``fold`` in ``index``.

    A subject of the index that the fold names on neither side is an error (its frames would
    silently vanish); a fold subject absent from the index is logged.
    """
    present = set(index.subjects)
    uncovered = sorted(present - set(fold.train) - set(fold.test))
    if uncovered:
        raise SplitError(
            f"fold {fold.name!r} does not place subject(s) {', '.join(uncovered[:10])} of the "
            f"{index.dataset or 'dataset'} index on either side"
        )
    absent = sorted((set(fold.train) | set(fold.test)) - present)
    if absent:
        logger.info(
            "fold %s: %d listed subjects are not in the index (%s)",
            fold.name,
            len(absent),
            ", ".join(absent[:10]),
        )
    train = index.subject_mask([s for s in fold.train if s in present])
    test = index.subject_mask([s for s in fold.test if s in present])
    if not test.any():
        raise SplitError(f"fold {fold.name!r}: none of its test subjects is in the index")
    return np.flatnonzero(train), np.flatnonzero(test)


def validation_reserve(
    index: FrameIndex,
    train_rows: np.ndarray,
    strategy: ValidationStrategy,
    fraction: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into (train, validation).

    ``"subjects"``: about ``fraction`` of the training subjects are held out whole (Chu et
    al. use ~20%), at least one, leaving at least one. ``"frames"``: ``fraction`` of each
    training subject's frames, sampled uniformly per subject (MAL reserves ~2%), at least one
    frame per subject. ``"none"``: no validation rows.
    """
    rng = np.random.default_rng(seed)
    if strategy == "none":
        return train_rows, train_rows[:0]
    if not 0 < fraction < 1:
        raise ConfigError(f"validation fraction {fraction}; expected 0 < fraction < 1")
    codes = index.subject_code[train_rows]
    subjects = np.unique(codes)
    if strategy == "subjects":
        if len(subjects) < 2:
            raise SplitError("a subject validation reserve needs at least 2 training subjects")
        n_val = min(max(1, round(fraction * len(subjects))), len(subjects) - 1)
        held = rng.choice(subjects, size=n_val, replace=False)
        val = np.isin(codes, held)
    elif strategy == "frames":
        val = np.zeros(len(train_rows), dtype=bool)
        for s in subjects:
            rows = np.flatnonzero(codes == s)
            n_val = max(1, round(fraction * len(rows)))
            if n_val < len(rows):
                val[rng.choice(rows, size=n_val, replace=False)] = True
    else:
        raise ConfigError(
            f"validation strategy {strategy!r}; expected 'subjects', 'frames' or 'none'"
        )
    return train_rows[~val], train_rows[val]
