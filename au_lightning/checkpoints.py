"""Finding the checkpoints of earlier runs, for ``--ckpt_path last`` and ``--ckpt_path best``.

Lightning resolves ``last`` and ``best`` only within the current process and logger
version, so in a new ``au-lightning`` process they would find nothing (``fit`` would even
start from scratch with a warning). The CLI resolves them here instead, among the runs
under the Trainer's ``default_root_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

__all__ = ["find_checkpoint"]


def find_checkpoint(root: str | Path, which: Literal["last", "best"]) -> Path | None:
    """The checkpoint of the latest run under ``root``, or ``None`` if there is none.

    - ``last``: the most recently written ``last*.ckpt`` (``ModelCheckpoint(filename="last")``
      or ``save_last=True``).
    - ``best``: the ``best_model_path`` that a monitoring ``ModelCheckpoint`` recorded in the
      most recently written checkpoint.
    """
    found = sorted(Path(root).rglob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    if which == "last":
        last = [p for p in found if p.stem.startswith("last")]
        return last[-1] if last else None
    if not found:
        return None
    checkpoint = torch.load(found[-1], map_location="cpu", weights_only=True)
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("monitor"):
            best = Path(state.get("best_model_path") or "")
            if best.is_file():
                return best
    return None
