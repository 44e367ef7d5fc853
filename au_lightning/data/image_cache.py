"""A pre-decoded image cache: every frame of a FrameIndex decoded and resized once, on disk.

Decoding a JPEG (or seeking a video frame) every epoch dominates CPU training. The cache
holds each row of an index as uint8 ``(3, size, size)``, already through
``v2.Resize((size, size), antialias=True)`` (the first step of the data modules'
transforms), in one ``.npy`` file that is memory-mapped, so a row is a page read. Resizing
a ``size x size`` image to ``(size, size)`` is a no-op in torchvision, so the rest of the
pipeline computes exactly what it computes on the decoded file.

Files live in ``$AU_LIGHTNING_CACHE/images`` as ``<dataset>-<key>-<size>px.npy`` with a JSON
sidecar. The key hashes the resolved root and the ordered row paths (and video positions),
so every reader option or AU selection that yields the same rows shares one cache. The
sidecar records the index's sources and the image folders (video files) with their sizes
and mtimes; a cache whose recorded files changed is stale and never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from au_lightning.data.cache import cache_dir, first_changed
from au_lightning.data.datasets import load_frame
from au_lightning.data.errors import ImageReadError
from au_lightning.data.index import FrameIndex
from au_lightning.errors import ConfigError

__all__ = ["DecodedImages", "build_image_cache", "find_image_cache", "image_cache_path"]

logger = logging.getLogger("au_lightning.data")

#: version of the file layout; a cache of another version is not used
VERSION = 1
#: rows decoded per DataLoader batch while building
_CHUNK = 64

Source = tuple[str, int, int]


# -- naming -------------------------------------------------------------------------------


def content_key(index: FrameIndex) -> str:
    """A hash of the resolved root and the ordered row paths (and ``video_pos``): the
    same rows give the same key whatever reader options or AUs produced them."""
    digest = hashlib.sha256()
    digest.update(str(Path(index.root).resolve()).encode())
    digest.update(f"\0{len(index)}\0".encode())
    digest.update("\0".join(index.path.tolist()).encode())
    if "video_pos" in index.extras:
        digest.update(np.asarray(index.extras["video_pos"], dtype="<i8").tobytes())
    return digest.hexdigest()[:20]


def image_cache_path(index: FrameIndex, size: int, directory: str | Path | None = None) -> Path:
    """The ``.npy`` file of the decoded images of ``index`` at ``size`` (its sidecar is the
    same path with ``.json``); ``directory`` defaults to ``$AU_LIGHTNING_CACHE/images``."""
    folder = Path(directory) if directory is not None else cache_dir() / "images"
    return folder / f"{index.dataset or 'frames'}-{content_key(index)}-{size}px.npy"


# -- validation ---------------------------------------------------------------------------


def _stat(path: Path) -> Source:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def image_sources(index: FrameIndex) -> list[Source]:
    """(path, size, mtime_ns) of the files the pixels come from, cheaply: the video files of
    video rows, else every folder holding an image (its mtime moves when a file is added,
    removed or renamed into it)."""
    root = Path(index.root)
    paths = set(index.path.tolist())
    if "video_pos" not in index.extras:
        paths = {posixpath.dirname(p) for p in paths}
    return [_stat(root / p) for p in sorted(paths)]


def _sidecar(file: Path) -> Path:
    return file.with_suffix(".json")


def _read_sidecar(file: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(_sidecar(file).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("ignoring image cache %s: unreadable sidecar (%s)", file, err)
        return None
    return meta if isinstance(meta, dict) else None


def _array_matches(file: Path, shape: tuple[int, ...]) -> bool:
    try:
        array = np.load(file, mmap_mode="r")
    except (OSError, ValueError) as err:
        logger.warning("ignoring image cache %s: unreadable (%s)", file, err)
        return False
    if array.dtype != np.uint8 or array.shape != shape:
        logger.warning("ignoring image cache %s: holds %s %s", file, array.dtype, array.shape)
        return False
    return True


# -- reading ------------------------------------------------------------------------------


class DecodedImages:
    """The decoded images of one index: ``images[row]`` is the uint8 ``(3, size, size)``
    tensor of FrameIndex row ``row``.

    The memory map is opened on first access in each process; pickling keeps only the path,
    so a DataLoader worker maps the file itself instead of receiving a copy of the array.
    """

    def __init__(self, file: str | Path, size: int, length: int) -> None:
        self.file = Path(file)
        self.size = size
        self.length = length
        self._array: np.ndarray | None = None

    def _open(self) -> np.ndarray:
        if self._array is None:
            array = np.load(self.file, mmap_mode="r")
            if array.shape != (self.length, 3, self.size, self.size):
                raise ValueError(
                    f"{self.file}: image cache holds {array.shape}; expected "
                    f"({self.length}, 3, {self.size}, {self.size}) (rebuild it)"
                )
            self._array = array
        return self._array

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, row: int) -> torch.Tensor:
        # a copy: writable, and it does not keep the mapping alive
        return torch.from_numpy(np.array(self._open()[row]))

    def __getstate__(self) -> dict[str, Any]:
        return {"file": self.file, "size": self.size, "length": self.length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._array = None

    def __repr__(self) -> str:
        return f"DecodedImages({str(self.file)!r}, size={self.size}, length={self.length})"


def find_image_cache(
    index: FrameIndex, size: int, directory: str | Path | None = None
) -> DecodedImages | None:
    """The decoded images of ``index`` at ``size`` when a complete cache of them exists and
    every file it recorded is unchanged; None otherwise (a stale or damaged cache is logged
    as a warning naming the file, and never used)."""
    file = image_cache_path(index, size, directory)
    meta = _read_sidecar(file)
    if meta is None or meta.get("complete") is not True:
        return None  # none built, or a build that did not finish
    shape = (len(index), 3, size, size)
    if meta.get("version") != VERSION or meta.get("shape") != list(shape):
        logger.warning("ignoring image cache %s: another version or shape; rebuild it", file)
        return None
    changed = first_changed(meta["sources"] + meta["image_sources"])
    if changed is not None:
        logger.warning(
            "ignoring stale image cache %s: %s changed since it was built; rebuild it with "
            "au-lightning index --cache_images %d",
            file,
            changed,
            size,
        )
        return None
    if not _array_matches(file, shape):
        return None
    logger.info("%s images decoded at %d px from %s", index.dataset or "index", size, file)
    return DecodedImages(file, size, len(index))


# -- building -----------------------------------------------------------------------------


class _ResizedFrames(Dataset):
    """Row -> resized uint8 image (a C-contiguous array: numpy copies a strided tensor
    faster than torch's thread pool on a busy machine), or the message of an
    ImageReadError (re-raised in the main process, so a worker's failure reads as the
    file's error)."""

    def __init__(self, index: FrameIndex, size: int) -> None:
        self.index = index
        self.resize = v2.Resize((size, size), antialias=True)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row: int) -> np.ndarray | str:
        try:
            return np.ascontiguousarray(self.resize(load_frame(self.index, row)).numpy())
        except ImageReadError as err:
            return str(err)


def _collate(items: list[np.ndarray | str]) -> tuple[np.ndarray, list[str]]:
    errors = [item for item in items if isinstance(item, str)]
    return (np.empty(0), errors) if errors else (np.stack(items), [])


def _write_images(index: FrameIndex, size: int, file: Path, workers: int, progress: bool) -> None:
    """Decode, resize and write every row into the ``.npy`` memory map ``file``."""
    shape = (len(index), 3, size, size)
    array = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=shape)
    loader = DataLoader(
        _ResizedFrames(index, size), batch_size=_CHUNK, num_workers=workers, collate_fn=_collate
    )
    start = 0
    with tqdm(total=len(index), desc="decode", unit="image", disable=not progress) as bar:
        for images, errors in loader:
            if errors:
                raise ImageReadError(errors[0])
            array[start : start + len(images)] = images
            start += len(images)
            bar.update(len(images))
    array.flush()
    del array


