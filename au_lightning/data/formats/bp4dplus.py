"""BP4D+ reader (Zhang et al. 2016): the BP4D ``AU_OCC`` layout with AU-named header columns.

Unlike BP4D's fixed ``0..99`` header, BP4D+ files name the coded AUs (about 35 columns, column
0 is the frame), so columns are always found by their header names, never by position. Tasks
T1, T6, T7 and T8 are AU-coded. There is no standard split: use a seeded subject-exclusive
k-fold (``protocol: kfold``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from au_lightning.data.formats._common import MissingImagePolicy
from au_lightning.data.formats.bp4d import read_au_occ_tree
from au_lightning.data.index import FrameIndex

__all__ = ["read_bp4dplus"]


def read_bp4dplus(
    root: str | Path,
    aus: str | Iterable[int] = "bp4d",
    *,
    intensity: bool = False,
    image_root: str | Path | None = None,
    on_missing_image: MissingImagePolicy = "error",
) -> FrameIndex:
    """Read a BP4D+ tree; the options are those of :func:`read_bp4d`."""
    return read_au_occ_tree(
        root,
        aus,
        dataset="bp4dplus",
        intensity=intensity,
        image_root=image_root,
        on_missing_image=on_missing_image,
    )
