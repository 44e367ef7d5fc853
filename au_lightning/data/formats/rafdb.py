"""RAF-DB basic-expression reader (Li et al. 2017), auxiliary data for MAL.

Layout::

    <root>/EmoLabel/list_patition_label.txt     lines ``train_00001.jpg 5`` (sic: "patition")
    <root>/Image/aligned/train_00001_aligned.jpg

Labels 1..7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral; they are stored as
expression codes 0..6 with those names. The train/test split comes from the file-name prefix
and is kept in ``extras["partition"]``. RAF-DB has no AU labels (``aus`` is empty) and no
subject ids: every image is its own subject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.formats._common import (
    MissingImagePolicy,
    MissingImages,
    SourceLog,
    expression_index,
    read_text,
)
from au_lightning.data.index import FrameIndex

__all__ = ["RAFDB_EXPRESSIONS", "read_rafdb"]

RAFDB_EXPRESSIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def read_rafdb(
    root: str | Path,
    *,
    partition: Literal["train", "test", "all"] = "train",
    aligned: bool = True,
    consistency_file: str | None = None,
    on_missing_image: MissingImagePolicy = "error",
) -> FrameIndex:
    """Read RAF-DB basic expressions.

    Args:
        root: dataset root holding ``EmoLabel/`` and ``Image/``.
        partition: ``"train"`` or ``"test"`` (by file-name prefix), or ``"all"``.
        aligned: use ``Image/aligned/<stem>_aligned.jpg`` (else ``Image/original/<name>``).
        consistency_file: optional ``<name> <value>`` lines (relative to ``root``, e.g.
            SynthAU's ``EmoLabel/consistency.txt``): annotator consistency, read into
            ``weight``; every labelled image must have one.
        on_missing_image: ``"error"`` or ``"skip"`` (counted and logged).
    """
    if partition not in ("train", "test", "all"):
        raise ValueError(f"partition={partition!r}; expected 'train', 'test' or 'all'")
    root = Path(root)
    file = root / "EmoLabel" / "list_patition_label.txt"
    sources = SourceLog()
    names: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(read_text(file, sources).splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split()
        if len(cells) != 2 or not cells[1].isdigit() or not 1 <= int(cells[1]) <= 7:
            raise DatasetFormatError(file, f"line {line!r}", "'<name>.jpg <label 1..7>'", number)
        if not cells[0].startswith(("train_", "test_")):
            raise DatasetFormatError(
                file, f"file name {cells[0]!r}", "a name starting with train_ or test_", number
            )
        if cells[0] in seen:
            earlier = seen[cells[0]]
            what = "repeats" if labels[earlier] == int(cells[1]) - 1 else "relabels"
            raise DatasetFormatError(
                file,
                f"{cells[0]} {what} line {lines[earlier]}",
                "one line per image",
                number,
            )
        seen[cells[0]] = len(names)
        names.append(cells[0])
        labels.append(int(cells[1]) - 1)
        lines.append(number)
    split = np.array([n.split("_", 1)[0] for n in names], dtype=str)
    rows = np.ones(len(names), bool) if partition == "all" else split == partition
    folder = "Image/aligned" if aligned else "Image/original"
    paths = np.array(
        [
            f"{folder}/{n.rsplit('.', 1)[0]}_aligned.jpg" if aligned else f"{folder}/{n}"
            for n in names
        ],
        dtype=str,
    )
    sel = np.flatnonzero(rows)
    missing = MissingImages("rafdb", on_missing_image, root, sources)
    keep = sel[missing.keep_existing(paths[sel], file, [lines[i] for i in sel])]
    missing.report()
    index = expression_index(
        paths[keep],
        np.array(labels, dtype=np.int8)[keep],
        RAFDB_EXPRESSIONS,
        root=root,
        dataset="rafdb",
        sources=sources,
        notes=missing.notes,
        extras={"partition": split[keep]},
    )
    if consistency_file is None:
        return index
    weights = _read_consistency(root / consistency_file, sources)
    chosen = [names[i] for i in keep]
    absent = [n for n in chosen if n not in weights]
    if absent:
        raise DatasetFormatError(
            root / consistency_file, f"no value for {absent[0]!r}", "a line per labelled image"
        )
    return index.replace(
        weight=np.array([weights[n] for n in chosen], dtype=np.float32), sources=sources.entries
    )


def _read_consistency(file: Path, sources: SourceLog) -> dict[str, float]:
    values: dict[str, float] = {}
    for number, line in enumerate(read_text(file, sources).splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split()
        try:
            name, value = cells[0], float(cells[1])
            if len(cells) != 2 or not 0 <= value <= 1:
                raise ValueError
        except (ValueError, IndexError):
            raise DatasetFormatError(
                file, f"line {line!r}", "'<name>.jpg <value in 0..1>'", number
            ) from None
        values[name] = value
    return values
