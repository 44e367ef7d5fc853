"""AffectNet reader (Mollahosseini et al. 2017): manually annotated expression classes.

Layout::

    <root>/Manually_Annotated_file_lists/training.csv     (validation.csv for partition="val")
    <root>/Manually_Annotated_Images/<subDirectory_filePath>

Columns are found by header name (``subDirectory_filePath``, ``expression``). Classes 0..7
are neutral, happy, sad, surprise, fear, disgust, anger, contempt; 8-10 (none, uncertain,
non-face) are excluded, and how many were excluded is logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from au_lightning.data.formats._common import (
    MissingImagePolicy,
    MissingImages,
    SourceLog,
    column_index,
    expression_index,
    int_column,
    logger,
    read_csv_rows,
)
from au_lightning.data.index import FrameIndex

__all__ = ["AFFECTNET_EXPRESSIONS", "read_affectnet"]

AFFECTNET_EXPRESSIONS = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)
_LISTS = {"train": "training.csv", "val": "validation.csv"}


def read_affectnet(
    root: str | Path,
    *,
    partition: Literal["train", "val"] = "train",
    on_missing_image: MissingImagePolicy = "error",
) -> FrameIndex:
    """Read AffectNet's expression labels; classes 8-10 are excluded (and counted)."""
    if partition not in _LISTS:
        raise ValueError(f"partition={partition!r}; expected 'train' or 'val'")
    root = Path(root)
    file = root / "Manually_Annotated_file_lists" / _LISTS[partition]
    sources = SourceLog()
    header, rows, lines = read_csv_rows(file, sources)
    path_col = column_index(file, header, "subDirectory_filePath", "the image path column")
    expr_col = column_index(file, header, "expression", "the expression class column")
    labels = int_column(file, "expression", [r[expr_col] for r in rows], lines, allowed=range(11))
    valid = labels <= 7
    if (~valid).any():
        logger.info(
            "affectnet: excluded %d images of classes 8-10 (none, uncertain, non-face)",
            int((~valid).sum()),
        )
    image_root = root / "Manually_Annotated_Images"
    paths = np.array([r[path_col].strip() for r in rows], dtype=str)
    sel = np.flatnonzero(valid)
    missing = MissingImages("affectnet", on_missing_image, image_root, sources)
    keep = sel[missing.keep_existing(paths[sel], file, [lines[i] for i in sel])]
    missing.report()
    return expression_index(
        paths[keep],
        labels[keep],
        AFFECTNET_EXPRESSIONS,
        root=image_root,
        dataset="affectnet",
        sources=sources,
        notes=missing.notes,
    )
