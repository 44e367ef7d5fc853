"""The data split a checkpoint was trained on, and the check that a later run does not
test a checkpoint on subjects it trained or validated on.

:class:`~au_lightning.data.AUDataModule` writes a :class:`SplitRecord` into every
checkpoint (its ``state_dict``, which Lightning saves under the data module's class name)
and checks it when ``test``, ``validate``, ``predict`` or a resumed ``fit`` load one (its
``load_state_dict``). The CLI's ``--ckpt_path best|last`` reads the same record to look only
among runs of the same data and fold (:func:`au_lightning.checkpoints.find_checkpoint`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from au_lightning.errors import ConfigError

__all__ = [
    "SPLIT_KEY",
    "FoldKey",
    "FoldMismatchError",
    "SplitRecord",
    "data_source",
    "split_record_in",
]

#: the entry of a data module's checkpoint state that holds its :class:`SplitRecord`
SPLIT_KEY = "au_lightning_split"


class FoldMismatchError(ConfigError):
    """A checkpoint is evaluated (or resumed) on test subjects it was trained or validated on."""


def data_source(dataset: str, root: str | None, synth: Mapping[str, Any] | None) -> str:
    """What identifies a dataset's subjects: the resolved root folder, or the SynthAU
    specification (the same specification renders the same people on any machine)."""
    if synth is not None:
        return f"synthau:{dataset}:{json.dumps(dict(synth), sort_keys=True)}"
    return f"{dataset}:{Path(root or '').expanduser().resolve()}"


@dataclass(frozen=True)
class FoldKey:
    """Which data and which fold a run trained on: what ``best`` and ``last`` must match."""

    source: str
    protocol: str
    fold: str

    def describe(self) -> str:
        return f"fold {self.fold} ({self.protocol}) of {self.source}"


@dataclass(frozen=True)
class SplitRecord:
    """The subjects of a run's training, validation and test sides, and where they come from
    (``test_source`` differs from ``source`` under ``protocol: cross``)."""

    key: FoldKey
    test_source: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SplitRecord:
        return cls(
            key=FoldKey(**record["key"]),
            test_source=str(record["test_source"]),
            train=tuple(record["train"]),
            val=tuple(record["val"]),
            test=tuple(record["test"]),
        )

    def seen_among(self, current: SplitRecord) -> dict[str, list[str]]:
        """The test subjects of ``current`` that this (the checkpoint's) run trained or
        validated on, by side; empty when the two test on other people's data."""
        if current.test_source != self.key.source:
            return {}
        test = set(current.test)
        seen = {
            "training": sorted(test & set(self.train)),
            "validation": sorted(test & set(self.val)),
        }
        return {side: subjects for side, subjects in seen.items() if subjects}

    def check_against(self, current: SplitRecord, checkpoint: str, allow: bool) -> str | None:
        """Raise :class:`FoldMismatchError` when ``current`` tests on subjects this run saw;
        with ``allow``, return the warning instead (None when nothing was seen)."""
        seen = self.seen_among(current)
        if not seen:
            return None
        sides = "; ".join(
            f"{_names(subjects)} were {side} subjects" for side, subjects in seen.items()
        )
        message = (
            f"{checkpoint} was trained on fold {self.key.fold} and is being evaluated on fold "
            f"{current.key.fold} ({current.key.protocol}), whose test subjects it saw: {sides}"
        )
        if allow:
            return f"--allow_fold_mismatch: {message}; the scores are not held-out"
        raise FoldMismatchError(
            f"{message}. Use the fold it was trained on (--data.fold {self.key.fold}) or "
            "pass --allow_fold_mismatch true"
        )


def split_record_in(checkpoint: Mapping[str, Any]) -> SplitRecord | None:
    """The :class:`SplitRecord` a data module saved in ``checkpoint``, or None (a checkpoint
    from before records, or of a run without an AU data module)."""
    for value in checkpoint.values():
        if isinstance(value, Mapping) and isinstance(value.get(SPLIT_KEY), Mapping):
            return SplitRecord.from_dict(value[SPLIT_KEY])
    return None


def _names(subjects: list[str], shown: int = 8) -> str:
    more = f" and {len(subjects) - shown} more" if len(subjects) > shown else ""
    return ", ".join(subjects[:shown]) + more
