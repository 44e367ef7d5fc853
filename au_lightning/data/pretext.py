"""Face-level pretext tasks for multi-view transfer (Ji et al. 2020, Sec. 3.3).

Ji et al. pre-train one backbone per view on a face-level task before fine-tuning it on AU
detection: face recognition (MS-Celeb-1M) for the "face" view, facial expression
recognition (AffectNet) for the "emotion" view. :class:`PretextDataModule` serves either
task as single-label classification, the class of every frame in its ``expression``
column:

- ``expression``: an expression dataset (``rafdb``, ``affectnet``) read whole; a
  ``val_fraction`` of its images (its subjects: one per image) is held out for validation.
- ``identity``: the subjects of an AU dataset (``bp4d``, ``disfa``, ``table`` ...) as the
  classes. Only the frames the AU stage on the configured fold trains on are used: its
  test subjects and the validation reserve it draws (``au_val_strategy``,
  ``au_val_fraction`` and ``seed``, which must be that stage's ``val_strategy``,
  ``val_fraction`` and ``seed``) are left out, so neither its model selection and
  thresholds nor its test meet a face the backbone was taught to recognise. A
  ``val_fraction`` of each remaining subject's frames is held out for validation.

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
from au_lightning.data.splits import (
    ValidationStrategy,
    fold_rows,
    select_fold,
    validation_reserve,
)
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
        au_val_strategy, au_val_fraction: ``identity`` only: the AU stage's
            ``val_strategy`` and ``val_fraction`` (with ``seed``, its ``seed``). The
            validation reserve they draw from the fold's training subjects is left out:
            with ``subjects`` (the default, as in ``configs/transfer*.yaml``) those whole
            subjects, with ``frames`` those frames, with ``none`` nothing.
        val_fraction: held-out images (``expression``) or frames per subject (``identity``).
        seed: the AU stage's ``seed`` (``identity``: it draws a ``kfold`` fold and the AU
            validation reserve); it also draws this module's own validation reserve.
        other arguments: see :class:`AUDataModule`.

    After ``setup``, :attr:`excluded_subjects` maps ``"test"`` and ``"au_val"`` to the
    subjects left out (``identity``; empty for ``expression``), as the log says.
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
        au_val_strategy: ValidationStrategy = "subjects",
        au_val_fraction: float = 0.2,
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
        if au_val_strategy not in ("subjects", "frames", "none"):
            raise ConfigError(
                f"data.au_val_strategy must be subjects, frames or none, got {au_val_strategy!r}"
            )
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
        self.excluded_subjects: dict[str, tuple[str, ...]] = {"test": (), "au_val": ()}

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
        hp = self.hparams
        index = self._read(hp.dataset, hp.root, hp.reader_options, hp.synth)
        if hp.protocol == "cross":
            raise ConfigError(
                "data.protocol 'cross' has no fold of training subjects for the identity task"
            )
        self.fold = select_fold(self.folds(index), hp.fold)
        fold_train, test_rows = fold_rows(index, self.fold)
        # the AU stage's split of the same fold: its validation reserve is left out too
        au_train, au_val = validation_reserve(
            index, fold_train, hp.au_val_strategy, hp.au_val_fraction, hp.seed
        )
        subjects, counts = np.unique(index.subject_code[au_train], return_counts=True)
        if counts.max(initial=0) < 2:
            raise ConfigError(
                f"identity classification needs subjects with several frames; every "
                f"{self.hparams.dataset} subject has one image (EmotioNet-style data): use "
                "an AU dataset with subject ids (bp4d, disfa, table) for the face view"
            )
        names = index.subject_names
        au_val_subjects = np.setdiff1d(index.subject_code[au_val], index.subject_code[au_train])
        self.excluded_subjects = {
            "test": tuple(str(n) for n in names[np.unique(index.subject_code[test_rows])]),
            "au_val": tuple(str(n) for n in names[au_val_subjects]),
        }
        left_out = (
            f"subjects {', '.join(self.excluded_subjects['au_val'])}"
            if au_val_subjects.size
            else f"{len(au_val)} frames"
        )
        logger.info(
            "%s identity pretext, fold %s: left out the test subjects (%s) and the AU "
            "stage's validation reserve (val_strategy %s, val_fraction %g, seed %d: %s)",
            hp.dataset,
            self.fold.name,
            ", ".join(self.excluded_subjects["test"]),
            hp.au_val_strategy,
            hp.au_val_fraction,
            hp.seed,
            left_out,
        )
        self.train_rows, self.val_rows = validation_reserve(
            index, au_train, "frames", hp.val_fraction, hp.seed
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
