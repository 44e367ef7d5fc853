"""The evidence study: every paper's claims on one SynthAU study set, over seeds, with paired
differences and their 95% intervals (``au_lightning.evidence``).

    python bench/study.py --claims baseline renet --seeds 0 1 2       # train what is missing
    python bench/study.py --no-train --out docs/results/study.md      # tables of existing runs
    python bench/study.py --budget paper --seeds 0 1 2                # on a GPU (see --help)

Each claim compares two *variants* (a config and its options) trained with the same seeds
on the same data: the seed (``seed_everything``) fixes initialisation, batch order and
augmentation; the split (``data.seed``, fold ``part1``) is the same for all. A run is kept in
``<runs>/<budget>/<variant>/seed<k>/`` with ``metrics.json`` (its test scores and wall
time), and is not trained again while that file exists.

Budgets:

- ``cpu`` (the study regime): SynthAU ``STUDY_SET`` (27 subjects, 9 per published BP4D part,
  in the BP4D layout at 64 px), 64-px inputs cropped to 56, and the ResNets start from the
  cached SynthAU trunk of :class:`au_lightning.trunks.TrunkSpec` (AU labels of 41 other
  identities, seed 1000), trained once on first use. ANet and MAML's Conv4 start from
  scratch, as in their papers.
- ``paper``: the papers' image sizes (BP4D-layout SynthAU at 256 px, 224-px crops; MAML at
  its 32 px) and epochs, for a GPU: ``--trainer.accelerator=gpu``, ``bf16-mixed`` and cuDNN
  benchmarking are added, and the trunk trains on the GPU with 8 loader workers.
- ``smoke``: two batches of every run on a tiny set: a check that the study runs end to end.

With ``--jobs N`` the study runs N processes at a time (``study_schedule``): first one per
SynthAU set and pretrained trunk, then the runs, claim group by claim group and seed by
seed, each as soon as its set and trunk exist; ``--start-until`` and ``--stop-at`` time-box
it (a lent GPU machine), and the output ends with every job's state. One GPU serves several
runs at once:

    python bench/study.py --budget paper --jobs 6 --start-until 6 --stop-at 8 --out study.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from study_schedule import Job, Outcome, run_jobs

from au_hybrid.results import HEAD_NAMES
from au_lightning.data import AUDataModule, build_image_cache, cached_read
from au_lightning.data.synth import ensure_synthau
from au_lightning.evidence import paired_difference
from au_lightning.fewshot_results import read_adaptation_csv
from au_lightning.trunks import TrunkSpec, ensure_synth_trunk

STUDY_SET = {"subjects": 27, "videos": 3, "frames": 60, "size": 64, "seed": 0}
PAPER_SET = {"subjects": 27, "videos": 3, "frames": 60, "size": 256, "seed": 0}
#: the hybrid's videos are twice as long (the study set's subjects and seed, 120 frames per
#: video): 4 training windows of 48 frames every 24 per video, where 60 frames give 1
SEQUENCE_FRAMES = 120
#: every finished run's metrics.json, in the layout of ``--runs`` (the runs themselves, with
#: their checkpoints, stay out of the repository)
ARCHIVE = Path(__file__).resolve().parents[1] / "docs" / "results" / "runs"
#: SynthAU's rarest BP4D AUs on the study set (base rate under 10%): Chu et al.'s minority
MINORITY_AUS = (2, 15, 23, 24)
#: the trunks runs start from, by name: changes to the budget's ``TrunkSpec``. The AU trunks
#: without AU23's or AU24's labels start the new-AU study (Yang & Yin Table 6), where RE-Net
#: meets that AU without labels and its initialisation must not have learnt it either.
TRUNKS: dict[str, dict[str, object]] = {
    "aus": {"task": "aus"},
    "identity": {"task": "identity"},
    "aus-without-AU23": {"task": "aus", "withheld_aus": (23,)},
    "aus-without-AU24": {"task": "aus", "withheld_aus": (24,)},
}


@dataclass(frozen=True)
class Budget:
    """Options every run of a budget gets, and the trunk its ResNets start from."""

    synth: dict[str, int]
    options: tuple[str, ...]
    epochs: int
    #: the image options of ANet variants (ANet needs at least 63 px: no crop at the cpu
    #: budget)
    anet_options: tuple[str, ...]
    trunk: TrunkSpec | None = field(default_factory=TrunkSpec)
    gpu: bool = False
    #: data-loader processes of the trunk's training (they do not change the trunk)
    trunk_workers: int = 0
    #: options every run gets last (the smoke budget's batch limits)
    extra: tuple[str, ...] = ()
    #: the few-shot runs' set, if not ``synth`` at 64 px
    fewshot_synth: dict[str, int] | None = None
    #: keep the runs' metrics in the repository's archive (``--archive``)
    archive: bool = True
    #: with ``--jobs``: build the decoded image cache of the sets read at this size (the
    #: ``image_size`` of the budget's options), so that runs do not decode JPEGs every epoch
    cache_images: int | None = None

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    def trunk_spec(self, name: str) -> TrunkSpec | None:
        """The budget's trunk changed as :data:`TRUNKS` ``[name]`` says."""
        return None if self.trunk is None else replace(self.trunk, **TRUNKS[name])

    def synth_sets(self) -> dict[str, dict[str, int]]:
        """The SynthAU sets (BP4D layout) of this budget's runs, by the readers that use
        them, and ``population``: the trunk's."""
        sets = {
            "detection": self.synth,
            "hybrid": {**self.synth, "frames": SEQUENCE_FRAMES},
            # MAML and its baseline keep their own image size (32 px, Conv4 from scratch)
            "fewshot": self.fewshot_synth or {**self.synth, "size": 64},
        }
        return sets if self.trunk is None else {**sets, "population": self.trunk.population}


