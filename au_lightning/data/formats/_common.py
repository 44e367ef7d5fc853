"""Parsing pieces shared by the dataset readers: strict CSV reading, image matching, sources."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.index import FrameIndex

logger = logging.getLogger("au_lightning.data")

MissingImagePolicy = Literal["error", "skip"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_AU_NAME = re.compile(r"^['\"]?\s*(?:AU)?[\s_]*0*(\d+)\s*['\"]?$", re.IGNORECASE)


class SourceLog:
    """Records the size and mtime of every file read and every folder listed.

    A cached FrameIndex stays valid while all of these are unchanged: editing a label file
    changes its size or mtime, and adding or removing a file changes its folder's mtime.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, int]] = {}

    def add(self, path: Path) -> Path:
        st = path.stat()
        self._entries[str(path.resolve())] = (st.st_size, st.st_mtime_ns)
        return path

    @property
    def entries(self) -> tuple[tuple[str, int, int], ...]:
        return tuple((p, s, m) for p, (s, m) in sorted(self._entries.items()))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetFormatError(path, "folder not found", what)
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetFormatError(path, "file not found", what)
    return path


def read_text(path: Path, sources: SourceLog) -> str:
    """The file's text (UTF-8, a BOM allowed), or an error naming the file."""
    sources.add(require_file(path, "a label file"))
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetFormatError(path, f"not UTF-8 text ({err.reason})", "a CSV file") from err


def au_number(name: str) -> int | None:
    """The AU number of a column name such as ``12``, ``AU12``, ``AU 12``, ``'AU 12'``."""
    match = _AU_NAME.match(name.strip())
    return int(match.group(1)) if match else None


