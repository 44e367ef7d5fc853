"""Li & Shan's ablation on SynthAU: STL, MTL and MAL over the 3 folds with the same data,
seed and budget; F1 per AU (Table 1 format), the learned FE weights vs consistency, and the
meta-gradient signal that those weights could follow (:func:`fe_alignment`).

    python bench/mal_study.py              # trains 9 runs (~2.5 h on 2 CPU cores), the tables
    python bench/mal_study.py --no-train   # the tables of existing runs
    python bench/mal_study.py --methods stl mtl mal mal2   # + MAL at STL/MTL's AU step

``mal2`` is ``configs/mal.yaml`` with ``--model.weight_sum=2``: MAL's normalised weights
sum to 2 instead of 1, so that at uniform weights its loss is MTL's and its AU step STL's
and MTL's (the control for the halved AU step of sum-to-one weights, Sec. 4.1.2).

The tables are those of ``docs/results/mal.md`` (``--out FILE`` also writes them to FILE).

Every run is ``configs/<stl|mtl|mal>.yaml`` on ``--folds`` with ``--epochs`` epochs and the
options of ``--extra`` (applied to all three; by default α = 0.01, as the backbone starts
from scratch rather than ImageNet) and ``--meta-extra`` (MAL alone); the best validation
checkpoint is tested. Runs go to ``<runs>/<method>_<fold>``.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from study import newest  # bench/ is on sys.path when run as a script
from torch.func import functional_call, jvp
from torch.utils.data import DataLoader
from torchmetrics.functional import spearman_corrcoef

from au_lightning.cli import main
from au_lightning.data import AuxiliaryDataModule, FrameDataset
from au_mal import MAL

METHODS = ("stl", "mtl", "mal", "mal2")
#: the extra options of a method that is another's config: ``mal2`` is MAL with its
#: normalised weights summing to 2, the control with STL's and MTL's effective AU step
VARIANTS = {"mal2": ("mal", ["--model.weight_sum=2"])}


def run(method: str, fold: str, args: argparse.Namespace) -> None:
    config, own = VARIANTS.get(method, (method, []))
    extra = args.extra.split() + (args.meta_extra.split() if config == "mal" else []) + own
    options = ["--config", f"configs/{config}.yaml", f"--data.fold={fold}",
               f"--trainer.max_epochs={args.epochs}", "--trainer.enable_progress_bar=false",
               f"--trainer.default_root_dir={args.runs / f'{method}_{fold}'}", *extra]  # fmt: skip
    main(["fit", *options])
    main(["test", *options, "--ckpt_path=best"])


def read_rows(path: Path, key: str) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r[key]: r for r in csv.DictReader(f)}


def test_rows(runs: Path, method: str, fold: str) -> dict[str, dict[str, str]]:
    """A run's newest test table by AU (F1, accuracy, AUC, x100; "mean": over the AUs)."""
    return read_rows(newest(runs / f"{method}_{fold}", "test_results.csv"), "AU")


def f1_table(
    runs: Path, folds: list[str], methods: list[str]
) -> tuple[list[str], dict[str, list[float]]]:
    """The AU names and, per method, the F1 (x100) of each AU and the average over AUs, each
    the mean over the folds of the fold's test F1 at threshold 0.5."""
    aus: list[str] = []
    table: dict[str, list[float]] = {}
    for method in methods:
        per_fold = [test_rows(runs, method, fold) for fold in folds]
        aus = [a for a in per_fold[0] if a != "mean"]
        table[method] = [
            sum(float(rows[a]["F1"]) for rows in per_fold) / len(per_fold) for a in [*aus, "mean"]
        ]
    return aus, table


