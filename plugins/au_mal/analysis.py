"""The analysis of learned FE sample weights (Li & Shan, Sec. 4.4, Fig. 5 and 6)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

from au_lightning import ConfigError, FrameDataset, FrameIndex, reports
from au_lightning.data import load_frame


def _correlations(weights: np.ndarray, consistency: np.ndarray) -> tuple[float, float]:
    w = torch.as_tensor(weights, dtype=torch.float64)
    c = torch.as_tensor(consistency, dtype=torch.float64)
    if len(w) < 3 or float(w.std()) == 0 or float(c.std()) == 0:
        return float("nan"), float("nan")
    return float(pearson_corrcoef(w, c)), float(spearman_corrcoef(w, c))


def weight_consistency_summary(
    weights: np.ndarray,
    expression: np.ndarray,
    names: Sequence[str],
    consistency: np.ndarray | None = None,
) -> list[list[str]]:
    """The table behind Fig. 5/6: a row per expression and one for all images, with the
    number of images, the mean learned weight and, given the annotator ``consistency``
    (the share of annotators who chose the label, Sec. 4.4), the Pearson r and Spearman ρ
    between weight and consistency and the mean weight of the images whose consistency is
    below and at or above the median (NaN where a value is constant)."""
    header = ["expression", "images", "mean weight"]
    if consistency is not None:
        header += ["Pearson r", "Spearman rho"]
        header += ["weight (low consistency)", "weight (high consistency)"]
        median = float(np.median(consistency))
    rows = [header]
    groups = [(name, expression == code) for code, name in enumerate(names)]
    for name, mask in [*groups, ("all", np.ones(len(weights), bool))]:
        if not mask.any():
            continue
        row = [name, str(int(mask.sum())), f"{weights[mask].mean():.3f}"]
        if consistency is not None:
            w, c = weights[mask], consistency[mask]
            r, rho = _correlations(w, c)
            low, high = w[c < median], w[c >= median]
            row += [f"{r:.3f}", f"{rho:.3f}"]
            row += [f"{x.mean():.3f}" if len(x) else "" for x in (low, high)]
        rows.append(row)
    return rows


def contact_sheet(
    index: FrameIndex,
    weights: np.ndarray,
    path: Path,
    per_row: int = 10,
    thumbnail: int = 64,
) -> Path:
    """Fig. 5: one row per expression, ``per_row`` of its images evenly spaced through the
    ascending order of learned weight (the lowest first, the highest last), each labelled
    with its weight w (and its consistency c, when the index has it, as Fig. 6)."""
    names = index.expression_names
    label_width, cell = 90, thumbnail + 4
    sheet = Image.new("RGB", (label_width + per_row * cell, len(names) * cell + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for code, name in enumerate(names):
        rows = np.flatnonzero(index.expression == code)
        y = 4 + code * cell
        draw.text((4, y + thumbnail // 2 - 6), name, fill="black")
        if not len(rows):
            continue
        ranked = rows[np.argsort(weights[rows], kind="stable")]
        picks = np.unique(np.linspace(0, len(ranked) - 1, min(per_row, len(ranked))).round())
        for i, row in enumerate(ranked[picks.astype(int)]):
            image = load_frame(index, int(row)).permute(1, 2, 0).numpy()
            tile = Image.fromarray(image).resize((thumbnail, thumbnail))
            x = label_width + i * cell
            sheet.paste(tile, (x, y))
            labels = [f"w {weights[row]:.2f}"]
            if index.weight is not None:
                labels.append(f"c {index.weight[row]:.2f}")
            for line, text in enumerate(labels):
                corner = (x + 1, y + 1 + 11 * line)
                draw.rectangle(draw.textbbox(corner, text), fill="black")
                draw.text(corner, text, fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


class ExpressionWeightAnalysis(L.Callback):
    """Scores every FE training image with the trained meta net, g(f(e); ψ), and writes
    into the run directory when training ends (and when a checkpoint is tested):

    - ``fe_weights.csv``: path, expression, consistency (if read) and weight of each image;
    - ``fe_weights_sheet.png``: the images ranked by weight, per expression (Fig. 5);
    - ``fe_weights_results.md/.csv``: :func:`weight_consistency_summary` (the claim of
      Fig. 6: ambiguous, low-consistency images get lower weights).

    For SynthAU's consistency values read ``aux_reader_options: {consistency_file:
    EmoLabel/consistency.txt}``.

    Args:
        per_row: images per expression on the sheet.
        thumbnail: their side in pixels.
        batch_size: images per forward pass when scoring.
    """

    def __init__(self, per_row: int = 10, thumbnail: int = 64, batch_size: int = 64) -> None:
        self.per_row = per_row
        self.thumbnail = thumbnail
        self.batch_size = batch_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "expression_weights"):
            raise ConfigError(
                f"ExpressionWeightAnalysis needs a model with a meta net (mal), not "
                f"{type(pl_module).__name__}; remove the callback for this model"
            )
        if not hasattr(trainer.datamodule, "aux_index"):
            raise ConfigError(
                "ExpressionWeightAnalysis scores the FE images of an AuxiliaryDataModule"
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(pl_module, trainer.datamodule, pl_module.run_dir)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_end(trainer, pl_module)

    def score(self, pl_module: Any, datamodule: Any) -> np.ndarray:
        """The learned weight of every image of ``datamodule.aux_index``, in row order."""
        dataset = FrameDataset(datamodule.aux_index, None, datamodule.eval_transform)
        was_training = pl_module.training
        pl_module.eval()
        weights = [
            pl_module.expression_weights(batch["image"].to(pl_module.device)).cpu()
            for batch in DataLoader(dataset, batch_size=self.batch_size)
        ]
        pl_module.train(was_training)
        return torch.cat(weights).double().numpy()

    def write(self, pl_module: Any, datamodule: Any, directory: Path) -> list[Path]:
        index: FrameIndex = datamodule.aux_index
        weights = self.score(pl_module, datamodule)
        names = index.expression_names
        consistency = None if index.weight is None else index.weight.astype(np.float64)
        directory.mkdir(parents=True, exist_ok=True)
        csv = directory / "fe_weights.csv"
        header = "path,expression," + ("consistency," if consistency is not None else "")
        lines = [header + "weight"]
        for row in range(len(index)):
            code = int(index.expression[row])
            cells = [str(index.path[row]), names[code] if code >= 0 else ""]
            if consistency is not None:
                cells.append(f"{consistency[row]:.4f}")
            lines.append(",".join([*cells, f"{weights[row]:.6f}"]))
        csv.write_text("\n".join(lines) + "\n")
        table = weight_consistency_summary(weights, index.expression, names, consistency)
        sheet = contact_sheet(
            index, weights, directory / "fe_weights_sheet.png", self.per_row, self.thumbnail
        )
        return [csv, sheet, *reports.write_table(table, directory, "fe_weights")]
