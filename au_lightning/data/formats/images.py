"""A folder of unlabelled face images, for ``predict`` (e.g. the output of ``au-lightning align``).

Layout: any image files under ``root``, in sub-folders or not. Every AU label is unknown
(-1), so the frames can be predicted but never scored. Each image is its own subject and
video (named by its path without the suffix), as in EmotioNet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.formats._common import SourceLog, require_dir
from au_lightning.data.index import FrameIndex, resolve_aus

__all__ = ["IMAGE_EXTENSIONS", "image_files", "read_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def image_files(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """The files under ``root`` (recursively) whose suffix is among ``extensions`` (with or
    without the dot, any case), as sorted paths relative to ``root``."""
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in suffixes and p.is_file()
    )


def read_images(
    root: str | Path,
    aus: str | Iterable[int] = "bp4d",
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> FrameIndex:
    """Every image under ``root`` (sorted by path), with the label columns of ``aus`` all
    unknown. A folder without images is an error naming it and the extensions looked for."""
    root = require_dir(Path(root), "image folder")
    sources = SourceLog()
    sources.add(root)
    paths = image_files(root, extensions)
    if not paths:
        raise DatasetFormatError(
            root, "no image files", f"images with a suffix among {', '.join(sorted(extensions))}"
        )
    aus = resolve_aus(aus)
    ids = np.array([p.rsplit(".", 1)[0] for p in paths], dtype=str)
    return FrameIndex.from_columns(
        path=np.array(paths, dtype=str),
        subject=ids,
        video=ids,
        frame=np.zeros(len(paths), dtype=np.int32),
        aus=aus,
        occurrence=np.full((len(paths), len(aus)), -1, dtype=np.int8),
        root=str(root),
        dataset="images",
        sources=sources.entries,
    )