BUDGETS = {
    "cpu": Budget(
        STUDY_SET,
        ("--data.image_size=64", "--data.crop_size=56"),
        epochs=4,
        anet_options=("--data.image_size=64", "--data.crop_size=64", "--model.in_size=64"),
    ),
    "paper": Budget(
        PAPER_SET,
        ("--data.image_size=256", "--data.crop_size=224", "--data.num_workers=4"),
        epochs=20,
        anet_options=(
            "--data.image_size=256",
            "--data.crop_size=224",
            "--model.in_size=224",
            "--data.num_workers=4",
        ),
        trunk=TrunkSpec(
            population={**TrunkSpec().population, "size": 256},
            image_size=256,
            crop_size=224,
            steps=3000,
        ),
        gpu=True,
        trunk_workers=8,
        cache_images=256,
    ),
    # a check that the whole study runs, in parallel too (--jobs), on any machine: a few
    # batches of every run on a tiny set, not a measurement
    "smoke": Budget(
        {"subjects": 27, "videos": 1, "frames": 8, "size": 32, "seed": 0},
        ("--data.image_size=32", "--data.crop_size=28"),
        epochs=1,
        anet_options=("--data.image_size=64", "--data.crop_size=64", "--model.in_size=64"),
        trunk=TrunkSpec(
            population={**TrunkSpec().population, "videos": 1, "frames": 8, "size": 32},
            image_size=32,
            crop_size=28,
            steps=4,
        ),
        # the cpu budget's: MAML's episodes need tens of frames per subject and AU
        fewshot_synth={**STUDY_SET, "size": 64},
        cache_images=32,
        archive=False,
        extra=(
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.num_sanity_val_steps=0",
        ),
    ),
}

#: the study regime with BP4D's 41 subjects instead of 27 (fold part1: 27 training subjects,
#: a fifth of them held out for validation, and 14 test subjects): does the subject count
#: limit the baseline's AUC? Not a paper claim; its runs pair only with each other
BUDGETS["cpu-41"] = replace(BUDGETS["cpu"], synth={**STUDY_SET, "subjects": 41})
#: and with BP4D's 8 tasks per subject instead of 3 videos (each epoch 8/3 as long)
BUDGETS["cpu-41x8"] = replace(BUDGETS["cpu"], synth={**STUDY_SET, "subjects": 41, "videos": 8})


@dataclass(frozen=True)
class Variant:
    """One row: ``configs/<config>.yaml`` with ``options``; ``trunk``: the name in
    :data:`TRUNKS` of the budget's pretrained trunk the ResNet starts from
    (``--model.pretrained``), or None (from scratch)."""

    config: str
    options: tuple[str, ...] = ()
    trunk: str | None = "aus"
    reader: str = "detection"  # detection | fewshot | hybrid
    #: the checkpoint test reads: ``best`` by ``monitor``, or ``last`` (the hybrid keeps each
    #: stage's best validation epoch itself)
    monitor: str | None = "val/f1_mean"
    #: keep the config's epochs (MAML's episodes and its baseline's frames are matched there)
    own_epochs: bool = False
    #: the CNN is ANet: the budget's ``anet_options`` instead of its ``options``
    anet: bool = False


HYBRID_STAGES = (
    "--model.cnn_epochs=4",
    "--model.lstm_epochs=6",
    "--model.fusion_epochs=2",
    "--trainer.max_epochs=12",
    "--data.window=48",
    "--data.stride=24",
)
RENET = ("--model.head=per_au", "--model.strategy=all", "--model.lr=1e-4")

