"""Chu, De la Torre & Cohn on SynthAU: the CNN vs the LSTMs vs the fused hybrid network, with
frame and event F1 (Tables 1/2), the HOG + linear SVM and cross-dataset CNN^T rows, random
vs stratified vs MOMU sampling (Tables 3/4), and the subject-invariance analysis (Fig. 3/4).

    python bench/hybrid_study.py --out docs/results/hybrid.md   # trains the runs, the tables
    python bench/hybrid_study.py --no-train                     # the tables of existing runs
    python bench/hybrid_study.py --fit-check                    # ANet's init: does SGD 1e-3 fit?

Every hybrid run is ``configs/hybrid.yaml`` (SynthAU in the BP4D layout, published fold
``--fold``, 96-px crops) with stages of ``--epochs`` (6 + 10 + 5), the options of ``--extra``
(by default Adam at 1e-3 for the CNN instead of the paper's SGD at 1e-3) and those of its
variant: ``anet`` is the paper's CNN; ANet stays at chance in this CPU budget, so the other
variants use a ResNet-18 (PCA to 512, its feature size), with the CNN stage's sampler
random, stratified (Alg. 1) or MOMU (Alg. 2). The last checkpoint (each stage at its best
validation epoch) is tested on whole test videos. ``resnet18-T`` trains only the CNN stage
on another SynthAU dataset (the DISFA layout, other subjects: seed 1) with DISFA's AUs; its
features, and HOG features, of the fold's frames each train one linear SVM per AU (Sec.
4.4). Runs go to ``<runs>/<variant>``. Needs the extra ``hybrid`` (scikit-image,
scikit-learn). Every table has the temporal control ``cnn_smoothed`` (the CNN's
probabilities under a centred 9-frame moving average, column ``<CNN>-MA``) beside the
LSTM and fusion columns. ``--fit-check`` is the ANet initialisation check (He vs PyTorch's
default): SGD at the paper's 1e-3 on 512 training frames, the training loss against the
loss of predicting the base rates.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from study import newest  # bench/ is on sys.path when run as a script

from au_hybrid import Hybrid, event_scores, hybrid_table
from au_hybrid.analysis import format_fig4, subject_divergence, tsne_figure
from au_hybrid.results import HEAD_NAMES
from au_hybrid.svm import LinearSVMDetector, hog_features
from au_lightning import AUDetectionMetrics, masked_bce, reports
from au_lightning.cli import main
from au_lightning.data import FrameDataset, SequenceDataModule, resolve_aus
from au_lightning.nn import ANet

RESNET18 = ["--model.backbone=resnet18", "--model.pca_components=512"]
#: variant -> (the CNN stage's sampler, options): ANet, the paper's CNN, which stays at
#: chance in this budget, and ResNet-18 with each sampler of Sec. 5
VARIANTS = {
    "anet": ("random", []),
    "resnet18": ("random", RESNET18),
    "resnet18-stratified": ("stratified", RESNET18),
    "resnet18-momu": ("momu", RESNET18),
}
#: the sampler comparison (Tables 3/4): column name -> variant
SAMPLERS = {"RS": "resnet18", "MS": "resnet18-stratified", "MOMU": "resnet18-momu"}
OTHER_DATASET = [
    "--data.dataset=disfa",
    "--data.init_args.synth={subjects: 12, videos: 4, frames: 120, size: 112, seed: 1}",
    "--data.protocol=disfa_3fold",
    "--model.aus=disfa",
    "--data.aus=disfa",
]


def options(directory: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return ["--config", "configs/hybrid.yaml", *args.extra.split(), *extra,
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={directory}"]  # fmt: skip


def stages(cnn: int, lstm: int, fusion: int) -> list[str]:
    epochs = {"cnn": cnn, "lstm": lstm, "fusion": fusion}
    options = [f"--model.{stage}_epochs={n}" for stage, n in epochs.items()]
    return [*options, f"--trainer.max_epochs={cnn + lstm + fusion}"]


def run_hybrid(variant: str, args: argparse.Namespace) -> None:
    sampler, extra = VARIANTS[variant]
    if args.reuse_cnn:  # the CNN (stage 1) of the variant's newest run; stages 2-3 anew
        cnn = newest(args.runs / variant, "last.ckpt")
        extra = [*extra, *stages(0, *args.epochs[1:]), f"--model.init_from={cnn}"]
    else:
        extra = [*extra, *stages(*args.epochs)]
    fold = [f"--data.fold={args.fold}", f"--data.sampler={sampler}"]
    opts = options(args.runs / variant, args, [*fold, *extra])
    main(["fit", *opts])
    main(["test", *opts, "--ckpt_path=last"])


def run_cross(args: argparse.Namespace) -> None:
    """The ResNet-18 CNN stage alone on the other dataset (its fold part1)."""
    cnn = [*OTHER_DATASET, *RESNET18, *stages(args.epochs[0], 0, 0), "--data.fold=part1"]
    main(["fit", *options(args.runs / "resnet18-T", args, cnn)])


def read_scores(directory: Path) -> dict[str, float]:
    """The newest test table of a hybrid run, back in ``<head>/<metric>_<AU>`` keys."""
    with open(newest(directory, "test_results.csv")) as f:
        rows = list(csv.DictReader(f))
    names = {name: head for head, name in HEAD_NAMES.items()}  # hybrid_table's column names
    metrics = {"F1-frame": "f1", "F1-event": "event_f1", "AUC": "auc"}
    scores = {}
    for row in rows:
        au = "mean" if row["AU"] == "Avg" else f"AU{row['AU']}"
        for column, value in row.items():
            if column != "AU" and value:
                metric, name = column.rsplit(" ", 1)
                scores[f"{names[name]}/{metrics[metric]}_{au}"] = float(value) / 100
    return scores


def fold_data(args: argparse.Namespace) -> SequenceDataModule:
    config = yaml.safe_load(Path("configs/hybrid.yaml").read_text())["data"]["init_args"]
    data = SequenceDataModule(**{**config, "fold": args.fold})
    data.setup()
    return data


def frames(data: SequenceDataModule, split: str) -> tuple[np.ndarray, torch.Tensor]:
    """The split's rows in video order and their evaluation-transformed images."""
    rows = np.concatenate(data.segments(split))
    index, _ = data.split(split)
    loaded = FrameDataset(index, rows, data.eval_transform)
    return rows, torch.stack([loaded[i]["image"] for i in range(len(rows))])