def fold_rows(
    folds: list[str], methods: list[str], score: Callable[[str, str], tuple[float, ...]]
) -> list[list[str]]:
    """A row per fold and one for the mean over folds, a cell per method: the values of
    ``score(method, fold)`` joined by " / "."""
    scores = {(m, f): score(m, f) for m in methods for f in folds}
    rows = []
    for fold in [*folds, "mean"]:
        picked = folds if fold == "mean" else [fold]
        cells = [
            " / ".join(
                f"{sum(scores[m, f][k] for f in picked) / len(picked):.1f}"
                for k in range(len(scores[m, folds[0]]))
            )
            for m in methods
        ]
        rows.append([fold, *cells])
    return rows


def test_scores(runs: Path) -> Callable[[str, str], tuple[float, ...]]:
    """(test F1, test AUC) of a method's fold, the means over AUs."""

    def score(method: str, fold: str) -> tuple[float, ...]:
        mean = test_rows(runs, method, fold)["mean"]
        return float(mean["F1"]), float(mean["AUC"])

    return score


def best_validation(runs: Path, method: str, fold: str) -> float:
    """The best ``val/f1_mean`` (x100) of the fit: F1 on the selection set, which selects
    the tested checkpoint (with ``au_mal.MALDataModule``, as the shipped configs: held-out
    training subjects, disjoint from ψ's reserve; runs from before: the reserve itself)."""
    values = [
        float(row["val/f1_mean"])
        for metrics in (runs / f"{method}_{fold}").rglob("metrics.csv")
        for row in csv.DictReader(metrics.read_text().splitlines())
        if row.get("val/f1_mean")
    ]
    return 100 * max(values) if values else math.nan


def weight_rows(runs: Path, folds: list[str]) -> list[list[str]]:
    """Per fold, the MAL test run's weight-consistency summary row for all FE images
    (r, rho, mean weight below and at or above the median consistency)."""
    rows = []
    for fold in folds:
        table = newest(runs / f"mal_{fold}", "fe_weights_results.csv").read_text().splitlines()
        cells = next(line.split(",") for line in table if line.startswith("all,"))
        rows.append([fold, *cells[3:7]])
    return rows


def fe_alignment(checkpoint: Path, batch_size: int = 200) -> tuple[np.ndarray, ...]:
    """Per FE training image i, a_i = ∇θ L_val · ∇θ L_i^FE at the checkpoint's θ, with L_val
    over the whole reserve (eval-mode batch norm): the signal the meta net learns from.
    Through the virtual step (Eq. 6), ∂L_val(θ*)/∂w_i ≈ −α a_i / Σw, so a positive a_i is
    an image whose FE gradient also lowers the AU validation loss, and Eq. 7 raises the
    weight of images like it. The data are those of the run's saved ``config.yaml``.
    Returns (a, consistency, learned weight)."""
    model = MAL.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    config = yaml.safe_load((checkpoint.parents[1] / "config.yaml").read_text())
    dm = AuxiliaryDataModule(**config["data"]["init_args"])
    dm.setup("fit")
    reserve = FrameDataset(dm.index, dm.val_rows, dm.eval_transform)
    (val,) = DataLoader(reserve, batch_size=len(reserve))
    val_loss = model.validation_loss(model.net(val["image"]), val["occurrence"])
    live = dict(model.net.named_parameters())
    # the FE head does not reach L_val: its tangent is zero
    grads = torch.autograd.grad(val_loss, list(live.values()), materialize_grads=True)
    tangent = dict(zip(live, grads, strict=True))
    params = {k: v.detach() for k, v in live.items()}
    alignment, weights = [], []
    for batch in DataLoader(FrameDataset(dm.aux_index, None, dm.eval_transform), batch_size):
        image, target = batch["image"], batch["expression"]

        def fe_losses(p: dict, image=image, target=target) -> torch.Tensor:
            return model.fe_losses(functional_call(model.net, p, (image,)).expression, target)

        alignment.append(jvp(fe_losses, (params,), (tangent,))[1].detach())
        weights.append(model.expression_weights(image))
    consistency = dm.aux_index.weight.astype(np.float64)
    return torch.cat(alignment).double().numpy(), consistency, torch.cat(weights).double().numpy()