VARIANTS: dict[str, Variant] = {
    "resnet18": Variant("baseline"),
    "resnet18-scratch": Variant("baseline", trunk=None),
    "resnet18-identity": Variant("baseline", trunk="identity"),
    "resnet18+DA": Variant("baseline", ("--data.sampler=duplicate",)),
    "resnet18-momu": Variant("baseline", ("--data.sampler=momu",)),
    # the C-way head and every AU every batch (plugins/au_renet/README.md), at the
    # baseline's learning rate (Yang & Yin Sec. 4.3: Adam 1e-4)
    "renet": Variant("renet", RENET),
    "renet+DA": Variant("renet", (*RENET, "--data.sampler=duplicate")),
    "renet-learnable": Variant("renet", (*RENET, "--model.graph=learnable")),
    # Table 6: the new AU's labels never reach the loss, nor the trunk's; its row and column
    # of ω are the PCC of the training labels (the paper's graph: its co-occurrence with the
    # seen AUs, never a per-frame label in the loss). The control: the ResNet-18 from the
    # same trunk, trained with the AU's labels.
    **{
        f"renet-without-AU{au}": Variant(
            "renet",
            (*RENET, f"--model.unseen_aus=[{au}]", "--model.unseen_relation=labels"),
            trunk=f"aus-without-AU{au}",
        )
        for au in (23, 24)
    },
    **{
        f"resnet18-AU{au}-trunk": Variant("baseline", trunk=f"aus-without-AU{au}")
        for au in (23, 24)
    },
    "stl": Variant("stl"),
    "mtl": Variant("mtl"),
    "mal": Variant("mal"),
    # the matched-step control (issue 26 / configs/mal.yaml): weights summing to 2, so MAL's
    # AU step at uniform weights equals STL's and MTL's at the same alpha
    "mal-ws2": Variant("mal", ("--model.weight_sum=2",)),
    "maml": Variant("maml", trunk=None, reader="fewshot", monitor="val/acc", own_epochs=True),
    # a diagnosis: the outer Adam at the baseline's rate (1e-3, configs/maml_baseline.yaml;
    # Finn et al.'s beta) instead of the paper's 0.03, at which the query loss stops falling
    "maml-lr1e-3": Variant(
        "maml",
        ("--model.lr=0.001",),
        trunk=None,
        reader="fewshot",
        monitor="val/acc",
        own_epochs=True,
    ),
    # its validation adapts every episode with each of 5 learning rates (adapt_lrs): about
    # 7 of its 8 minutes per epoch on one thread, so it validates every 3rd of its 12 epochs
    "maml-baseline": Variant(
        "maml_baseline",
        ("--trainer.check_val_every_n_epoch=3",),
        trunk=None,
        reader="fewshot",
        monitor="val/acc",
        own_epochs=True,
    ),
    # Chu et al.: the CNN stage, the LSTMs on its standardised PCA features, the fusion on
    # held-out outputs. The CNN is the study's ResNet-18 from the AU trunk, trained as the
    # resnet18 row (Adam 1e-4); hybrid-anet is the paper's ANet from scratch (He init, SGD
    # 1e-3, Sec. 4.2)
    "hybrid": Variant(
        "hybrid",
        (
            *HYBRID_STAGES,
            "--model.backbone=resnet18",
            "--model.pca_components=512",
            "--model.cnn_optimizer=adam",
            "--model.cnn_lr=1e-4",
        ),
        reader="hybrid",
        monitor=None,
        own_epochs=True,
    ),
    "hybrid-anet": Variant(
        "hybrid",
        HYBRID_STAGES,
        trunk=None,
        reader="hybrid",
        monitor=None,
        own_epochs=True,
        anet=True,
    ),
    "transfer-balanced": Variant(
        "baseline", ("--data.sampler=mlros", "--model.loss_weights=selective")
    ),
    # selective learning towards 0.5 (Hand et al.) instead of the data's base rates
    "transfer-balanced-t50": Variant(
        "baseline",
        (
            "--data.sampler=mlros",
            "--model.loss_weights=selective",
            "--model.selective_target=balanced",
        ),
    ),
}


@dataclass(frozen=True)
class Claim:
    """A paper's claim: ``ours`` beats ``theirs`` in ``metric`` (higher is better)."""

    paper: str
    text: str
    ours: str
    theirs: str
    metric: str
    scale: float = 100.0
    #: the comparison row's metric when it differs (the same runs at two thresholds)
    theirs_metric: str | None = None


