"""Errors raised by the data layer; each names the file (and line) and what was expected."""

from __future__ import annotations

from os import PathLike

__all__ = ["DatasetFormatError", "ImageReadError", "SplitError"]


class DatasetFormatError(ValueError):
    """A dataset file is missing, garbled or holds a value outside the allowed set.

    The message reads ``<file>[:<line>]: <problem>; expected <what>`` so a user can open the
    file at the right place.
    """

    def __init__(
        self,
        file: str | PathLike[str],
        problem: str,
        expected: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        where = self.file if line is None else f"{self.file}:{line}"
        message = f"{where}: {problem}"
        if expected:
            message += f"; expected {expected}"
        super().__init__(message)


class ImageReadError(OSError):
    """An image (or video frame) listed in a FrameIndex cannot be read or decoded."""


class SplitError(ValueError):
    """A split is inconsistent, e.g. one subject on both the training and the test side."""
