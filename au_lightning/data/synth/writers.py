"""Write SynthAU ground truth into the real label layouts that the readers read.

Files carry the labels the renderer used and nothing else (no subject biases, no nuisance
beyond what a real layout encodes). Unknown labels become each format's own code: 9 in BP4D,
999 in EmotioNet, an empty cell in the generic table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from au_lightning.data.index import AU_SETS, occurrence_from_intensity
from au_lightning.data.synth.dynamics import NUISANCE_FIELDS
from au_lightning.data.synth.face import SYNTH_AUS

__all__ = [
    "EMOTIONET_AUS",
    "EMOTIONET_MAPPING",
    "LabelWriter",
    "SynthVideo",
    "emotionet_labels",
    "writer_for",
]

#: the 23 AUs of the EmotioNet challenge 2020
EMOTIONET_AUS = AU_SETS["emotionet"]
#: how each EmotioNet AU without its own SynthAU rendering is labelled from the nearest one
EMOTIONET_MAPPING: dict[int, str] = {
    18: "AU23 present (lip pucker -> lip tightener: the lips narrow)",
    28: "AU24 present (lip suck -> lip pressor: the lips press inward)",
    43: "AU7 at intensity >= 4 (eyes closed -> strong lid tightening)",
    51: "head yaw < -0.06 (turn left)",
    52: "head yaw > 0.06 (turn right)",
    53: "head pitch < -0.05 (head up)",
    54: "head pitch > 0.05 (head down)",
    55: "head roll < -3 degrees (tilt left)",
    56: "head roll > 3 degrees (tilt right)",
}
_BP4D_INTENSITY_AUS = AU_SETS["bp4d_intensity"]


@dataclasses.dataclass
class SynthVideo:
    """Ground truth of one generated video, as the renderer used it."""

    subject: str
    video: str
    frames: np.ndarray  # int32 frame numbers of the written images
    intensity: np.ndarray  # int8 (T, 17) over SYNTH_AUS, -1 unknown
    nuisance: np.ndarray  # float (T, len(NUISANCE_FIELDS))
    paths: list[str]

    @property
    def occurrence(self) -> np.ndarray:
        return occurrence_from_intensity(self.intensity)

    def column(self, au: int, *, intensity: bool = False) -> np.ndarray:
        values = self.intensity if intensity else self.occurrence
        return values[:, SYNTH_AUS.index(au)]


def emotionet_labels(video: SynthVideo) -> np.ndarray:
    """(T, 23) occurrence of the EmotioNet AUs, -1 unknown (see ``EMOTIONET_MAPPING``)."""
    pose = {name: video.nuisance[:, i] for i, name in enumerate(NUISANCE_FIELDS)}
    derived = {
        18: video.column(23),
        28: video.column(24),
        43: np.where(video.column(7, intensity=True) < 0, -1,
                     video.column(7, intensity=True) >= 4),
        51: pose["yaw"] < -0.06, 52: pose["yaw"] > 0.06,
        53: pose["pitch"] < -0.05, 54: pose["pitch"] > 0.05,
        55: pose["rotation"] < -3, 56: pose["rotation"] > 3,
    }  # fmt: skip
    cols = [derived[au] if au in derived else video.column(au) for au in EMOTIONET_AUS]
    return np.stack(cols, axis=1).astype(np.int8)


class LabelWriter:
    """Writes the label files of one layout; images are written by the render workers."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def write_videos(self, videos: Sequence[SynthVideo]) -> None:
        raise NotImplementedError(f"{type(self).__name__} holds no AU videos")

    def write_expressions(self, rows: Sequence[tuple[str, int, float, bool]]) -> None:
        raise NotImplementedError(f"{type(self).__name__} holds no expression images")


