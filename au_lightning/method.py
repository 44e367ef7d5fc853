"""AUMethod: the base LightningModule of multi-label AU methods, and the prediction writer.

A method implements ``forward(images) -> logits (B, L)`` and may override
:meth:`AUMethod.training_loss`; the base class supplies the masked loss, the per-AU metrics
(logged as ``val/f1_mean``, ``test/f1_AU12`` ...), the results table and F1 plot written at
the end of testing, and per-frame probabilities from ``predict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor
from torchmetrics import Metric

from au_lightning.data.index import positive_rates, resolve_aus
from au_lightning.distributed import gather_objects
from au_lightning.errors import ConfigError
from au_lightning.losses import (
    SelectiveTarget,
    masked_bce,
    positive_weights,
    selective_weights,
)
from au_lightning.metrics import (
    AUDetectionMetrics,
    ThresholdCriterion,
    ThresholdSearch,
    final_scores,
)
from au_lightning.reports import write_cv_results, write_results
from au_lightning.rng import capture_rng_states, restore_rng_states

__all__ = ["AUMethod", "LossWeights", "PredictionWriter", "run_directory"]

LossWeights = Literal["none", "positive", "selective"]


class AUMethod(L.LightningModule):
    """Base of multi-label AU detection methods.

    Args:
        aus: the AUs the model outputs, by set name or numbers; must match the data's AUs.
        thresholds: decision threshold, one for all AUs or one per AU.
        threshold_search: tune one threshold per AU on the validation split at the end of
            every validation epoch, maximizing its F1 (Ji et al. 2020, Sec. 3.6). The tuned
            thresholds are saved with the checkpoint and used by ``test`` and ``predict``;
            the test results report F1 at ``thresholds`` too (``test/untuned/...``).
        lr, weight_decay: Adam's settings (subclasses may override ``configure_optimizers``).
        loss_weights: ``none``; ``positive``: positives weighted by ``(1 - p) / p`` of the
            training base rates p; ``selective``: selective learning, each batch's labels
            reweighted toward a target share (Ji et al. Eq. 1, see
            :func:`au_lightning.losses.selective_weights`).
        threshold_criterion: what ``threshold_search`` maximises (``f1`` or ``score``).
        selective_target: the target share of ``loss_weights: selective``: ``data``, the
            training base rates (Ji et al. Sec. 3.4's "true distribution", the default;
            it weights an MLROS batch back to the base rates), or ``balanced``, 0.5 for
            every AU (Hand et al.'s balanced target).

    Subclasses call ``self.save_hyperparameters()`` in their ``__init__``, so checkpoints
    hold only primitives and load with ``torch.load(weights_only=True)``.
    """

    #: a method that adapts at evaluation (MAML) needs the Trainer's inference mode off
    adapts_at_evaluation: ClassVar[bool] = False
    #: report Ji et al.'s final score, (accuracy + F1) / 2: ``val/score_mean`` and, per AU,
    #: with the test scores
    reports_final_score: ClassVar[bool] = False

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        loss_weights: LossWeights = "none",
        threshold_criterion: ThresholdCriterion = "f1",
        selective_target: SelectiveTarget = "data",
    ) -> None:
        super().__init__()
        if loss_weights not in ("none", "positive", "selective"):
            raise ConfigError(
                f"loss_weights must be none, positive or selective, got {loss_weights!r}"
            )
        if selective_target not in ("data", "balanced"):
            raise ConfigError(
                f"selective_target must be data or balanced, got {selective_target!r}"
            )
        self.aus: tuple[int, ...] = resolve_aus(aus)
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss_weights = loss_weights
        self.selective_target = selective_target
        self.threshold_search = threshold_search
        # the training split's per-AU positive rate, set when fitting starts
        self.register_buffer("base_rate", torch.full((len(self.aus),), 0.5))
        self.val_metrics = AUDetectionMetrics(self.aus, thresholds)
        self.test_metrics = AUDetectionMetrics(self.aus, thresholds)
        self.untuned_test_metrics = AUDetectionMetrics(self.aus, thresholds)
        self.val_search = ThresholdSearch(len(self.aus), threshold_criterion)
        # persistent, so that a checkpoint carries the thresholds tuned on its validation
        self.register_buffer("tuned_thresholds", self.val_metrics.thresholds.clone())

    @property
    def thresholds(self) -> list[float]:
        """The per-AU decision thresholds in use: the tuned ones with ``threshold_search``."""
        if self.threshold_search:
            return self.tuned_thresholds.tolist()
        return self.val_metrics.thresholds.tolist()

    # -- template hooks -----------------------------------------------------------------------

    def training_loss(self, batch: dict[str, Any], logits: Tensor) -> Tensor:
        """Masked multi-label BCE over the known labels, weighted as ``loss_weights`` says."""
        return self.label_loss(logits, batch["occurrence"])

    def label_loss(
        self, logits: Tensor, target: Tensor, columns: Tensor | slice = slice(None)
    ) -> Tensor:
        """:func:`au_lightning.masked_bce` of logits and targets ``(B, K)`` for the AUs at
        positions ``columns`` (all by default), weighted as ``loss_weights`` says with
        those AUs' training base rates."""
        rate = self.base_rate[columns]
        if self.loss_weights == "positive":
            return masked_bce(logits, target, pos_weight=positive_weights(rate))
        if self.loss_weights == "selective":
            weight = selective_weights(target, rate, self.selective_target)
            return masked_bce(logits, target, weight=weight)
        return masked_bce(logits, target)

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
        if stage == "fit":
            # an AU without a known training label weighs nothing either way; 0.5 is neutral
            rates = positive_rates(datamodule.index.occurrence[datamodule.train_rows])
            self.base_rate.copy_(torch.from_numpy(np.nan_to_num(rates, nan=0.5)))
            if self.threshold_search and len(getattr(datamodule, "val_rows", [])) == 0:
                raise ConfigError(
                    "model.threshold_search tunes thresholds on the validation split, but the "
                    "data has none; set data.val_strategy to subjects or frames"
                )

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

    def _evaluate(self, batch: dict[str, Any], stage: str) -> tuple[Tensor, Tensor]:
        logits = self(batch["image"])
        target = batch["occurrence"]
        # under DDP the mean over every rank's frames, as in one process
        loss = masked_bce(logits, target)
        self.log(f"{stage}/loss", loss, batch_size=len(target), sync_dist=True)
        return torch.sigmoid(logits.float()), target

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs, target = self._evaluate(batch, "val")
        self.val_metrics.update(probs, target)
        if self.threshold_search:
            self.val_search.update(probs, target)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs, target = self._evaluate(batch, "test")
        self.test_metrics.update(probs, target)
        if self.threshold_search:
            self.untuned_test_metrics.update(probs, target)

    def log_scores(self, metrics: Metric, prefix: str) -> dict[str, float]:
        """Log a metric's ``compute()`` dict under ``<prefix>/``, reset it, return the scores."""
        scores = {k: float(v) for k, v in metrics.compute().items()}
        # equal on every rank (torchmetrics synchronised them): the sync only marks that
        self.log_dict({f"{prefix}/{k}": v for k, v in scores.items()}, sync_dist=True)
        metrics.reset()
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self.log_scores(self.val_metrics, "val")
        if self.reports_final_score:
            self.log("val/score_mean", final_scores(scores, self.aus)["score_mean"])
        if self.threshold_search:
            # Model selection stays on the fixed thresholds: F1 at thresholds tuned on the
            # same frames (val/tuned_f1_*) is optimistic.
            f1 = self.tune_thresholds()
            tuned = {f"val/tuned_f1_AU{a}": float(v) for a, v in zip(self.aus, f1, strict=True)}
            self.log_dict({**tuned, "val/tuned_f1_mean": float(f1.mean())})

    def tune_thresholds(self) -> Tensor:
        """Search the thresholds of what ``val_search`` accumulated, keep them in
        ``tuned_thresholds``, reset the search; returns each AU's F1 at its threshold."""
        thresholds, f1 = (t.reshape(-1) for t in self.val_search.compute())
        self.val_search.reset()
        self.tuned_thresholds.copy_(thresholds)
        return f1

    def on_test_epoch_start(self) -> None:
        if self.threshold_search:
            self.test_metrics.thresholds.copy_(self.tuned_thresholds)

    def on_test_epoch_end(self) -> None:
        scores = self.log_scores(self.test_metrics, "test")
        if self.threshold_search:
            untuned = self.log_scores(self.untuned_test_metrics, "test/untuned")
            scores |= {f"untuned_{k}": v for k, v in untuned.items()}
            scores |= {
                f"threshold_AU{a}": t for a, t in zip(self.aus, self.thresholds, strict=True)
            }
        if self.reports_final_score:
            final = final_scores(scores, self.aus)
            self.log_dict({f"test/{k}": v for k, v in final.items()})
            scores |= final
        if self.trainer.is_global_zero:
            write_results(scores, self.aus, self.run_dir)

    def write_cv_report(
        self,
        per_fold: Mapping[str, Mapping[str, float]],
        run_dirs: Mapping[str, Path],
        directory: Path,
    ) -> Path:
        """The summary of ``au-lightning cv`` in ``directory``, from each fold's test scores
        (and run directory); returns the markdown table, which cv prints. The default: per-AU
        F1 per fold and the means over folds (:func:`au_lightning.reports.write_cv_results`)."""
        md, *_ = write_cv_results(per_fold, self.aus, directory)
        return md

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"probs": torch.sigmoid(self(batch["image"]).float()), "index": batch["index"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    @property
    def run_dir(self) -> Path:
        """:func:`run_directory` of the Trainer."""
        return run_directory(self.trainer)


def run_directory(trainer: L.Trainer) -> Path:
    """The logger's directory (``lightning_logs/version_N``), or the Trainer's root
    directory without a logger: ``trainer.log_dir`` without its broadcast, so that rank 0
    alone may ask for it (under DDP ``trainer.log_dir`` is a collective, which would wait
    for ranks that never call it)."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    directory = logger.log_dir if isinstance(logger, (CSVLogger, TensorBoardLogger)) else None
    return Path(directory or logger.save_dir or trainer.default_root_dir)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` output to a CSV: path, subject, frame, ``p_AU<n>`` probabilities and
    ``AU<n>`` decisions at the model's thresholds (rows of the data module's
    ``predict_index``: the test split, or the images of ``data.predict_root``). Under DDP
    rank 0 writes every rank's rows.

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
        index = trainer.datamodule.predict_index
        rows = torch.cat([p["index"] for p in predictions]).cpu().numpy()
        probs = torch.cat([p["probs"] for p in predictions]).cpu().numpy()
        # under DDP each rank predicted its shard (in order): rank 0 writes them all
        shards = gather_objects((rows, probs))
        if not trainer.is_global_zero:
            return
        rows = np.concatenate([r for r, _ in shards])
        probs = np.concatenate([p for _, p in shards])
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
            path = run_directory(trainer) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
