"""Transfer: the LightningModules of one view, its pretext stage and its AU stage."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from au_lightning import (
    AUMethod,
    ConfigError,
    LossWeights,
    SelectiveTarget,
    ThresholdCriterion,
)
from au_transfer.net import Backbone, Pooling, ViewNet


def paper_optimizer(
    module: L.LightningModule,
    lr: float,
    momentum: float,
    weight_decay: float,
    lr_step: int,
    kind: Literal["sgd", "adam"] = "sgd",
) -> dict[str, Any]:
    """Sec. 4.2: SGD, initial learning rate 0.01 divided by 10 every 10 epochs, weight decay
    1e-5, momentum 0.9 (the numbers are the arguments' defaults in both modules); ``adam``
    keeps the rest with Adam instead of SGD."""
    params = module.parameters()
    if kind == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=0.1)
    return {"optimizer": optimizer, "lr_scheduler": scheduler}


#: the checkpoint entry in which a pretext run records its task and classes
PRETEXT_KEY = "pretext"


def pretext_classes(checkpoint: str | Path) -> dict[str, Any] | None:
    """The ``{"task", "classes"}`` a :class:`TransferPretrain` checkpoint recorded (None for
    a checkpoint without them: an older run, or weights from elsewhere)."""
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, pickle.UnpicklingError):
        return None  # not a zip checkpoint of plain data: loading the backbone will tell
    return loaded.get(PRETEXT_KEY) if isinstance(loaded, dict) else None


def check_pretext_subjects(checkpoint: str | Path, datamodule: object) -> None:
    """Refuse an identity pretext that was taught a subject the AU stage validates or tests
    on: the backbone would then know those faces, and validation (model selection and the
    Sec. 3.6 thresholds) or the test would be optimistic. ``PretextDataModule`` leaves those
    subjects out when its ``au_val_strategy``, ``au_val_fraction`` and ``seed`` are the AU
    stage's ``val_strategy``, ``val_fraction`` and ``seed``."""
    recorded = pretext_classes(checkpoint)
    if not recorded or recorded.get("task") != "identity":
        return
    index = getattr(datamodule, "index", None)
    if index is None:
        return
    test_index = getattr(datamodule, "test_index", None)
    taught = set(recorded["classes"])
    leaks = []
    for what, rows, source in (
        ("validation", getattr(datamodule, "val_rows", None), index),
        (
            "test",
            getattr(datamodule, "test_rows", None),
            index if test_index is None else test_index,
        ),
    ):
        rows = np.asarray([] if rows is None else rows, dtype=np.int64)
        seen = sorted(taught & {str(s) for s in np.unique(source.subject[rows])})
        if seen:
            leaks.append(f"{what} subjects {', '.join(seen)}")
    if leaks:
        raise ConfigError(
            f"model.pretrained: {checkpoint} is an identity pretext whose classes include this "
            f"run's {' and '.join(leaks)}. Train the pretext on the same fold with "
            "data.au_val_strategy, data.au_val_fraction and data.seed set to this run's "
            "data.val_strategy, data.val_fraction and data.seed, so that it leaves them out"
        )


class TransferPretrain(L.LightningModule):
    """Stage 1 of a view (Ji et al. Sec. 3.3): a backbone trained on a face-level pretext
    task, softmax cross-entropy over the classes of a
    :class:`au_lightning.data.PretextDataModule` (expressions, or identities).

    Its checkpoint is what :class:`Transfer`'s ``pretrained`` takes to fine-tune the view on
    AU detection. Logs ``train/loss``, ``val/loss``, ``val/acc`` (and ``test/acc``).

    Args:
        backbone, pooling, in_size, pretrained, dropout: see :class:`~au_transfer.ViewNet`
            (``pretrained: true`` starts from ImageNet, as a ResNet would without a pretext).
        num_classes: the number of classes; None takes the data module's (it is then saved
            with the checkpoint).
        lr, momentum, weight_decay, lr_step: SGD with the learning rate divided by 10 every
            ``lr_step`` epochs (Sec. 4.2).
        optimizer: ``sgd`` (the paper's) or ``adam``. The classifier is built when the data's
            classes are known, after LightningCLI's ``--optimizer`` would have been
            created, so the optimizer is chosen here.
    """

    def __init__(
        self,
        backbone: Backbone = "ir152",
        pooling: Pooling = "flatten",
        in_size: int = 224,
        pretrained: bool | str = False,
        dropout: float = 0.0,
        num_classes: int | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        lr_step: int = 10,
        optimizer: Literal["sgd", "adam"] = "sgd",
    ) -> None:
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ConfigError(f"model.optimizer must be sgd or adam, got {optimizer!r}")
        self.save_hyperparameters()
        self.net: ViewNet | None = None
        if num_classes is not None:
            self._build(num_classes)

    def _build(self, num_classes: int) -> None:
        hp = self.hparams
        self.net = ViewNet(
            num_classes, hp.backbone, hp.pooling, hp.in_size, hp.pretrained, hp.dropout
        )
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        num_classes = getattr(datamodule, "num_classes", None)
        if num_classes is None:
            if self.net is None:
                raise ConfigError(
                    "TransferPretrain needs model.num_classes or a data module with classes "
                    "(au_lightning.data.PretextDataModule)"
                )
            return
        if self.net is None:
            self.hparams.num_classes = num_classes
            self._build(num_classes)
        elif num_classes != self.hparams.num_classes:
            raise ConfigError(
                f"the model has {self.hparams.num_classes} pretext classes but the data has "
                f"{num_classes}; set model.num_classes to {num_classes} (or leave it unset)"
            )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # which subjects the backbone learned to recognise: Transfer checks them against
        # the subjects its AU stage validates and tests on (check_pretext_subjects)
        datamodule = getattr(self._trainer, "datamodule", None)
        names = getattr(datamodule, "class_names", None)
        if names is not None:
            task = getattr(datamodule, "hparams", {}).get("task")
            checkpoint[PRETEXT_KEY] = {"task": task, "classes": [str(n) for n in names]}

    def _loss(self, batch: dict[str, Any], stage: str) -> tuple[Tensor, Tensor]:
        logits = self(batch["image"])
        target = batch["expression"].long()
        loss = F.cross_entropy(logits, target, ignore_index=-1)
        training = stage == "train"
        self.log(
            f"{stage}/loss", loss, prog_bar=training, batch_size=len(target), sync_dist=not training
        )
        return loss, logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._loss(batch, "train")[0]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, logits = self._loss(batch, "val")
        self.val_acc.update(logits, batch["expression"].long())
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, logits = self._loss(batch, "test")
        self.test_acc.update(logits, batch["expression"].long())
        self.log("test/acc", self.test_acc)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return paper_optimizer(self, hp.lr, hp.momentum, hp.weight_decay, hp.lr_step, hp.optimizer)


class Transfer(AUMethod):
    """Stage 2 of a view (Ji et al. Sec. 3.3-3.6): the backbone fine-tuned on AU detection.

    ``pretrained`` names the view: a :class:`TransferPretrain` checkpoint on identities
    (the face view) or on expressions (the emotion view). Balanced training (Sec. 3.4) is
    ``loss_weights: selective`` (Eq. 1's w, the default) with ``data.sampler: mlros``, its
    target share ``selective_target`` (``data``: the training base rates, the paper's
    "true distribution"; ``balanced``: 0.5, Hand et al.'s);
    ``threshold_search`` tunes per-AU thresholds on validation (Sec. 3.6) for the best
    ``threshold_criterion``. Test results add the final score, (accuracy + F1) / 2
    (Sec. 4.3). Views are combined by :class:`~au_transfer.TransferEnsemble`.

    Args:
        aus: the AUs (``emotionet``: the challenge's 23).
        backbone, pooling, in_size, pretrained, dropout: see :class:`~au_transfer.ViewNet`.
        threshold_criterion: ``score`` (accuracy + F1) / 2, the paper's reference metric, or
            ``f1``.
        lr, momentum, weight_decay, lr_step: SGD, learning rate / 10 every ``lr_step``
            epochs (Sec. 4.2).
        thresholds, threshold_search, loss_weights, selective_target: see
            :class:`au_lightning.AUMethod`. ``selective_target: data`` (the default) weights
            every batch back to the training base rates, which cancels MLROS's
            oversampling in the loss; ``balanced`` weighs each batch's positives and
            negatives alike.

    With an identity pretext (the face view), fitting refuses a ``pretrained`` checkpoint
    whose classes include a subject that this run validates or tests on.
    """

    reports_final_score: ClassVar[bool] = True

    def __init__(
        self,
        aus: str | list[int] = "emotionet",
        backbone: Backbone = "ir152",
        pooling: Pooling = "flatten",
        in_size: int = 224,
        pretrained: bool | str = False,
        dropout: float = 0.0,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
        threshold_criterion: ThresholdCriterion = "score",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        lr_step: int = 10,
        loss_weights: LossWeights = "selective",
        selective_target: SelectiveTarget = "data",
    ) -> None:
        super().__init__(
            aus,
            thresholds,
            threshold_search,
            lr,
            weight_decay,
            loss_weights,
            threshold_criterion,
            selective_target,
        )
        self.save_hyperparameters()
        # a pretext checkpoint is loaded when fitting starts, so that loading this model's
        # own checkpoint later does not need that file
        imagenet = pretrained if isinstance(pretrained, bool) else False
        self.net = ViewNet(len(self.aus), backbone, pooling, in_size, imagenet, dropout)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def on_fit_start(self) -> None:
        pretrained = self.hparams.pretrained
        # a resumed run (trainer.ckpt_path set) keeps its own weights
        if not isinstance(pretrained, bool) and self.trainer.ckpt_path is None:
            if not Path(pretrained).is_file():
                raise FileNotFoundError(
                    f"model.pretrained: {pretrained} not found; train the view's pretext first "
                    "(configs/transfer_pretrain_identity.yaml or _expression.yaml) or set "
                    "model.pretrained false"
                )
            check_pretext_subjects(pretrained, getattr(self.trainer, "datamodule", None))
            self.net.load_backbone(pretrained)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return paper_optimizer(self, hp.lr, hp.momentum, hp.weight_decay, hp.lr_step)
