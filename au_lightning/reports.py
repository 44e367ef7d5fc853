"""Result tables (markdown and CSV) and per-AU bar plots, written into a run directory."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from au_lightning.metrics import mean_over_folds

__all__ = ["au_bar_plot", "per_au_table", "write_cv_results", "write_results"]

METRICS = ("f1", "acc", "auc")


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(float(value)) else f"{100 * float(value):.1f}"


def per_au_table(scores: Mapping[str, float], aus: Sequence[int]) -> list[list[str]]:
    """Rows ``AU, F1, accuracy, AUC`` (x100, as the papers report them) and a mean row, from
    keys ``f1_AU<n>``, ``acc_AU<n>``, ``auc_AU<n>`` and ``*_mean``; missing keys are blank."""
    rows = [["AU", "F1", "accuracy", "AUC"]]
    rows += [[f"AU{au}", *(_percent(scores.get(f"{m}_AU{au}")) for m in METRICS)] for au in aus]
    rows.append(["mean", *(_percent(scores.get(f"{m}_mean")) for m in METRICS)])
    return rows


def au_bar_plot(values: Mapping[str, float], path: Path, title: str = "F1 per AU") -> None:
    """A bar chart (0..1 scale) drawn with PIL, one bar per label."""
    width, height, left, bottom = 60 + 44 * len(values), 300, 40, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black")
    top = 30
    span = height - bottom - top
    draw.line([(left, top), (left, height - bottom), (width - 10, height - bottom)], fill="black")
    for tick in (0, 0.5, 1):
        y = height - bottom - tick * span
        draw.text((4, y - 6), f"{tick:.1f}", fill="black")
    for i, (label, value) in enumerate(values.items()):
        x = left + 12 + 44 * i
        v = 0.0 if math.isnan(value) else max(0.0, min(1.0, value))
        draw.rectangle(
            [x, height - bottom - v * span, x + 28, height - bottom], fill=(70, 110, 180)
        )
        draw.text((x, height - bottom + 6), label, fill="black")
        draw.text((x, height - bottom - v * span - 14), f"{value:.2f}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _write_table(rows: list[list[str]], directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"{stem}_results.md"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md.write_text("\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]) + "\n")
    csv = directory / f"{stem}_results.csv"
    csv.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return [md, csv]


def _f1_plot(scores: Mapping[str, float], aus: Sequence[int], path: Path, title: str) -> Path:
    au_bar_plot({f"AU{a}": float(scores.get(f"f1_AU{a}", math.nan)) for a in aus}, path, title)
    return path


def write_results(
    scores: Mapping[str, float], aus: Sequence[int], directory: Path, stem: str = "test"
) -> list[Path]:
    """``<stem>_results.md``, ``<stem>_results.csv`` and ``<stem>_f1.png`` in ``directory``."""
    tables = _write_table(per_au_table(scores, aus), directory, stem)
    return [*tables, _f1_plot(scores, aus, directory / f"{stem}_f1.png", "F1 per AU")]


def write_cv_results(
    per_fold: Mapping[str, Mapping[str, float]], aus: Sequence[int], directory: Path
) -> list[Path]:
    """The cross-validation table, as the papers report it: F1 per AU in each fold, then the
    mean over folds of F1, accuracy and AUC (x100). Writes ``cv_results.md``/``.csv`` and
    the mean-F1 plot ``cv_f1.png`` into ``directory``.

    ``per_fold`` maps fold names to the fold's test scores (``f1_AU<n>``, ``f1_mean`` ...);
    the mean is :func:`au_lightning.metrics.mean_over_folds` (an AU absent from one test
    fold is averaged over the folds that have it).
    """
    mean = mean_over_folds(list(per_fold.values()))
    keys = [f"f1_AU{a}" for a in aus] + ["f1_mean"]
    header = ["AU", *(f"F1 {name}" for name in per_fold), "F1 mean", "accuracy mean", "AUC mean"]
    rows = [header]
    for key, mean_row in zip(keys, per_au_table(mean, aus)[1:], strict=True):
        folds = [_percent(scores.get(key)) for scores in per_fold.values()]
        rows.append([mean_row[0], *folds, *mean_row[1:]])
    tables = _write_table(rows, directory, "cv")
    return [*tables, _f1_plot(mean, aus, directory / "cv_f1.png", "F1 per AU, mean over folds")]
