"""MAL's data: the meta-test reserve ψ learns from, and a selection set it never sees."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
from torch.utils.data import DataLoader

from au_lightning import ConfigError
from au_lightning.data import (
    AuxiliaryDataModule,
    Protocol,
    ValidationStrategy,
    make_loader,
    validation_reserve,
)

logger = logging.getLogger("au_lightning.data")

#: where the validation set that selects the checkpoint comes from
SelectStrategy = Literal["subjects", "frames", "reserve"]


class MALDataModule(AuxiliaryDataModule):
    """:class:`au_lightning.data.AuxiliaryDataModule` with the checkpoint's validation set
    kept apart from the meta-test reserve of Li & Shan's Alg. 1.

    ψ's meta step (Alg. 1 lines 9-11, Eq. 7-8) descends the loss of the reserve D_val (2% of
    each training subject's frames, Sec. 4.1.4). When the same reserve is also Lightning's
    validation set, as in :class:`AuxiliaryDataModule`, the checkpoint is selected on data ψ
    was trained to fit. Here the training subjects' frames are split three ways, disjointly:

    - the selection set (``select_strategy``), Lightning's validation loader, which the
      checkpoint monitor reads; ψ and θ never train on it;
    - the meta-test reserve (``val_strategy``/``val_fraction``, the paper's 2% of frames),
      drawn from the rest; it is :attr:`val_rows`, the ``"val"`` batches of training and
      :attr:`reserve_rates`, as in the parent;
    - the AU training frames, the rest.

    ``select_strategy``:

    - ``subjects`` (default): ``select_fraction`` of the training subjects held out whole
      (at least one). Subject-exclusive like the test, and no frame of the selection set's
      subjects reaches training or ψ.
    - ``frames``: ``select_fraction`` of each training subject's frames. Disjoint frames,
      but of the subjects ψ trains on (neighbouring video frames look alike).
    - ``reserve``: the parent's behaviour, validation on ψ's own reserve (for reproducing
      earlier runs; the checkpoint is then chosen on ψ's training data).

    STL and MTL (``meta_batch_size: 0``) use the same module so that the three rows train on
    the same frames and are selected on the same set.

    Args:
        select_strategy: see above.
        select_fraction: the selection set's fraction of the training subjects
            (``subjects``) or of each subject's frames (``frames``).
        other arguments: see :class:`au_lightning.data.AuxiliaryDataModule`.
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
        mean: Sequence[float] = (0.485, 0.456, 0.406),  # ImageNet's, as the parent's
        std: Sequence[float] = (0.229, 0.224, 0.225),
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
        select_strategy: SelectStrategy = "subjects",
        select_fraction: float = 0.2,
    ) -> None:
        if select_strategy not in get_args(SelectStrategy):
            raise ConfigError(
                f"select_strategy must be one of {', '.join(get_args(SelectStrategy))}, got "
                f"{select_strategy!r}"
            )
        if select_strategy != "reserve" and not 0 < select_fraction < 1:
            raise ConfigError(f"select_fraction must lie in (0, 1), got {select_fraction!r}")
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
            aux_dataset=aux_dataset,
            aux_root=aux_root,
            aux_synth=aux_synth,
            aux_reader_options=aux_reader_options,
            aux_batch_size=aux_batch_size,
            meta_batch_size=meta_batch_size,
        )
        #: the rows of the validation loader (the checkpoint's selection set)
        self.select_rows: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.select_rows is not None or self.index is None:
            return
        hp = self.hparams
        if hp.select_strategy == "reserve":
            self.select_rows = self.val_rows
            return
        pool = np.sort(np.concatenate([self.train_rows, self.val_rows]))
        rest, self.select_rows = validation_reserve(
            self.index, pool, hp.select_strategy, hp.select_fraction, hp.seed
        )
        self.train_rows, self.val_rows = validation_reserve(
            self.index, rest, hp.val_strategy, hp.val_fraction, hp.seed
        )
        logger.info(
            "%s fold %s: %d train, %d meta-test reserve, %d selection (%s) frames",
            hp.dataset,
            self.fold.name,
            len(self.train_rows),
            len(self.val_rows),
            len(self.select_rows),
            hp.select_strategy,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.select_rows is None or len(self.select_rows) == 0:
            return []
        dataset = self.frames(self.index, self.select_rows, self.eval_transform)
        return make_loader(
            dataset,
            self.trainer,
            self.hparams.num_workers,
            batch_size=self.hparams.batch_size,
            evaluation=True,
        )
