"""EmotioNet reader (Benitez-Quiroz et al.): the manually annotated AU CSV of the challenge.

The CSV has the columns ``URL``, ``URL orig`` and one quoted ``'AU N'`` column per AU with
values 0/1 and **999 = not scored / occluded**, which becomes -1 (unknown), never 0.
Images are the local copies of the URLs, named by the URL's last path segment, under
``image_root`` (default ``<root>/images``). EmotioNet has no subject ids: every image is its
own subject (and video), so subject-exclusive splits become image-level splits.
"""

from __future__ import annotations

from collections.abc import Iterable
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

__all__ = ["read_emotionet"]

UNKNOWN = 999


def read_emotionet(
    root: str | Path,
    aus: str | Iterable[int] | None = None,
    *,
    labels_file: str = "manual_annotations.csv",
    image_root: str | Path | None = None,
    on_missing_image: MissingImagePolicy = "error",
) -> FrameIndex:
    """Read the EmotioNet manual annotations.

    Args:
        root: folder holding ``labels_file``.
        aus: AUs to keep (default: every ``'AU N'`` column of the file).
        labels_file: the manual-annotation CSV, relative to ``root``.
        image_root: folder of the downloaded images (default ``<root>/images``).
        on_missing_image: ``"error"`` or ``"skip"`` (counted and logged).
    """
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root / "images"
    file = root / labels_file
    sources = SourceLog()
    header, rows, lines = read_csv_rows(file, sources)
    url_col = column_index(file, header, "URL", "the image URL column 'URL'")
    au_cols = {au_number(h): i for i, h in enumerate(header) if h.strip("'\" ").startswith("AU")}
    au_cols.pop(None, None)
    wanted = tuple(au_cols) if aus is None else resolve_aus(aus)
    columns = require_au_columns(file, au_cols, wanted, "'AU N' columns")
    occ = np.zeros((len(rows), len(wanted)), dtype=np.int64)
    for j, col in enumerate(columns):
        cells = [r[col] for r in rows]
        occ[:, j] = int_column(file, header[col], cells, lines, allowed=(0, 1, UNKNOWN))
    occ[occ == UNKNOWN] = -1
    names = np.array([r[url_col].strip().rstrip("/").rsplit("/", 1)[-1] for r in rows], dtype=str)
    _check_unique(file, names, lines)
    missing = MissingImages("emotionet", on_missing_image, image_root, sources)
    keep = missing.keep_existing(names, file, lines)
    missing.report()
    return FrameIndex.from_columns(
        path=names[keep],
        subject=names[keep],
        video=names[keep],
        frame=np.zeros(len(keep), dtype=np.int32),
        aus=wanted,
        occurrence=occ[keep],
        root=str(image_root),
        dataset="emotionet",
        sources=sources.entries,
        notes=missing.notes,
    )


def _check_unique(file: Path, names: np.ndarray, lines: list[int]) -> None:
    seen: dict[str, int] = {}
    for name, line in zip(names.tolist(), lines, strict=True):
        if name in seen:
            raise DatasetFormatError(
                file,
                f"image name {name!r} also on line {seen[name]}",
                "URLs whose last path segments (the local file names) differ",
                line,
            )
        seen[name] = line
