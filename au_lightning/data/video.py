"""Frame access in video files through OpenCV (the optional extra ``video``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from au_lightning.data.errors import DatasetFormatError, ImageReadError

__all__ = ["MJPGWriter", "opencv_available", "read_video_frame", "video_frame_count"]

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".wmv")


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise ImportError(
            "reading frames from video needs OpenCV: pip install 'au-lightning[video]'"
        ) from err
    return cv2


def opencv_available() -> bool:
    try:
        _cv2()
    except ImportError:
        return False
    return True


def video_frame_count(path: Path) -> int:
    """Number of frames OpenCV reports for the video; a missing or unreadable file is an error."""
    cv2 = _cv2()
    if not path.is_file():
        raise DatasetFormatError(path, "video not found", "the video of the labelled frames")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DatasetFormatError(path, "OpenCV cannot open the video", "a readable video")
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def read_video_frame(path: Path, position: int) -> np.ndarray:
    """The RGB frame (H, W, 3) uint8 at 0-based ``position``."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, position)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise ImageReadError(f"{path}: cannot decode frame at position {position}")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class MJPGWriter:
    """Writes RGB frames (size x size) to an MJPG ``.avi``."""

    def __init__(self, path: Path, size: int, fps: float = 25) -> None:
        self.cv2 = _cv2()
        path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = self.cv2.VideoWriter_fourcc(*"MJPG")
        self.writer = self.cv2.VideoWriter(str(path), fourcc, fps, (size, size))

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()
