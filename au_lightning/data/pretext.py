"""Face-level pretext tasks for multi-view transfer (Ji et al. 2020, Sec. 3.3).

Ji et al. pre-train one backbone per view on a face-level task before fine-tuning it on AU
detection: face recognition (MS-Celeb-1M) for the "face" view, facial expression
recognition (AffectNet) for the "emotion" view. :class:`PretextDataModule` serves either
task as single-label classification, the class of every frame in its ``expression``
column:

- ``expression``: an expression dataset (``rafdb``, ``affectnet``) read whole; a
  ``val_fraction`` of its images (its subjects: one per image) is held out for validation.
- ``identity``: the subjects of an AU dataset (``bp4d``, ``disfa``, ``table`` ...) as the
  classes. Only the subjects the configured fold trains on are used, so a later AU test on
  that fold never meets a face the backbone was taught to recognise; a ``val_fraction``
  of each subject's frames is held out for validation.

The test loader serves the validation frames (a pretext model is judged there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from torch.utils.data import DataLoader

from au_lightning.data.datamodules import AUDataModule, Protocol
from au_lightning.data.loaders import make_loader
from au_lightning.data.splits import validation_reserve
from au_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from au_lightning.errors import ConfigError

__all__ = ["PretextDataModule", "PretextTask"]

logger = logging.getLogger("au_lightning.data")

PretextTask = Literal["expression", "identity"]


class PretextDataModule(AUDataModule):
    """Images with one class each, for a pretext task of Ji et al. (Sec. 3.3).

    Batches are :class:`FrameDataset` items whose ``expression`` is the class (-1 none).
    :attr:`num_classes` and :attr:`class_names` tell the model its output size.

    Args:
        task: ``expression`` (the classes of an expression dataset) or ``identity`` (the
            training subjects of an AU dataset).
        dataset, root, synth, reader_options: the dataset, as in :class:`AUDataModule`.
        protocol, num_folds, fold, parts: ``identity`` only: the AU fold whose training
            subjects are the classes (its test subjects are left out).
        val_fraction: held-out images (``expression``) or frames per subject (``identity``).
        other arguments: see :class:`AUDataModule`.
    """

    def __init__(
        self,
        task: PretextTask = "expression",
        dataset: str = "rafdb",
        root: str = "",
        synth: dict[str, int | float] | None = None,
        reader_options: dict[str, object] | None = None,
        protocol: Protocol = "kfold",
        num_folds: int = 3,
        fold: int | str = 0,
        parts: dict[str, list[str]] | None = None,
        val_fraction: float = 0.1,
        image_size: int = 256,
        crop_size: int = 224,
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if task not in ("expression", "identity"):
            raise ConfigError(f"data.task must be expression or identity, got {task!r}")
        if task == "expression" and protocol == "cross":
            raise ConfigError("data.protocol 'cross' has no meaning for the expression task")
        super().__init__(
            dataset=dataset,
            root=root,
            synth=synth,
            reader_options=reader_options,
            protocol=protocol,
            num_folds=num_folds,
            fold=fold,
            parts=parts,
            val_strategy="frames",
            val_fraction=val_fraction,
            image_size=image_size,
            crop_size=crop_size,
            flip=flip,
            mean=mean,
            std=std,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            cache=cache,
        )
        # the AUDataModule settings this module fixes (hparams holds only its own arguments)
        self.hparams.update(
            aus=None, val_strategy="frames", sampler="random", sampler_options=None,
            test_dataset=None, test_root=None, test_reader_options=None, test_synth=None,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        hp = self.hparams
        if hp.task == "identity":
            self._setup_identity(stage)
        else:
            index = self._read(hp.dataset, hp.root, hp.reader_options, hp.synth, aus=())
            labelled = np.flatnonzero(index.expression >= 0)
            self.train_rows, self.val_rows = validation_reserve(
                index, labelled, "subjects", hp.val_fraction, hp.seed
            )
            self.index = self.test_index = index
        self.test_rows = self.val_rows
        logger.info(
            "%s %s pretext: %d classes, %d train, %d val images",
            hp.dataset,
            hp.task,
            self.num_classes,
            len(self.train_rows),
            len(self.val_rows),
        )

    def _setup_identity(self, stage: str | None) -> None:
        super().setup(stage)  # the fold; validation: frames of every training subject
        index = self.index
        rows = np.concatenate([self.train_rows, self.val_rows])
        subjects, counts = np.unique(index.subject_code[rows], return_counts=True)
        if counts.max(initial=0) < 2:
            raise ConfigError(
                f"identity classification needs subjects with several frames; every "
                f"{self.hparams.dataset} subject has one image (EmotioNet-style data): use "
                "an AU dataset with subject ids (bp4d, disfa, table) for the face view"
            )
        # int16, not the column's usual int8: BP4D+ alone has 140 subjects
        classes = np.full(len(index.subject_names), -1, dtype=np.int16)
        classes[subjects] = np.arange(len(subjects))
        self.index = self.test_index = index.replace(
            expression=classes[index.subject_code],
            expression_names=tuple(str(n) for n in index.subject_names[subjects]),
        )

    @property
    def num_classes(self) -> int:
        """The number of pretext classes (expressions, or training subjects)."""
        if self.index is None:
            raise RuntimeError("call setup() before asking for the classes")
        return len(self.index.expression_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.index is None:
            raise RuntimeError("call setup() before asking for the classes")
        return self.index.expression_names

    def train_dataloader(self) -> DataLoader:
        dataset = self.frames(self.index, self.train_rows, self.train_transform)
        hp = self.hparams
        return make_loader(
            dataset, self.trainer, hp.num_workers, batch_size=hp.batch_size, shuffle=True
        )