def _write_json(file: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_image_cache(
    index: FrameIndex,
    size: int,
    directory: str | Path | None = None,
    workers: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Decode every row of ``index`` (images and video frames) with
    :func:`~au_lightning.data.load_frame`, resize it with ``v2.Resize((size, size),
    antialias=True)`` and write the uint8 ``(N, 3, size, size)`` array; returns its path.

    ``workers`` > 0 decodes in that many DataLoader worker processes. A missing or corrupt
    image raises :class:`~au_lightning.data.ImageReadError` naming the file. The array is
    written under a temporary name and renamed into place, and the sidecar (``complete``)
    is written last, so an interrupted build never leaves a cache that looks valid.
    """
    if len(index) == 0:
        raise ConfigError("the index has no rows: there are no images to cache")
    if size < 1:
        raise ConfigError(f"image cache size {size}; expected a positive number of pixels")
    file = image_cache_path(index, size, directory)
    file.parent.mkdir(parents=True, exist_ok=True)
    _sidecar(file).unlink(missing_ok=True)  # no valid cache until this build completes
    meta: dict[str, Any] = {
        "version": VERSION,
        "shape": [len(index), 3, size, size],
        "size": size,
        "dataset": index.dataset,
        "root": str(Path(index.root).resolve()),
        "key": content_key(index),
        "sources": [list(s) for s in index.sources],
        "image_sources": [list(s) for s in image_sources(index)],  # before decoding
    }
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}-", suffix=".tmp")
    os.close(fd)
    try:
        _write_images(index, size, Path(tmp), workers, progress)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _write_json(_sidecar(file), {**meta, "complete": True})
    return file
