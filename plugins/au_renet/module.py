"""RE-Net's LightningModules: AU occurrence (:class:`RENet`) and intensity
(:class:`RENetIntensity`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from au_lightning import (
    AUDataModule,
    AUIntensityMetrics,
    AUMethod,
    ConfigError,
    LossWeights,
    mean_over_folds,
    reports,
)
from au_renet.net import HEADS, Backbone, Head, RelationEmbeddedResNet
from au_renet.relation import MIN_ROW_SUM, check_relation, label_correlation, read_relation

__all__ = ["Graph", "RENet", "RENetIntensity", "TrainingStrategy"]

logger = logging.getLogger(__name__)

Graph = Literal["fixed", "learnable"]
TrainingStrategy = Literal["random", "all"]


class RENet(AUMethod):
    """RE-Net for AU occurrence (Yang & Yin, Sec. 3.4, 4.3-4.4, 4.6).

    Training runs the network for some AUs per batch and sums their losses (Eq. 6);
    evaluation and prediction run all C AUs in one batched pass
    (:meth:`RelationEmbeddedResNet.forward`). At the start of fitting the relation graph is
    computed from the training split's labels and written as ``relation.png`` and
    ``relation.csv`` (Fig. 2) into the run directory.

    Args:
        aus: the AUs, by set name or numbers.
        backbone: the ResNet whose BN layers become AU-specific (``resnet18`` in the paper).
        pretrained: ``True`` for ImageNet weights, or a weights file; every AU starts from
            the pretrained BN parameters.
        graph: ``fixed``, ω = the Pearson correlations of the training labels (Sec. 3.3),
            or ``learnable``, ω learned from a random start ("Ours+learnable", Table 7).
        strategy: ``random``, one random AU per batch (Sec. 3.4, the paper's choice: as fast
            as the baseline), or ``all`` (the default), every seen AU in every batch, losses
            summed; see the plugin README for the fit check behind the default.
        head: ``per_au`` (default), a C-way output layer whose row c AU c's pass reads
            (Sec. 4.6: with γ = 1, β = 0 RE-Net is then ResNet-18), or ``shared``, one
            logit every AU's pass reads; see :class:`RelationEmbeddedResNet`.
        unseen_aus: AUs whose labels are removed from training (new-AU recognition,
            Sec. 4.6, Table 6). Training never runs them; they are predicted through their
            graph-mixed γ, β (Eq. 5) and, with the ``per_au`` head, graph-mixed output rows.
            Their BN statistics, which no training pass updated, are estimated before each
            evaluation (see ``recalibrate_statistics``).
        unseen_relation: where the unseen AUs' rows and columns of a fixed ω come from
            (the seen AUs' part is always their training-label PCC). ``identity``
            (default): no edges, so nothing of their labels is used, and nothing transfers
            to them either; ``labels``: their PCC with the seen AUs on the training frames
            (the paper's graph, Sec. 3.3; it reads the unseen AUs' training labels: their
            pairwise co-occurrence with every seen AU, though never a per-frame label in
            the loss); or the path of a relation CSV (as ``relation.csv`` of a run, e.g.
            computed on other subjects or another dataset), whose rows and columns for the
            unseen AUs are used.
        recalibrate_statistics: re-estimate every AU's BN running statistics with the
            current weights before each evaluation ("precise BN"; not in the paper). With
            ``strategy: random`` an AU's statistics move only in the 1 step of C that draws
            it, so its exponential average spans C times as many weight updates as the
            baseline's and lags behind them. False (the paper's plain BN): the seen AUs
            keep their training averages; only the unseen AUs' are estimated.
        calibration_batches: unlabelled training batches for those estimates.
        thresholds, threshold_search, lr, weight_decay, loss_weights: see
            :class:`au_lightning.AUMethod`; lr 1e-4 with Adam as in Sec. 4.3.
    """

    #: outputs per AU: one occurrence logit
    outputs: ClassVar[int] = 1

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        backbone: Backbone = "resnet18",
        pretrained: bool | str = False,
        graph: Graph = "fixed",
        strategy: TrainingStrategy = "all",
        head: Head = "per_au",
        unseen_aus: list[int] | None = None,
        unseen_relation: str = "identity",
        recalibrate_statistics: bool = False,
        calibration_batches: int = 20,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        loss_weights: LossWeights = "none",
    ) -> None:
        super().__init__(aus, thresholds, threshold_search, lr, weight_decay, loss_weights)
        self.save_hyperparameters()
        if graph not in ("fixed", "learnable"):
            raise ConfigError(f"model.graph must be fixed or learnable, got {graph!r}")
        if strategy not in ("random", "all"):
            raise ConfigError(f"model.strategy must be random or all, got {strategy!r}")
        if head not in HEADS:
            raise ConfigError(f"model.head must be {' or '.join(HEADS)}, got {head!r}")
        if unseen_relation not in ("identity", "labels") and not Path(unseen_relation).is_file():
            raise ConfigError(
                "model.unseen_relation must be identity, labels or the path of a relation "
                f"CSV; {unseen_relation!r} is neither"
            )
        unknown = [a for a in unseen_aus or [] if a not in self.aus]
        if unknown:
            raise ConfigError(f"model.unseen_aus {unknown} are not among the AUs {self.aus}")
        self.unseen = [self.aus.index(a) for a in unseen_aus or []]
        self.seen = [c for c in range(len(self.aus)) if c not in self.unseen]
        if not self.seen:
            raise ConfigError("model.unseen_aus leaves no AU to train on")
        if calibration_batches < 1:
            raise ConfigError(f"model.calibration_batches must be >= 1, got {calibration_batches}")
        self.net = RelationEmbeddedResNet(
            len(self.aus), backbone, pretrained, graph == "learnable", self.outputs, head,
            self.unseen,
        )  # fmt: skip
        # whether the estimated BN statistics match the current weights (saved, so that
        # testing a checkpoint does not estimate them again)
        self.register_buffer("statistics_current", torch.tensor(False))
        self.training_relation: np.ndarray | None = None

    # -- template hooks -----------------------------------------------------------------------

    def relation_labels(self, datamodule: AUDataModule) -> np.ndarray:
        """The training split's labels the graph is computed from (occurrence here)."""
        return datamodule.index.occurrence[datamodule.train_rows]

    def targets(self, batch: dict[str, Any]) -> Tensor:
        """The labels ``(B, C)`` the losses and metrics compare with."""
        return batch["occurrence"]

    def au_loss(self, outputs: Tensor, target: Tensor, au: int) -> Tensor:
        """The loss of one AU (position ``au``): outputs ``(B, outputs)``, target ``(B,)``;
        the masked BCE of Eq. 6, weighted as ``loss_weights`` says."""
        return self.label_loss(outputs, target[:, None], [au])

    # -- training -----------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, C)`` of every AU, in one batched pass."""
        return self.net(images)[..., 0]

    def training_aus(self) -> list[int]:
        """The AUs of this batch's pass: a random seen AU, or all seen AUs (Sec. 3.4)."""
        if self.hparams.strategy == "all":
            return self.seen
        return [self.seen[int(torch.randint(len(self.seen), ()))]]

    def pass_loss(self, batch: dict[str, Any]) -> Tensor:
        """One training pass over :meth:`training_aus` and its loss, Eq. 6 summed over them."""
        aus = self.training_aus()
        outputs = self.net(batch["image"], aus)
        target = self.targets(batch)
        return sum(self.au_loss(outputs[:, k], target[:, c], c) for k, c in enumerate(aus))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.pass_loss(batch)
        self.statistics_current.fill_(False)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or datamodule is None or getattr(datamodule, "index", None) is None:
            return
        self.set_training_relation(self.relation_labels(datamodule))

    def training_relation_from(self, labels: np.ndarray) -> np.ndarray:
        """ω of Sec. 3.3 from the training labels ``(N, C)``: the seen AUs' PCC, and the
        unseen AUs' rows and columns as ``unseen_relation`` says (``identity``: their
        labels are not read)."""
        if self.hparams.unseen_relation == "labels" or not self.unseen:
            return label_correlation(labels, self.aus)
        omega = np.eye(len(self.aus))
        seen = np.array(self.seen)
        seen_aus = [self.aus[c] for c in self.seen]
        omega[np.ix_(seen, seen)] = label_correlation(np.asarray(labels)[:, seen], seen_aus)
        if self.hparams.unseen_relation != "identity":
            prior = read_relation(Path(self.hparams.unseen_relation), self.aus)
            unseen = np.array(self.unseen)
            omega[unseen, :] = prior[unseen, :]
            omega[:, unseen] = prior[:, unseen]
        np.fill_diagonal(omega, 1.0)
        return omega

    def set_training_relation(self, labels: np.ndarray) -> np.ndarray:
        """What :meth:`setup` does at the start of fitting: ω from the training labels
        ``(N, C)`` (:meth:`training_relation_from`), checked and set as the fixed graph
        (a learnable graph keeps its random start). Returns ω."""
        self.training_relation = self.training_relation_from(labels)
        if self.hparams.graph == "fixed":
            check_relation(self.training_relation, self.aus)
            self.net.graph.set_relation(torch.from_numpy(self.training_relation))
        return self.training_relation

    def on_fit_start(self) -> None:
        if self.training_relation is not None and self.trainer.is_global_zero:
            self.write_relation(self.training_relation, "relation", "AU relation (training PCC)")

    def on_fit_end(self) -> None:
        if self.hparams.graph == "learnable" and self.trainer.is_global_zero:
            learned = self.net.graph().detach().cpu().numpy()
            self.write_relation(learned, "relation_learned", "AU relation (learned)")
            guarded = [f"AU{a}" for a, s in zip(self.aus, learned.sum(1), strict=True)
                       if s <= MIN_ROW_SUM + 1e-6]  # fmt: skip
            if guarded:
                logger.warning(
                    "the learned relation rows of %s reached the row-sum guard (%g): their "
                    "off-diagonal weights were raised to keep Eq. 5's denominator positive",
                    ", ".join(guarded),
                    MIN_ROW_SUM,
                )

    def write_relation(self, relation: np.ndarray, stem: str, title: str) -> Path:
        """``<stem>.png`` (the heatmap of Fig. 2) and ``<stem>.csv`` in the run directory."""
        rows = [["AU", *(f"AU{a}" for a in self.aus)]]
        rows += [
            [f"AU{a}", *(f"{v:.4f}" for v in row)]
            for a, row in zip(self.aus, relation, strict=True)
        ]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"{stem}.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
        return reports.relation_heatmap(relation, self.aus, self.run_dir / f"{stem}.png", title)

    # -- BN statistics estimated before evaluation (Sec. 4.6 and precise BN) ------------------

    def calibrated_aus(self) -> list[int]:
        """The AU positions whose BN statistics are estimated before evaluation: all with
        ``recalibrate_statistics``, else the unseen AUs, which training never ran."""
        return list(range(len(self.aus))) if self.hparams.recalibrate_statistics else self.unseen

    def estimate_statistics(self) -> None:
        """Estimate the :meth:`calibrated_aus`' BN statistics on unlabelled training batches
        (the random state is left as it was, so training continues as without this)."""
        aus = self.calibrated_aus()
        if not aus:
            return
        with torch.random.fork_rng():
            loader = self.trainer.datamodule.train_dataloader()
            batches = (
                b["image"].to(self.device) for b in islice(loader, self.hparams.calibration_batches)
            )
            used = self.net.estimate_statistics(batches, aus)
        self.statistics_current.fill_(True)
        logger.info("BN statistics of %d AUs estimated from %d training batches", len(aus), used)

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.estimate_statistics()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        if not bool(self.statistics_current):
            self.estimate_statistics()


