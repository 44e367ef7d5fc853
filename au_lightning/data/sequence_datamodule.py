"""SequenceDataModule: AUDataModule's frames, plus windows of consecutive frames of one video."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from au_lightning.data.datamodules import AUDataModule, Protocol
from au_lightning.data.index import FrameIndex
from au_lightning.data.loaders import make_loader
from au_lightning.data.sequences import (
    WindowDataset,
    active_aus_per_frame,
    consecutive_segments,
    sequence_windows,
)
from au_lightning.data.splits import ValidationStrategy
from au_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from au_lightning.errors import ConfigError

__all__ = ["SequenceDataModule", "SequenceInput", "Split"]

logger = logging.getLogger("au_lightning.data")

SequenceInput = Literal["frames", "windows"]
Split = Literal["train", "val", "test"]


class SequenceDataModule(AUDataModule):
    """Frames of an AU dataset split subject-exclusively (every option of
    :class:`AUDataModule`), served as frames or as windows of consecutive frames.

    What each loader serves is the model's choice: a model with a method
    ``sequence_input(stage) -> "frames" | "windows"`` (``stage`` is ``train``, ``val``,
    ``test`` or ``predict``) is asked each time Lightning builds a loader, so a staged model
    (the hybrid network of Chu et al.: a CNN on frames, then LSTMs on windows) switches
    between them; other models get frames, exactly as from :class:`AUDataModule`. Windows
    are :class:`au_lightning.data.sequences.WindowDataset` items (rows and labels, no
    images); :meth:`frame_loader` serves a split's frames in order, for feature extraction.

    Args:
        window: frames per training window (Sec. 4.2 trains on 1300-frame subsequences).
        stride: frames between the starts of training windows.
        burn_in: frames at the start of each training window left out of the loss (Sec. 4.2:
            the first 10, "as they carried insufficient temporal context").
        min_active_aus: leave out training windows with fewer present AUs per frame, on
            average (Sec. 4.2: 1.5; 0 keeps every window).
        sequences_per_batch: training windows per batch (Sec. 4.2: 10 subsequences).

    Validation and test windows are whole segments (every frame scored once), one per batch.
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
        window: int = 64,
        stride: int = 32,
        burn_in: int = 10,
        min_active_aus: float = 0.0,
        sequences_per_batch: int = 10,
    ) -> None:
        if window < 1 or stride < 1 or sequences_per_batch < 1:
            raise ConfigError(
                "window, stride and sequences_per_batch must be >= 1, got "
                f"{window}, {stride}, {sequences_per_batch}"
            )
        if not 0 <= burn_in < window:
            raise ConfigError(f"burn_in must be in [0, window={window}), got {burn_in}")
        if val_strategy == "frames":
            raise ConfigError(
                "val_strategy 'frames' scatters single frames of a video into validation, "
                "which breaks its windows; use 'subjects' (or 'none')"
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
        self.save_hyperparameters()

    # -- what to serve ------------------------------------------------------------------------

    def sequence_input(self, stage: str) -> SequenceInput:
        """``frames`` or ``windows`` for ``stage``, as the model asks (frames by default)."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        choose = getattr(model, "sequence_input", None)
        served = choose(stage) if callable(choose) else "frames"
        if served not in ("frames", "windows"):
            raise ConfigError(f"sequence_input({stage!r}) must be frames or windows: {served!r}")
        return served

    def split(self, name: Split) -> tuple[FrameIndex, np.ndarray]:
        """The FrameIndex and rows of ``train``, ``val`` or ``test``."""
        if self.index is None:
            raise RuntimeError("call setup() before asking for a split")
        if name == "test":
            return self.test_index, self.test_rows
        return self.index, self.train_rows if name == "train" else self.val_rows

    def segments(self, name: Split) -> list[np.ndarray]:
        """The split's runs of consecutive frames of one video (rows of ``split(name)``)."""
        return consecutive_segments(*self.split(name))

    def train_windows(self) -> list[np.ndarray]:
        """The training windows: ``window`` frames every ``stride``, without those whose
        mean number of present AUs per frame is below ``min_active_aus``."""
        hp = self.hparams
        index, _ = self.split("train")
        windows = sequence_windows(self.segments("train"), hp.window, hp.stride)
        if not windows:
            raise ConfigError(
                f"no training segment has window={hp.window} consecutive frames; lower data.window"
            )
        active = np.array([active_aus_per_frame(index.occurrence[w]) for w in windows])
        kept = [w for w, a in zip(windows, active, strict=True) if a >= hp.min_active_aus]
        if not kept:
            raise ConfigError(
                f"min_active_aus={hp.min_active_aus} leaves no training window (the most "
                f"active has {active.max():.2f} present AUs per frame); lower it"
            )
        if len(kept) < len(windows):
            logger.info(
                "min_active_aus=%s keeps %d of %d training windows",
                hp.min_active_aus,
                len(kept),
                len(windows),
            )
        return kept

    # -- loaders ------------------------------------------------------------------------------

    def _window_loader(self, dataset: WindowDataset, batch_size: int, shuffle: bool) -> DataLoader:
        generator = None
        if shuffle:
            # a new loader every epoch (the staged model reloads): seed by epoch, not once
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            generator = torch.Generator().manual_seed(self.hparams.seed * 100_003 + epoch)
        return make_loader(
            dataset,
            self.trainer,
            self.hparams.num_workers,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            evaluation=not shuffle,
        )

    def _segment_loader(self, name: Split) -> DataLoader:
        index, _ = self.split(name)
        return self._window_loader(WindowDataset(index, self.segments(name)), 1, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        if self.sequence_input("train") == "frames":
            return super().train_dataloader()
        hp = self.hparams
        dataset = WindowDataset(self.index, self.train_windows(), hp.burn_in)
        return self._window_loader(dataset, hp.sequences_per_batch, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.sequence_input("val") == "frames" or len(self.val_rows) == 0:
            return super().val_dataloader()
        return self._segment_loader("val")

    def test_dataloader(self) -> DataLoader:
        if self.sequence_input("test") == "frames":
            return super().test_dataloader()
        return self._segment_loader("test")

    def predict_dataloader(self) -> DataLoader:
        if self.sequence_input("predict") == "frames":
            return super().predict_dataloader()
        return self._segment_loader("test")

    def frame_loader(self, name: Split) -> DataLoader:
        """The split's frames in row order, with the evaluation transform (no crop or flip
        at random), for extracting per-frame features."""
        index, rows = self.split(name)
        dataset = self.frames(index, rows, self.eval_transform)
        return self._loader(dataset, evaluation=False)  # every rank extracts every frame