def new_au_claims(au: int) -> list[Claim]:
    """Table 6 for one AU: RE-Net without its labels against chance, and against the
    ResNet-18 trained with them from the same trunk (on that AU, and on the other AUs)."""
    renet, resnet = f"renet-without-AU{au}", f"resnet18-AU{au}-trunk"
    return [
        Claim("Yang & Yin", f"a new AU through the graph > chance (Table 6), AU{au} AUC",
              renet, "chance", f"auc_AU{au}"),
        Claim("(ours)", f"the cost of a new AU: ResNet-18 with AU{au}'s labels > RE-Net "
              f"without, AU{au} AUC", resnet, renet, f"auc_AU{au}"),
        Claim("(ours)", f"RE-Net without AU{au}'s labels > ResNet-18 with them, the other "
              f"11 AUs' AUC", renet, resnet, f"auc_without_AU{au}"),
    ]  # fmt: skip


CLAIMS: dict[str, list[Claim]] = {
    "baseline": [
        Claim("(all)", "ResNet-18 from the trunk > chance, AUC", "resnet18", "chance", "auc"),
        Claim(
            "(all)",
            "ResNet-18 at tuned thresholds > all-positive, F1",
            "resnet18",
            "all-positive",
            "f1_tuned",
        ),
        Claim("(all)", "the AU trunk > from scratch, AUC", "resnet18", "resnet18-scratch", "auc"),
        Claim(
            "(all)",
            "the AU trunk > the identity trunk, AUC",
            "resnet18",
            "resnet18-identity",
            "auc",
        ),
    ],
    "renet": [
        Claim("Yang & Yin", "RE-Net > ResNet-18 (Tables 1/7), F1", "renet", "resnet18", "f1"),
        Claim("Yang & Yin", "RE-Net > ResNet-18 (Tables 1/7), AUC", "renet", "resnet18", "auc"),
        Claim("Yang & Yin", "RE-Net > chance, AUC", "renet", "chance", "auc"),
        Claim("Yang & Yin", "duplication helps RE-Net (Table 8), F1", "renet+DA", "renet", "f1"),
        Claim(
            "Yang & Yin",
            "duplication helps ResNet-18 (Table 8), F1",
            "resnet18+DA",
            "resnet18",
            "f1",
        ),
        Claim(
            "Yang & Yin",
            "learnable graph > fixed (Table 7), F1",
            "renet-learnable",
            "renet",
            "f1",
        ),
    ],
    "renet-new-au": [claim for au in (23, 24) for claim in new_au_claims(au)],
    "mal": [
        Claim("Li & Shan", "MAL > MTL (Table 1), F1", "mal", "mtl", "f1"),
        Claim("Li & Shan", "MTL > STL (Table 1), F1", "mtl", "stl", "f1"),
        Claim("Li & Shan", "MAL > STL (Table 1), F1", "mal", "stl", "f1"),
        Claim("(ours)", "MAL at weight sum 2 > MTL, F1", "mal-ws2", "mtl", "f1"),
        Claim("(ours)", "MAL at weight sum 2 > at the paper's 1, F1", "mal-ws2", "mal", "f1"),
    ],
    "maml": [
        Claim(
            "Lee et al.", "MAML > baseline at 5 shots, accuracy", "maml", "maml-baseline", "acc5"
        ),
        Claim("Lee et al.", "MAML > baseline at 1 shot, accuracy", "maml", "maml-baseline", "acc1"),
        Claim(
            "Lee et al.",
            "the gap grows from 1 to 5 shots, accuracy",
            "maml",
            "maml-baseline",
            "gain1to5",
        ),
        Claim(
            "(ours)",
            "MAML at outer Adam 1e-3 > at the paper's 0.03, 5-shot accuracy",
            "maml-lr1e-3",
            "maml",
            "acc5",
        ),
        Claim(
            "(ours)",
            "MAML at outer Adam 1e-3 > baseline at 5 shots, accuracy",
            "maml-lr1e-3",
            "maml-baseline",
            "acc5",
        ),
        Claim(
            "(ours)",
            "MAML at outer Adam 1e-3 > baseline at 1 shot, accuracy",
            "maml-lr1e-3",
            "maml-baseline",
            "acc1",
        ),
        Claim(
            "(ours)",
            "MAML at outer Adam 1e-3: the gap grows from 1 to 5 shots, accuracy",
            "maml-lr1e-3",
            "maml-baseline",
            "gain1to5",
        ),
    ],
    "imbalance": [
        Claim(
            "Chu et al.",
            "MOMU > random on minority AUs (Tables 3/4), F1",
            "resnet18-momu",
            "resnet18",
            "f1_minority",
        ),
    ],
    "hybrid": [
        Claim("Chu et al.", "ANet from scratch > chance, AUC", "hybrid-anet", "chance", "auc_cnn"),
        Claim("Chu et al.", "the CNN (ResNet-18) > chance, AUC", "hybrid", "chance", "auc_cnn"),
        Claim("Chu et al.", "LSTM > chance, AUC", "hybrid", "chance", "auc_lstm"),
        Claim(
            "Chu et al.",
            "fusion > CNN (Tables 1/2), event F1",
            "hybrid",
            "hybrid",
            "event_f1_fused",
            theirs_metric="event_f1_cnn",
        ),
        Claim(
            "Chu et al.",
            "fusion > CNN (Tables 1/2), frame F1",
            "hybrid",
            "hybrid",
            "f1_fused",
            theirs_metric="f1_cnn",
        ),
        Claim(
            "(ours)",
            "fusion > the CNN's 9-frame moving average, event F1",
            "hybrid",
            "hybrid",
            "event_f1_fused",
            theirs_metric="event_f1_cnn_smoothed",
        ),
        Claim(
            "Chu et al.",
            "LSTM > CNN (Tables 1/2), event F1",
            "hybrid",
            "hybrid",
            "event_f1_lstm",
            theirs_metric="event_f1_cnn",
        ),
    ],
    "transfer": [
        Claim(
            "Ji et al.",
            "balanced training (MLROS + SL) > plain (Table 2), F1 at 0.5",
            "transfer-balanced",
            "resnet18",
            "f1",
        ),
        Claim(
            "Ji et al.",
            "per-AU thresholds > 0.5 after balancing (Table 2), F1",
            "transfer-balanced",
            "transfer-balanced",
            "f1_tuned",
            theirs_metric="f1",
        ),
        Claim(
            "Ji et al.",
            "balanced + thresholds > plain + thresholds (Table 2), F1",
            "transfer-balanced",
            "resnet18",
            "f1_tuned",
        ),
        Claim(
            "(ours)",
            "SL target 0.5 > SL target = base rates, with MLROS, F1 at 0.5",
            "transfer-balanced-t50",
            "transfer-balanced",
            "f1",
        ),
    ],
}

