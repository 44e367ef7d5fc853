"""Readers for the real on-disk layouts; each ``read_<format>(root, **options) -> FrameIndex``.

The built-in readers are registered under the entry-point group ``au_lightning.datasets``
(see ``pyproject.toml``); :func:`read_dataset` resolves any registered name, so a third
party adds a format by registering its reader there.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from au_lightning.data.errors import DatasetFormatError
from au_lightning.data.formats.affectnet import AFFECTNET_EXPRESSIONS, read_affectnet
from au_lightning.data.formats.bp4d import read_bp4d
from au_lightning.data.formats.bp4dplus import read_bp4dplus
from au_lightning.data.formats.disfa import read_disfa
from au_lightning.data.formats.emotionet import read_emotionet
from au_lightning.data.formats.images import IMAGE_EXTENSIONS, read_images
from au_lightning.data.formats.rafdb import RAFDB_EXPRESSIONS, read_rafdb
from au_lightning.data.formats.table import read_table
from au_lightning.data.index import FrameIndex
from au_lightning.errors import ConfigError
from au_lightning.registry import DATASETS_GROUP, load

__all__ = [
    "AFFECTNET_EXPRESSIONS",
    "IMAGE_EXTENSIONS",
    "RAFDB_EXPRESSIONS",
    "read_affectnet",
    "read_bp4d",
    "read_bp4dplus",
    "read_dataset",
    "read_disfa",
    "read_emotionet",
    "read_images",
    "read_rafdb",
    "read_table",
    "reader_options",
]


class ReaderOptionError(ConfigError, TypeError):
    """Reader options (``data.reader_options``) that the reader does not take, or lacking
    one it needs."""


def reader_options(name: str) -> list[str]:
    """The keyword options of the reader registered as ``name`` (its parameters after root)."""
    return list(inspect.signature(load(DATASETS_GROUP, name)).parameters)[1:]


def read_dataset(name: str, root: str | Path, **options: Any) -> FrameIndex:
    """Read ``root`` with the reader registered as ``name`` in ``au_lightning.datasets``."""
    if not str(root) or not Path(root).exists():
        raise FileNotFoundError(f"{name} dataset root {str(root)!r} does not exist")
    reader = load(DATASETS_GROUP, name)
    try:
        inspect.signature(reader).bind(root, **options)
    except TypeError as err:
        accepted = ", ".join(reader_options(name))
        raise ReaderOptionError(f"{name} reader: {err}; its options are: {accepted}") from None
    index = reader(root, **options)
    _check_subject_case(index, name, root)
    return index


def _check_subject_case(index: FrameIndex, name: str, root: str | Path) -> None:
    """Subject ids that differ only in case are one person spelt twice, or two people a
    case-insensitive file system cannot tell apart: either way, an error."""
    by_folded: dict[str, str] = {}
    for subject in index.subjects:
        other = by_folded.setdefault(subject.casefold(), subject)
        if other != subject:
            raise DatasetFormatError(
                root,
                f"the {name} subject ids {other!r} and {subject!r} differ only in case",
                "one spelling per subject",
            )
