"""Batch samplers: epoch-plan speed on 1M frames x 23 AUs, and the heatmap of Chu et al. Fig. 6.

    python bench/bench_samplers.py [--frames 1000000] [--batch-size 32]
                                   [--heatmap docs/images/sampler_batches.png]

1. Draws a label matrix like EmotioNet's 23 AUs: independent AUs with base rates from 0.5%
   to 40% and 2% unknown labels. For every sampler, times building it and planning one
   epoch (seconds, batches/s), best of ``--repeats``, all in one run.
2. Plans the first batches of each sampler on the training split of SynthAU in the BP4D
   layout (the baseline config's part1) and draws AU presence per batch, one panel per
   sampler, with the between-batch spread (SD) and within-batch spread (max/min of the
   AUs' mean counts) of each.

Target (issue #5): an epoch plan in under 10 s at 1M x 23.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from au_lightning.data import (
    AU_SETS,
    SAMPLERS,
    AUDataModule,
    make_batch_sampler,
    presence_per_batch,
)
from au_lightning.reports import presence_heatmap


def skewed_labels(frames: int, aus: int = 23, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = (rng.random((frames, aus)) < np.geomspace(0.005, 0.4, aus)).astype(np.int8)
    labels[rng.random(labels.shape) < 0.02] = -1
    return labels


def plan(name: str, labels: np.ndarray, batch_size: int, epoch: int = 0) -> list[np.ndarray]:
    """Build sampler ``name`` on ``skewed_labels``, whose 23 columns are EmotioNet's AUs, and
    plan one epoch; ``duplicate`` duplicates Yang & Yin's rare AUs among them (1, 2, 15, 24:
    EmotioNet has no AU 23)."""
    options = {"duplicate": [1, 2, 15, 24]} if name == "duplicate" else None
    aus = AU_SETS["emotionet"]
    return make_batch_sampler(name, labels, batch_size, options=options, aus=aus).plan(epoch)


def time_plans(labels: np.ndarray, batch_size: int, repeats: int) -> list[tuple[str, int, float]]:
    rows = []
    for name in SAMPLERS:
        best = float("inf")
        for epoch in range(repeats):
            start = time.perf_counter()
            batches = plan(name, labels, batch_size, epoch)
            best = min(best, time.perf_counter() - start)
        rows.append((name, len(batches), best))
    return rows


def synthau_presence(batch_size: int, batches: int) -> tuple[dict[str, np.ndarray], tuple]:
    synth = {"subjects": 12, "videos": 4, "frames": 120, "size": 112, "seed": 0}
    dm = AUDataModule(dataset="bp4d", synth=synth, aus="bp4d", protocol="bp4d_3fold",
                      fold="part1")  # fmt: skip
    dm.setup("fit")
    labels = dm.index.occurrence[dm.train_rows]
    presence = {}
    for name in ("random", "stratified", "momu"):
        plan = make_batch_sampler(name, labels, batch_size).plan(0)[:batches]
        presence[name] = presence_per_batch(labels, plan)
    return presence, dm.aus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--heatmap", type=Path, help="write the Fig. 6 heatmap here")
    options = parser.parse_args()

    labels = skewed_labels(options.frames)
    print(f"epoch plan, {options.frames:,} frames x {labels.shape[1]} AUs, "
          f"batch {options.batch_size}, best of {options.repeats}\n")  # fmt: skip
    print("| sampler | batches | seconds | batches/s |\n|---|---|---|---|")
    for name, count, seconds in time_plans(labels, options.batch_size, options.repeats):
        print(f"| {name} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} |")

    if options.heatmap:
        presence, aus = synthau_presence(options.batch_size, 60)
        print("\nSynthAU part1 training split, first 60 batches of", options.batch_size)
        print("| sampler | SD between batches (mean over AUs) | max/min of AU means |")
        print("|---|---|---|")
        for name, counts in presence.items():
            means = counts.mean(1)
            ratio = means.max() / max(means.min(), 1e-9)
            print(f"| {name} | {counts.std(1).mean():.2f} | {ratio:.1f} |")
        print("heatmap:", presence_heatmap(presence, aus, options.heatmap))


if __name__ == "__main__":
    main()