# the configs' checkpoints without their EarlyStopping, so that every run gets the budget
NO_EARLY_STOP = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: {monitor}, mode: max, filename: best}}
"""
LAST_ONLY = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: last}
"""


def run_options(name: str, seed: int, budget: Budget, directory: Path, override: Path) -> list[str]:
    """The CLI options of one run of variant ``name``."""
    variant = VARIANTS[name]
    options = ["--config", f"configs/{variant.config}.yaml", "--config", str(override)]
    options += [f"--seed_everything={seed}", f"--trainer.default_root_dir={directory}"]
    options.append("--trainer.enable_progress_bar=false")
    if not variant.own_epochs:
        options.append(f"--trainer.max_epochs={budget.epochs}")
    options.append(f"--data.synth={json.dumps(budget.synth_sets()[variant.reader])}")
    if variant.reader == "hybrid":
        options.append("--data.fold=part1")
        options += budget.anet_options if variant.anet else budget.options
    elif variant.reader == "fewshot":
        options.append("--data.protocol=bp4d_3fold")
        options.append("--data.fold=part1")
    else:
        options.append("--data.fold=part1")
        # F1 at 0.5 (the checkpoint is selected on it) and at thresholds tuned on validation
        options += [*budget.options, "--model.threshold_search=true"]
    spec = budget.trunk_spec(variant.trunk) if variant.trunk is not None else None
    if spec is not None:
        trunk = ensure_synth_trunk(spec, device=budget.device, workers=budget.trunk_workers)
        options.append(f"--model.pretrained={trunk}")
    if budget.gpu:
        # fixed input sizes: cuDNN may pick its fastest kernels
        options += ["--trainer.accelerator=gpu", "--trainer.precision=bf16-mixed"]
        options.append("--trainer.benchmark=true")
    return [*options, *variant.options, *budget.extra]


def train(
    name: str, seed: int, budget: str, runs: Path, archive: Path | None = None
) -> dict[str, float]:
    """Fit and test one run unless its ``metrics.json`` exists in ``runs`` or ``archive``;
    its metrics, also written to ``archive`` (the same layout, metrics only) when given."""
    from au_lightning.cli import main

    directory = runs / budget / name / f"seed{seed}"
    finished = metrics_file(budget, name, seed, runs, archive)
    if finished is not None:
        return json.loads(finished.read_text())
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as override:
        monitor = VARIANTS[name].monitor
        override.write(LAST_ONLY if monitor is None else NO_EARLY_STOP.format(monitor=monitor))
    options = run_options(name, seed, BUDGETS[budget], directory, Path(override.name))
    start = time.perf_counter()
    main(["fit", *options])
    main(["test", *options, f"--ckpt_path={'last' if monitor is None else 'best'}"])
    metrics = READERS[VARIANTS[name].reader](directory)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(metrics, indent=2, sort_keys=True)
    for root in (runs, archive) if archive is not None else (runs,):
        path = root / budget / name / f"seed{seed}" / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return metrics