def read_int_csv(
    path: Path,
    sources: SourceLog,
    *,
    header: bool,
    ncols: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """Read a comma-separated table of integers into an int64 array (rows, columns).

    The fast path parses the whole body in C (``np.fromstring``); if anything does not parse,
    a line-by-line pass finds the first offending line and reports it. Column counts are
    checked per line before parsing, so a short or long row is named by its line number.
    """
    text = read_text(path, sources).replace("\r\n", "\n").replace("\r", "\n")
    lines_start = 1
    names: list[str] = []
    if header:
        first, _, text = text.partition("\n")
        names = [c.strip() for c in first.split(",")]
        if not first.strip():
            raise DatasetFormatError(path, "empty file or empty header", "a header row", 1)
        lines_start = 2
    body = text.rstrip("\n")
    width = ncols if ncols is not None else (len(names) if header else None)
    if not body:
        return names, np.zeros((0, width or 0), dtype=np.int64)
    raw = body.encode()
    if width is None:
        width = raw[: raw.find(b"\n") if b"\n" in raw else len(raw)].count(b",") + 1
    _check_column_counts(path, raw, width, lines_start)
    try:
        values = np.fromstring(raw.replace(b"\n", b","), dtype=np.int64, sep=",")
    except ValueError:
        values = None
    nrows = raw.count(b"\n") + 1
    if values is None or values.size != nrows * width:
        _raise_first_bad_value(path, body, lines_start)
    return names, values.reshape(nrows, width)


def _check_column_counts(path: Path, raw: bytes, width: int, first_line: int) -> None:
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    commas_before = np.concatenate(([0], np.cumsum(buf == ord(","))))
    ends = np.append(newlines, buf.size)
    per_line = np.diff(np.concatenate(([0], commas_before[ends])))
    bad = np.flatnonzero(per_line != width - 1)
    if bad.size:
        i = int(bad[0])
        line = raw.split(b"\n")[i].decode(errors="replace")
        found = line.count(",") + 1 if line else 0
        raise DatasetFormatError(
            path,
            f"row has {found} columns",
            f"{width} columns, as in the first row/header",
            first_line + i,
        )


def _raise_first_bad_value(path: Path, body: str, first_line: int) -> None:
    for i, line in enumerate(body.split("\n")):
        for j, cell in enumerate(line.split(",")):
            try:
                int(cell)
            except ValueError:
                raise DatasetFormatError(
                    path,
                    f"column {j + 1} holds {cell.strip()!r}",
                    "an integer",
                    first_line + i,
                ) from None
    raise DatasetFormatError(path, "could not parse the table", "integers separated by commas")


def check_values(
    path: Path,
    values: np.ndarray,
    allowed: Iterable[int],
    column_names: Sequence[str],
    first_line: int,
    *,
    columns: np.ndarray | None = None,
) -> None:
    """Raise naming the line and column of the first value outside ``allowed``."""
    allowed_arr = np.fromiter(allowed, dtype=np.int64)
    block = values if columns is None else values[:, columns]
    bad = ~np.isin(block, allowed_arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        col = int(c) if columns is None else int(columns[c])
        raise DatasetFormatError(
            path,
            f"column {column_names[col]!r} holds {int(block[r, c])}",
            f"one of {sorted(allowed_arr.tolist())}",
            first_line + int(r),
        )


def columns_by_au(
    file: Path, cells: Iterable[tuple[int, str, str]], expected: str
) -> dict[int, int]:
    """``{AU: column}`` of header ``cells`` given as (column, cell, the cell's AU text): a
    cell that names no AU, or a second cell for one AU, is an error on line 1."""
    found: dict[int, tuple[int, str]] = {}
    for col, cell, text in cells:
        au = au_number(text)
        if au is None:
            raise DatasetFormatError(file, f"header cell {cell!r} is not an AU", expected, 1)
        if au in found:
            raise DatasetFormatError(
                file,
                f"header cells {found[au][1]!r} and {cell!r} both name AU {au}",
                "one column per AU",
                1,
            )
        found[au] = (col, cell)
    return {au: col for au, (col, _) in found.items()}


def check_unique_frames(path: Path, frames: np.ndarray, first_line: int) -> None:
    order = np.argsort(frames, kind="stable")
    dup = np.flatnonzero(np.diff(frames[order]) == 0)
    if dup.size:
        row = int(order[dup[0] + 1])
        raise DatasetFormatError(
            path, f"frame {int(frames[row])} appears twice", "one row per frame", first_line + row
        )


def numbered_images(folder: Path, sources: SourceLog | None = None) -> dict[int, str]:
    """Map frame number to file name for the images in ``folder``, matched by parsed integer.

    ``0012.jpg`` and ``012.jpg`` both map to 12 (BP4D pads to 3 or 4 digits); two files with
    the same number are an error, since either could be the frame.
    """
    if not folder.is_dir():
        return {}
    if sources is not None:
        sources.add(folder)
    found: dict[int, str] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if not dot or "." + suffix.lower() not in IMAGE_SUFFIXES or not stem.isdigit():
                continue
            number = int(stem)
            if number in found:
                raise DatasetFormatError(
                    folder / entry.name,
                    f"frame {number} also has the image {found[number]!r}",
                    "one image per frame number",
                )
            found[number] = entry.name
    return found


def existing_files(root: Path, paths: np.ndarray) -> np.ndarray:
    """Boolean mask of ``root / path`` existing, listing each folder once instead of N stats."""
    exists = np.zeros(len(paths), dtype=bool)
    listings: dict[str, set[str]] = {}
    for i, rel in enumerate(paths.tolist()):
        folder, _, name = rel.rpartition("/")
        if folder not in listings:
            d = root / folder
            listings[folder] = set(os.listdir(d)) if d.is_dir() else set()
        exists[i] = name in listings[folder]
    return exists


class MissingImages:
    """Applies ``on_missing_image``: an error naming the label file and line, or skip and
    count. Skipping records each folder it found short in ``sources`` (for a folder that is
    not there, the nearest one that is), so that a cached index goes stale when the images
    come back, and leaves a note for the index's summary (:attr:`notes`)."""

    def __init__(
        self,
        dataset: str,
        policy: MissingImagePolicy,
        image_root: Path,
        sources: SourceLog | None = None,
    ) -> None:
        if policy not in ("error", "skip"):
            raise ValueError(f"on_missing_image={policy!r}; expected 'error' or 'skip'")
        self.dataset = dataset
        self.policy = policy
        self.image_root = image_root
        self.sources = sources
        self.skipped = 0
        self.examples: list[str] = []

    def keep(
        self,
        found: np.ndarray,
        label_file: Path,
        line_of: Callable[[int], int],
        describe: Callable[[int], str],
        folder: Path | None = None,
    ) -> np.ndarray:
        """Rows to keep; row r sits on line ``line_of(r)`` and wants image ``describe(r)``
        from ``folder`` (a folder of images, or a video file)."""
        missing = np.flatnonzero(~found)
        if missing.size == 0:
            return found
        first = int(missing[0])
        if self.policy == "error":
            raise DatasetFormatError(
                label_file,
                f"labelled frame has no image {describe(first)!r} under {self.image_root}",
                "an image for every labelled frame (or on_missing_image='skip')",
                line_of(first),
            )
        self.skipped += missing.size
        if len(self.examples) < 3:
            self.examples.append(f"{label_file.name}:{line_of(first)} ({describe(first)})")
        self._record(folder)
        return found

    def keep_existing(
        self, paths: np.ndarray, label_file: Path, lines: Sequence[int]
    ) -> np.ndarray:
        """Positions of the rows whose image ``paths[r]`` exists under ``image_root``."""
        found = existing_files(self.image_root, paths)
        kept = np.flatnonzero(self.keep(found, label_file, lines.__getitem__, paths.__getitem__))
        for folder in sorted({str(p).rpartition("/")[0] for p in paths[~found].tolist()}):
            self._record(self.image_root / folder)
        return kept

    def _record(self, folder: Path | None) -> None:
        if self.sources is None or folder is None:
            return
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        self.sources.add(folder)

    @property
    def notes(self) -> tuple[str, ...]:
        """What :meth:`FrameIndex.summary <au_lightning.data.FrameIndex.summary>` says of
        the skipped frames (nothing when none was)."""
        if not self.skipped:
            return ()
        return (
            f"{self.skipped} frames skipped: no image under {self.image_root}; first: "
            f"{self.examples[0]}",
        )

    def report(self) -> None:
        if self.skipped:
            logger.warning(
                "%s: skipped %d labelled frames without an image under %s (e.g. %s)",
                self.dataset,
                self.skipped,
                self.image_root,
                ", ".join(self.examples),
            )


def read_csv_rows(
    path: Path, sources: SourceLog, *, delimiter: str = ","
) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows of cells and each row's line number, for tables with text columns.

    Every row must have as many cells as the header. Blank lines are skipped.
    """
    import csv

    text = read_text(path, sources)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = [c.strip() for c in next(reader)]
    except StopIteration:
        raise DatasetFormatError(path, "empty file", "a header row", 1) from None
    except csv.Error as err:
        raise DatasetFormatError(path, f"garbled CSV ({err})", "a header row", 1) from err
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != len(header):
                raise DatasetFormatError(
                    path,
                    f"row has {len(cells)} columns",
                    f"{len(header)} columns, as in the header",
                    reader.line_num,
                )
            rows.append(cells)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise DatasetFormatError(path, f"garbled CSV ({err})", "CSV rows", reader.line_num) from err
    return header, rows, lines


def int_column(
    path: Path,
    name: str,
    cells: Sequence[str],
    lines: Sequence[int],
    *,
    allowed: Iterable[int] | None = None,
    empty: int | None = None,
) -> np.ndarray:
    """Parse one text column to int64; ``empty`` is the value of a blank cell (None: an error)."""
    allowed_set = None if allowed is None else set(allowed)
    out = np.empty(len(cells), dtype=np.int64)
    for i, cell in enumerate(cells):
        cell = cell.strip()
        if not cell and empty is not None:
            out[i] = empty
            continue
        try:
            value = int(cell)
        except ValueError:
            try:
                as_float = float(cell)
            except ValueError:
                as_float = None
            if as_float is None or not as_float.is_integer():
                raise DatasetFormatError(
                    path, f"column {name!r} holds {cell!r}", "an integer", lines[i]
                ) from None
            value = int(as_float)
        if allowed_set is not None and value not in allowed_set:
            raise DatasetFormatError(
                path, f"column {name!r} holds {value}", f"one of {sorted(allowed_set)}", lines[i]
            )
        out[i] = value
    return out


def column_index(path: Path, header: Sequence[str], name: str, what: str) -> int:
    try:
        return list(header).index(name)
    except ValueError:
        raise DatasetFormatError(
            path, f"no column {name!r}", f"{what} (header: {', '.join(header)})", 1
        ) from None


def require_au_columns(
    file: Path, by_au: dict[int, int], wanted: Sequence[int], what: str = "AU columns"
) -> list[int]:
    """The column of each wanted AU; absent AUs are an error naming them and the file's AUs."""
    absent = [a for a in wanted if a not in by_au]
    if absent or not wanted:
        problem = f"no column for AU {', '.join(map(str, absent))}" if absent else "no AU columns"
        raise DatasetFormatError(file, problem, f"{what} (it has AUs {sorted(by_au)})", 1)
    return [by_au[a] for a in wanted]


def expression_index(
    paths: np.ndarray,
    expression: np.ndarray,
    names: Sequence[str],
    *,
    root: Path,
    dataset: str,
    sources: SourceLog,
    extras: dict[str, np.ndarray] | None = None,
    notes: tuple[str, ...] = (),
) -> FrameIndex:
    """Images with expression labels and no AU labels; each image is its own subject and
    video (named by its path without the suffix)."""
    ids = np.array([p.rsplit(".", 1)[0] for p in paths.tolist()], dtype=str)
    return FrameIndex.from_columns(
        path=paths,
        subject=ids,
        video=ids,
        frame=np.zeros(len(paths), dtype=np.int32),
        aus=(),
        occurrence=np.zeros((len(paths), 0), dtype=np.int8),
        expression=expression,
        expression_names=tuple(names),
        extras=extras or {},
        root=str(root),
        dataset=dataset,
        sources=sources.entries,
        notes=notes,
    )
