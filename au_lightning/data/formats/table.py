"""The generic table format: any AU dataset, including a user's own, as one CSV.

Columns (by header name, any order)::

    path,subject,video,frame,AU1,AU2,...[,AU1_int,AU2_int,...][,expression][,weight]

``path`` is relative to ``image_root`` (default: the CSV's folder). Occurrence cells are 0/1,
intensity cells 0..5; an empty cell or one of ``unknown_values`` (default 9 and 999) is
unknown (-1). ``expression`` is a class code (empty or -1: none), ``weight`` a float.
GFT has no public loader: write it in this format and use the named AU set ``"gft"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.formats._common import (
    MissingImagePolicy,
    MissingImages,
    SourceLog,
    column_index,
    columns_by_au,
    int_column,
    read_csv_rows,
    require_au_columns,
)
from au_lightning.data.index import FrameIndex, resolve_aus

__all__ = ["read_table"]


def read_table(
    root: str | Path,
    aus: str | Iterable[int] | None = None,
    *,
    labels_file: str = "labels.csv",
    unknown_values: Sequence[int] = (9, 999),
    expression_names: Sequence[str] = (),
    image_root: str | Path | None = None,
    on_missing_image: MissingImagePolicy = "error",
    dataset: str = "table",
) -> FrameIndex:
    """Read a generic AU table.

    Args:
        root: folder holding ``labels_file``.
        aus: AUs to keep (default: every ``AU<n>`` column).
        labels_file: the CSV, relative to ``root``.
        unknown_values: cell values meaning unknown, besides an empty cell.
        expression_names: names of the expression codes, if the table has ``expression``.
        image_root: folder the ``path`` column is relative to (default ``root``).
        on_missing_image: ``"error"`` or ``"skip"`` (counted and logged).
        dataset: name recorded in the index (e.g. ``"gft"``).
    """
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root
    file = root / labels_file
    sources = SourceLog()
    header, rows, lines = read_csv_rows(file, sources)
    cols = {
        name: column_index(file, header, name, f"a {name!r} column")
        for name in ("path", "subject", "video", "frame")
    }
    occ_cols = _au_columns(file, header, intensity=False)
    int_cols = _au_columns(file, header, intensity=True)
    wanted = tuple(sorted(occ_cols)) if aus is None else resolve_aus(aus)
    require_au_columns(file, occ_cols, wanted, "AU<n> columns")
    unknown = tuple(int(v) for v in unknown_values)

    def labels(col: int, allowed: Iterable[int]) -> np.ndarray:
        values = int_column(
            file,
            header[col],
            [r[col] for r in rows],
            lines,
            allowed=(*allowed, *unknown, -1),
            empty=-1,
        )
        values[np.isin(values, unknown)] = -1
        return values

    def matrix(mapping: dict, allowed: Iterable[int]) -> np.ndarray:
        return (
            np.stack([labels(mapping[a], allowed) for a in wanted], axis=1)
            if rows
            else (np.zeros((0, len(wanted)), dtype=np.int64))
        )

    occurrence = matrix(occ_cols, (0, 1))
    intensity = None
    if int_cols:
        intensity = np.full(occurrence.shape, -1, dtype=np.int64)
        for j, au in enumerate(wanted):
            if au in int_cols:
                intensity[:, j] = labels(int_cols[au], range(6))
    expression = None
    if "expression" in header:  # unknown_values are AU codes: a class may be 9
        expression = int_column(
            file, "expression", [r[header.index("expression")] for r in rows], lines,
            allowed=(*range(128), -1), empty=-1,
        )  # fmt: skip
    weight = None
    if "weight" in header:
        weight = _float_column(file, header.index("weight"), rows, lines)
    frame = int_column(file, "frame", [r[cols["frame"]] for r in rows], lines)
    subjects = [r[cols["subject"]].strip() for r in rows]
    videos = [r[cols["video"]].strip() for r in rows]
    _check_rows(file, lines, subjects, videos, frame, occurrence, intensity, wanted)
    paths = np.array([r[cols["path"]].strip() for r in rows], dtype=str)
    missing = MissingImages(dataset, on_missing_image, image_root, sources)
    keep = missing.keep_existing(paths, file, lines)
    missing.report()

    def text(values: list[str]) -> np.ndarray:
        return np.array(values, dtype=str)[keep]

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[keep]

    return FrameIndex.from_columns(
        path=paths[keep],
        subject=text(subjects),
        video=text(videos),
        frame=frame[keep],
        aus=wanted,
        occurrence=occurrence[keep],
        intensity=pick(intensity),
        expression=pick(expression),
        expression_names=tuple(expression_names),
        weight=pick(weight),
        root=str(image_root),
        dataset=dataset,
        sources=sources.entries,
        notes=missing.notes,
    )


def _au_columns(file: Path, header: list[str], intensity: bool) -> dict[int, int]:
    """``{AU: column}`` of the occurrence (or ``_int``) columns."""
    cells = (
        (col, name, name[:-4] if intensity else name)
        for col, name in enumerate(header)
        if name.upper().startswith("AU") and name.lower().endswith("_int") == intensity
    )
    return columns_by_au(file, cells, "AU<n> or AU<n>_int")


def _check_rows(
    file: Path,
    lines: list[int],
    subjects: list[str],
    videos: list[str],
    frames: np.ndarray,
    occurrence: np.ndarray,
    intensity: np.ndarray | None,
    aus: tuple[int, ...],
) -> None:
    """Refuse an empty subject id, a frame listed twice (identical rows or not), and an
    intensity above 0 where the occurrence is 0."""
    for i, subject in enumerate(subjects):
        if not subject:
            raise DatasetFormatError(
                file, "empty subject id", "a subject id in every row", lines[i]
            )
    first: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(videos, frames.tolist(), strict=True)):
        if key in first:
            j = first[key]
            same = (occurrence[i] == occurrence[j]).all() and (
                intensity is None or (intensity[i] == intensity[j]).all()
            )
            what = "a duplicate of" if same else "the same frame as, with other labels than,"
            raise DatasetFormatError(
                file,
                f"row of video {key[0]!r} frame {key[1]} is {what} line {lines[j]}",
                "one row per frame",
                lines[i],
            )
        first[key] = i
    if intensity is not None:
        bad = np.argwhere((intensity > 0) & (occurrence == 0))
        if len(bad):
            i, j = (int(v) for v in bad[0])
            raise DatasetFormatError(
                file,
                f"AU{aus[j]}_int is {int(intensity[i, j])} but AU{aus[j]} is 0",
                "intensity 0 (or unknown) where the occurrence is 0",
                lines[i],
            )


def _float_column(file: Path, col: int, rows: list[list[str]], lines: list[int]) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.float32)
    for i, row in enumerate(rows):
        try:
            out[i] = float(row[col])
        except ValueError:
            raise DatasetFormatError(
                file, f"column 'weight' holds {row[col]!r}", "a number", lines[i]
            ) from None
    return out