def metrics_file(budget: str, name: str, seed: int, *roots: Path | None) -> Path | None:
    """The ``metrics.json`` of a finished run in the first of ``roots`` (runs folders or
    archives; None is skipped) that has one, or None."""
    for root in roots:
        if root is not None:
            path = root / budget / name / f"seed{seed}" / "metrics.json"
            if path.is_file():
                return path
    return None


def newest(directory: Path, pattern: str) -> Path:
    """The most recently written file matching ``pattern`` under ``directory``."""
    found = list(directory.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} under {directory}; train first")
    return max(found, key=lambda p: p.stat().st_mtime)


def read_detection(directory: Path) -> dict[str, float]:
    """Test F1 at 0.5, F1 at the thresholds tuned on validation (``f1_tuned``), accuracy
    and AUC (fractions) of the mean row and each AU of the newest ``test_results.csv``;
    ``f1_minority``: the mean F1 at 0.5 over :data:`MINORITY_AUS`."""
    with open(newest(directory, "test_results.csv")) as f:
        rows = {r["AU"]: r for r in csv.DictReader(f)}
    # with threshold_search the table's F1 is at the tuned thresholds, "F1 untuned" at 0.5
    columns = (("f1", "F1 untuned"), ("f1_tuned", "F1"), ("acc", "accuracy"), ("auc", "AUC"))
    metrics = {
        f"{m}_{au}": float(rows[au][column]) / 100
        for au in rows
        for m, column in columns
        if rows[au].get(column)
    }
    metrics["f1"], metrics["auc"] = metrics["f1_mean"], metrics["auc_mean"]
    metrics["f1_tuned"] = metrics["f1_tuned_mean"]
    minority = [metrics[f"f1_AU{a}"] for a in MINORITY_AUS if f"f1_AU{a}" in metrics]
    metrics["f1_minority"] = sum(minority) / len(minority)
    return metrics


def read_fewshot(directory: Path) -> dict[str, float]:
    """Mean test accuracy after the last adaptation step at 1 and 5 shots, and the gain."""
    records = read_adaptation_csv(newest(directory, "adaptation.csv"))
    last = max(r.step for r in records)
    metrics = {}
    for shots in (1, 5):
        values = [r.accuracy for r in records if r.shots == shots and r.step == last]
        metrics[f"acc{shots}"] = sum(values) / len(values)
    metrics["gain1to5"] = metrics["acc5"] - metrics["acc1"]
    return metrics


#: the hybrid's test_results.csv column heads -> metric keys
HYBRID_HEADS = {name: head for head, name in HEAD_NAMES.items()}


def read_hybrid(directory: Path) -> dict[str, float]:
    """Frame F1, event F1 and AUC (fractions) of each head's mean row of the newest
    ``test_results.csv``: ``f1_<head>``, ``event_f1_<head>``, ``auc_<head>`` for the heads
    ``cnn``, ``cnn_smoothed``, ``lstm`` and ``fused``."""
    with open(newest(directory, "test_results.csv")) as f:
        mean = next(r for r in csv.DictReader(f) if r["AU"] == "Avg")
    columns = (("f1", "F1-frame"), ("event_f1", "F1-event"), ("auc", "AUC"))
    return {
        f"{metric}_{head}": float(mean[f"{column} {name}"]) / 100
        for name, head in HYBRID_HEADS.items()
        for metric, column in columns
        if mean.get(f"{column} {name}")
    }


READERS: dict[str, Callable[[Path], dict[str, float]]] = {
    "detection": read_detection,
    "fewshot": read_fewshot,
    "hybrid": read_hybrid,
}


def reference(name: str, metric: str, budget: str) -> float:
    """The value of a reference row: ``chance`` (AUC 0.5) or ``all-positive`` (the mean over
    AUs of the test subjects' ``all_positive_f1``: F1 of calling every frame positive)."""
    if name == "chance":
        return 0.5
    from au_lightning.data import all_positive_f1

    data = tested_split(budget)
    return float(all_positive_f1(data.index.occurrence[data.test_rows]).mean())


def tested_split(budget: str) -> AUDataModule:
    """The detection runs' data module (the budget's set, fold part1), set up for testing."""
    data = AUDataModule(dataset="bp4d", synth=BUDGETS[budget].synth, aus="bp4d",
                        protocol="bp4d_3fold", fold="part1")  # fmt: skip
    data.setup("test")
    return data


