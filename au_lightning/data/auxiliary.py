"""AU frames with auxiliary facial-expression (FE) data and a meta-test reserve (Li & Shan).

Meta Auxiliary Learning (Li & Shan, Alg. 1) draws, at every training step, a batch of AU
training frames X (line 4), a batch of FE images E (line 5) and a batch of the reserved AU
validation set V (line 10). :class:`AuxiliaryDataModule` yields the three together through
Lightning's ``CombinedLoader``; the AU batches come from the configured sampler and define
the epoch, the FE and validation batches are drawn to match them (:class:`DrawnBatches`,
:class:`MatchedBatchSampler`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Sampler

from au_lightning.data.datamodules import AUDataModule, Protocol
from au_lightning.data.index import FrameIndex, positive_rates
from au_lightning.data.sampling import EpochPlan, LabelBatchSampler
from au_lightning.data.splits import ValidationStrategy
from au_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from au_lightning.errors import ConfigError

__all__ = ["AuxiliaryDataModule", "DrawnBatches", "MatchedBatchSampler"]

logger = logging.getLogger("au_lightning.data")


class DrawnBatches(EpochPlan):
    """``num_batches`` batches of ``batch_size`` positions: successive random permutations of
    all positions, concatenated and cut, so every position is drawn once before any is drawn
    again and no batch repeats a position (``batch_size`` must not exceed the data)."""

    def __init__(self, labels: np.ndarray, batch_size: int, num_batches: int) -> None:
        super().__init__(labels, batch_size, drop_last=True)
        if batch_size > len(self.positives):
            raise ConfigError(
                f"batch_size {batch_size} exceeds the {len(self.positives)} samples to draw from"
            )
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ConfigError(f"num_batches must be a positive integer, got {num_batches!r}")
        self.num_batches = num_batches

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        n, size = len(self.positives), self.batch_size
        batches: list[np.ndarray] = []
        pending = rng.permutation(n)
        while len(batches) < self.num_batches:
            if len(pending) >= size:
                batches.append(pending[:size])
                pending = pending[size:]
                continue
            upcoming = rng.permutation(n)
            # the batch that spans two passes: the next pass's positions that this pass
            # still holds go to the end of the next pass
            clash = np.isin(upcoming, pending)
            pending = np.concatenate([pending, upcoming[~clash], upcoming[clash]])
        return batches


class MatchedBatchSampler(LabelBatchSampler):
    """A :class:`LabelBatchSampler` of :class:`DrawnBatches` that draws, in every epoch, as
    many batches as the ``leader`` sampler's plan of that epoch holds (ML-ROS, for one,
    clones a varying number of frames), so the two are sharded alike under DDP."""

    def __init__(
        self,
        plan: DrawnBatches,
        sampler: Sampler | None = None,
        seed: int = 0,
        leader: LabelBatchSampler | None = None,
        seeded_draws: bool = False,
    ) -> None:
        super().__init__(plan, sampler, seed, seeded_draws)
        self.leader = leader

    def plan(self, epoch: int) -> list[np.ndarray]:
        if self.leader is not None:
            self.epoch_plan.num_batches = len(self.leader.plan(epoch))
        return super().plan(epoch)


class AuxiliaryDataModule(AUDataModule):
    """AU frames, auxiliary FE images and the reserved AU validation set of MAL (Li & Shan,
    Sec. 3.1, Alg. 1, Sec. 4.1.2 and 4.1.4).

    Reading, protocols (3-fold subject-exclusive as in the paper by default), folds and the
    test loader are :class:`AUDataModule`'s. The validation reserve defaults to the paper's:
    ``val_fraction`` 0.02 of the training frames, ``frames`` drawn uniformly per subject
    (Sec. 4.1.4); it is the meta-test set D_val and Lightning's validation loader.

    The training loader is a ``CombinedLoader`` (mode ``min_size``) whose batches are dicts:

    - ``"au"``: ``batch_size`` AU training frames from ``sampler`` (these define the epoch);
    - ``"fe"``: ``aux_batch_size`` (default ``batch_size``) FE images of ``aux_dataset``
      (``rafdb``, ``affectnet``, or SynthAU's expressions through ``aux_synth``), each with
      ``expression`` (a class code, -1 unknown), drawn by :class:`DrawnBatches`;
    - ``"val"`` (unless ``meta_batch_size`` is 0): a meta-test batch of the validation
      reserve (256 in the paper, fewer when the reserve is smaller), evaluation transform.

    The reserve's class imbalance is for the method to reweight: :attr:`reserve_rates`
    holds each AU's positive rate there (Sec. 4.1.4: under-represented classes are
    weighted inversely to their frequency).

    Args:
        aux_dataset, aux_root, aux_synth, aux_reader_options: the FE dataset, as ``dataset``,
            ``root``, ``synth`` and ``reader_options`` (e.g. ``{consistency_file:
            EmoLabel/consistency.txt}`` for SynthAU's annotator consistency, the claim of
            Li & Shan's Fig. 6).
        aux_batch_size: FE images per step (None: ``batch_size``; 64 in the paper).
        meta_batch_size: validation frames per step (256 in the paper; 0: no meta-test
            batch, for the STL and MTL rows).
        other arguments: see :class:`AUDataModule`.
    """

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
        val_strategy: ValidationStrategy = "frames",
        val_fraction: float = 0.02,
        image_size: int = 256,
        crop_size: int = 224,
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 64,
        num_workers: int = 0,
        sampler: str = "random",
        sampler_options: dict[str, Any] | None = None,
        seed: int = 0,
        cache: bool = True,
        aux_dataset: str = "rafdb",
        aux_root: str = "",
        aux_synth: dict[str, int | float] | None = None,
        aux_reader_options: dict[str, Any] | None = None,
        aux_batch_size: int | None = None,
        meta_batch_size: int = 256,
    ) -> None:
        if aux_root and aux_synth:
            raise ConfigError("give aux_root or aux_synth, not both")
        if aux_batch_size is not None and (
            not isinstance(aux_batch_size, int) or aux_batch_size < 1
        ):
            raise ConfigError(f"aux_batch_size must be a positive integer, got {aux_batch_size!r}")
        if not isinstance(meta_batch_size, int) or meta_batch_size < 0:
            raise ConfigError(
                f"meta_batch_size must be an integer >= 0 (0: no meta-test batch), got "
                f"{meta_batch_size!r}"
            )
        if meta_batch_size and val_strategy == "none":
            raise ConfigError(
                "meta_batch_size > 0 draws meta-test batches from the validation reserve, but "
                "val_strategy is 'none'; use 'frames' (the paper's 2%) or set meta_batch_size 0"
            )
        super().__init__(
            dataset=dataset,
            root=root,
            synth=synth,
            reader_options=reader_options,
            aus=aus,
            protocol=protocol,
            num_folds=num_folds,
            fold=fold,
            parts=parts,
            test_dataset=test_dataset,
            test_root=test_root,
            test_reader_options=test_reader_options,
            test_synth=test_synth,
            val_strategy=val_strategy,
            val_fraction=val_fraction,
            image_size=image_size,
            crop_size=crop_size,
            flip=flip,
            mean=mean,
            std=std,
            batch_size=batch_size,
            num_workers=num_workers,
            sampler=sampler,
            sampler_options=sampler_options,
            seed=seed,
            cache=cache,
        )
        self.aux_index: FrameIndex | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.aux_index is not None:
            return
        hp = self.hparams
        self.aux_index = self._read(
            hp.aux_dataset, hp.aux_root, hp.aux_reader_options, hp.aux_synth, "aux_", aus=()
        )
        logger.info("%s: %d expression images", hp.aux_dataset, len(self.aux_index))

    @property
    def expression_names(self) -> tuple[str, ...]:
        """The FE classes, in code order (RAF-DB's 7 basic expressions, AffectNet's 8)."""
        if self.aux_index is None:
            raise RuntimeError("call setup() before asking for the expressions")
        return self.aux_index.expression_names

    @property
    def reserve_rates(self) -> np.ndarray:
        """Each AU's positive rate among the known labels of the validation reserve (NaN
        for an AU with none known there)."""
        return positive_rates(self.index.occurrence[self.val_rows])

    def train_dataloader(self) -> CombinedLoader:  # type: ignore[override]
        hp = self.hparams
        au_loader = super().train_dataloader()
        leader = au_loader.batch_sampler
        fe_rows = np.arange(len(self.aux_index))
        fe_batch = hp.aux_batch_size or hp.batch_size
        if fe_batch > len(fe_rows):
            raise ConfigError(
                f"data.aux_batch_size (or batch_size) {fe_batch} exceeds the {len(fe_rows)} "
                f"images of {hp.aux_dataset}; lower it"
            )
        loaders = {
            "au": au_loader,
            "fe": self._drawn_loader(self.aux_index, fe_rows, fe_batch, leader, train=True),
        }
        if hp.meta_batch_size:
            if len(self.val_rows) == 0:
                raise ConfigError(
                    "data.meta_batch_size > 0 but the validation reserve is empty; raise "
                    "data.val_fraction or set meta_batch_size 0"
                )
            size = min(hp.meta_batch_size, len(self.val_rows))
            if size < hp.meta_batch_size:
                logger.info(
                    "meta-test batches hold the whole reserve of %d frames (meta_batch_size %d)",
                    size,
                    hp.meta_batch_size,
                )
            loaders["val"] = self._drawn_loader(self.index, self.val_rows, size, leader, False)
        return CombinedLoader(loaders, mode="min_size")

    def _drawn_loader(
        self,
        index: FrameIndex,
        rows: np.ndarray,
        batch_size: int,
        leader: LabelBatchSampler,
        train: bool,
    ) -> DataLoader:
        # one process's plan holds every rank's batches, so the counts match on every rank
        steps = len(leader.plan(0))
        plan = DrawnBatches(np.zeros((len(rows), 0), np.int8), batch_size, steps)
        # a seed apart from the AU sampler's, so the streams are not aligned
        sampler = MatchedBatchSampler(
            plan, seed=self.hparams.seed + 1 + train, leader=leader, seeded_draws=True
        )
        transform = self.train_transform if train else self.eval_transform
        return self._loader(self.frames(index, rows, transform), sampler)
