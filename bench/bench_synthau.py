"""SynthAU: generation time, base rates, co-occurrence, and learnability, in one run.

    python bench/bench_synthau.py [--epochs 6] [--size 112] [--heatmap PNG]

1. Generates the default BP4D-layout set (12 subjects x 4 videos x 120 frames at 112 px,
   seed 0) into a temporary folder, timed, with all cores.
2. Reads it back with ``read_bp4d`` and prints the base rate per AU and the majority/minority
   ratio; writes the AU co-occurrence (Pearson) heatmap as a PNG.
3. Learnability: trains a small CNN briefly (``--epochs``, Adam, plain random batches) on the
   published BP4D 3-fold split (test on part 1, whose SynthAU subjects never appear in
   training) and prints per-AU test F1 beside the all-positive baseline F1 = 2p / (1 + p)
   (``all_positive_f1``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from au_lightning.data import AUDataModule, all_positive_f1, positive_rates, read_bp4d
from au_lightning.data.synth import SYNTH_AUS, generate
from au_lightning.method import AUMethod


def heatmap(matrix: np.ndarray, labels: list[str], path: Path, cell: int = 36) -> None:
    """A Pearson-correlation heatmap (blue -1, white 0, red +1) drawn with PIL."""
    n = len(labels)
    pad = 48
    image = Image.new("RGB", (pad + n * cell, pad + n * cell), "white")
    draw = ImageDraw.Draw(image)
    for i in range(n):
        for j in range(n):
            v = float(np.clip(matrix[i, j], -1, 1))
            shade = int(255 * (1 - abs(v)))
            color = (255, shade, shade) if v >= 0 else (shade, shade, 255)
            x, y = pad + j * cell, pad + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color)
            draw.text((x + 4, y + cell // 2 - 5), f"{v:+.1f}"[:4], fill="black")
        draw.text((4, pad + i * cell + cell // 2 - 5), labels[i], fill="black")
        draw.text((pad + i * cell + 4, pad // 2), labels[i], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


class SmallCNN(AUMethod):
    """Four conv blocks and a linear multi-label head, trained with AUMethod's masked BCE."""

    def __init__(self, aus: tuple[int, ...], pos_weight: bool) -> None:
        super().__init__(aus=list(aus), lr=2e-3, pos_weight=pos_weight)
        blocks, width = [], 3
        for out in (32, 64, 96, 128):
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.MaxPool2d(2)]  # fmt: skip
            width = out
        self.net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(width, len(aus)))  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=112, help="generated image size")
    parser.add_argument("--train-size", type=int, default=64, help="image size for training")
    parser.add_argument(
        "--pos-weight",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="weight positives by (1 - p) / p of the training base rates",
    )
    parser.add_argument(
        "--heatmap", type=Path, default=Path("docs/images/synthau_cooccurrence.png")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = generate("bp4d", Path(tmp) / "bp4d", size=args.size, seed=0)
        seconds = time.perf_counter() - t0
        index = read_bp4d(result.root, aus=SYNTH_AUS)
        print(f"generated {len(index)} frames (12 subjects x 4 videos x 120 frames, "
              f"{args.size} px) in {seconds:.1f} s\n")  # fmt: skip
        rates = index.base_rates()
        print("| AU | " + " | ".join(str(a) for a in SYNTH_AUS) + " |")
        print("|---" * (len(SYNTH_AUS) + 1) + "|")
        print("| base rate | " + " | ".join(f"{rates[a]:.3f}" for a in SYNTH_AUS) + " |")
        values = np.array(list(rates.values()))
        print(f"\nmajority / minority base rate: {values.max() / values.min():.1f}")
        unknown = (index.occurrence < 0).mean()
        print(f"unknown (9) labels: {unknown:.2%} of (frame, AU) entries")
        occ = np.where(index.occurrence < 0, np.nan, index.occurrence).astype(float)
        known_rows = ~np.isnan(occ).any(axis=1)
        corr = np.corrcoef(occ[known_rows].T)
        heatmap(corr, [f"AU{a}" for a in SYNTH_AUS], args.heatmap)
        print(f"co-occurrence heatmap: {args.heatmap}")

        dm = AUDataModule(dataset="bp4d", root=str(result.root), aus=list(SYNTH_AUS),
                          protocol="bp4d_3fold", fold="part1", val_strategy="none",
                          image_size=args.train_size, crop_size=args.train_size * 7 // 8,
                          batch_size=64,
                          num_workers=2, cache=False)  # fmt: skip
        torch.manual_seed(0)
        dm.setup("fit")
        train = dm.index.occurrence[dm.train_rows]
        train_rates = positive_rates(train)
        model = SmallCNN(SYNTH_AUS, pos_weight=args.pos_weight)
        trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                            default_root_dir=tmp,
                            enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)  # fmt: skip
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        train_seconds = time.perf_counter() - t0
        scores = trainer.test(model, datamodule=dm, verbose=False)[0]
        test_occ = dm.index.occurrence[dm.test_rows]
        print(f"\nlearnability: {args.epochs} epochs in {train_seconds:.0f} s, "
              f"test subjects {sorted(set(dm.index.subject[dm.test_rows]))}\n")  # fmt: skip
        print("| AU | train base rate | test F1 | all-positive F1 |")
        print("|---|---|---|---|")
        rows = []
        for j, (au, baseline) in enumerate(zip(SYNTH_AUS, all_positive_f1(test_occ), strict=True)):
            f1 = scores[f"test/f1_AU{au}"]
            rows.append((train_rates[j], f1, baseline))
            print(f"| {au} | {train_rates[j]:.3f} | {f1:.3f} | {baseline:.3f} |")
        rows = np.array(rows)
        print(f"| mean | | {rows[:, 1].mean():.3f} | {rows[:, 2].mean():.3f} |")
        order = np.argsort(rows[:, 0])
        third = len(order) // 3
        print(f"\nmean F1 of the {third} rarest AUs: {rows[order[:third], 1].mean():.3f}; "
              f"of the {third} most frequent: {rows[order[-third:], 1].mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
