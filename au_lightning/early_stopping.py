"""Early stopping that lets a run end before its first validation."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

__all__ = ["EarlyStopping"]

logger = logging.getLogger("au_lightning")


class EarlyStopping(LightningEarlyStopping):
    """Lightning's ``EarlyStopping``, except when training ends before any validation ran
    (``--trainer.max_steps 3`` inside the first epoch, ``limit_val_batches 0``): the monitored
    metric cannot exist yet, so the check is skipped, with a warning, where Lightning's
    ``strict`` mode stops the run with a ``RuntimeError``. Once a validation has run, a
    missing metric (a misspelt ``monitor``) is still that error, as in ``ModelCheckpoint``.
    """

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        validated = trainer.fit_loop.epoch_loop.val_loop._has_run
        if self.monitor not in trainer.callback_metrics and not validated:
            logger.warning(
                "EarlyStopping(monitor=%r): no validation has run yet (step %d), so there is "
                "nothing to stop on; not checked",
                self.monitor,
                trainer.global_step,
            )
            return
        super()._run_early_stopping_check(trainer)
