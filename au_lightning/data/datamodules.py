"""AUDataModule: dataset reader -> FrameIndex -> subject-exclusive fold -> DataLoaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from au_lightning.data.cache import cached_read
from au_lightning.data.datasets import FrameDataset
from au_lightning.data.formats import read_dataset, read_images, reader_options
from au_lightning.data.image_cache import DecodedImages, find_image_cache
from au_lightning.data.index import FrameIndex, resolve_aus
from au_lightning.data.loaders import make_loader
from au_lightning.data.sampling import LabelBatchSampler, check_sampler, make_batch_sampler
from au_lightning.data.split_record import SPLIT_KEY, FoldKey, SplitRecord, data_source
from au_lightning.data.splits import (
    Fold,
    ValidationStrategy,
    cross_dataset_fold,
    fold_rows,
    folds_from_parts,
    leave_one_subject_out,
    published_folds,
    select_fold,
    subject_folds,
    validation_reserve,
)
from au_lightning.data.synth import ensure_synthau
from au_lightning.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
)
from au_lightning.data.verify import check_images
from au_lightning.errors import ConfigError

__all__ = ["AUDataModule", "Protocol"]

logger = logging.getLogger("au_lightning.data")

Protocol = Literal["kfold", "loso", "parts", "bp4d_3fold", "disfa_3fold", "cross"]


class AUDataModule(L.LightningDataModule):
    """Frames of an AU dataset in its real layout, split subject-exclusively.

    Args:
        dataset: reader name in ``au_lightning.datasets`` (``bp4d``, ``disfa``, ``table`` ...).
        root: dataset root.
        synth: instead of ``root``, generate SynthAU in the ``dataset`` layout with these
            parameters (e.g. ``{subjects: 12, videos: 4, frames: 120, size: 112, seed: 0}``)
            on first use, into ``$AU_LIGHTNING_CACHE/synthau``, and read it with the real
            reader.
        reader_options: keyword options of the reader (e.g. ``intensity_threshold: ">=2"``).
        aus: AU set name or AU numbers; None keeps the reader's default set.
        protocol: ``kfold`` (seeded, balanced), ``loso``, ``parts`` (explicit ``parts``),
            ``bp4d_3fold`` / ``disfa_3fold`` (published lists), ``cross`` (test on
            ``test_dataset``).
        num_folds: k for ``kfold``.
        fold: the test fold, by name (``"part1"``, a LOSO subject) or by 0-based position
            (written ``"#2"`` where fold names are numbers: :func:`~au_lightning.data.select_fold`).
        parts: ``{part name: [subjects]}`` for ``protocol="parts"``.
        test_dataset, test_root, test_reader_options, test_synth: the test set of
            ``protocol="cross"`` (``test_synth`` as ``synth``).
        val_strategy: ``subjects`` (hold out training subjects), ``frames`` (a fraction of
            each training subject's frames) or ``none``.
        val_fraction: fraction for the validation reserve (0.2 subjects; MAL uses 0.02 frames).
        image_size, crop_size, flip, mean, std: transforms (train: resize, random crop and
            flip; eval: resize, center crop).
        batch_size, num_workers: DataLoader settings.
        sampler: the training batch sampler: ``random``, ``stratified`` (Chu et al. Alg. 1),
            ``momu`` (Chu et al. Alg. 2), ``mlros`` (Charte et al.; Ji et al.) or
            ``weighted``, ``duplicate`` (Yang & Yin, Table 8) (see
            :mod:`au_lightning.data.sampling`).
        sampler_options: the sampler's own options, e.g. ``{sampling_size: 4}`` for
            ``momu`` or ``{percentage: 25}`` for ``mlros``.
        seed: seeds the fold assignment, the validation reserve and the sampler's epochs.
        cache: use the caches in ``$AU_LIGHTNING_CACHE``: the FrameIndex ``.npz`` and, when
            ``au-lightning index --cache_images SIZE`` built one for this data at SIZE ==
            ``image_size``, the decoded images (:func:`~au_lightning.data.find_image_cache`;
            a cache whose source files changed is not used).
        predict_root: a folder of face images (e.g. from ``au-lightning align``) that
            ``predict`` reads instead of the test split, every AU unknown
            (:func:`au_lightning.data.read_images`); the training data is then not read.
        verify_images: at setup, decode every frame of the split once (in ``num_workers``
            processes) and list every unreadable one (:func:`~au_lightning.data.check_images`),
            so that a corrupt frame fails in seconds rather than mid-epoch.

    Checkpoints carry the split (:meth:`state_dict`, a
    :class:`~au_lightning.data.SplitRecord`); loading one to test, validate, predict or resume
    on test subjects it trained or validated on is an error (:meth:`load_state_dict`) unless
    ``allow_fold_mismatch`` is set (the CLI's ``--allow_fold_mismatch``).
    """

    #: evaluate a checkpoint on subjects it saw in training, with a warning, not an error
    allow_fold_mismatch: bool = False

    def __init__(
        self,
        dataset: str = "bp4d",
        root: str = "",
        synth: dict[str, int | float] | None = None,
        reader_options: dict[str, Any] | None = None,
        aus: str | list[int] | None = None,
        protocol: Protocol = "kfold",
        num_folds: int = 3,
        fold: int | str = 0,
        parts: dict[str, list[str]] | None = None,
        test_dataset: str | None = None,
        test_root: str | None = None,
        test_reader_options: dict[str, Any] | None = None,
        test_synth: dict[str, int | float] | None = None,
        val_strategy: ValidationStrategy = "subjects",
        val_fraction: float = 0.2,
        image_size: int = 256,
        crop_size: int = 224,
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 32,
        num_workers: int = 0,
        sampler: str = "random",
        sampler_options: dict[str, Any] | None = None,
        seed: int = 0,
        cache: bool = True,
        predict_root: str | None = None,
        verify_images: bool = False,
    ) -> None:
        super().__init__()
        check_sampler(sampler, sampler_options)
        if protocol == "cross" and not (test_dataset and (test_root or test_synth)):
            raise ConfigError("protocol 'cross' needs test_dataset and test_root (or test_synth)")
        for given_root, given_synth, what in ((root, synth, ""), (test_root, test_synth, "test_")):
            if given_root and given_synth:
                raise ConfigError(f"give {what}root or {what}synth, not both")
        if protocol == "parts" and not parts:
            raise ConfigError("protocol 'parts' needs parts: {name: [subjects]}")
        self.save_hyperparameters()
        self.train_transform = train_transform(image_size, crop_size, flip, mean, std)
        self.eval_transform = eval_transform(image_size, crop_size, mean, std)
        self.index: FrameIndex | None = None
        self.test_index: FrameIndex | None = None
        self.predict_images: FrameIndex | None = None
        self.fold: Fold | None = None
        self.train_rows = self.val_rows = self.test_rows = np.zeros(0, dtype=np.int64)
        self._decoded: dict[int, tuple[FrameIndex, DecodedImages | None]] = {}

    def _read(
        self,
        name: str,
        root: str | None,
        options: dict[str, Any] | None,
        synth: dict[str, int | float] | None,
        option_prefix: str = "",
        aus: str | Sequence[int] | None = None,
    ) -> FrameIndex:
        """Read one dataset (from the cache when it can be) with the label columns of ``aus``
        (None: the ``aus`` option; both None: the reader's default set; ``()``: an
        expression dataset such as RAF-DB, read whole, which must have expression labels)."""
        if synth is not None:
            root = str(ensure_synthau(name, **synth))
        elif not root:
            raise ConfigError(
                f"no {name} data: set data.{option_prefix}root (the dataset folder) or "
                f"data.{option_prefix}synth (SynthAU generated in the {name} layout)"
            )
        read = cached_read if self.hparams.cache else read_dataset
        options = dict(options or {})
        if aus is not None and len(aus) == 0:
            index = read(name, root or "", **options)
            if index.expression is None:
                raise ConfigError(
                    f"the {name} data has no expression labels; data.{option_prefix}dataset "
                    "must be an expression dataset (rafdb, affectnet)"
                )
            return index
        if aus is None:
            aus = self.hparams.aus
        aus = None if aus is None else resolve_aus(aus)
        if aus is not None and "aus" not in options and "aus" in reader_options(name):
            options["aus"] = list(aus)
        index = read(name, root or "", **options)
        if aus is not None:
            index = index.select_aus(aus)
        known = (index.occurrence >= 0).sum(0)
        never_known = [a for a, n in zip(index.aus, known, strict=True) if n == 0]
        if never_known:
            raise ConfigError(
                f"AU {', '.join(map(str, never_known))} has no known label in the {name} data "
                "(every frame is unknown, e.g. 9 = not coded); choose AUs the dataset codes"
            )
        return index

    def _test_aus(self) -> str | Sequence[int] | None:
        """The label columns read from ``test_dataset`` under ``protocol: cross``: the
        training AUs here; a subclass that evaluates other AUs overrides it."""
        return self.hparams.aus

    def folds(self, index: FrameIndex | None = None) -> list[Fold]:
        """Every fold of the configured protocol (``cv`` iterates over these); the dataset is
        read (from the cache when it can be) unless its ``index`` is given."""
        hp = self.hparams
        if hp.protocol == "cross":
            raise ConfigError("protocol 'cross' has a single train/test split, not folds")
        if index is None:
            index = self.index
        if index is None:
            index = self._read(hp.dataset, hp.root, hp.reader_options, hp.synth)
        if hp.protocol == "kfold":
            return subject_folds(index, hp.num_folds, hp.seed)
        if hp.protocol == "loso":
            return leave_one_subject_out(index)
        if hp.protocol == "parts":
            return folds_from_parts(hp.parts)
        if hp.protocol in ("bp4d_3fold", "disfa_3fold"):
            return published_folds(hp.protocol)
        raise ConfigError(f"protocol {hp.protocol!r} has no folds")

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage == "predict" and hp.get("predict_root"):
            if hp.aus is None:
                raise ConfigError("data.predict_root: set data.aus (or model.aus) to predict")
            self.predict_images = read_images(hp.predict_root, hp.aus)
            return
        if self.index is not None:
            return
        index = self._read(hp.dataset, hp.root, hp.reader_options, hp.synth)
        if hp.protocol == "cross":
            test_index = self._read(
                hp.test_dataset,
                hp.test_root,
                hp.test_reader_options,
                hp.test_synth,
                "test_",
                aus=self._test_aus(),
            )
            self.fold = cross_dataset_fold(index, test_index)
            train_rows, test_rows = np.arange(len(index)), np.arange(len(test_index))
        else:
            test_index = index
            self.fold = select_fold(self.folds(index), hp.fold)
            train_rows, test_rows = fold_rows(index, self.fold)
        self.train_rows, self.val_rows = validation_reserve(
            index, train_rows, hp.val_strategy, hp.val_fraction, hp.seed
        )
        self.test_rows = test_rows
        if hp.get("verify_images"):
            check_images(index, hp.num_workers)
            if test_index is not index:
                check_images(test_index, hp.num_workers)
        self.index, self.test_index = index, test_index
        logger.info(
            "%s fold %s: %d train, %d val, %d test frames",
            hp.dataset,
            self.fold.name,
            len(self.train_rows),
            len(self.val_rows),
            len(self.test_rows),
        )

    def fold_key(self) -> FoldKey:
        """The data and fold this module serves, resolved without setting it up."""
        hp = self.hparams
        if self.fold is not None:
            name = self.fold.name
        elif hp.protocol == "cross":
            name = "cross"
        else:
            name = select_fold(self.folds(), hp.fold).name
        return FoldKey(data_source(hp.dataset, hp.root, hp.synth), hp.protocol, name)

    def split_record(self) -> SplitRecord | None:
        """The subjects of each side of the split, once set up (None before, or when only
        ``predict_root``'s images were read)."""
        if self.index is None or self.test_index is None:
            return None
        hp = self.hparams
        cross = hp.protocol == "cross"
        test_source = (
            data_source(hp.test_dataset, hp.test_root, hp.test_synth)
            if cross
            else data_source(hp.dataset, hp.root, hp.synth)
        )

        def subjects(index: FrameIndex, rows: np.ndarray) -> tuple[str, ...]:
            return tuple(str(s) for s in np.unique(index.subject[rows]))

        return SplitRecord(
            key=self.fold_key(),
            test_source=test_source,
            train=subjects(self.index, self.train_rows),
            val=subjects(self.index, self.val_rows),
            test=subjects(self.test_index, self.test_rows),
        )

    def state_dict(self) -> dict[str, Any]:
        """What Lightning saves of this module in a checkpoint: its :meth:`split_record`."""
        record = self.split_record()
        return {} if record is None else {SPLIT_KEY: record.as_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check a loaded checkpoint's split against this one's
        (:meth:`SplitRecord.check_against`)."""
        saved, current = state_dict.get(SPLIT_KEY), self.split_record()
        if saved is None or current is None:
            return
        checkpoint = getattr(self.trainer, "ckpt_path", None) or "the checkpoint"
        warning = SplitRecord.from_dict(saved).check_against(
            current, str(checkpoint), self.allow_fold_mismatch
        )
        if warning:
            logger.warning(warning)

    @property
    def aus(self) -> tuple[int, ...]:
        if self.index is None:
            raise RuntimeError("call setup() before asking for the AUs")
        return self.index.aus

    def decoded_images(self, index: FrameIndex) -> DecodedImages | None:
        """The decoded image cache of ``index`` at ``image_size`` when ``cache`` is on and
        one was built, else None; looked up once per index."""
        if not self.hparams.cache:
            return None
        known = self._decoded.get(id(index))
        if known is None or known[0] is not index:
            found = find_image_cache(index, self.hparams.image_size)
            known = self._decoded[id(index)] = (index, found)
        return known[1]

    def frames(
        self,
        index: FrameIndex,
        rows: np.ndarray | None,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> FrameDataset:
        """The :class:`FrameDataset` of ``rows`` of ``index`` (None: all), its images read
        from the decoded image cache when there is one (:meth:`decoded_images`)."""
        return FrameDataset(index, rows, transform, images=self.decoded_images(index))

    def _loader(
        self,
        dataset: Dataset,
        batch_sampler: LabelBatchSampler | None = None,
        evaluation: bool = True,
    ) -> DataLoader:
        """Batches from ``batch_sampler``, or ``batch_size`` frames in order; an
        ``evaluation`` loader takes only its rank's share under DDP
        (:func:`~au_lightning.data.loaders.make_loader`)."""
        if batch_sampler is not None and self.trainer is not None:
            # Lightning starts a loader's iterator before it sets the epoch, and workers
            # take their first batches at once: a resumed fit would replay epoch 0's plan.
            # The epoch Lightning sets later (current_epoch lags it here after a restore):
            batch_sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return make_loader(
            dataset,
            self.trainer,
            self.hparams.num_workers,
            batch_size=self.hparams.batch_size,
            batch_sampler=batch_sampler,
            evaluation=evaluation,
        )

    def train_dataloader(self) -> DataLoader:
        """Batches planned by the configured sampler from the training rows' labels (built
        here, so that Lightning can hand it its DDP shard)."""
        hp = self.hparams
        labels = self.index.occurrence[self.train_rows]
        batch_sampler = make_batch_sampler(
            hp.sampler, labels, hp.batch_size, hp.seed, hp.sampler_options, self.aus,
            seeded_draws=True,
        )  # fmt: skip
        dataset = self.frames(self.index, self.train_rows, self.train_transform)
        return self._loader(dataset, batch_sampler)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_rows) == 0:
            return []
        return self._loader(self.frames(self.index, self.val_rows, self.eval_transform))

    def test_dataloader(self) -> DataLoader:
        dataset = self.frames(self.test_index, self.test_rows, self.eval_transform)
        return self._loader(dataset)

    @property
    def predict_index(self) -> FrameIndex:
        """The frames ``predict`` serves: the ``predict_root`` images, else the test split's."""
        return self.predict_images if self.predict_images is not None else self.test_index

    def predict_dataloader(self) -> DataLoader:
        if self.predict_images is None:
            return self.test_dataloader()
        return self._loader(self.frames(self.predict_images, None, self.eval_transform))