class BP4DWriter(LabelWriter):
    """``AUCoding/AU_OCC`` (header 0..99; AUs SynthAU does not render are 9 = not coded) and
    ``AU_INT`` for AUs 6, 10, 12, 14, 17."""

    def write_videos(self, videos: Sequence[SynthVideo]) -> None:
        occ_dir = self.out / "AUCoding" / "AU_OCC"
        occ_dir.mkdir(parents=True, exist_ok=True)
        header = ",".join(str(i) for i in range(100))
        for v in videos:
            table = np.full((len(v.frames), 100), 9, dtype=np.int64)
            table[:, 0] = v.frames
            table[:, list(SYNTH_AUS)] = np.where(v.occurrence < 0, 9, v.occurrence)
            _write_rows(occ_dir / f"{v.video}.csv", table, header)
            for au in _BP4D_INTENSITY_AUS:
                folder = self.out / "AUCoding" / "AU_INT" / f"AU{au:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                level = v.column(au, intensity=True)
                rows = np.stack([v.frames, np.where(level < 0, 9, level)], axis=1)
                _write_rows(folder / f"{v.video}_AU{au:02d}.csv", rows)


class DISFAWriter(LabelWriter):
    """``ActionUnit_Labels/<SN>/<SN>_au<N>.txt`` for DISFA's 12 AUs, 1-based frames."""

    def write_videos(self, videos: Sequence[SynthVideo]) -> None:
        for v in videos:
            if (v.intensity < 0).any():
                raise ValueError("DISFA labels have no unknown code; generate without unknowns")
            folder = self.out / "ActionUnit_Labels" / v.subject
            folder.mkdir(parents=True, exist_ok=True)
            for au in AU_SETS["disfa"]:
                rows = np.stack([v.frames, v.column(au, intensity=True)], axis=1)
                _write_rows(folder / f"{v.subject}_au{au}.txt", rows)


class TableWriter(LabelWriter):
    """``labels.csv``: path, subject, video, frame, AU<n> and AU<n>_int for all 17 AUs."""

    def write_videos(self, videos: Sequence[SynthVideo]) -> None:
        header = ["path", "subject", "video", "frame"]
        header += [f"AU{a}" for a in SYNTH_AUS] + [f"AU{a}_int" for a in SYNTH_AUS]
        lines = [",".join(header)]
        for v in videos:
            occ, level = v.occurrence.astype(str), v.intensity.astype(str)
            occ[v.occurrence < 0] = ""
            level[v.intensity < 0] = ""
            for t, path in enumerate(v.paths):
                cells = [path, v.subject, v.video, str(v.frames[t]), *occ[t], *level[t]]
                lines.append(",".join(cells))
        (self.out / "labels.csv").write_text("\n".join(lines) + "\n")


class EmotioNetWriter(LabelWriter):
    """``manual_annotations.csv`` with ``URL``, ``URL orig`` and the 23 ``'AU N'`` columns;
    999 = unknown. The URL's last segment names the image under ``images/``."""

    def write_videos(self, videos: Sequence[SynthVideo]) -> None:
        header = ["URL", "URL orig", *[f"'AU {a}'" for a in EMOTIONET_AUS]]
        lines = [",".join(header)]
        for v in videos:
            labels = emotionet_labels(v).astype(np.int64)
            labels = np.where(labels < 0, 999, labels).astype(str)
            for t, path in enumerate(v.paths):
                url = f"http://synthau.invalid/{path.rsplit('/', 1)[-1]}"
                lines.append(",".join([url, url, *labels[t]]))
        (self.out / "manual_annotations.csv").write_text("\n".join(lines) + "\n")


class RAFDBWriter(LabelWriter):
    """``EmoLabel/list_patition_label.txt`` (labels 1..7) and, beside it, the annotator
    consistency of each image in ``EmoLabel/consistency.txt`` (``name value``)."""

    def write_expressions(self, rows: Sequence[tuple[str, int, float, bool]]) -> None:
        folder = self.out / "EmoLabel"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "list_patition_label.txt").write_text(
            "".join(f"{name} {label + 1}\n" for name, label, _, _ in rows)
        )
        (folder / "consistency.txt").write_text(
            "".join(f"{name} {value:.3f}\n" for name, _, value, _ in rows)
        )


_WRITERS: dict[str, type[LabelWriter]] = {
    "bp4d": BP4DWriter,
    "disfa": DISFAWriter,
    "table": TableWriter,
    "emotionet": EmotioNetWriter,
    "rafdb": RAFDBWriter,
}


def writer_for(layout: str, out: Path) -> LabelWriter:
    return _WRITERS[layout](out)


def _write_rows(path: Path, rows: np.ndarray, header: str | None = None) -> None:
    body = "\n".join(",".join(map(str, row)) for row in rows.tolist())
    path.write_text((header + "\n" if header else "") + body + "\n")
