"""AUMethod: the base LightningModule of multi-label AU methods, and the prediction writer.

A method implements ``forward(images) -> logits (B, L)`` and may override
:meth:`AUMethod.training_loss`; the base class supplies the masked loss, the per-AU metrics
(logged as ``val/f1_mean``, ``test/f1_AU12`` ...), the results table and F1 plot written at
the end of testing, and per-frame probabilities from ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from au_lightning.data.index import resolve_aus
from au_lightning.errors import ConfigError
from au_lightning.losses import masked_bce, positive_weights
from au_lightning.metrics import AUDetectionMetrics
from au_lightning.reports import write_results
from au_lightning.rng import capture_rng_states, restore_rng_states

__all__ = ["AUMethod", "PredictionWriter"]


class AUMethod(L.LightningModule):
    """Base of multi-label AU detection methods.

    Args:
        aus: the AUs the model outputs, by set name or numbers; must match the data's AUs.
        thresholds: decision threshold, one for all AUs or one per AU.
        lr, weight_decay: Adam's settings (subclasses may override ``configure_optimizers``).
        pos_weight: weight positives by ``(1 - p) / p`` of the training base rates.

    Subclasses call ``self.save_hyperparameters()`` in their ``__init__``, so checkpoints
    hold only primitives and load with ``torch.load(weights_only=True)``.
    """

    #: a method that adapts at evaluation (MAML) needs the Trainer's inference mode off
    adapts_at_evaluation: ClassVar[bool] = False

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        thresholds: float | list[float] = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        pos_weight: bool = False,
    ) -> None:
        super().__init__()
        self.aus: tuple[int, ...] = resolve_aus(aus)
        self.lr = lr
        self.weight_decay = weight_decay
        self.use_pos_weight = pos_weight
        self.register_buffer("pos_weight", torch.ones(len(self.aus)))
        self.val_metrics = AUDetectionMetrics(self.aus, thresholds)
        self.test_metrics = AUDetectionMetrics(self.aus, thresholds)

    @property
    def thresholds(self) -> list[float]:
        """The per-AU decision thresholds (validated by the metrics that use them)."""
        return self.test_metrics.thresholds.tolist()

    # -- template hooks -----------------------------------------------------------------------

    def training_loss(self, batch: dict[str, Any], logits: Tensor) -> Tensor:
        """Masked multi-label BCE over the known labels (optionally positive-weighted)."""
        weight = self.pos_weight if self.use_pos_weight else None
        return masked_bce(logits, batch["occurrence"], weight)

    # -- Lightning hooks ----------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "index", None) is None:
            return
        if tuple(datamodule.aus) != self.aus:
            raise ConfigError(
                f"the model outputs AUs {list(self.aus)} but the data has AUs "
                f"{list(datamodule.aus)}; set model aus and data aus alike"
            )
        if self.use_pos_weight and stage == "fit":
            train = torch.from_numpy(datamodule.index.occurrence[datamodule.train_rows])
            self.pos_weight.copy_(positive_weights(train))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = capture_rng_states()
        # LightningCLI reads the class from here when a later run loads this checkpoint; it
        # is missing when the checkpoint was saved by a Trainer outside the CLI
        cls = type(self)
        hparams = checkpoint.setdefault("hyper_parameters", {})
        hparams.setdefault("_class_path", f"{cls.__module__}.{cls.__qualname__}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming a fit: the next epoch's loader then shuffles (and its crops, flips and
        # dropout draw) as in the uninterrupted run. Lightning's sanity check runs with the
        # random state isolated, so it does not disturb this.
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit" and "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.training_loss(batch, self(batch["image"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _evaluate(self, batch: dict[str, Any], metrics: AUDetectionMetrics, stage: str) -> None:
        logits = self(batch["image"])
        target = batch["occurrence"]
        self.log(f"{stage}/loss", masked_bce(logits, target), batch_size=len(target))
        metrics.update(torch.sigmoid(logits.float()), target)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def _log_scores(self, metrics: AUDetectionMetrics, stage: str) -> dict[str, float]:
        scores = {k: float(v) for k, v in metrics.compute().items()}
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()})
        metrics.reset()
        return scores

    def on_validation_epoch_end(self) -> None:
        self._log_scores(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        scores = self._log_scores(self.test_metrics, "test")
        if self.trainer.is_global_zero:
            write_results(scores, self.aus, self.run_dir)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"probs": torch.sigmoid(self(batch["image"]).float()), "index": batch["index"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    @property
    def run_dir(self) -> Path:
        """The logger's directory, or the Trainer's root directory without a logger."""
        return Path(self.trainer.log_dir or self.trainer.default_root_dir)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` output to a CSV: path, subject, frame, ``p_AU<n>`` probabilities and
    ``AU<n>`` decisions at the model's thresholds (rows of the data module's test index).

    Args:
        output: the CSV path; relative paths are taken inside the run directory.
    """

    def __init__(self, output: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any] | None,
    ) -> None:
        index = trainer.datamodule.test_index
        rows = torch.cat([p["index"] for p in predictions]).numpy()
        probs = torch.cat([p["probs"] for p in predictions]).cpu().numpy()
        aus = pl_module.aus
        decisions = (probs > np.asarray(pl_module.thresholds)).astype(int)
        header = ["path", "subject", "frame", *(f"p_AU{a}" for a in aus), *(f"AU{a}" for a in aus)]
        lines = [",".join(header)]
        subjects = index.subject_names[index.subject_code[rows]]
        for i, row in enumerate(rows.tolist()):
            cells = [str(index.path[row]), str(subjects[i]), str(index.frame[row])]
            cells += [f"{p:.5f}" for p in probs[i]] + [str(d) for d in decisions[i]]
            lines.append(",".join(cells))
        path = Path(self.output)
        if not path.is_absolute():
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
