"""FrameIndex: the columnar table every dataset reader returns (DESIGN.md, "the data contract").

Columns are numpy arrays, one entry per labelled frame; there are no per-frame Python objects,
so an EmotioNet-scale index (1M frames x 23 AUs) takes about 60 bytes a frame besides paths.
Subjects and videos are categorical: int32 codes into a sorted array of names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from au_lightning.errors import ConfigError

__all__ = [
    "AU_SETS",
    "FrameIndex",
    "all_positive_f1",
    "intensity_threshold",
    "occurrence_from_intensity",
    "positive_rates",
    "resolve_aus",
]

# the 23 AUs of the EmotioNet challenge 2020 (Ji et al.): 43 eyes closed, 51-56 head pose
# fmt: off
_EMOTIONET = (1, 2, 4, 5, 6, 9, 10, 12, 15, 17, 18, 20, 24, 25, 26, 28, 43,
              51, 52, 53, 54, 55, 56)
# fmt: on

#: Named AU sets used by the papers and the published protocols.
AU_SETS: dict[str, tuple[int, ...]] = {
    "bp4d": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "bp4d_intensity": (6, 10, 12, 14, 17),
    "disfa": (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26),
    "disfa8": (1, 2, 4, 6, 9, 12, 25, 26),
    "gft": (1, 2, 4, 6, 10, 12, 14, 15, 23, 24),
    "emotionet": _EMOTIONET,
}

_THRESHOLDS = {">0": 1, ">=1": 1, ">1": 2, ">=2": 2, ">2": 3, ">=3": 3}


def resolve_aus(aus: str | Iterable[int]) -> tuple[int, ...]:
    """An AU set by name (``"bp4d"``, ``"disfa8"``, ...) or an explicit list of AU numbers."""
    if isinstance(aus, str):
        if aus not in AU_SETS:
            raise ConfigError(f"unknown AU set {aus!r}; known sets: {', '.join(AU_SETS)}")
        return AU_SETS[aus]
    out = tuple(int(a) for a in aus)
    if len(set(out)) != len(out):
        raise ConfigError(f"AU list {list(out)} names an AU twice")
    return out


def intensity_threshold(rule: str | int) -> int:
    """The minimum intensity counted as present: ``">0"`` -> 1, ``">=2"`` -> 2, or an int.

    Papers differ (MAML and RE-Net count DISFA intensity > 0 as present, MAL and most others
    >= 2), so there is no default: the config must say which.
    """
    if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool):
        level = int(rule)
    elif isinstance(rule, str) and rule.replace(" ", "") in _THRESHOLDS:
        level = _THRESHOLDS[rule.replace(" ", "")]
    else:
        raise ConfigError(
            f"intensity threshold {rule!r}; expected one of {', '.join(_THRESHOLDS)} "
            "or the minimum intensity as an integer 1..5"
        )
    if not 1 <= level <= 5:
        raise ConfigError(f"intensity threshold {rule!r}: minimum intensity must be in 1..5")
    return level


def positive_rates(occurrence: np.ndarray) -> np.ndarray:
    """Per-AU positive rate of an ``(N, L)`` occurrence matrix over its known labels
    (1 present, 0 absent; -1 unknown does not count), NaN for an AU with no known label."""
    known = (occurrence >= 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (occurrence == 1).sum(0) / known


def all_positive_f1(occurrence: np.ndarray) -> np.ndarray:
    """Per-AU F1 of calling every frame positive, 2p / (1 + p) for the positive rate p over
    the known labels (:func:`positive_rates`): what a model that ranks nothing scores at
    threshold 0.5, the floor an F1 must clear. NaN for an AU with no known label."""
    p = positive_rates(occurrence)
    return 2 * p / (1 + p)


def occurrence_from_intensity(intensity: np.ndarray, level: int = 1) -> np.ndarray:
    """int8 occurrence: 1 where intensity >= ``level``, 0 below, -1 where intensity is -1."""
    occ = (intensity >= level).astype(np.int8)
    occ[intensity < 0] = -1
    return occ


def _categorical(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    categories, codes = np.unique(names.astype(str), return_inverse=True)
    return codes.astype(np.int32), categories


@dataclasses.dataclass(frozen=True, eq=False)
class FrameIndex:
    """One row per labelled frame.

    Attributes:
        path: image path relative to ``root`` (str array), or a video path for video rows.
        subject_code, subject_names: subject of each row, as codes into the sorted names.
        video_code, video_names: video (session) of each row; names are unique in a dataset.
        frame: frame number within the video, as the label files number it (int32).
        aus: AU numbers of the label columns.
        occurrence: int8 (N, L): 1 present, 0 absent, -1 unknown.
        intensity: int8 (N, L) 0..5 with -1 unknown, or None.
        expression: int8 (N,) expression class (-1 none) with ``expression_names``, or None.
        weight: float32 (N,) per-sample weight such as annotator consistency, or None.
        extras: further per-row columns, e.g. ``partition`` or ``video_pos``.
        root: folder the paths are relative to.
        dataset: name of the format that produced the index.
        sources: (path, size, mtime_ns) of every file and folder read, for cache validation.
        notes: what the reader left out or found worth saying (frames skipped for want of
            an image, label files without rows), printed by :meth:`summary`.
    """

    path: np.ndarray
    subject_code: np.ndarray
    subject_names: np.ndarray
    video_code: np.ndarray
    video_names: np.ndarray
    frame: np.ndarray
    aus: tuple[int, ...]
    occurrence: np.ndarray
    intensity: np.ndarray | None = None
    expression: np.ndarray | None = None
    expression_names: tuple[str, ...] = ()
    weight: np.ndarray | None = None
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    root: str = ""
    dataset: str = ""
    sources: tuple[tuple[str, int, int], ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.path)
        L = len(self.aus)
        checks = {
            "subject_code": (self.subject_code, (n,)),
            "video_code": (self.video_code, (n,)),
            "frame": (self.frame, (n,)),
            "occurrence": (self.occurrence, (n, L)),
        }
        if self.intensity is not None:
            checks["intensity"] = (self.intensity, (n, L))
        if self.expression is not None:
            checks["expression"] = (self.expression, (n,))
        if self.weight is not None:
            checks["weight"] = (self.weight, (n,))
        for key, column in self.extras.items():
            checks[f"extras[{key!r}]"] = (column, (n, *column.shape[1:]))
        for name, (array, shape) in checks.items():
            if not isinstance(array, np.ndarray) or array.shape != shape:
                got = getattr(array, "shape", type(array).__name__)
                raise ValueError(f"FrameIndex.{name} has shape {got}; expected {shape}")
        for name, codes, names in (
            ("subject", self.subject_code, self.subject_names),
            ("video", self.video_code, self.video_names),
        ):
            if n and (codes.min() < 0 or codes.max() >= len(names)):
                raise ValueError(f"FrameIndex.{name}_code out of range of {name}_names")
        if len(set(self.aus)) != L:
            raise ValueError(f"FrameIndex.aus {self.aus} names an AU twice")

    @classmethod
    def from_columns(
        cls,
        *,
        path: Sequence[str] | np.ndarray,
        subject: Sequence[str] | np.ndarray,
        video: Sequence[str] | np.ndarray,
        frame: Sequence[int] | np.ndarray,
        aus: Sequence[int],
        occurrence: np.ndarray,
        **kwargs: Any,
    ) -> FrameIndex:
        """Build from plain columns: subjects and videos given as strings per row."""
        subject_code, subject_names = _categorical(np.asarray(subject))
        video_code, video_names = _categorical(np.asarray(video))
        if kwargs.get("intensity") is not None:
            kwargs["intensity"] = np.asarray(kwargs["intensity"], dtype=np.int8)
        if kwargs.get("expression") is not None:
            kwargs["expression"] = np.asarray(kwargs["expression"], dtype=np.int8)
        if kwargs.get("weight") is not None:
            kwargs["weight"] = np.asarray(kwargs["weight"], dtype=np.float32)
        return cls(
            path=np.asarray(path, dtype=str),
            subject_code=subject_code,
            subject_names=subject_names,
            video_code=video_code,
            video_names=video_names,
            frame=np.asarray(frame, dtype=np.int32),
            aus=tuple(int(a) for a in aus),
            occurrence=np.asarray(occurrence, dtype=np.int8),
            **kwargs,
        )

    # -- views ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.path)

    @property
    def subject(self) -> np.ndarray:
        """Subject name of each row (a str array built on demand)."""
        return self.subject_names[self.subject_code]

    @property
    def video(self) -> np.ndarray:
        """Video name of each row (a str array built on demand)."""
        return self.video_names[self.video_code]

    @property
    def subjects(self) -> list[str]:
        return self.subject_names.tolist()

    def frames_per_subject(self) -> dict[str, int]:
        counts = np.bincount(self.subject_code, minlength=len(self.subject_names))
        return dict(zip(self.subjects, counts.tolist(), strict=True))

    def base_rates(self) -> dict[int, float]:
        """Positive rate per AU over the frames whose label is known (NaN if none is)."""
        return dict(zip(self.aus, positive_rates(self.occurrence).tolist(), strict=True))

    def unknown_counts(self) -> dict[int, int]:
        return dict(zip(self.aus, (self.occurrence < 0).sum(0).tolist(), strict=True))

    def summary(self) -> str:
        """A short text summary: subjects, frames, base rate and unknowns per AU."""
        rates = self.base_rates()
        unknown = self.unknown_counts()
        lines = [
            f"{self.dataset or 'index'}: {len(self)} frames, {len(self.subject_names)} subjects, "
            f"{len(self.video_names)} videos, {len(self.aus)} AUs",
            "AU    base rate  unknown",
        ]
        lines += [f"AU{au:<3} {rates[au]:9.3f}  {unknown[au]:7d}" for au in self.aus]
        return "\n".join([*lines, *self.notes])

    # -- selection --------------------------------------------------------------------------

    def replace(self, **changes: Any) -> FrameIndex:
        return dataclasses.replace(self, **changes)

    def select_aus(self, aus: str | Iterable[int]) -> FrameIndex:
        """Keep (and order) the label columns of ``aus``; an AU the index lacks is an error."""
        wanted = resolve_aus(aus)
        missing = [a for a in wanted if a not in self.aus]
        if missing:
            raise ConfigError(
                f"AU {', '.join(map(str, missing))} not in the {self.dataset or 'dataset'} "
                f"labels; it has AUs {', '.join(map(str, self.aus))}"
            )
        cols = [self.aus.index(a) for a in wanted]
        return self.replace(
            aus=wanted,
            occurrence=self.occurrence[:, cols],
            intensity=None if self.intensity is None else self.intensity[:, cols],
        )

    def take(self, rows: np.ndarray) -> FrameIndex:
        """Rows by integer position or boolean mask; unused subject/video names are dropped."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ValueError(f"row mask has shape {rows.shape}; expected ({len(self)},)")
            rows = np.flatnonzero(rows)
        s_used, s_code = np.unique(self.subject_code[rows], return_inverse=True)
        v_used, v_code = np.unique(self.video_code[rows], return_inverse=True)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return self.replace(
            path=self.path[rows],
            subject_code=s_code.astype(np.int32),
            subject_names=self.subject_names[s_used],
            video_code=v_code.astype(np.int32),
            video_names=self.video_names[v_used],
            frame=self.frame[rows],
            occurrence=self.occurrence[rows],
            intensity=pick(self.intensity),
            expression=pick(self.expression),
            weight=pick(self.weight),
            extras={k: v[rows] for k, v in self.extras.items()},
        )

    def subject_mask(self, subjects: Iterable[str]) -> np.ndarray:
        """Boolean row mask of the given subjects; a subject not in the index is an error."""
        wanted = [str(s) for s in subjects]
        unknown = sorted(set(wanted) - set(self.subjects))
        if unknown:
            raise ConfigError(
                f"subject(s) {', '.join(unknown)} not in the {self.dataset or 'dataset'} index "
                f"({len(self.subject_names)} subjects: {', '.join(self.subjects[:8])}...)"
            )
        codes = np.flatnonzero(np.isin(self.subject_names, wanted))
        return np.isin(self.subject_code, codes)

    def select_subjects(self, subjects: Iterable[str]) -> FrameIndex:
        return self.take(self.subject_mask(subjects))

    def with_occurrence_from_intensity(self, rule: str | int) -> FrameIndex:
        """Occurrence from intensity at a threshold (``">0"``, ``">=1"``, ``">=2"``).

        Unknown intensity (-1) stays unknown.
        """
        if self.intensity is None:
            raise ConfigError(f"the {self.dataset or 'dataset'} index has no intensity labels")
        level = intensity_threshold(rule)
        return self.replace(occurrence=occurrence_from_intensity(self.intensity, level))

    # -- combination and storage ------------------------------------------------------------

    @classmethod
    def concat(cls, indexes: Sequence[FrameIndex]) -> FrameIndex:
        """Stack indexes with the same AUs and root; subject/video names are merged."""
        if not indexes:
            raise ValueError("concat needs at least one FrameIndex")
        first = indexes[0]
        for other in indexes[1:]:
            for attr in ("aus", "root", "expression_names"):
                if getattr(other, attr) != getattr(first, attr):
                    raise ValueError(
                        f"cannot concat indexes with different {attr}: "
                        f"{getattr(first, attr)!r} vs {getattr(other, attr)!r}"
                    )
            for attr in ("intensity", "expression", "weight"):
                if (getattr(other, attr) is None) != (getattr(first, attr) is None):
                    raise ValueError(f"cannot concat indexes where only some have {attr}")
            if set(other.extras) != set(first.extras):
                raise ValueError(
                    f"cannot concat indexes with different extras: "
                    f"{sorted(first.extras)} vs {sorted(other.extras)}"
                )

        def cat(attr: str) -> np.ndarray | None:
            parts = [getattr(ix, attr) for ix in indexes]
            return None if parts[0] is None else np.concatenate(parts)

        def merge(codes: str, names: str) -> tuple[np.ndarray, np.ndarray]:
            all_names = np.unique(np.concatenate([getattr(ix, names) for ix in indexes]))
            remapped = [
                np.searchsorted(all_names, getattr(ix, names))[getattr(ix, codes)] for ix in indexes
            ]
            return np.concatenate(remapped).astype(np.int32), all_names

        s_code, s_names = merge("subject_code", "subject_names")
        v_code, v_names = merge("video_code", "video_names")
        return first.replace(
            path=np.concatenate([ix.path for ix in indexes]),
            subject_code=s_code,
            subject_names=s_names,
            video_code=v_code,
            video_names=v_names,
            frame=cat("frame"),
            occurrence=cat("occurrence"),
            intensity=cat("intensity"),
            expression=cat("expression"),
            weight=cat("weight"),
            extras={k: np.concatenate([ix.extras[k] for ix in indexes]) for k in first.extras},
            sources=tuple(sorted({s for ix in indexes for s in ix.sources})),
        )

    def save(self, file: str | Path) -> None:
        """Write an ``.npz`` (no pickles: it loads with ``allow_pickle=False``)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"extras": sorted(self.extras)}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                arrays[field.name] = value
            elif field.name != "extras":
                meta[field.name] = value
        for key, column in self.extras.items():
            arrays[f"extra__{key}"] = column
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(file, **arrays)

    @classmethod
    def load(cls, file: str | Path) -> FrameIndex:
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            arrays = {k: data[k] for k in data.files if k != "meta"}
        extras = {k: arrays.pop(f"extra__{k}") for k in meta.pop("extras")}
        meta["aus"] = tuple(meta["aus"])
        meta["expression_names"] = tuple(meta["expression_names"])
        meta["sources"] = tuple(tuple(s) for s in meta["sources"])
        meta["notes"] = tuple(meta.get("notes", ()))
        return cls(**arrays, **meta, extras=extras)

    def nbytes(self, *, include_paths: bool = True) -> int:
        """Memory held by the columns (numpy buffers)."""
        total = 0
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray) and (include_paths or field.name != "path"):
                total += value.nbytes
        return total + sum(v.nbytes for v in self.extras.values())
