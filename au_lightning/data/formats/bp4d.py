"""BP4D reader (Zhang et al. 2014): ``AUCoding/AU_OCC`` occurrence and ``AU_INT`` intensity.

Layout (see ``shared/reference/datasets.md``)::

    <root>/AUCoding/AU_OCC/<subject>_<task>.csv        header 0,1,...,99; column N is AU N
    <root>/AUCoding/AU_INT/AU06/<subject>_<task>_AU06.csv   lines frame,intensity (no header)
    <image_root>/<subject>/<task>/<frame>.jpg          frame names padded to 3 or 4 digits

Label value 9 means unknown and becomes -1, never 0. Image names are matched to label frames
by parsed integer, since M009-M018 use 3 digits and the others 4.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.formats._common import (
    MissingImagePolicy,
    MissingImages,
    SourceLog,
    check_unique_frames,
    check_values,
    columns_by_au,
    logger,
    numbered_images,
    read_int_csv,
    require_au_columns,
    require_dir,
)
from au_lightning.data.index import FrameIndex, resolve_aus

__all__ = ["read_au_occ_tree", "read_bp4d"]

_VIDEO_FILE = re.compile(r"^(?P<subject>[A-Za-z]+\d+)_(?P<task>T\d+)\.csv$")
UNKNOWN = 9


def read_bp4d(
    root: str | Path,
    aus: str | Iterable[int] = "bp4d",
    *,
    intensity: bool = False,
    image_root: str | Path | None = None,
    on_missing_image: MissingImagePolicy = "error",
) -> FrameIndex:
    """Read a BP4D tree into a FrameIndex.

    Args:
        root: dataset root holding ``AUCoding/``.
        aus: AU set name or AU numbers; the default is the 12 AUs every paper uses.
        intensity: also read ``AU_INT`` (AUs 6, 10, 12, 14, 17); other AUs get -1 intensity.
        image_root: where ``<subject>/<task>/<frame>.jpg`` live (default: ``root``).
        on_missing_image: ``"error"`` names the label file and line of a frame without an
            image; ``"skip"`` drops such frames, counts them and logs the count.
    """
    return read_au_occ_tree(
        root,
        aus,
        dataset="bp4d",
        intensity=intensity,
        image_root=image_root,
        on_missing_image=on_missing_image,
    )


def read_au_occ_tree(
    root: str | Path,
    aus: str | Iterable[int],
    *,
    dataset: str,
    intensity: bool,
    image_root: str | Path | None,
    on_missing_image: MissingImagePolicy,
) -> FrameIndex:
    """The BP4D/BP4D+ ``AU_OCC`` layout; label columns are found by their header names."""
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root
    wanted = resolve_aus(aus)
    sources = SourceLog()
    occ_dir = sources.add(
        require_dir(root / "AUCoding" / "AU_OCC", "AUCoding/AU_OCC/<subject>_<task>.csv")
    )
    files = sorted(p for p in occ_dir.iterdir() if p.suffix.lower() == ".csv")
    if not files:
        raise DatasetFormatError(occ_dir, "no label CSV files", "<subject>_<task>.csv files")
    missing = MissingImages(dataset, on_missing_image, image_root, sources)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("frame", "occ", "int", "row")}
    paths: list[str] = []
    subjects: list[str] = []
    videos: list[str] = []
    counts: list[int] = []
    intensity_only = 0
    header_only: list[str] = []
    for file in files:
        match = _VIDEO_FILE.match(file.name)
        if not match:
            raise DatasetFormatError(file, "unexpected file name", "<subject>_<task>.csv")
        subject, task = match["subject"], match["task"]
        header, table = read_int_csv(file, sources, header=True)
        if len(table) == 0:
            header_only.append(file.name)
        columns = _au_columns(file, header, wanted)
        check_values(file, table, (0, 1, UNKNOWN), header, 2, columns=columns)
        frames = table[:, 0]
        if (frames < 0).any():
            row = int(np.flatnonzero(frames < 0)[0])
            raise DatasetFormatError(file, f"frame {frames[row]}", "frame >= 0", 2 + row)
        check_unique_frames(file, frames, 2)
        occ = table[:, columns].astype(np.int8)
        occ[occ == UNKNOWN] = -1
        images = numbered_images(image_root / subject / task)
        found = np.fromiter((f in images for f in frames.tolist()), bool, len(frames))
        keep = missing.keep(
            found,
            file,
            lambda r: r + 2,
            lambda r: f"{subject}/{task}/{frames[r]}.jpg",  # noqa: B023 (called at once)
            image_root / subject / task,
        )
        frames, occ = frames[keep], occ[keep]
        parts["frame"].append(frames)
        parts["occ"].append(occ)
        if intensity:
            levels, unmatched = _read_intensity(
                root, subject, task, frames, occ, wanted, sources, file
            )
            parts["int"].append(levels)
            intensity_only += unmatched
        paths += [f"{subject}/{task}/{images[f]}" for f in frames.tolist()]
        subjects.append(subject)
        videos.append(f"{subject}_{task}")
        counts.append(len(frames))
    missing.report()
    if intensity_only:
        logger.warning(
            "%s: %d AU_INT rows name frames with no AU_OCC row (or no image); they are not in "
            "the index",
            dataset,
            intensity_only,
        )
    return FrameIndex.from_columns(
        path=np.array(paths, dtype=str),
        subject=np.repeat(subjects, counts),
        video=np.repeat(videos, counts),
        frame=np.concatenate(parts["frame"]),
        aus=wanted,
        occurrence=np.concatenate(parts["occ"]),
        intensity=np.concatenate(parts["int"]) if intensity else None,
        root=str(image_root),
        dataset=dataset,
        sources=sources.entries,
        notes=(*missing.notes, *_header_only_note(header_only)),
    )


def _header_only_note(names: list[str]) -> list[str]:
    """The summary's note of the label files that hold a header and no frames."""
    if not names:
        return []
    return [f"{len(names)} label files with a header and no frames: {', '.join(names)}"]


