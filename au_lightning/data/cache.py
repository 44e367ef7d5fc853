"""An ``.npz`` cache of FrameIndex reads, valid while the source files are unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from au_lightning.data.formats import read_dataset
from au_lightning.data.index import FrameIndex

__all__ = ["cache_dir", "cached_read", "first_changed", "sources_unchanged"]

logger = logging.getLogger("au_lightning.data")


def cache_dir() -> Path:
    """``$AU_LIGHTNING_CACHE`` or, when it is unset or empty, ``~/.cache/au_lightning``."""
    return Path(os.environ.get("AU_LIGHTNING_CACHE") or Path.home() / ".cache" / "au_lightning")


def first_changed(sources: Iterable[Sequence[Any]]) -> str | None:
    """The first of the recorded ``(path, size, mtime_ns)`` whose file or folder is gone or
    has another size or mtime now (a folder's mtime moves when a file is added to or removed
    from it); None when all are unchanged."""
    for path, size, mtime_ns in sources:
        try:
            st = os.stat(path)
        except OSError:
            return str(path)
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            return str(path)
    return None


def sources_unchanged(index: FrameIndex) -> bool:
    """Every file and folder the index recorded still has its size and mtime."""
    return first_changed(index.sources) is None


def cached_read(
    name: str, root: str | Path, *, directory: str | Path | None = None, **options: Any
) -> FrameIndex:
    """``read_dataset(name, root, **options)`` through a cache keyed by the arguments and
    validated against the sources' sizes and mtimes. An index that records no sources (a
    reader that does not fill ``FrameIndex.sources``) cannot be validated and is not cached."""
    key_text = json.dumps(
        {"format": name, "root": str(Path(root).resolve()), "options": options},
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    folder = Path(directory) if directory is not None else cache_dir() / "index"
    file = folder / f"{name}-{key}.npz"
    if file.is_file():
        try:
            index = FrameIndex.load(file)
        except (OSError, ValueError, KeyError) as err:
            logger.warning("ignoring unreadable index cache %s: %s", file, err)
        else:
            if index.sources and sources_unchanged(index):
                return index
            logger.info("index cache %s is stale: a source file changed", file)
    index = read_dataset(name, root, **options)
    if not index.sources:
        return index
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz")
    os.close(fd)
    try:
        index.save(tmp)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return index
