"""Result tables (markdown and CSV) and per-AU bar plots, written into a run directory."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from au_lightning.metrics import mean_over_folds

__all__ = [
    "au_bar_plot",
    "grouped_bar_plot",
    "line_plot",
    "per_au_table",
    "percent",
    "presence_heatmap",
    "relation_heatmap",
    "write_cv_results",
    "write_results",
    "write_table",
]

METRICS = ("f1", "acc", "auc")


def percent(value: float | None) -> str:
    """A score as the papers print it: x100 with one decimal; blank for None or NaN."""
    return "" if value is None or math.isnan(float(value)) else f"{100 * float(value):.1f}"


def per_au_table(scores: Mapping[str, float], aus: Sequence[int]) -> list[list[str]]:
    """Rows ``AU, F1, accuracy, AUC`` (x100, as the papers report them) and a mean row, from
    keys ``f1_AU<n>``, ``acc_AU<n>``, ``auc_AU<n>`` and ``*_mean``; missing keys are blank.

    With final scores (keys ``score_AU<n>``, :func:`au_lightning.metrics.final_scores`) a
    ``score`` column, (accuracy + F1) / 2, follows AUC. With tuned thresholds (keys
    ``untuned_f1_AU<n>``, ``threshold_AU<n>``) two columns follow: F1 at the untuned
    thresholds and the tuned threshold of each AU.
    """
    final = any(k.startswith("score_") for k in scores)
    untuned = any(k.startswith("untuned_f1_") for k in scores)
    tuned = any(k.startswith("threshold_AU") for k in scores)
    header = ["AU", "F1", "accuracy", "AUC"] + ["score"] * final
    rows = [header + ["F1 untuned"] * untuned + ["threshold"] * tuned]
    for au in [*aus, None]:
        suffix = "mean" if au is None else f"AU{au}"
        row = [suffix if au is None else f"AU{au}"]
        row += [percent(scores.get(f"{m}_{suffix}")) for m in METRICS + ("score",) * final]
        if untuned:
            row.append(percent(scores.get(f"untuned_f1_{suffix}")))
        if tuned:
            threshold = scores.get(f"threshold_{suffix}")
            row.append("" if threshold is None else f"{threshold:.3f}")
        rows.append(row)
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


#: line and bar colours of the series of one plot, in order
PALETTE = ((70, 110, 180), (230, 170, 40), (190, 60, 60), (60, 150, 90), (120, 80, 160))


def _axes(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], lo: float, hi: float) -> None:
    left, top, right, bottom = box
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for tick in np.linspace(lo, hi, 5):
        y = bottom - (tick - lo) / (hi - lo) * (bottom - top)
        draw.text((4, y - 6), f"{tick:.2f}", fill="black")


def _legend(draw: ImageDraw.ImageDraw, names: Sequence[str], x: int, y: int) -> None:
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([x, y + 14 * i + 2, x + 10, y + 14 * i + 10], fill=colour)
        draw.text((x + 14, y + 14 * i), name, fill="black")


def line_plot(
    series: Mapping[str, Sequence[float]],
    path: Path,
    title: str,
    x_label: str = "step",
    x: Sequence[float] | None = None,
) -> Path:
    """Lines (one per series, a legend on the right), drawn with PIL, over ``x`` (default
    0, 1, ...; shared by the series, which may be shorter); the y range spans the data and
    at most 10 x ticks are labelled."""
    values = [v for ys in series.values() for v in ys if not math.isnan(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.02, 0.1 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    steps = max((len(ys) for ys in series.values()), default=1)
    xs = list(range(steps)) if x is None else [float(v) for v in x]
    if len(xs) < steps:
        raise ValueError(f"line_plot: {len(xs)} x values for series of up to {steps} points")
    x_lo, x_hi = (xs[0], xs[steps - 1]) if steps and xs else (0.0, 1.0)
    width, height, left, top, bottom = 560, 300, 44, 30, 260
    right = width - 170
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black")
    _axes(draw, (left, top, right, bottom), lo, hi)

    def px(value: float) -> float:
        return left + 10 + (value - x_lo) / ((x_hi - x_lo) or 1) * (right - left - 20)

    for s in range(0, steps, max(1, math.ceil(steps / 10))):
        draw.text((px(xs[s]) - 3, bottom + 6), f"{xs[s]:g}", fill="black")
    draw.text(((left + right) // 2, bottom + 22), x_label, fill="black")
    for i, ys in enumerate(series.values()):
        colour = PALETTE[i % len(PALETTE)]
        points = [
            (px(xs[s]), bottom - (y - lo) / (hi - lo) * (bottom - top))
            for s, y in enumerate(ys)
            if not math.isnan(y)
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if len(points) <= 50:
            for cx, cy in points:
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    _legend(draw, list(series), right + 14, top)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def grouped_bar_plot(groups: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Bars (0..1 scale) grouped by label, one colour per series (e.g. per subject: the
    baseline's and the method's accuracy side by side, as Lee et al. Fig. 11)."""
    names = list(dict.fromkeys(n for group in groups.values() for n in group))
    bar, gap = 12, 14
    step = bar * len(names) + gap
    left, top, bottom = 44, 30, 250
    width, height = left + step * len(groups) + 170, 300
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black")
    _axes(draw, (left, top, width - 170, bottom), 0.0, 1.0)
    for g, (label, group) in enumerate(groups.items()):
        x0 = left + 8 + g * step
        for i, name in enumerate(names):
            value = group.get(name, math.nan)
            if math.isnan(value):
                continue
            v = max(0.0, min(1.0, value))
            x = x0 + i * bar
            draw.rectangle([x, bottom - v * (bottom - top), x + bar - 2, bottom],
                           fill=PALETTE[i % len(PALETTE)])  # fmt: skip
        draw.text((x0, bottom + 6 + 12 * (g % 2)), label, fill="black")
    _legend(draw, names, width - 156, top)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_table(rows: list[list[str]], directory: Path, stem: str) -> list[Path]:
    """``<stem>_results.md`` and ``<stem>_results.csv`` from a header row and rows."""
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
    tables = write_table(per_au_table(scores, aus), directory, stem)
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
    means = [f"{column} mean" for column in per_au_table(mean, aus)[0][1:]]
    rows = [["AU", *(f"F1 {name}" for name in per_fold), *means]]
    for key, mean_row in zip(keys, per_au_table(mean, aus)[1:], strict=True):
        folds = [percent(scores.get(key)) for scores in per_fold.values()]
        rows.append([mean_row[0], *folds, *mean_row[1:]])
    tables = write_table(rows, directory, "cv")
    return [*tables, _f1_plot(mean, aus, directory / "cv_f1.png", "F1 per AU, mean over folds")]


