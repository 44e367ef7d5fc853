"""Hybrid: the LightningModule that trains the CNN, the LSTMs and the fusion in turn."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from au_hybrid.net import ANetInit, Backbone, HybridNet
from au_hybrid.results import HEADS, Head, event_scores, hybrid_table, moving_average
from au_lightning import (
    AUDetectionMetrics,
    AUMethod,
    ConfigError,
    gather_objects,
    masked_bce,
    max_margin_loss,
    mean_over_folds,
    reports,
)
from au_lightning.data import SequenceDataModule, SequenceInput, Split

logger = logging.getLogger(__name__)

Stage = Literal["cnn", "lstm", "fusion"]
STAGES: tuple[Stage, ...] = ("cnn", "lstm", "fusion")
#: the head whose output each stage trains
STAGE_HEAD: dict[Stage, Head] = {"cnn": "cnn", "lstm": "lstm", "fusion": "fused"}
#: where the fusion's training inputs come from: the validation subjects, on which neither
#: the CNN nor the LSTMs trained (the default), or the training frames (the paper's set-up)
FusionInputs = Literal["validation", "train"]


@dataclass
class FrameFeatures:
    """One split's per-frame CNN outputs, computed once the CNN is trained: PCA-reduced
    features (n, d) and CNN logits (n, L), looked up by FrameIndex row."""

    position: np.ndarray  # row -> position in the tensors, -1 for rows not in the split
    features: Tensor
    logits: Tensor

    def lookup(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        at = torch.from_numpy(self.position[rows.cpu().numpy()])
        if (at < 0).any():
            raise RuntimeError("a window holds a row outside its split's extracted frames")
        return self.features[at], self.logits[at]


@dataclass
class FusionSet:
    """The fusion network's training set (Sec. 3.3) when it trains on held-out outputs:
    every frame of the split's whole videos, with the CNN's logits (``spatial``) and the
    LSTMs' scores over the whole video (``temporal``, as at test time), each (N, L), the
    labels (N, L, -1 unknown) and the frames' FrameIndex ``rows`` of ``split``."""

    split: Split
    rows: np.ndarray
    spatial: Tensor
    temporal: Tensor
    target: Tensor


