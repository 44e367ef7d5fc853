"""The training curves of Li & Shan's Fig. 3/4: losses and mean sample weights over steps."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from au_lightning import reports

#: the curves of each plot, by recorded name
LOSS_CURVES = ("loss_au", "loss_fe", "loss_val")
WEIGHT_CURVES = ("weight_au", "weight_fe")


class TrainingCurves:
    """Per-step values (``loss_au``, ``weight_fe`` ...) averaged over windows of ``every``
    steps, as the paper plots them every 20 iterations.

    :meth:`write` puts ``training_curves.csv`` (one row per window: its last step and the
    means) and the plots ``loss_curves.png`` and, when weights were recorded,
    ``weight_curves.png`` (Fig. 3 (c), (f), (i): the mean AU and FE sample weights) into a
    directory.
    """

    def __init__(self, every: int = 20) -> None:
        self.every = every
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {}

    def add(self, step: int, values: Mapping[str, float]) -> None:
        self.steps.append(int(step))
        for name, value in values.items():
            column = self.values.setdefault(name, [math.nan] * (len(self.steps) - 1))
            column.append(float(value))
        for column in self.values.values():
            column.extend([math.nan] * (len(self.steps) - len(column)))

    def windows(self) -> tuple[list[int], dict[str, list[float]]]:
        """The last step of every window and each value's mean over it (NaNs ignored)."""
        ends, means = [], {name: [] for name in self.values}
        for start in range(0, len(self.steps), self.every):
            stop = min(start + self.every, len(self.steps))
            ends.append(self.steps[stop - 1])
            for name, column in self.values.items():
                part = [v for v in column[start:stop] if not math.isnan(v)]
                means[name].append(sum(part) / len(part) if part else math.nan)
        return ends, means

    def write(self, directory: Path, title: str) -> list[Path]:
        if not self.steps:
            return []
        directory.mkdir(parents=True, exist_ok=True)
        ends, means = self.windows()
        names = list(means)
        lines = [",".join(["step", *names])]
        for i, step in enumerate(ends):
            lines.append(",".join([str(step)] + [f"{means[n][i]:.6g}" for n in names]))
        written = [directory / "training_curves.csv"]
        written[0].write_text("\n".join(lines) + "\n")
        for stem, wanted, what in (
            ("loss_curves", LOSS_CURVES, "losses"),
            ("weight_curves", WEIGHT_CURVES, "mean sample weights"),
        ):
            series = {n: means[n] for n in wanted if n in means}
            if series:
                path = directory / f"{stem}.png"
                written.append(reports.line_plot(series, path, f"{title}: {what}", "step", ends))
        return written

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "values": {k: list(v) for k, v in self.values.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = [int(s) for s in state["steps"]]
        self.values = {k: [float(x) for x in v] for k, v in state["values"].items()}