def alignment_rows(runs: Path, folds: list[str]) -> list[list[str]]:
    """Per fold, from MAL's tested (best) checkpoint: the mean a_i of the clear (consistency
    >= 0.6) and the ambiguous FE images, the share of each with a_i > 0, and Spearman's ρ of
    a_i with consistency and with the learned weight."""
    rows = []
    for fold in folds:
        a, consistency, weight = fe_alignment(newest(runs / f"mal_{fold}", "best.ckpt"))
        clear = consistency >= 0.6

        def rho(x: np.ndarray, y: np.ndarray) -> float:
            return float(spearman_corrcoef(torch.from_numpy(x), torch.from_numpy(y)))

        rows.append([fold, f"{a[clear].mean():.3g}", f"{a[~clear].mean():.3g}",
                     f"{(a[clear] > 0).mean():.2f}", f"{(a[~clear] > 0).mean():.2f}",
                     f"{rho(a, consistency):.3f}", f"{rho(a, weight):.3f}"])  # fmt: skip
    return rows


def markdown(
    aus: list[str],
    table: dict[str, list[float]],
    folds: list[list[str]],
    reserve: list[list[str]],
    weights: list[list[str]],
    alignment: list[list[str]],
) -> str:
    header = ["Methods", *aus, "ave"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in table:
        cells = ["" if math.isnan(v) else f"{v:.1f}" for v in table[method]]
        lines.append(f"| {method.upper()} | " + " | ".join(cells) + " |")
    lines += ["", "| fold | " + " | ".join(m.upper() for m in table) + " |",
              "|---|" + "---|" * len(table)]  # fmt: skip
    lines += ["| " + " | ".join(r) + " |" for r in folds]
    lines += ["", "| validation F1 (best epoch) | " + " | ".join(m.upper() for m in table) + " |",
              "|---|" + "---|" * len(table)]  # fmt: skip
    lines += ["| " + " | ".join(r) + " |" for r in reserve]
    lines += ["", "| fold | Pearson r | Spearman rho | mean weight, consistency < median | "
              "mean weight, consistency >= median |", "|---|---|---|---|---|"]  # fmt: skip
    lines += ["| " + " | ".join(r) + " |" for r in weights]
    if alignment:
        lines += ["", "| fold | mean a, clear | mean a, ambiguous | a > 0, clear | "
                  "a > 0, ambiguous | rho(a, consistency) | rho(a, weight) |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += ["| " + " | ".join(r) + " |" for r in alignment]
    return "\n".join(lines) + "\n"


def main_study() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the tables to this markdown file")
    parser.add_argument("--runs", type=Path, default=Path("runs/mal_study"))
    parser.add_argument("--folds", nargs="+", default=["part1", "part2", "part3"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--extra",
        default="--model.lr=0.01",
        help="options of all three runs (give as --extra='--model.lr=...')",
    )
    parser.add_argument("--meta-extra", default="--model.meta_lr=0.001", help="MAL's own")
    parser.add_argument("--methods", nargs="+", default=list(METHODS[:3]), choices=METHODS)
    parser.add_argument("--no-train", action="store_true", help="only read existing runs")
    args = parser.parse_args()
    if not args.no_train:
        for fold in args.folds:
            for method in args.methods:
                run(method, fold, args)
    aus, table = f1_table(args.runs, args.folds, args.methods)
    folds = fold_rows(args.folds, args.methods, test_scores(args.runs))
    reserve = fold_rows(args.folds, args.methods, lambda m, f: (best_validation(args.runs, m, f),))
    weights = weight_rows(args.runs, args.folds) if "mal" in args.methods else []
    alignment = alignment_rows(args.runs, args.folds) if "mal" in args.methods else []
    text = markdown(aus, table, folds, reserve, weights, alignment)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main_study()