def _au_columns(file: Path, header: list[str], wanted: tuple[int, ...]) -> np.ndarray:
    cells = ((col, name, name) for col, name in enumerate(header[1:], start=1))
    by_au = columns_by_au(file, cells, "AU numbers")
    return np.array(require_au_columns(file, by_au, wanted, "a header naming every requested AU"))


def _read_intensity(
    root: Path,
    subject: str,
    task: str,
    frames: np.ndarray,
    occurrence: np.ndarray,
    wanted: tuple[int, ...],
    sources: SourceLog,
    occ_file: Path,
) -> tuple[np.ndarray, int]:
    """Intensity (N, L) for the occurrence frames (from AU_INT, for the AUs it codes), and
    the number of AU_INT rows whose frame is not among them. An AU_INT file without a row
    for a frame of ``occ_file``, or with intensity > 0 where the frame's occurrence is 0,
    is an error."""
    unmatched = 0
    out = np.full((len(frames), len(wanted)), -1, dtype=np.int8)
    int_dir = require_dir(root / "AUCoding" / "AU_INT", "AUCoding/AU_INT/AU<nn>/ folders")
    for j, au in enumerate(wanted):
        au_dir = int_dir / f"AU{au:02d}"
        if not au_dir.is_dir():
            continue
        file = au_dir / f"{subject}_{task}_AU{au:02d}.csv"
        _, table = read_int_csv(file, sources, header=False, ncols=2)
        check_values(
            file,
            table,
            (0, 1, 2, 3, 4, 5, UNKNOWN),
            ["frame", "intensity"],
            1,
            columns=np.array([1]),
        )
        check_unique_frames(file, table[:, 0], 1)
        order = np.argsort(table[:, 0])
        coded, levels = table[order, 0], table[order, 1]
        pos = np.clip(np.searchsorted(coded, frames), 0, max(len(coded) - 1, 0))
        hit = coded[pos] == frames if len(coded) else np.zeros(len(frames), bool)
        if not hit.all():
            absent = frames[~hit]
            raise DatasetFormatError(
                file,
                f"no row for {len(absent)} of the {len(frames)} frames of {occ_file.name} "
                f"(first: frame {int(absent[0])})",
                "a frame,intensity row for every frame the AU_OCC file labels",
            )
        values = np.where(levels == UNKNOWN, -1, levels).astype(np.int8)
        out[:, j] = values[pos]
        contradicts = np.flatnonzero((out[:, j] > 0) & (occurrence[:, j] == 0))
        if contradicts.size:
            row = int(contradicts[0])
            raise DatasetFormatError(
                file,
                f"frame {int(frames[row])} has intensity {int(out[row, j])} but occurrence 0 "
                f"in {occ_file.name}",
                "intensity 0 (or unknown) where AU_OCC says absent",
                int(order[pos[row]]) + 1,
            )
        unmatched += len(coded) - int(hit.sum())
    return out, unmatched