def as_uint8(images: torch.Tensor, data: SequenceDataModule) -> torch.Tensor:
    mean = torch.tensor(data.hparams.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.hparams.std).view(1, 3, 1, 1)
    return ((images * std + mean).clamp(0, 1) * 255).to(torch.uint8)


@torch.no_grad()
def fc7(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    model = Hybrid.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    return torch.cat([model.net.cnn(b)[0] for b in images.split(256)]).numpy()


def svm_scores(
    train: np.ndarray, test: np.ndarray, data: SequenceDataModule, rows: dict[str, np.ndarray]
) -> dict[str, float]:
    """Frame and event F1 (``svm/...`` keys) of one linear SVM per AU."""
    labels = data.index.occurrence
    detector = LinearSVMDetector(aus=data.aus).fit(train, labels[rows["train"]])
    pred = torch.from_numpy(detector.predict(test)).float()
    target = torch.from_numpy(data.test_index.occurrence[rows["test"]])
    metrics = AUDetectionMetrics(data.aus)
    metrics.update(pred, target)
    scores = {k: float(v) for k, v in metrics.compute().items()}
    videos = torch.from_numpy(data.test_index.video_code[rows["test"]].astype(np.int64))
    return scores | event_scores(pred.bool(), target, videos, data.aus)


def comparison_rows(args: argparse.Namespace) -> tuple[dict[str, float], list[list[str]]]:
    """SVM (HOG) and CNN^T rows, and the subject divergence of HOG and CNN features."""
    data = fold_data(args)
    rows, images = {}, {}
    for split in ("train", "test"):
        rows[split], images[split] = frames(data, split)
    hog = {s: hog_features(as_uint8(images[s], data)) for s in images}
    scores = {f"svm/{k}": v for k, v in svm_scores(hog["train"], hog["test"], data, rows).items()}
    features = {"HOG": hog["test"]}
    cross = args.runs / "resnet18-T"
    if cross.exists():
        ckpt = newest(cross, "last.ckpt")
        fc7_t = {s: fc7(ckpt, images[s]) for s in images}
        cross_scores = svm_scores(fc7_t["train"], fc7_t["test"], data, rows)
        scores |= {f"cnn_t/{k}": v for k, v in cross_scores.items()}
        features["ResNet-18^T"] = fc7_t["test"]
    for variant, name in (("resnet18", "ResNet-18"), ("anet", "ANet fc7")):
        if (args.runs / variant).exists():
            ckpt = newest(args.runs / variant, "last.ckpt")
            features[name] = fc7(ckpt, images["test"])
    subjects = data.test_index.subject[rows["test"]]
    divergence = [["Feature", "Σ_q D(μ_p, μ_q): mean ± std over test subjects", "log(d·1e6)"]]
    au12 = data.test_index.occurrence[rows["test"], data.aus.index(12)]
    for name, feature in features.items():
        result = subject_divergence(feature, subjects)
        divergence.append([name, f"{result.mean:.2e} ± {result.std:.1e}", format_fig4(result)])
        stem = name.split(" ")[0].lower().replace("-", "").replace("^t", "_t")
        tsne_figure(feature, au12, subjects, args.images / f"hybrid_tsne_{stem}.png")
    return scores, divergence


def table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + [
        "| " + " | ".join(r) + " |" for r in rows[1:]
    ]


def rows_by_au(aus: list[int], cells: Callable[[str], list[str]]) -> list[list[str]]:
    """One row per AU and an ``Avg`` row, the cells of each from its key suffix."""
    keys = [*(f"AU{a}" for a in aus), "mean"]
    return [[k.removeprefix("AU") if k != "mean" else "Avg", *cells(k)] for k in keys]


def markdown(args: argparse.Namespace, comparison: tuple[dict[str, float], list] | None) -> str:
    tested = [v for v in VARIANTS if any((args.runs / v).rglob("test_results.csv"))]
    runs = {v: read_scores(args.runs / v) for v in tested}
    aus = config_aus()
    extra, divergence = comparison or ({}, [])
    lines: list[str] = []
    for variant, cnn in (("anet", "ANet"), ("resnet18", "ResNet-18")):
        if variant not in runs:
            continue
        lines += [f"Tables 1/2 format, {cnn}, random sampling: F1 (x100) per AU.", ""]
        heads = [("svm", "SVM (HOG)"), ("cnn_t", "ResNet-18^T"), ("cnn", cnn),
                 ("cnn_smoothed", f"{cnn}-MA"), ("lstm", "LSTM"), ("fused", "Ours")]  # fmt: skip
        scores = runs[variant] | extra
        heads = [(h, n) for h, n in heads if f"{h}/f1_mean" in scores]
        header = [*(f"F1-frame {n}" for _, n in heads), *(f"F1-event {n}" for _, n in heads)]
        rows = rows_by_au(
            aus,
            lambda k, s=scores, hs=heads: [
                reports.percent(s.get(f"{h}/{m}_{k}")) for m in ("f1", "event_f1") for h, _ in hs
            ],
        )
        lines += [*table([["AU", *header], *rows]), ""]
        lines += [f"Every head of that run (F1-frame, F1-event, AUC; the CNN is {cnn}):", ""]
        lines += [*table(hybrid_table(runs[variant], aus)), ""]
    samplers = {name: runs[v] for name, v in SAMPLERS.items() if v in runs}
    runs_by = list(samplers.values())
    if len(samplers) > 1:
        lines += ["Tables 3/4 format: F1 (x100) per AU with each sampler in the CNN stage.", ""]
        for head, title in (("cnn", "ResNet-18"), ("fused", "Ours")):
            header = ["AU", *(f"{title} {n}" for n in samplers)]
            rows = rows_by_au(
                aus, lambda k, h=head: [reports.percent(r.get(f"{h}/f1_{k}")) for r in runs_by]
            )
            lines += [*table([header, *rows]), ""]
    if divergence:
        lines += ["Subject divergence of test features (Eq. 2, Fig. 4's statistic):", ""]
        lines += table(divergence)
    return "\n".join(lines) + "\n"


def fit_check(
    init: str, steps: int = 200, frames: int = 512, size: int = 64, seed: int = 0
) -> dict[str, float]:
    """ANet (Sec. 3.1) with initialisation ``init`` trained with the paper's SGD (lr 1e-3,
    momentum 0.9, weight decay 5e-4; Sec. 4.2) for ``steps`` batches of 32 of ``frames``
    training frames of the config's fold at ``size`` px, dropout on. Returns the BCE over
    those frames (evaluation mode) at the start and the end, the BCE of predicting each
    AU's base rate (the level a network that learned nothing but the priors reaches), the
    logits' SD at the start, and the fit AUC (mean over AUs) at the end."""
    config = yaml.safe_load(Path("configs/hybrid.yaml").read_text())["data"]["init_args"]
    data = SequenceDataModule(**{**config, "image_size": size, "crop_size": size})
    data.setup()
    _, rows = data.split("train")
    pick = np.random.default_rng(seed).choice(len(rows), min(frames, len(rows)), replace=False)
    loaded = FrameDataset(data.index, rows[np.sort(pick)], data.eval_transform)
    images = torch.stack([loaded[i]["image"] for i in range(len(loaded))])
    target = torch.stack([torch.as_tensor(loaded[i]["occurrence"]) for i in range(len(loaded))])
    known = (target >= 0).float()
    rate = ((target == 1).float() * known).sum(0) / known.sum(0).clamp(min=1)
    prior = torch.logit(rate.clamp(1e-4, 1 - 1e-4)).expand(len(target), -1)
    torch.manual_seed(seed)
    net = ANet(target.shape[1], in_size=size, init=init)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    @torch.no_grad()
    def evaluate() -> tuple[torch.Tensor, float]:
        net.eval()
        logits = torch.cat([net(b) for b in images.split(128)])
        net.train()
        return logits, float(masked_bce(logits, target))

    start, start_loss = evaluate()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        at = torch.randint(len(images), (32,), generator=generator)
        loss = masked_bce(net(images[at]), target[at])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end, end_loss = evaluate()
    metrics = AUDetectionMetrics(list(data.aus))
    metrics.update(torch.sigmoid(end), target)
    return {
        "logit_sd_start": float(start.std()),
        "loss_start": start_loss,
        "loss_base_rates": float(masked_bce(prior, target)),
        "loss_end": end_loss,
        "fit_auc": float(metrics.compute()["auc_mean"]),
    }


def config_aus() -> list[int]:
    config = yaml.safe_load(Path("configs/hybrid.yaml").read_text())
    return list(resolve_aus(config["model"]["init_args"]["aus"]))


def main_study() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the tables to this markdown file")
    parser.add_argument("--runs", type=Path, default=Path("runs/hybrid_study"))
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    parser.add_argument("--fold", default="part1")
    parser.add_argument(
        "--extra",
        default="--model.cnn_optimizer=adam --model.cnn_lr=1e-3",
        help="options of every run (give as --extra='--model.cnn_lr=...')",
    )
    parser.add_argument(
        "--epochs", type=int, nargs=3, default=[6, 10, 5], help="CNN, LSTM and fusion epochs"
    )
    parser.add_argument(
        "--reuse-cnn",
        action="store_true",
        help="train only the LSTM and fusion stages, on the CNN of each variant's newest run",
    )
    choices = [*VARIANTS, "resnet18-T"]
    parser.add_argument("--variants", nargs="+", default=choices, choices=choices)
    parser.add_argument("--no-train", action="store_true", help="only read existing runs")
    parser.add_argument(
        "--fit-check", action="store_true", help="only the ANet initialisation fit check"
    )
    parser.add_argument(
        "--no-comparison", action="store_true", help="reuse the saved SVM, JS rows; no t-SNE"
    )
    args = parser.parse_args()
    if args.fit_check:
        for init in ("pytorch", "he"):
            print(init, {k: round(v, 4) for k, v in fit_check(init).items()})
        return
    if not args.no_train:
        for variant in args.variants:
            run_cross(args) if variant == "resnet18-T" else run_hybrid(variant, args)
    args.images.mkdir(parents=True, exist_ok=True)
    saved = args.runs / "comparison.json"  # the SVM, CNN^T and divergence rows of the last run
    if args.no_comparison:
        comparison = json.loads(saved.read_text()) if saved.is_file() else None
    else:
        comparison = comparison_rows(args)
        saved.write_text(json.dumps(comparison))
    text = markdown(args, comparison)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main_study()
