"""Reading checkpoints with one-line errors, and finding the checkpoints of earlier runs for
``--ckpt_path last`` and ``--ckpt_path best``.

Lightning resolves ``last`` and ``best`` only within the current process and logger
version, so in a new ``au-lightning`` process they would find nothing (``fit`` would even
start from scratch with a warning). The CLI resolves them here instead, among the runs
under the Trainer's ``default_root_dir`` of the same method and the same data and fold
(the :class:`~au_lightning.data.SplitRecord` every checkpoint carries).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse.typing import import_object

from au_lightning.data.split_record import FoldKey, split_record_in
from au_lightning.errors import ConfigError

__all__ = ["CheckpointError", "find_checkpoint", "is_method", "method_of", "read_checkpoint"]


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read, or that holds something else than asked for."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, its tensors memory-mapped; an empty, truncated, garbled
    or non-Lightning file is a :class:`CheckpointError` naming it."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--ckpt_path {file}: no such file")
    if file.stat().st_size == 0:
        raise CheckpointError(f"{file} is empty (0 bytes): not a checkpoint")
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        with file.open("rb") as f:
            truncated = f.read(2) == b"PK" and not zipfile.is_zipfile(file)
        what = "truncated (a run killed while saving?)" if truncated else "not a checkpoint"
        raise CheckpointError(f"{file} cannot be read, {what}: {first}") from None
    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise CheckpointError(
            f"{file} is a torch file without a state_dict: not a Lightning checkpoint"
        )
    return loaded


def method_of(checkpoint: dict[str, Any]) -> str | None:
    """The class path of the LightningModule that wrote ``checkpoint`` (None if unrecorded)."""
    path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    return path if isinstance(path, str) else None


def is_method(class_path: str | None, method: type) -> bool:
    """Whether ``class_path`` names ``method`` (a class is reachable under several paths:
    ``au_baseline.Baseline`` and ``au_baseline.module.Baseline``)."""
    if class_path is None:
        return False
    try:
        return import_object(class_path) is method
    except (ImportError, AttributeError, ValueError):
        return False


def find_checkpoint(
    root: str | Path,
    which: Literal["last", "best"],
    method: type | None = None,
    fold: FoldKey | None = None,
) -> Path | None:
    """The checkpoint of the latest run under ``root`` whose checkpoints were written by
    ``method`` on ``fold`` (when given), or ``None`` if there is none.

    - ``last``: the most recently written ``last*.ckpt`` (``ModelCheckpoint(filename="last")``
      or ``save_last=True``). When it cannot be read, the error names the previous one.
    - ``best``: the ``best_model_path`` that a monitoring ``ModelCheckpoint`` recorded in the
      most recently written checkpoint.

    Checkpoints without a record of their method or split (written before they had one)
    never match a ``method`` or ``fold``.
    """
    found = sorted(Path(root).rglob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    if which == "last":
        found = [p for p in found if p.stem.startswith("last")]
    newest: tuple[Path, dict[str, Any]] | None = None
    unreadable: CheckpointError | None = None  # the newest, when newer than the match
    for path in reversed(found):
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError as err:
            unreadable = unreadable or err
            continue
        if _matches(checkpoint, method, fold):
            newest = (path, checkpoint)
            break
    if unreadable is not None:
        previous = f"the previous one is {newest[0]}" if newest else "there is no earlier one"
        raise CheckpointError(f"--ckpt_path {which}: {unreadable}; {previous} (pass its path)")
    if newest is None:
        return None
    path, checkpoint = newest
    if which == "last":
        return path
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("monitor"):
            best = Path(state.get("best_model_path") or "")
            if best.is_file():
                return best
    return None


def _matches(checkpoint: dict[str, Any], method: type | None, fold: FoldKey | None) -> bool:
    if method is not None and not is_method(method_of(checkpoint), method):
        return False
    if fold is None:
        return True
    record = split_record_in(checkpoint)
    return record is not None and record.key == fold
