"""A callback that kills its own process, to test resuming a run that died."""

from __future__ import annotations

import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAtEpochStart(Callback):
    """SIGKILL (no cleanup, no exception handling) when epoch ``epoch`` starts, that is after
    the checkpoints of the epochs before it were written."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