def claim_rows(
    claims: Sequence[Claim], seeds: Sequence[int], budget: str, runs: Path, command: str
) -> list[list[str]]:
    """One row per claim: ours, theirs (means over seeds), the paired difference with its
    95% interval, the verdict, and the command that reproduces it."""
    rows = [["paper", "claim", "ours", "theirs", "difference [95% CI]", "seeds", "verdict", "run"]]
    for claim in claims:
        ours = scores(claim.ours, claim.metric, seeds, budget, runs)
        if claim.theirs in ("chance", "all-positive"):
            theirs = {s: reference(claim.theirs, claim.metric, budget) for s in ours}
        else:
            metric = claim.theirs_metric or claim.metric
            theirs = scores(claim.theirs, metric, seeds, budget, runs)
        common = sorted(set(ours) & set(theirs))
        if not common:
            rows.append([claim.paper, claim.text, "", "", "not run", "0", "not run", command])
            continue
        diff = paired_difference({s: ours[s] for s in common}, {s: theirs[s] for s in common})

        def mean(values: dict[int, float], common: list[int] = common) -> float:
            return sum(values[s] for s in common) / len(common)

        rows.append([
            claim.paper, claim.text, f"{mean(ours) * claim.scale:.1f}",
            f"{mean(theirs) * claim.scale:.1f}", diff.cell(claim.scale), str(diff.n),
            diff.verdict, command,
        ])  # fmt: skip
    return rows


def metric_value(metrics: dict[str, float], metric: str) -> float | None:
    """``metrics[metric]``, or for ``auc_without_AU<n>`` the mean AUC of every AU but n."""
    if metric.startswith("auc_without_AU"):
        left_out = f"auc_AU{metric.removeprefix('auc_without_AU')}"
        values = [v for k, v in metrics.items() if k.startswith("auc_AU") and k != left_out]
        return sum(values) / len(values) if values else None
    return metrics.get(metric)


def scores(name: str, metric: str, seeds: Sequence[int], budget: str, runs: Path) -> dict:
    out = {}
    for seed in seeds:
        path = runs / budget / name / f"seed{seed}" / "metrics.json"
        if path.is_file():
            value = metric_value(json.loads(path.read_text()), metric)
            if value is not None and not math.isnan(value):
                out[seed] = value
    return out


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]) + "\n"


def run_table(budget: str, runs: Path) -> str:
    """Per-run wall time and headline metrics of every finished run."""
    rows = [["variant", "seed", "F1", "AUC", "acc1", "acc5", "event F1 CNN / fusion", "minutes"]]
    for path in sorted((runs / budget).glob("*/seed*/metrics.json")):
        m = json.loads(path.read_text())

        def cell(k: str, m: dict[str, float] = m) -> str:
            return f"{m[k] * 100:.1f}" if k in m else ""

        rows.append([path.parent.parent.name, path.parent.name.removeprefix("seed"),
                     cell("f1") or cell("f1_fused"), cell("auc") or cell("auc_fused"),
                     cell("acc1"), cell("acc5"),
                     " / ".join(filter(None, (cell("event_f1_cnn"), cell("event_f1_fused")))),
                     f"{m['seconds'] / 60:.1f}"])  # fmt: skip
    return markdown(rows)


def study_jobs(
    groups: Sequence[Sequence[str]],
    seeds: Sequence[int],
    budget: str,
    runs: Path,
    lanes: int,
    archive: Path | None = None,
) -> list[Job]:
    """The processes of a parallel study (``--jobs``): one per SynthAU set the runs read,
    one per pretrained trunk they start from, then every run not yet done: group by group
    (the variants of a claim group), seed by seed, so that a time-boxed study completes
    whole claims first. Each run needs its set and its trunk."""
    names = list(dict.fromkeys(n for group in groups for n in group))
    spec = BUDGETS[budget]
    study = [sys.executable, str(Path(__file__).resolve()), "--budget", budget, "--runs", str(runs)]
    if archive is not None:
        study += ["--archive", str(archive)]
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // lanes))}
    base = runs / budget / "_jobs"
    readers = dict.fromkeys(VARIANTS[n].reader for n in names)
    tasks = dict.fromkeys(VARIANTS[n].trunk for n in names if VARIANTS[n].trunk is not None)
    # the trunks' population first: most runs wait for a trunk
    sets = sorted(spec.synth_sets().items(), key=lambda item: item[0] != "population")
    used = {r: s for r, s in sets if r in readers or (r == "population" and tasks)}
    jobs = []
    for reader, synth in used.items():
        command = [*study, "--synth", json.dumps(synth)]
        if spec.cache_images is not None and reader != "fewshot":
            command.append("--cache-images")
        jobs.append(Job(f"synth-{reader}", command, base / f"synth-{reader}.log", env=threads))
    if spec.trunk is not None:
        jobs += [Job(f"trunk-{t}", [*study, "--trunk", t], base / f"trunk-{t}.log",
                     ("synth-population",), threads) for t in tasks]  # fmt: skip
    queued = set()
    for group, seed in ((g, s) for g in groups for s in seeds):
        for name in group:
            directory = runs / budget / name / f"seed{seed}"
            if (name, seed) in queued or metrics_file(budget, name, seed, runs, archive):
                continue
            queued.add((name, seed))
            variant = VARIANTS[name]
            needs = [f"synth-{variant.reader}"]
            if variant.trunk is not None and spec.trunk is not None:
                needs.append(f"trunk-{variant.trunk}")
            command = [*study, "--run", f"{name}:{seed}"]
            jobs.append(Job(f"{name}:{seed}", command, directory / "log.txt", tuple(needs),
                            threads))  # fmt: skip
    return jobs


