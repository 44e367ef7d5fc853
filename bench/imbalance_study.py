"""The imbalance toolkit on SynthAU with the baseline plugin: each sampler (and selective
learning) trained with the same seed and budget, F1 per AU at 0.5 and at tuned thresholds.

    python bench/imbalance_study.py --out docs/results/imbalance.md

Every run is ``configs/baseline.yaml`` (SynthAU in the BP4D layout, published fold part1)
for a fixed ``--epochs`` without early stopping, with ``--model.threshold_search true``;
the best validation checkpoint is tested. Runs go to ``runs/imbalance/<variant>``.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from au_lightning.cli import main

VARIANTS = {
    "random": ["--data.sampler=random"],
    "stratified": ["--data.sampler=stratified"],
    "momu": ["--data.sampler=momu"],
    "mlros": ["--data.sampler=mlros"],
    "weighted": ["--data.sampler=weighted"],
    "mlros+selective": ["--data.sampler=mlros", "--model.loss_weights=selective"],
}

# the baseline's checkpoints without its EarlyStopping, so that every variant gets the budget
NO_EARLY_STOP = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/f1_mean, mode: max, filename: best}
"""


def run(extra: list[str], epochs: int, directory: Path, override: Path) -> None:
    args = ["--config", "configs/baseline.yaml", "--config", str(override), *extra,
            "--model.threshold_search=true", f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={directory}"]  # fmt: skip
    main(["fit", *args])
    main(["test", *args, "--ckpt_path=best"])


def read_results(directory: Path) -> dict[str, dict[str, str]]:
    """The rows of the newest test table under ``directory``, by AU."""
    table = max(directory.rglob("test_results.csv"), key=lambda p: p.stat().st_mtime)
    with open(table) as f:
        return {r["AU"]: r for r in csv.DictReader(f)}


def base_rates() -> dict[str, float]:
    """Base rates of the training split of the config, from its data module."""
    from au_lightning.data import AUDataModule, positive_rates

    dm = AUDataModule(dataset="bp4d", synth={"subjects": 12, "videos": 4, "frames": 120,
                      "size": 112, "seed": 0}, aus="bp4d", protocol="bp4d_3fold",
                      fold="part1")  # fmt: skip
    dm.setup("fit")
    rates = positive_rates(dm.index.occurrence[dm.train_rows])
    return {f"AU{a}": float(r) for a, r in zip(dm.aus, rates, strict=True)}


def report(results: dict[str, dict], rates: dict[str, float]) -> str:
    names = list(results)
    aus = sorted(rates, key=rates.get)
    lines = ["F1 (x100) at threshold 0.5, AUs from the rarest; base rate of the training split.",
             "", "| AU | base rate | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]  # fmt: skip
    for au in [*aus, "mean"]:
        rate = f"{100 * rates[au]:.1f}%" if au in rates else ""
        cells = [results[n][au]["F1 untuned"] for n in names]
        lines.append(f"| {au} | {rate} | " + " | ".join(cells) + " |")
    lines += ["", "Mean F1 (x100) at 0.5 and at per-AU thresholds tuned on validation.", "",
              "| variant | F1 at 0.5 | F1 tuned | accuracy tuned |",
              "|---|---|---|---|"]  # fmt: skip
    for n in names:
        mean = results[n]["mean"]
        lines.append(f"| {n} | {mean['F1 untuned']} | {mean['F1']} | {mean['accuracy']} |")
    lines += ["", "F1 (x100) per AU at tuned thresholds (threshold in brackets).", "",
              "| AU | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
    for au in aus:
        cells = [f"{results[n][au]['F1']} ({results[n][au]['threshold']})" for n in names]
        lines.append(f"| {au} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--root", type=Path, default=Path("runs/imbalance"))
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--report-only", action="store_true", help="tables of existing runs")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        override = Path(tmp) / "no_early_stop.yaml"
        override.write_text(NO_EARLY_STOP)
        for name in [] if options.report_only else options.variants:
            run(VARIANTS[name], options.epochs, options.root / name, override)
    results = {name: read_results(options.root / name) for name in options.variants}
    text = report(results, base_rates())
    print(text)
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(text)
