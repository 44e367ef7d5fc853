"""Few-shot adaptation results: per-task accuracy records, the papers' tables and figures.

Lee et al. 2019 report the accuracy on the balanced evaluation sets D[te] after adapting
on K-shot sets D[tea]: per AU averaged across subjects (Tables 1-3, Fig. 10), per subject
averaged across AUs (Fig. 11), and averaged over tasks against the number of gradient
steps (Fig. 14). One run's results are :class:`AdaptationRecord` rows (one per task, shot
count and step), kept as ``adaptation.csv`` in its run directory; the tables compare runs
(``base`` vs ``ours``) from those files.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from au_lightning.errors import ConfigError
from au_lightning.reports import grouped_bar_plot, line_plot, write_table

__all__ = [
    "AdaptationRecord",
    "adaptation_records",
    "adaptation_table",
    "per_au_accuracy",
    "per_subject_accuracy",
    "read_adaptation_csv",
    "step_curve",
    "write_adaptation_csv",
    "write_adaptation_report",
]

COLUMNS = ("shots", "subject", "au", "step", "accuracy", "episodes")


class AdaptationRecord(NamedTuple):
    """The accuracy of one task (subject, AU) after ``step`` adaptation steps on K=``shots``
    examples per class, averaged over its ``episodes``."""

    shots: int
    subject: str
    au: int
    step: int
    accuracy: float
    episodes: int


def adaptation_records(
    accuracy: np.ndarray, tasks: Sequence[tuple[str, int]], shots: int, episodes: np.ndarray
) -> list[AdaptationRecord]:
    """Records from a ``(tasks, steps + 1)`` accuracy matrix (tasks without episodes are
    left out)."""
    out = []
    for (subject, au), row, n in zip(tasks, np.asarray(accuracy), episodes, strict=True):
        if n == 0:
            continue
        out += [
            AdaptationRecord(int(shots), str(subject), int(au), step, float(a), int(n))
            for step, a in enumerate(row)
        ]
    return out


def write_adaptation_csv(records: Sequence[AdaptationRecord], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(
            (r.shots, r.subject, r.au, r.step, f"{r.accuracy:.6f}", r.episodes) for r in records
        )
    return path


def read_adaptation_csv(path: Path) -> list[AdaptationRecord]:
    """Records from an ``adaptation.csv``; a file in another format is an error naming the
    file and the row."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise ConfigError(f"{path}: expected the header {','.join(COLUMNS)}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            shots, subject, au, step, accuracy, episodes = row
            out.append(
                AdaptationRecord(
                    int(shots), subject, int(au), int(step), float(accuracy), int(episodes)
                )
            )
        except ValueError as err:
            raise ConfigError(f"{path}, row {line}: {row} is not {','.join(COLUMNS)}") from err
    return out


def _select(records: Sequence[AdaptationRecord], shots: int, step: int) -> list[AdaptationRecord]:
    return [r for r in records if r.shots == shots and r.step == step]


def _mean_by(records: Sequence[AdaptationRecord], key: str) -> dict:
    groups: dict = defaultdict(list)
    for r in records:
        groups[getattr(r, key)].append(r.accuracy)
    return {k: float(np.nanmean(v)) for k, v in sorted(groups.items())}


def per_au_accuracy(records: Sequence[AdaptationRecord], shots: int, step: int) -> dict[int, float]:
    """Accuracy per AU averaged across subjects (Tables 1-3)."""
    return _mean_by(_select(records, shots, step), "au")


def per_subject_accuracy(
    records: Sequence[AdaptationRecord], shots: int, step: int
) -> dict[str, float]:
    """Accuracy per subject averaged across AUs (Fig. 11)."""
    return _mean_by(_select(records, shots, step), "subject")


def step_curve(records: Sequence[AdaptationRecord], shots: int) -> list[float]:
    """Accuracy averaged over all tasks after 0, 1, ... steps (Fig. 14)."""
    by_step = _mean_by([r for r in records if r.shots == shots], "step")
    return [by_step[s] for s in sorted(by_step)]


def _shots_and_step(runs: Mapping[str, Sequence[AdaptationRecord]]) -> tuple[list[int], int]:
    records = [r for rs in runs.values() for r in rs]
    if not records:
        raise ValueError("no adaptation records to report")
    return sorted({r.shots for r in records}), max(r.step for r in records)


def adaptation_table(
    runs: Mapping[str, Sequence[AdaptationRecord]], step: int | None = None
) -> list[list[str]]:
    """Tables 1-3 of Lee et al.: accuracy per AU (rows, then ``AVG``, the mean over AUs) for
    each shot count and run (columns ``1-shot base``, ``1-shot ours`` ...; just ``1-shot``
    for a single run), after ``step`` steps (default: the last step recorded)."""
    shots, last = _shots_and_step(runs)
    step = last if step is None else step
    named = len(runs) > 1
    header = ["AU"] + [f"{k}-shot" + (f" {name}" if named else "") for k in shots for name in runs]
    columns = [per_au_accuracy(records, k, step) for k in shots for records in runs.values()]
    aus = sorted({au for column in columns for au in column})
    rows = [header]
    for au in aus:
        rows.append([f"AU{au}", *(_fmt(column.get(au)) for column in columns)])
    rows.append(["AVG", *(_fmt(_nanmean(column.values())) for column in columns)])
    return rows


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def write_adaptation_report(
    runs: Mapping[str, Sequence[AdaptationRecord]], directory: Path, stem: str = "adaptation"
) -> list[Path]:
    """``<stem>_results.md``/``.csv`` (:func:`adaptation_table`), ``<stem>_steps.png``
    (accuracy against gradient steps per run and shot count, Fig. 14) and
    ``<stem>_subjects.png`` (per-subject accuracy at the largest shot count, Fig. 11: each
    run's bar, side by side) in ``directory``."""
    shots, step = _shots_and_step(runs)
    paths = write_table(adaptation_table(runs), directory, stem)
    curves = {
        f"{name} {k}-shot": step_curve(records, k) for name, records in runs.items() for k in shots
    }
    paths.append(
        line_plot(curves, directory / f"{stem}_steps.png", "accuracy vs gradient steps", "step")
    )
    subjects = sorted({r.subject for rs in runs.values() for r in rs})
    per_run = {name: per_subject_accuracy(rs, shots[-1], step) for name, rs in runs.items()}
    groups = {s: {name: acc[s] for name, acc in per_run.items() if s in acc} for s in subjects}
    title = f"accuracy per subject, {shots[-1]}-shot, {step} steps"
    return [*paths, grouped_bar_plot(groups, directory / f"{stem}_subjects.png", title)]