class Hybrid(AUMethod):
    """The hybrid network of Chu, De la Torre & Cohn, trained in the paper's three stages
    within one ``fit``: the first ``cnn_epochs`` train the CNN on frames (Eq. 1, the
    configured batch sampler, e.g. MOMU); then its features are extracted once, the PCA is
    fitted on the training frames, and ``lstm_epochs`` train the LSTMs on windows with the
    max-margin loss; the last ``fusion_epochs`` train the fusion network (Eq. 1) on the
    frozen CNN's and LSTMs' scores. ``trainer.max_epochs`` must be their sum.

    By default (``fusion_inputs: validation``, a deviation) the fusion trains on the
    validation subjects' CNN and LSTM outputs, from models that never trained on those
    subjects: on their own training frames the CNN's outputs are over-confident, so a fusion
    fitted there learns to trust the CNN more than it should on new subjects. Each fusion
    step takes a share of the validation frames (every frame once per epoch), and with no
    held-out data left the fusion keeps its last epoch (its ``val/fused`` scores are then
    scores on its own training data). ``fusion_inputs: train`` is the paper's set-up: the
    training windows' outputs, and the best validation epoch.

    Each stage keeps the weights of its best validation epoch (the F1 of its own head), so
    the final checkpoint holds the selected CNN, LSTMs and fusion; ``val/f1_mean`` is the
    F1 of the current stage's head. Testing scores every head on whole test videos: frame
    F1, accuracy and AUC, and event F1 (Ding et al.), in the format of Tables 1/2, and the
    temporal control ``cnn_smoothed``: the CNN's probabilities under a centred
    ``smooth_frames``-frame moving average within each video, which costs nothing and is
    what the LSTMs and the fusion must beat to show that they learned temporal cues.

    The data must be a :class:`au_lightning.data.SequenceDataModule`; the model tells it
    to serve frames in the CNN stage and windows afterwards.

    Args:
        aus: the AUs to detect.
        backbone: ``anet`` (the paper's) or a torchvision ResNet.
        pretrained: ResNets only: ImageNet weights or a weights file.
        in_size: the input side ANet is built for (the data's ``crop_size``; 176 in the paper).
        anet_init: ANet's initialisation: ``he`` (He et al., Caffe's ``msra`` filler; the
            paper states none, a deviation) or ``pytorch`` (PyTorch's default, under which
            ANet's activations shrink to SD 0.01 at the logits; see :class:`ANet`).
        cnn_epochs, lstm_epochs, fusion_epochs: epochs of each stage (0 skips a stage whose
            weights come from ``init_from``).
        init_from: a checkpoint of an earlier hybrid run whose trained stages (and PCA) are
            loaded before fitting, e.g. its CNN, to train only the LSTMs and fusion.
        cnn_optimizer, cnn_lr, cnn_momentum, cnn_weight_decay: stage 1 (Sec. 4.2: SGD, lr
            1e-3, momentum 0.9, weight decay 5e-4).
        pca_components, pca_energy: the PCA output size (1024 in the paper) and, if set,
            the energy to preserve with the fewest components (at most ``pca_components``).
        pca_standardize: scale each PCA component to SD 1 on the training frames (PCA
            whitening; a deviation, the paper does not): the components of L2-normalised
            fc7 features have SDs of about 0.005, too small for the LSTMs' input.
        lstm_hidden, lstm_layers, lstm_dropout: 256 cells, 3 LSTMs, dropout 0.5 (Sec. 3.2).
        margin: λ of the max-margin loss (0.5).
        lstm_lr, lstm_rms_decay: RMSProp (Sec. 4.2: "learning rate of 1e-3, momentum of 0.9
            ... and RMSProp"). The paper used Caffe, whose RMSProp solver refuses momentum; its
            0.9 is read as RMSProp's decay of the squared-gradient average (PyTorch's
            ``alpha``), with no momentum. (RMSProp with momentum 0.9 at 1e-3 does not learn
            even a separable toy task.) The paper's "weight decay 0.97" reads as a
            learning-rate decay and is not applied.
        fusion_hidden, fusion_lr: the fusion network's first layer width and Adam's rate
            (not given in the paper).
        fusion_inputs: ``validation`` (held-out outputs, the default) or ``train`` (the
            paper's), see above.
        smooth_frames: the window (odd) of the ``cnn_smoothed`` control; 0 leaves it out.
        thresholds: decision threshold on the CNN's and fusion's probabilities (the LSTMs'
            tanh scores s are read as probabilities (s + 1) / 2).
    """

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        backbone: Backbone = "anet",
        pretrained: bool | str = False,
        in_size: int = 176,
        cnn_epochs: int = 4,
        lstm_epochs: int = 4,
        fusion_epochs: int = 2,
        init_from: str | None = None,
        cnn_optimizer: Literal["sgd", "adam"] = "sgd",
        cnn_lr: float = 1e-3,
        cnn_momentum: float = 0.9,
        cnn_weight_decay: float = 5e-4,
        pca_components: int = 1024,
        pca_energy: float | None = None,
        pca_standardize: bool = True,
        lstm_hidden: int = 256,
        lstm_layers: int = 3,
        lstm_dropout: float = 0.5,
        margin: float = 0.5,
        lstm_lr: float = 1e-3,
        lstm_rms_decay: float = 0.9,
        fusion_hidden: int = 64,
        fusion_lr: float = 1e-3,
        fusion_inputs: FusionInputs = "validation",
        smooth_frames: int = 9,
        anet_init: ANetInit = "he",
        thresholds: float | list[float] = 0.5,
    ) -> None:
        super().__init__(aus, thresholds, False, cnn_lr, cnn_weight_decay, "none")
        for name, value in (
            ("cnn_epochs", cnn_epochs),
            ("lstm_epochs", lstm_epochs),
            ("fusion_epochs", fusion_epochs),
        ):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if pca_energy is not None and not 0 < pca_energy <= 1:
            raise ConfigError(f"pca_energy must be in (0, 1], got {pca_energy}")
        if fusion_inputs not in ("validation", "train"):
            raise ConfigError(f"fusion_inputs must be validation or train, got {fusion_inputs!r}")
        odd = isinstance(smooth_frames, int) and smooth_frames > 0 and smooth_frames % 2 == 1
        if not odd and smooth_frames != 0:
            raise ConfigError(
                f"smooth_frames must be an odd number of frames (or 0), got {smooth_frames!r}"
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = HybridNet(
            len(self.aus),
            backbone,
            pretrained,
            in_size,
            pca_components,
            lstm_hidden,
            lstm_layers,
            lstm_dropout,
            fusion_hidden,
            anet_init,
        )
        self.epochs: dict[Stage, int] = dict(
            zip(STAGES, (cnn_epochs, lstm_epochs, fusion_epochs), strict=True)
        )
        # which stages hold trained weights (saved with the checkpoint)
        self.register_buffer("trained", torch.zeros(len(STAGES), dtype=torch.bool))
        self.val_heads = nn.ModuleDict({h: AUDetectionMetrics(self.aus, thresholds) for h in HEADS})
        self.test_heads = nn.ModuleDict(
            {h: AUDetectionMetrics(self.aus, thresholds) for h in HEADS}
        )
        self._features: dict[Split, FrameFeatures] = {}
        self._updated: set[Head] = set()
        self._events: dict[Head, list[Tensor]] = {}
        self._event_targets: list[Tensor] = []
        self._event_videos: list[Tensor] = []
        self._best: dict[Stage, tuple[float, dict[str, Tensor]]] = {}
        self._pca_epoch: int | None = None
        self._fusion_set: FusionSet | None = None

    # -- stages ------------------------------------------------------------------------------

    def stage_of(self, epoch: int) -> Stage:
        """The stage that trains in ``epoch``."""
        if epoch < self.epochs["cnn"]:
            return "cnn"
        return "lstm" if epoch < self.epochs["cnn"] + self.epochs["lstm"] else "fusion"

    def is_trained(self, stage: Stage) -> bool:
        return bool(self.trained[STAGES.index(stage)])

    @property
    def stage(self) -> Stage:
        return self.stage_of(self.trainer.current_epoch)

    def _fitting(self) -> bool:
        return self._trainer is not None and self.trainer.state.fn == "fit"

    def sequence_input(self, stage: str) -> SequenceInput:
        """What the :class:`SequenceDataModule` serves: frames while the CNN trains, windows
        (whole videos for evaluation) otherwise."""
        if self._fitting() and stage in ("train", "val"):
            return "frames" if self.stage == "cnn" else "windows"
        return "windows"

    def final_head(self) -> Head:
        """The head of the latest trained stage: what ``predict`` outputs."""
        for stage in reversed(STAGES):
            if self.is_trained(stage):
                return STAGE_HEAD[stage]
        return "cnn"

    # -- Lightning hooks ----------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, SequenceDataModule):
            raise ConfigError(
                "the hybrid model needs data of class au_lightning.data.SequenceDataModule "
                f"(frames and video windows), got {type(datamodule).__name__}"
            )
        if stage != "fit":
            return
        total = sum(self.epochs.values())
        if self.trainer.fast_dev_run:
            logger.warning("fast_dev_run: only the first batches of the CNN stage run")
        elif self.trainer.max_epochs != total:
            raise ConfigError(
                f"trainer.max_epochs is {self.trainer.max_epochs}, but the hybrid stages take "
                f"cnn_epochs + lstm_epochs + fusion_epochs = {total}; set them alike"
            )

    def on_fit_start(self) -> None:
        model = self.trainer.model
        if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
            raise ConfigError(
                "the hybrid model trains one stage's parameters per step, and DDP must be told "
                "the others are unused: set trainer.strategy ddp_find_unused_parameters_true "
                "(or ddp_spawn_find_unused_parameters_true)"
            )
        # a resumed run keeps its own weights and does not need the file it started from
        if self.hparams.init_from and self.trainer.ckpt_path is None:
            self._load_stages(Path(self.hparams.init_from))
        for stage in STAGES[1:]:
            before = STAGES[STAGES.index(stage) - 1]
            if self.epochs[stage] and not (self.epochs[before] or self.is_trained(before)):
                raise ConfigError(
                    f"the {stage} stage needs a trained {before} stage: set {before}_epochs "
                    f"> 0, or init_from a run whose {before} stage is trained"
                )
        # the loaders change with the stage (frames, then windows)
        self.trainer.reload_dataloaders_every_n_epochs = 1
        self._features.clear()
        self._fusion_set = None
        held_out = self.epochs["fusion"] and self.hparams.fusion_inputs == "validation"
        if held_out and len(self.trainer.datamodule.split("val")[1]) == 0:
            raise ConfigError(
                "fusion_inputs 'validation' trains the fusion on the validation subjects, "
                "and this data has none: set data.val_strategy subjects (and "
                "val_fraction > 0), or model.fusion_inputs train"
            )

    def _load_stages(self, path: Path) -> None:
        """Load the network (CNN, PCA, LSTMs, fusion) and trained stages of a hybrid run."""
        if not path.is_file():
            raise FileNotFoundError(f"init_from: checkpoint not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
        wanted = {k for k in self.state_dict() if k.startswith("net.")} | {"trained"}
        given = {k: v for k, v in state.items() if k in wanted}
        if "net.pca.components" in given and "net.pca.scale" not in given:
            # a run from before PCA standardisation: its LSTMs read unscaled components
            given["net.pca.scale"] = torch.ones(len(given["net.pca.components"]))
        mine = self.state_dict()
        missing = sorted(wanted - given.keys())
        wrong = sorted(k for k in given if given[k].shape != mine[k].shape)
        if missing or wrong:
            raise ConfigError(
                f"init_from: {path} is not a checkpoint of a hybrid run with this model's "
                f"backbone, AUs and sizes (missing {missing[:3]}, other shapes {wrong[:3]})"
            )
        self.load_state_dict(given, strict=False)
        trained = [s for s in STAGES if self.is_trained(s)]
        logger.info("init_from %s: trained stages %s", path, trained)

    def share_rank_zero_statistics(self) -> None:
        """Under DDP, give every rank rank 0's buffers (BN running statistics, PCA). DDP
        copies them only before a training forward, so each rank's statistics follow its own
        last batch; the features the CNN extracts in evaluation mode must not."""
        if self.trainer.world_size == 1:
            return
        state = self.trainer.strategy.broadcast({k: v.cpu() for k, v in self.net.named_buffers()})
        with torch.no_grad():
            for name, buffer in self.net.named_buffers():
                buffer.copy_(state[name])

    def on_validation_epoch_start(self) -> None:
        self.share_rank_zero_statistics()

    def on_train_epoch_start(self) -> None:
        self.share_rank_zero_statistics()
        stage = self.stage
        epoch = self.trainer.current_epoch
        if stage == "lstm" and epoch == self.epochs["cnn"] and self._pca_epoch != epoch:
            # the LSTM stage starts: features of the final CNN, PCA fitted on them
            self._features.clear()
            self._fit_pca()
        if stage == "fusion":  # built on first use, from the selected CNN and LSTMs
            self._fusion_set = None

    def _fit_pca(self) -> None:
        """Fit the PCA on the training frames' features; keep them, reduced, for the LSTMs."""
        rows, features, logits = self._extract("train")
        self.net.pca.fit(
            features.to(self.device), self.hparams.pca_energy, self.hparams.pca_standardize
        )
        self._pca_epoch = self.trainer.current_epoch
        self._features.clear()
        self._store("train", rows, features, logits)
        logger.info(
            "PCA on %d training frames: %d components, %.1f%% energy",
            len(rows),
            int(self.net.pca.num_components),
            100 * float(self.net.pca.explained_energy),
        )

    # -- features ----------------------------------------------------------------------------

    @torch.no_grad()
    def _extract(self, split: Split) -> tuple[np.ndarray, Tensor, Tensor]:
        """The split's rows with the CNN's features and logits, on the evaluation transform
        (float32 also when the CNN ran under autocast)."""
        datamodule: SequenceDataModule = self.trainer.datamodule
        _, rows = datamodule.split(split)
        training = self.net.cnn.training
        self.net.cnn.eval()
        features, logits = [], []
        for batch in datamodule.frame_loader(split):
            # outside the loops: the Trainer's input conversion (e.g. float64) is done here
            images = self.trainer.precision_plugin.convert_input(batch["image"])
            f, z = self.net.cnn(images.to(self.device))
            features.append(f.float())
            logits.append(z.float())
        self.net.cnn.train(training)
        return rows, torch.cat(features), torch.cat(logits)

    def frame_features(self, split: Split) -> FrameFeatures:
        """The split's PCA-reduced features and CNN logits (extracted on first use)."""
        if split not in self._features and not self.net.pca.fitted:
            self._fit_pca()
        if split not in self._features:
            self._store(split, *self._extract(split))
        return self._features[split]

    @torch.no_grad()
    def _store(self, split: Split, rows: np.ndarray, features: Tensor, logits: Tensor) -> None:
        index, _ = self.trainer.datamodule.split(split)
        position = np.full(len(index), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        # the projection in float32 wherever it runs (under autocast the matmul would be bf16)
        with torch.autocast(features.device.type, enabled=False):
            reduced = self.net.pca(features.float())
        self._features[split] = FrameFeatures(position, reduced, logits)

    def heads(self, split: Split, rows: Tensor) -> dict[Head, Tensor]:
        """Every head's output (B, T, L) for windows of ``rows`` (B, T) of ``split``, from
        the extracted features; the LSTMs in evaluation mode (no dropout)."""
        features, cnn = self.frame_features(split).lookup(rows)
        training = self.net.lstm.training
        self.net.lstm.eval()
        with torch.no_grad():
            lstm = self.net.lstm(features)
        self.net.lstm.train(training)
        return {"cnn": cnn, "lstm": lstm, "fused": self.net.fusion(cnn, lstm)}

    @torch.no_grad()
    def fusion_set(self) -> FusionSet:
        """The fusion's held-out training set: the CNN's logits and the LSTMs' scores for
        every frame of the validation subjects' whole videos (models that never trained on
        those subjects), built once per fit from the selected CNN and LSTMs."""
        if self._fusion_set is None:
            datamodule: SequenceDataModule = self.trainer.datamodule
            index, _ = datamodule.split("val")
            segments = datamodule.segments("val")
            spatial, temporal = [], []
            for segment in segments:
                out = self.heads("val", torch.from_numpy(segment)[None])
                spatial.append(out["cnn"][0])  # the dtypes the training windows' would have
                temporal.append(out["lstm"][0])
            rows = np.concatenate(segments)
            target = torch.from_numpy(index.occurrence[rows].astype(np.int64))
            self._fusion_set = FusionSet(
                "val", rows, torch.cat(spatial), torch.cat(temporal), target.to(self.device)
            )
        return self._fusion_set

    def _fusion_step_frames(self, batch_idx: int, count: int) -> Tensor:
        """Positions in the fusion set of training step ``batch_idx``: one of the epoch's
        shares of a permutation of every frame, the same on every DDP rank (seeded by the
        epoch), so that the ranks' averaged gradient is one process's."""
        steps = self.trainer.num_training_batches
        steps = int(steps) if math.isfinite(steps) and steps >= 1 else 1
        generator = torch.Generator().manual_seed(self.trainer.current_epoch)
        order = torch.randperm(count, generator=generator)
        return order.tensor_split(min(steps, count))[batch_idx % min(steps, count)]

    # -- training ----------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        stage = self.stage
        optimizer = self.optimizers()[STAGES.index(stage)]
        if stage == "cnn":
            loss = masked_bce(self.net.cnn(batch["image"])[1], batch["occurrence"])
            size = len(batch["image"])
        else:
            target, mask = batch["occurrence"], batch["loss_mask"]
            size = len(target)
            if stage == "lstm":
                features, _ = self.frame_features("train").lookup(batch["rows"])
                scores = self.net.lstm(features)  # bf16 under autocast: the loss in float32
                loss = max_margin_loss(scores.float(), target, self.hparams.margin, mask)
            elif self.hparams.fusion_inputs == "validation":
                held_out = self.fusion_set()
                at = self._fusion_step_frames(batch_idx, len(held_out.rows))
                fused = self.net.fusion(held_out.spatial[at], held_out.temporal[at])
                loss = masked_bce(fused, held_out.target[at])
                size = len(at)
            else:
                fused = self.heads("train", batch["rows"])["fused"]
                loss = masked_bce(fused[mask], target[mask])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.trained[STAGES.index(stage)] = True
        self.log(f"train/{stage}_loss", loss, prog_bar=True, on_epoch=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        cnn = self.net.cnn.parameters()
        if hp.cnn_optimizer == "sgd":
            cnn_opt: torch.optim.Optimizer = torch.optim.SGD(
                cnn, lr=hp.cnn_lr, momentum=hp.cnn_momentum, weight_decay=hp.cnn_weight_decay
            )
        else:
            cnn_opt = torch.optim.Adam(cnn, lr=hp.cnn_lr, weight_decay=hp.cnn_weight_decay)
        lstm_opt = torch.optim.RMSprop(
            self.net.lstm.parameters(), lr=hp.lstm_lr, alpha=hp.lstm_rms_decay
        )
        fusion_opt = torch.optim.Adam(self.net.fusion.parameters(), lr=hp.fusion_lr)
        return [cnn_opt, lstm_opt, fusion_opt]

    # -- evaluation --------------------------------------------------------------------------

    @staticmethod
    def probabilities(head: Head, output: Tensor) -> Tensor:
        """A head's output as per-AU probabilities: sigmoid of logits, (s + 1) / 2 of the
        LSTMs' tanh scores."""
        return (output + 1) / 2 if head == "lstm" else torch.sigmoid(output)

    def _window_heads(self, batch: dict[str, Any], split: Split) -> dict[Head, Tensor]:
        """The trained heads' probabilities (T, L) for one whole video (batch of 1)."""
        outputs = self.heads(split, batch["rows"])
        trained = {"cnn": True, "lstm": self.is_trained("lstm"), "fused": self.is_trained("fusion")}
        if self._fitting():  # the stage in training is scored from its first epoch
            trained[STAGE_HEAD[self.stage]] = True
        probs = {h: self.probabilities(h, o[0].float()) for h, o in outputs.items() if trained[h]}
        if self.hparams.smooth_frames:  # the temporal control: one whole video per batch
            probs["cnn_smoothed"] = moving_average(probs["cnn"], self.hparams.smooth_frames)
        return probs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "image" in batch:  # the CNN stage validates on frames
            probs = {"cnn": torch.sigmoid(self.net.cnn(batch["image"])[1].float())}
            target = batch["occurrence"]
        else:
            probs, target = self._window_heads(batch, "val"), batch["occurrence"][0]
        for head, p in probs.items():
            self.val_heads[head].update(p, target)
            self._updated.add(head)

    def on_validation_epoch_end(self) -> None:
        scores = {h: self.log_scores(self.val_heads[h], f"val/{h}") for h in sorted(self._updated)}
        self._updated.clear()
        if not self._fitting() or not scores:
            return
        stage = self.stage
        f1 = scores[STAGE_HEAD[stage]]["f1_mean"]
        self.log("val/f1_mean", f1, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self._keep_best(stage, f1)

    def _stage_module(self, stage: Stage) -> nn.Module:
        return {"cnn": self.net.cnn, "lstm": self.net.lstm, "fusion": self.net.fusion}[stage]

    def _keep_best(self, stage: Stage, f1: float) -> None:
        """Remember the stage's best weights by its validation F1; at the stage's last epoch,
        restore them (before the epoch's checkpoint is written)."""
        best = self._best.get(stage)
        # a fusion trained on the validation subjects has no held-out data: its last epoch
        latest = stage == "fusion" and self.hparams.fusion_inputs == "validation"
        # ties go to the later epoch (F1 is often 0 for every early epoch of a skewed AU set)
        if (
            best is None
            or latest
            or (not math.isnan(f1) and (math.isnan(best[0]) or f1 >= best[0]))
        ):
            state = {
                k: v.detach().cpu().clone()
                for k, v in self._stage_module(stage).state_dict().items()
            }
            self._best[stage] = (f1, state)
        epoch = self.trainer.current_epoch
        last = sum(self.epochs[s] for s in STAGES[: STAGES.index(stage) + 1]) - 1
        if epoch == last:
            f1_best, state = self._best[stage]
            self._stage_module(stage).load_state_dict(state)
            logger.info("%s stage: kept the weights of validation F1 %.3f", stage, f1_best)
            if stage == "cnn":  # features of the CNN's last epoch are stale now
                self._features.clear()

    def on_test_start(self) -> None:
        self._features.clear()
        self._events = {h: [] for h in HEADS}
        self._event_targets, self._event_videos = [], []

    def on_predict_start(self) -> None:
        self._features.clear()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs, target = self._window_heads(batch, "test"), batch["occurrence"][0]
        thresholds = self.test_heads["cnn"].thresholds
        for head, p in probs.items():
            self.test_heads[head].update(p, target)
            self._events[head].append((p > thresholds).cpu())
        self._event_targets.append(target.cpu())
        # a video is named by its first FrameIndex row, unique across DDP ranks
        self._event_videos.append(torch.full((len(target),), int(batch["rows"][0, 0])))

    def _gathered_events(self) -> tuple[dict[Head, Tensor], Tensor, Tensor]:
        """Every rank's test videos (under DDP each rank scored its share): per-frame
        decisions per head, targets and video ids, concatenated in rank order."""
        local = (
            {h: torch.cat(e) for h, e in self._events.items() if e},
            torch.cat(self._event_targets),
            torch.cat(self._event_videos),
        )
        shards = gather_objects(local)
        heads = {h: torch.cat([events[h] for events, _, _ in shards]) for h in shards[0][0]}
        target = torch.cat([t for _, t, _ in shards])
        videos = torch.cat([v for _, _, v in shards])
        return heads, target, videos

    def on_test_epoch_end(self) -> None:
        decisions, target, videos = self._gathered_events()
        scores: dict[str, float] = {}
        for head in HEADS:
            if head not in decisions:
                continue
            frame = self.log_scores(self.test_heads[head], f"test/{head}")
            events = event_scores(decisions[head], target, videos, self.aus)
            self.log_dict({f"test/{head}/{k}": v for k, v in events.items()})
            scores |= {f"{head}/{k}": v for k, v in (frame | events).items()}
        final = self.final_head()
        self.log("test/f1_mean", scores[f"{final}/f1_mean"])
        if self.trainer.is_global_zero:
            reports.write_table(hybrid_table(scores, self.aus), self.run_dir, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        head = self.final_head()
        probs = self._window_heads(batch, "test")[head]
        return {"probs": probs, "index": batch["rows"][0]}

    def write_cv_report(
        self,
        per_fold: Mapping[str, Mapping[str, float]],
        run_dirs: Mapping[str, Path],
        directory: Path,
    ) -> Path:
        """The mean over folds of every head's frame and event F1, as in Tables 1/2."""
        mean = mean_over_folds(list(per_fold.values()))
        md, *_ = reports.write_table(hybrid_table(mean, self.aus), directory, "cv")
        return md

    def forward(self, images: Tensor) -> Tensor:
        """The CNN's per-AU logits (B, L) of independent images (B, 3, H, W): the spatial
        detector, whose output units Sec. 6 visualizes. The temporal heads need a whole
        video in frame order: ``self.net(frames)``."""
        return self.net.cnn(images)[1]