def jobs_table(outcomes: dict[str, Outcome]) -> str:
    rows = [["job", "state", "minutes"]]
    rows += [[o.name, o.state if o.code in (None, 0) else f"{o.state} (exit {o.code})",
              f"{o.seconds / 60:.1f}"] for o in outcomes.values()]  # fmt: skip
    return markdown(rows)


def main_study(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", nargs="+", default=list(CLAIMS), choices=list(CLAIMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", default="cpu", choices=list(BUDGETS))
    parser.add_argument("--runs", type=Path, default=Path("runs/study"))
    parser.add_argument(
        "--archive",
        type=Path,
        default=ARCHIVE,
        help="keep each run's metrics.json here too (the same layout, in the repository), "
        "and read the tables from here (default: %(default)s; not for the smoke budget)",
    )
    parser.add_argument("--no-train", action="store_true", help="only read existing runs")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time, each its own process (default: 1, in this one)",
    )
    parser.add_argument(
        "--start-until",
        type=float,
        default=math.inf,
        metavar="MINUTES",
        help="with --jobs: start no run after this many minutes",
    )
    parser.add_argument(
        "--stop-at",
        type=float,
        default=math.inf,
        metavar="MINUTES",
        help="with --jobs: stop the runs still going after this many minutes",
    )
    # one job of a parallel study (study_jobs)
    parser.add_argument("--run", metavar="VARIANT:SEED", help=argparse.SUPPRESS)
    parser.add_argument("--trunk", choices=list(TRUNKS), help=argparse.SUPPRESS)
    parser.add_argument("--synth", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--cache-images", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    archive = args.archive if budget.archive else None
    if args.synth:
        root = ensure_synthau("bp4d", progress=False, **json.loads(args.synth))
        if args.cache_images:
            index = cached_read("bp4d", root)
            build_image_cache(index, budget.cache_images, workers=os.cpu_count() or 0)
        return str(root)
    if args.trunk:
        spec = budget.trunk_spec(args.trunk)
        return str(ensure_synth_trunk(spec, device=budget.device, workers=budget.trunk_workers))
    if args.run:
        name, seed = args.run.rsplit(":", 1)
        return json.dumps(train(name, int(seed), args.budget, args.runs, archive))
    claims = [c for group in args.claims for c in CLAIMS[group]]
    names = list(dict.fromkeys(n for c in claims for n in (c.ours, c.theirs) if n in VARIANTS))
    outcomes = None
    if not args.no_train and args.jobs > 1:
        groups = [[n for c in CLAIMS[g] for n in (c.ours, c.theirs) if n in VARIANTS]
                  for g in args.claims]  # fmt: skip
        jobs = study_jobs(groups, args.seeds, args.budget, args.runs, args.jobs, archive)
        outcomes = run_jobs(jobs, args.jobs, args.start_until * 60, args.stop_at * 60)
    elif not args.no_train:
        for seed in args.seeds:
            for name in names:
                train(name, seed, args.budget, args.runs, archive)
    seeds = " ".join(map(str, args.seeds))
    tables = archive or args.runs
    rows = []
    for group in args.claims:
        command = f"`python bench/study.py --claims {group} --seeds {seeds} --budget {args.budget}`"
        rows += claim_rows(CLAIMS[group], args.seeds, args.budget, tables, command)[
            0 if not rows else 1 :
        ]
    text = markdown(rows) + "\n" + run_table(args.budget, tables)
    if outcomes is not None:
        text += "\n" + jobs_table(outcomes)
    print(text)
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main_study()