class RENetIntensity(RENet):
    """RE-Net for AU intensity (Sec. 4.5): six intensity-level logits per AU, trained with
    cross-entropy over the known levels, the graph built from the intensity labels; the
    prediction is the most likely level, scored by ICC(3,1) and MAE per AU.

    Args:
        aus: the intensity AUs (``bp4d_intensity``: BP4D's 5; ``disfa``: DISFA's 12).
        levels: intensity levels (0..5 in FACS, so 6).
        backbone, pretrained, graph, strategy, head, unseen_aus, unseen_relation,
            recalibrate_statistics, calibration_batches, lr, weight_decay: see
            :class:`RENet`.
    """

    outputs: ClassVar[int] = 6

    def __init__(
        self,
        aus: str | list[int] = "bp4d_intensity",
        backbone: Backbone = "resnet18",
        pretrained: bool | str = False,
        graph: Graph = "fixed",
        strategy: TrainingStrategy = "all",
        head: Head = "per_au",
        unseen_aus: list[int] | None = None,
        unseen_relation: str = "identity",
        recalibrate_statistics: bool = False,
        calibration_batches: int = 20,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            aus, backbone, pretrained, graph, strategy=strategy, head=head,
            unseen_aus=unseen_aus, unseen_relation=unseen_relation,
            recalibrate_statistics=recalibrate_statistics,
            calibration_batches=calibration_batches, lr=lr, weight_decay=weight_decay,
        )  # fmt: skip
        self.save_hyperparameters()
        self.val_intensity = AUIntensityMetrics(self.aus)
        self.test_intensity = AUIntensityMetrics(self.aus)

    def relation_labels(self, datamodule: AUDataModule) -> np.ndarray:
        """The training split's intensity labels (Sec. 4.5)."""
        index = datamodule.index
        if index.intensity is None:
            raise ConfigError(
                "renet-intensity needs intensity labels; read a dataset that has them "
                "(bp4d with reader_options {intensity: true}, disfa)"
            )
        return index.intensity[datamodule.train_rows]

    def targets(self, batch: dict[str, Any]) -> Tensor:
        if "intensity" not in batch:
            raise ConfigError("renet-intensity needs batches with intensity labels")
        return batch["intensity"].long()

    def au_loss(self, outputs: Tensor, target: Tensor, au: int) -> Tensor:
        """Cross-entropy over the levels of the frames whose level is known (-1 unknown)."""
        if not (target >= 0).any():
            return outputs.sum() * 0.0
        return F.cross_entropy(outputs, target, ignore_index=-1)

    def forward(self, images: Tensor) -> Tensor:
        """Level logits ``(B, C, levels)`` of every AU, in one batched pass."""
        return self.net(images)

    def predict_levels(self, images: Tensor) -> Tensor:
        """The most likely intensity level ``(B, C)`` of each AU."""
        return self(images).argmax(-1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_intensity.update(self.predict_levels(batch["image"]), self.targets(batch))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.test_intensity.update(self.predict_levels(batch["image"]), self.targets(batch))

    def on_validation_epoch_end(self) -> None:
        self.log_scores(self.val_intensity, "val")

    def on_test_epoch_end(self) -> None:
        scores = self.log_scores(self.test_intensity, "test")
        if self.trainer.is_global_zero:
            reports.write_table(self.intensity_rows({"": scores}), self.run_dir, "test")

    def intensity_rows(self, runs: Mapping[str, Mapping[str, float]]) -> list[list[str]]:
        """Rows ``AU, ICC <run>..., MAE <run>...`` (ICC(3,1); a comma would split the CSV
        header) and a mean row, from each run's ``icc_AU<n>``, ``mae_AU<n>`` scores."""
        names = [f" {name}".rstrip() for name in runs]
        rows = [["AU", *(f"ICC{n}" for n in names), *(f"MAE{n}" for n in names)]]
        for au in [*(f"AU{a}" for a in self.aus), "mean"]:
            rows.append(
                [au]
                + [f"{scores[f'icc_{au}']:.3f}" for scores in runs.values()]
                + [f"{scores[f'mae_{au}']:.3f}" for scores in runs.values()]
            )
        return rows

    def write_cv_report(
        self,
        per_fold: Mapping[str, Mapping[str, float]],
        run_dirs: Mapping[str, Path],
        directory: Path,
    ) -> Path:
        """ICC(3,1) and MAE per AU in each fold and their means over the folds (the AU means
        of a fold are over its AUs; the fold means, over the folds that have a value)."""
        runs = {**per_fold, "mean": mean_over_folds(list(per_fold.values()))}
        md, _ = reports.write_table(self.intensity_rows(runs), directory, "cv")
        return md

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"levels": self.predict_levels(batch["image"]), "index": batch["index"]}