def presence_heatmap(
    presence: Mapping[str, np.ndarray], aus: Sequence[int], path: Path, cell: int = 11
) -> Path:
    """Heatmaps of AU presence per batch, one panel per sampler (Chu et al. Fig. 6).

    ``presence`` maps a sampler's name to its ``(L, B)`` counts of present AUs in each batch
    (:func:`au_lightning.data.presence_per_batch`); rows are AUs, columns batches, and the
    shade is the count on one scale for all panels (white 0, darkest the largest count).
    """
    top = max(1, max(int(p.max(initial=0)) for p in presence.values()))
    left, title, gap = 52, 16, 14
    columns = max(p.shape[1] for p in presence.values())
    panel = title + cell * len(aus)
    width = left + cell * columns + 10
    image = Image.new("RGB", (width, gap + len(presence) * (panel + gap)), "white")
    draw = ImageDraw.Draw(image)
    y = gap
    for name, counts in presence.items():
        draw.text((left, y), f"{name}: AU presence per batch (0..{top})", fill="black")
        y += title
        for i, au in enumerate(aus):
            draw.text((4, y + i * cell - 2), f"AU{au}", fill="black")
            for b, count in enumerate(counts[i]):
                shade = int(255 * (1 - count / top))
                x = left + b * cell
                box = [x, y + i * cell, x + cell - 1, y + (i + 1) * cell - 1]
                draw.rectangle(box, fill=(shade, shade, 255 - (255 - shade) // 3))
        y += cell * len(aus) + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def relation_heatmap(matrix: np.ndarray, aus: Sequence[int], path: Path, title: str) -> Path:
    """An AU-by-AU matrix of values in [-1, 1] (e.g. label correlations, Yang & Yin Fig. 2):
    red for positive, blue for negative, the shade the strength, the value in each cell."""
    matrix = np.asarray(matrix, dtype=np.float64)
    cell, left, top = 40, 48, 36
    size = len(aus)
    image = Image.new("RGB", (left + cell * size + 10, top + cell * size + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill="black")
    for i, au in enumerate(aus):
        draw.text((6, top + i * cell + cell // 2 - 5), f"AU{au}", fill="black")
        draw.text((left + i * cell + 6, top - 14), f"AU{au}", fill="black")
        for j in range(size):
            value = float(np.clip(matrix[i, j], -1, 1))
            fade = int(255 * (1 - abs(value)))
            colour = (255, fade, fade) if value >= 0 else (fade, fade, 255)
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline="white")
            ink = "white" if abs(value) > 0.6 else "black"
            draw.text((x + 5, y + cell // 2 - 5), f"{matrix[i, j]:.2f}", fill=ink)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
