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
    au_number,
    column_index,
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
    occ_cols = {
        au_number(h): i
        for i, h in enumerate(header)
        if h.upper().startswith("AU") and not h.lower().endswith("_int")
    }
    int_cols = {
        au_number(h[:-4]): i
        for i, h in enumerate(header)
        if h.upper().startswith("AU") and h.lower().endswith("_int")
    }
    for mapping in (occ_cols, int_cols):
        if None in mapping:
            bad = header[mapping[None]]
            raise DatasetFormatError(file, f"column {bad!r} is not an AU", "AU<n> or AU<n>_int", 1)
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
    if "expression" in header:
        expression = labels(header.index("expression"), range(128))
    weight = None
    if "weight" in header:
        weight = _float_column(file, header.index("weight"), rows, lines)
    frame = int_column(file, "frame", [r[cols["frame"]] for r in rows], lines)
    paths = np.array([r[cols["path"]].strip() for r in rows], dtype=str)
    missing = MissingImages(dataset, on_missing_image, image_root, sources)
    keep = missing.keep_existing(paths, file, lines)
    missing.report()

    def text(name: str) -> np.ndarray:
        return np.array([r[cols[name]].strip() for r in rows], dtype=str)[keep]

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[keep]

    return FrameIndex.from_columns(
        path=paths[keep],
        subject=text("subject"),
        video=text("video"),
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
