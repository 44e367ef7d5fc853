"""Yang & Yin's RE-Net ablations on SynthAU: the ResNet-18 baseline vs RE-Net with a fixed and
a learnable relation graph, each with and without duplication augmentation (Tables 7 and 8),
new-AU recognition (Table 6) and intensity estimation (Table 4), with the same data, seed
and budget.

    python bench/renet_study.py --out docs/results/renet.md   # trains the runs, the tables
    python bench/renet_study.py --no-train                    # the tables of existing runs

Every occurrence run is ``configs/baseline.yaml`` or ``configs/renet.yaml`` (SynthAU in the
BP4D layout, published fold ``--fold``) for ``--epochs`` epochs without early stopping, with
the options of ``--extra`` (by default 64-px images cropped to 56, a third of the configs'
cost: RE-Net evaluates 12 AUs per image; and Adam's lr 1e-3 instead of the paper's 1e-4,
at which RE-Net stays at chance in this budget); the intensity run is
``configs/renet_intensity_bp4d.yaml``. The best validation checkpoint is tested. Runs go to
``<runs>/<variant>``.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import yaml

from au_lightning.cli import main

DA = ["--data.sampler=duplicate"]
OCCURRENCE = {
    "resnet18": ("baseline", []),
    "renet": ("renet", []),
    "renet-learnable": ("renet", ["--model.graph=learnable"]),
    "renet-recalibrated": ("renet", ["--model.recalibrate_statistics=true"]),
    "renet-all": ("renet", ["--model.strategy=all"]),
    "resnet18+DA": ("baseline", DA),
    "renet+DA": ("renet", DA),
    "renet-learnable+DA": ("renet", ["--model.graph=learnable", *DA]),
    "renet-without-AU23": ("renet", ["--model.unseen_aus=[23]"]),
    "renet-without-AU24": ("renet", ["--model.unseen_aus=[24]"]),
}
INTENSITY = {"renet-intensity": ("renet_intensity_bp4d", [])}

# the configs' checkpoints without their EarlyStopping, so that every run gets the budget
NO_EARLY_STOP = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: {monitor}, mode: max, filename: best}}
"""


def run(config: str, extra: list[str], directory: Path, args: argparse.Namespace) -> None:
    monitor = "val/icc_mean" if "intensity" in config else "val/f1_mean"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as override:
        override.write(NO_EARLY_STOP.format(monitor=monitor))
    options = ["--config", f"configs/{config}.yaml", "--config", override.name, *extra,
               *args.extra.split(),
               f"--data.fold={args.fold}", f"--trainer.max_epochs={args.epochs}",
               "--trainer.enable_progress_bar=false",
               f"--trainer.default_root_dir={directory}"]  # fmt: skip
    main(["fit", *options])
    main(["test", *options, "--ckpt_path=best"])


def read_results(directory: Path) -> dict[str, dict[str, str]]:
    """The rows of the newest test table under ``directory``, by AU."""
    tables = list(directory.rglob("test_results.csv"))
    if not tables:
        raise FileNotFoundError(f"no test_results.csv under {directory}; train first")
    with open(max(tables, key=lambda p: p.stat().st_mtime)) as f:
        return {r["AU"]: r for r in csv.DictReader(f)}


def all_positive_row(fold: str) -> dict[str, str]:
    """The table row of F1 (x100) per AU of calling every test frame positive
    (``au_lightning.data.all_positive_f1``): what a model without any ranking gets at 0.5."""
    from au_lightning.data import AUDataModule, all_positive_f1

    config = yaml.safe_load(Path("configs/baseline.yaml").read_text())["data"]["init_args"]
    data = AUDataModule(**{**config, "fold": fold})
    data.setup("test")
    f1 = 100 * all_positive_f1(data.index.occurrence[data.test_rows])
    scores = {f"AU{au}": f"{v:.1f}" for au, v in zip(data.aus, f1, strict=True)}
    return {**scores, "mean": f"{f1.mean():.1f}"}


def table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + [
        "| " + " | ".join(r) + " |" for r in rows[1:]
    ]


def markdown(runs: Path, variants: list[str], fold: str) -> str:
    results = {v: read_results(runs / v) for v in variants if v in OCCURRENCE}
    lines: list[str] = []
    if results:
        aus = [a for a in next(iter(results.values())) if a != "mean"]
        lines += ["F1 (x100) per AU at threshold 0.5 (Table 1/7/8 format).", ""]
        rows = [["Method", *aus, "Avg"]]
        rows += [[v, *(r[a]["F1"] for a in [*aus, "mean"])] for v, r in results.items()]
        reference = all_positive_row(fold)
        rows.append(["all positive (reference)", *(reference[a] for a in [*aus, "mean"])])
        lines += table(rows)
        lines += ["", "Mean over AUs (x100).", ""]
        rows = [["Method", "F1", "accuracy", "AUC"]]
        rows += [[v, r["mean"]["F1"], r["mean"]["accuracy"], r["mean"]["AUC"]]
                 for v, r in results.items()]  # fmt: skip
        lines += table(rows)
    pairs = [(v, f"{v}+DA") for v in results if f"{v}+DA" in results]
    if pairs:
        lines += ["", "Duplication augmentation (Table 8's direction): mean F1 (x100).", ""]
        rows = [["Method", "w/o DA", "+ DA", "difference"]]
        for plain, augmented in pairs:
            a, b = float(results[plain]["mean"]["F1"]), float(results[augmented]["mean"]["F1"])
            rows.append([plain, f"{a:.1f}", f"{b:.1f}", f"{b - a:+.1f}"])
        lines += table(rows)
    unseen = [v for v in results if v.startswith("renet-without-")]
    if unseen and "renet" in results:
        lines += ["", "New AUs (Table 6): F1 (x100) of the AU whose labels training never saw.", ""]
        rows = [["AU", "trained with its labels (renet)", "labels removed", "resnet18"]]
        for variant in unseen:
            au = variant.removeprefix("renet-without-")
            baseline = results.get("resnet18", {}).get(au, {}).get("F1", "")
            rows.append([au, results["renet"][au]["F1"], results[variant][au]["F1"], baseline])
        lines += table(rows)
    for variant in (v for v in variants if v in INTENSITY):
        rows = read_results(runs / variant)
        aus = list(rows)
        lines += ["", f"{variant}: ICC(3,1) and MAE per AU (Table 4 format).", ""]
        lines += table([["", *aus], ["ICC(3,1)", *(rows[a]["ICC"] for a in aus)],
                        ["MAE", *(rows[a]["MAE"] for a in aus)]])  # fmt: skip
    return "\n".join(lines) + "\n"


def main_study() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the tables to this markdown file")
    parser.add_argument("--runs", type=Path, default=Path("runs/renet_study"))
    parser.add_argument("--fold", default="part1")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--extra",
        default="--data.image_size=64 --data.crop_size=56 --model.lr=1e-3",
        help="options of every run (give as --extra='--data.image_size=...')",
    )
    choices = [*OCCURRENCE, *INTENSITY]
    parser.add_argument("--variants", nargs="+", default=choices, choices=choices)
    parser.add_argument("--no-train", action="store_true", help="only read existing runs")
    args = parser.parse_args()
    if not args.no_train:
        for variant in args.variants:
            config, extra = {**OCCURRENCE, **INTENSITY}[variant]
            run(config, extra, args.runs / variant, args)
    text = markdown(args.runs, args.variants, args.fold)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main_study()
