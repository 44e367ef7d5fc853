"""Writers of small fixtures in the real dataset layouts (shared/reference/datasets.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: int = 8, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_bp4d_occ(
    root: Path,
    subject: str,
    task: str,
    rows: Mapping[int, Mapping[int, int]],
    *,
    digits: int = 4,
    images: bool = True,
    header: Sequence[str] | None = None,
) -> None:
    """``AU_OCC/<subject>_<task>.csv`` with header 0..99 (or ``header``); rows map frame ->
    {AU: value}, unlisted AUs 0. Images ``<subject>/<task>/<frame padded>.jpg``."""
    names = list(header) if header is not None else [str(i) for i in range(100)]
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    lines = [",".join(names)]
    for frame, values in rows.items():
        cells = ["0"] * len(names)
        cells[0] = str(frame)
        for au, v in values.items():
            cells[_column(names, au)] = str(v)
        lines.append(",".join(cells))
    (occ / f"{subject}_{task}.csv").write_text("\n".join(lines) + "\n")
    if images:
        for frame in rows:
            write_image(root / subject / task / f"{frame:0{digits}d}.jpg", seed=frame)


def _column(names: Sequence[str], au: int) -> int:
    for i, name in enumerate(names[1:], start=1):
        digits = "".join(ch for ch in name if ch.isdigit())
        if digits and int(digits) == au:
            return i
    raise KeyError(au)


def write_bp4d_int(root: Path, subject: str, task: str, au: int, rows: Mapping[int, int]) -> None:
    folder = root / "AUCoding" / "AU_INT" / f"AU{au:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{f},{v}\n" for f, v in rows.items())
    (folder / f"{subject}_{task}_AU{au:02d}.csv").write_text(text)


def write_disfa(
    root: Path,
    subject: str,
    intensities: Mapping[int, Sequence[int]],
    *,
    images: bool = True,
    first_image: int = 1,
) -> None:
    """``ActionUnit_Labels/<SN>/<SN>_au<N>.txt`` with 1-based frames; images
    ``<SN>/<n>.png`` numbered from ``first_image``."""
    folder = root / "ActionUnit_Labels" / subject
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for au, values in intensities.items():
        n = len(values)
        text = "".join(f"{f},{v}\n" for f, v in enumerate(values, start=1))
        (folder / f"{subject}_au{au}.txt").write_text(text)
    if images:
        for i in range(n):
            write_image(root / subject / f"{first_image + i}.png", seed=i)


def write_emotionet(root: Path, aus: Sequence[int], rows: Sequence[tuple[str, Sequence[int]]]):
    header = ["URL", "URL orig", *[f"'AU {a}'" for a in aus]]
    lines = [",".join(header)]
    for url, values in rows:
        lines.append(",".join([url, url.replace("http://", "http://orig."), *map(str, values)]))
        write_image(root / "images" / url.rsplit("/", 1)[-1])
    (root / "manual_annotations.csv").write_text("\n".join(lines) + "\n")


def write_rafdb(root: Path, rows: Sequence[tuple[str, int]], *, images: bool = True) -> None:
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    text = "".join(f"{name} {label}\n" for name, label in rows)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(text)
    if images:
        for name, _ in rows:
            write_image(root / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg")


def write_affectnet(root: Path, partition_file: str, rows: Sequence[tuple[str, int]]) -> None:
    folder = root / "Manually_Annotated_file_lists"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["subDirectory_filePath,face_x,face_y,face_width,face_height,expression,valence"]
    for path, label in rows:
        lines.append(f"{path},0,0,8,8,{label},0.1")
        write_image(root / "Manually_Annotated_Images" / path)
    (folder / partition_file).write_text("\n".join(lines) + "\n")
