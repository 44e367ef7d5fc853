"""DISFA reader (Mavadati et al. 2013): per-AU intensity files, frames from a folder or video.

Layout (see ``shared/reference/datasets.md``)::

    <root>/ActionUnit_Labels/<SN>/<SN>_au<N>.txt      one ``frame,intensity`` line per frame
    <image_root>/<SN>/<frame>.png                     extracted frames (frames="folder")
    <root>/Videos_LeftCamera/LeftVideo<SN>_comp.avi   the video (frames="video", extra "video")

Frame numbers are 1-based in the label files and are kept as they are in ``FrameIndex.frame``.
With ``frames="folder"`` the image of label frame f is the file numbered
``f + image_frame_offset``: 0 (the default) for folders numbered like the labels (1-based),
-1 for folders extracted with 0-based names. With ``frames="video"`` label frame f is decoded
from the video at 0-based position ``f - 1`` (kept in ``extras["video_pos"]``).

Occurrence is derived from intensity at ``intensity_threshold``, which has no default: the
MAML and RE-Net papers count intensity > 0 as present, MAL and most others >= 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.formats._common import (
    MissingImagePolicy,
    MissingImages,
    SourceLog,
    check_unique_frames,
    check_values,
    numbered_images,
    read_int_csv,
    require_dir,
)
from au_lightning.data.index import FrameIndex, resolve_aus
from au_lightning.data.video import video_frame_count

__all__ = ["read_disfa"]

_SUBJECT = re.compile(r"^SN\d{3}$")


def read_disfa(
    root: str | Path,
    intensity_threshold: str | int,
    aus: str | Iterable[int] = "disfa",
    *,
    frames: Literal["folder", "video"] = "folder",
    camera: Literal["left", "right"] = "left",
    image_root: str | Path | None = None,
    image_frame_offset: int = 0,
    on_missing_image: MissingImagePolicy = "error",
) -> FrameIndex:
    """Read a DISFA tree into a FrameIndex with intensity and thresholded occurrence.

    Args:
        root: dataset root holding ``ActionUnit_Labels/``.
        intensity_threshold: ``">0"`` (= ``">=1"``) or ``">=2"``: intensity counted as present.
        aus: ``"disfa"`` (12 AUs), ``"disfa8"`` (the detection papers' 8) or AU numbers.
        frames: ``"folder"`` of extracted images or ``"video"`` (needs opencv, extra "video").
        camera: which video with ``frames="video"``.
        image_root: folder holding ``<SN>/<frame>.png`` (default: ``root``).
        image_frame_offset: image number minus label frame number (see the module doc).
        on_missing_image: ``"error"`` or ``"skip"`` (counted and logged).
    """
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root
    wanted = resolve_aus(aus)
    if frames not in ("folder", "video"):
        raise ValueError(f"frames={frames!r}; expected 'folder' or 'video'")
    sources = SourceLog()
    label_dir = sources.add(
        require_dir(root / "ActionUnit_Labels", "ActionUnit_Labels/<SN>/<SN>_au<N>.txt")
    )
    subject_dirs = sorted(p for p in label_dir.iterdir() if p.is_dir())
    odd = [p for p in subject_dirs if not _SUBJECT.match(p.name)]
    if odd:
        raise DatasetFormatError(odd[0], "unexpected folder name", "SN<3 digits> subject folders")
    if not subject_dirs:
        raise DatasetFormatError(label_dir, "no subject folders", "SN<3 digits> subject folders")
    missing = MissingImages(
        "disfa", on_missing_image, image_root if frames == "folder" else root, sources
    )
    out: dict[str, list] = {k: [] for k in ("frame", "int", "path", "subject", "pos")}
    for sdir in subject_dirs:
        subject = sdir.name
        sources.add(sdir)
        label_frames, levels = _read_subject_labels(sdir, subject, wanted, sources)
        first_file = sdir / f"{subject}_au{wanted[0]}.txt"
        if frames == "folder":
            images = numbered_images(image_root / subject)
            numbers = label_frames + image_frame_offset
            found = np.fromiter((n in images for n in numbers.tolist()), bool, len(numbers))
            keep = missing.keep(
                found,
                first_file,
                lambda r: r + 1,
                lambda r: f"{subject}/{numbers[r]}.png",  # noqa: B023 (called at once)
                image_root / subject,
            )
            paths = [f"{subject}/{images[n]}" for n in numbers[keep].tolist()]
        else:
            side = camera.capitalize()
            video = f"Videos_{side}Camera/{side}Video{subject}_comp.avi"
            count = video_frame_count(root / video)
            keep = missing.keep(
                label_frames <= count,
                first_file,
                lambda r: r + 1,
                lambda r: f"{video} frame {label_frames[r]}",  # noqa: B023 (called at once)
                root / video,
            )
            paths = [video] * int(keep.sum())
            out["pos"].append(label_frames[keep] - 1)
        out["frame"].append(label_frames[keep])
        out["int"].append(levels[keep])
        out["path"] += paths
        out["subject"] += [subject] * len(paths)
    missing.report()
    intensity = np.concatenate(out["int"])
    index = FrameIndex.from_columns(
        path=np.array(out["path"], dtype=str),
        subject=np.array(out["subject"]),
        video=np.array(out["subject"]),
        frame=np.concatenate(out["frame"]),
        aus=wanted,
        occurrence=np.zeros(intensity.shape, dtype=np.int8),
        intensity=intensity,
        extras={"video_pos": np.concatenate(out["pos"]).astype(np.int32)} if out["pos"] else {},
        root=str(image_root if frames == "folder" else root),
        dataset="disfa",
        sources=sources.entries,
        notes=missing.notes,
    )
    return index.with_occurrence_from_intensity(intensity_threshold)


def _read_subject_labels(
    sdir: Path, subject: str, wanted: tuple[int, ...], sources: SourceLog
) -> tuple[np.ndarray, np.ndarray]:
    """Label frames (N,) and intensity (N, L); every AU file must list the same frames."""
    frames: np.ndarray | None = None
    columns: list[np.ndarray] = []
    reference: Path | None = None
    for au in wanted:
        file = sdir / f"{subject}_au{au}.txt"
        _, table = read_int_csv(file, sources, header=False, ncols=2)
        check_values(file, table, range(6), ["frame", "intensity"], 1, columns=np.array([1]))
        check_unique_frames(file, table[:, 0], 1)
        if frames is None:
            frames, reference = table[:, 0], file
        elif len(table) != len(frames) or (table[:, 0] != frames).any():
            n = min(len(table), len(frames))
            diff = np.flatnonzero(table[:n, 0] != frames[:n])
            line = int(diff[0]) + 1 if diff.size else n + 1
            raise DatasetFormatError(
                file, "frames differ from the other AU files", f"the frames of {reference}", line
            )
        columns.append(table[:, 1])
    assert frames is not None
    return frames.astype(np.int32), np.stack(columns, axis=1).astype(np.int8)
