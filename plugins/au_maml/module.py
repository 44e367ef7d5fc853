"""MAML and MAMLBaseline: the LightningModules (Lee et al. 2019, Alg. 1 and Sec. 3.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from au_lightning import (
    AdaptationRecord,
    AUMethod,
    ConfigError,
    EpisodeAccuracy,
    InnerLoop,
    InnerOptimizer,
    MetaBackend,
    check_meta_precision,
    fewshot_results,
)
from au_maml.net import Conv4

#: the batch-norm statistics used when adapting and scoring at evaluation
EvalBatchNorm = Literal["batch", "running"]

#: α, the default inner (and adaptation) learning rate of plain gradient descent (Alg. 1
#: line 8); the paper's 0.03 is for Adam (Sec. 4.2.1), see the plugin's README
INNER_LR = 0.03


def binary_bce(logits: Tensor, target: Tensor) -> Tensor:
    """The binary cross-entropy of Eq. 3 on logits (the sigmoid is folded in)."""
    return F.binary_cross_entropy_with_logits(logits.reshape(-1), target.reshape(-1).float())


def any_au_present(occurrence: Tensor) -> tuple[Tensor, Tensor]:
    """The baseline's labels (Sec. 3.3) of ``(B, L)`` labels (1, 0, -1 unknown): positive
    when any AU is present, negative when every AU is known absent; ``known`` is False for
    a frame with an unknown AU and none present."""
    positive = (occurrence == 1).any(1)
    return positive, positive | (occurrence == 0).all(1)


class AdaptiveDetector(AUMethod):
    """The part MAML and its baseline share: the Conv4 detector (Sec. 3.1) and the
    evaluation by adaptation (Sec. 4.2.2).

    Every evaluation episode starts from the trained weights θ, takes ``adapt_steps`` steps
    of ``inner_optimizer`` (default plain gradient descent, θ ← θ − α∇L as Alg. 1 line 8 and
    Eq. 1) with learning rate ``inner_lr`` on its K-shot set D[tea], and is scored on its
    balanced set D[te] after each step (0 = θ itself). θ, its gradients and its batch-norm
    statistics are left unchanged. Validation logs the accuracy at 0 and at ``adapt_steps``
    steps (``val/acc_step0``, ``val/acc``); test writes per task, shot count and step
    ``adaptation.csv`` and the Table 1-style ``test_results.md``, and prints it.

    ``adapt_lrs``: candidate adaptation learning rates. When given, every validation epoch
    adapts each validation episode with each of them, logs ``val/acc_lr<lr>`` for each,
    keeps the best by accuracy after ``adapt_steps`` steps as :attr:`adapt_lr` (a buffer,
    saved in checkpoints) and logs it as ``val/adapt_lr`` and its accuracy as ``val/acc``;
    test adapts with :attr:`adapt_lr`. Until a validation epoch has run, ``inner_lr`` is
    used. This tunes the baseline's adaptation on validation subjects before it is compared
    (the paper gives no adaptation settings for its baseline, Sec. 3.3).

    ``eval_bn``: ``batch`` (default) normalizes with the statistics of the batch at hand,
    D[tea] while adapting and D[te] when scoring, as in training and in Finn et al.'s MAML;
    ``running`` uses the running statistics, which MAML gathers from θ alone, and only when
    trained with ``eval_bn: running`` (one more forward per meta-step).
    """

    adapts_at_evaluation = True

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        image_size: int = 64,
        inner_lr: float = INNER_LR,
        inner_optimizer: InnerOptimizer = "sgd",
        adapt_steps: int = 5,
        eval_bn: EvalBatchNorm = "batch",
        backend: MetaBackend = "higher",
        lr: float = 0.03,
        weight_decay: float = 0.0,
        adapt_lrs: Sequence[float] | None = None,
    ) -> None:
        super().__init__(aus, lr=lr, weight_decay=weight_decay)
        if eval_bn not in ("batch", "running"):
            raise ConfigError(f"model.eval_bn must be batch or running, got {eval_bn!r}")
        if isinstance(adapt_steps, bool) or not isinstance(adapt_steps, int) or adapt_steps < 0:
            raise ConfigError(f"model.adapt_steps must be an integer >= 0, got {adapt_steps!r}")
        self.automatic_optimization = False
        self.net = Conv4(image_size)
        self.eval_bn = eval_bn
        self.adapt_steps = adapt_steps
        # adaptation_curve takes the number of steps per call (0 is allowed there)
        self.adaptation = InnerLoop(inner_lr, 1, inner_optimizer, backend=backend)
        if adapt_lrs is not None and not list(adapt_lrs):
            raise ConfigError("model.adapt_lrs must list at least one learning rate, or be null")
        #: one adaptation loop per candidate learning rate (validation only)
        self.candidates = [
            InnerLoop(float(a), 1, inner_optimizer, backend=backend) for a in adapt_lrs or ()
        ]
        #: the adaptation learning rate test uses: inner_lr, or the best of adapt_lrs
        self.register_buffer("adapt_lr", torch.tensor(float(inner_lr), dtype=torch.float64))
        self._accuracy: list[EpisodeAccuracy] = []
        self._candidate_accuracy: list[EpisodeAccuracy] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_meta_precision(self.trainer, type(self).__name__)  # adapts with InnerLoop
        datamodule = getattr(self.trainer, "datamodule", None)
        crop = getattr(getattr(datamodule, "hparams", None), "crop_size", None)
        if crop is not None and crop != self.net.image_size:
            raise ConfigError(
                f"model.image_size is {self.net.image_size} but data.crop_size is {crop}; "
                "the detector's FC layer is built for one input size, set them alike"
            )

    def on_train_start(self) -> None:
        episodes = getattr(self.trainer.train_dataloader, "dataset", None)
        skipped = getattr(episodes, "skipped", None)
        if skipped is None:
            return
        rank_zero_info(
            f"training tasks: {len(episodes.tasks)} (subject, AU) pairs sampled, {len(skipped)} "
            "skipped for too few positives or negatives (Sec. 4.1.5)"
        )
        if self.logger is not None:
            self.logger.log_metrics({"train/skipped_tasks": float(len(skipped))}, step=0)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # checkpoints from before adapt_lrs have no adapt_lr: they adapt with inner_lr
        checkpoint["state_dict"].setdefault("adapt_lr", self.adapt_lr.clone())

    # -- evaluation by adaptation (Sec. 4.2.2) ----------------------------------------------

    def _start(self, loaders: Any) -> None:
        tracked = [m.num_batches_tracked for m in self.net.modules() if hasattr(m, "running_mean")]
        if self.eval_bn == "running" and not any(int(n) for n in tracked):
            raise ConfigError(
                "model.eval_bn is running, but these weights have no running batch-norm "
                "statistics (MAML gathers them only when trained with eval_bn: running); "
                "evaluate with eval_bn: batch or train with eval_bn: running"
            )
        loaders = loaders if isinstance(loaders, list) else [loaders]
        steps = self.adapt_steps
        self._accuracy = [
            EpisodeAccuracy(len(loader.dataset.tasks), steps).to(self.device) for loader in loaders
        ]

    def _score(
        self, batch: dict[str, Any], metric: EpisodeAccuracy, loop: InnerLoop | None = None
    ) -> None:
        """Adapt on each episode's D[tea] with ``loop`` (default :attr:`adaptation`), count
        correct decisions on D[te] after each step."""
        loop = loop or self.adaptation
        was_training = self.net.training
        self.net.train(self.eval_bn == "batch")
        correct = []
        for sx, sy, qx, qy in zip(
            batch["support_image"], batch["support_label"], batch["query_image"],
            batch["query_label"], strict=True,
        ):  # fmt: skip
            outputs = loop.adaptation_curve(
                self.net, binary_bce, (sx, sy), qx, steps=self.adapt_steps
            )
            decisions = torch.stack([o.reshape(-1) > 0 for o in outputs])
            correct.append((decisions == qy.bool()).sum(1))
        self.net.train(was_training)
        metric.update(batch["task"], torch.stack(correct), batch["query_label"].shape[1])

    def on_validation_epoch_start(self) -> None:
        self._start(self.trainer.val_dataloaders)
        tasks = self._accuracy[0].num_tasks
        self._candidate_accuracy = [
            EpisodeAccuracy(tasks, self.adapt_steps).to(self.device) for _ in self.candidates
        ]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not self.candidates:
            self._score(batch, self._accuracy[0])
            return
        for loop, metric in zip(self.candidates, self._candidate_accuracy, strict=True):
            self._score(batch, metric, loop)

    def on_validation_epoch_end(self) -> None:
        steps = self.adapt_steps
        if self.candidates:
            curves = [m.compute().nanmean(0) for m in self._candidate_accuracy]
            for loop, curve in zip(self.candidates, curves, strict=True):
                self.log(f"val/acc_lr{loop.lr:g}", float(curve[steps]))
            # the first of equals; NaN (no episode) never wins
            finals = torch.stack([c[steps] for c in curves]).nan_to_num(-1.0)
            best = int(finals.argmax())
            accuracy = curves[best]
            self.adapt_lr.fill_(self.candidates[best].lr)
            self.log("val/adapt_lr", self.candidates[best].lr)
        else:
            accuracy = self._accuracy[0].compute().nanmean(0)
        self.log("val/acc_step0", float(accuracy[0]), prog_bar=True)
        self.log(f"val/acc_step{steps}", float(accuracy[steps]))
        self.log("val/acc", float(accuracy[steps]), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._start(self.trainer.test_dataloaders)
        self.adaptation.lr = float(self.adapt_lr)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score(batch, self._accuracy[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        records: list[AdaptationRecord] = []
        for loader, metric in zip(self.trainer.test_dataloaders, self._accuracy, strict=True):
            dataset = loader.dataset
            accuracy = metric.compute()
            with metric.sync_context():  # compute() leaves the states as this rank's again
                episodes = metric.episodes.cpu().numpy().copy()
            records += fewshot_results.adaptation_records(
                accuracy.cpu().numpy(), dataset.tasks, dataset.shots, episodes
            )
            per_step = accuracy.nanmean(0)
            k = dataset.shots
            self.log(f"test/acc_{k}shot_step0", float(per_step[0]))
            self.log(f"test/acc_{k}shot", float(per_step[-1]))
        if self.trainer.is_global_zero:
            name = type(self).__name__
            fewshot_results.write_adaptation_csv(records, self.run_dir / "adaptation.csv")
            md, *_ = fewshot_results.write_adaptation_report({name: records}, self.run_dir, "test")
            print(f"{name}: accuracy after {self.adapt_steps} adaptation steps ({md})")
            print(md.read_text())

    def write_cv_report(
        self,
        per_fold: Mapping[str, Mapping[str, float]],
        run_dirs: Mapping[str, Path],
        directory: Path,
    ) -> Path:
        """Every fold's ``adaptation.csv`` joined (leave-one-subject-out: one test subject
        per fold) into ``<directory>/adaptation.csv``, and the Table 1-style ``cv_results.md``
        with its step and per-subject plots from all of them (Sec. 4.3)."""
        records = [
            r
            for run in run_dirs.values()
            for r in fewshot_results.read_adaptation_csv(run / "adaptation.csv")
        ]
        fewshot_results.write_adaptation_csv(records, directory / "adaptation.csv")
        md, *_ = fewshot_results.write_adaptation_report(
            {type(self).__name__: records}, directory, "cv"
        )
        return md

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        raise ConfigError("a few-shot detector is evaluated by adaptation (test), not predict")

    def _outer_step(self, loss: Tensor) -> None:
        """One update of θ from ``loss`` by the base class's Adam (β = ``lr``, Sec. 4.2.1):
        one backward, so that DDP all-reduces the gradient once per step."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()


class MAML(AdaptiveDetector):
    """Model-agnostic meta-learning of one AU detector over (subject, AU) tasks (Lee et
    al. 2019, Alg. 1; Finn et al. 2017).

    Each training batch is a meta-batch of tasks (lines 4-5) with support sets D[tr] and
    query sets D[trv]. For every task, ``inner_steps`` steps of ``inner_optimizer`` with
    learning rate α = ``inner_lr`` on D[tr] give θ_i (lines 7-8, Eq. 1: by default plain
    gradient descent, θ_i = θ − α∇θ L(θ; D[tr]), as Alg. 1 writes it); the loss of θ_i on
    D[trv] (line 9) is averaged over the tasks and θ takes one Adam step of learning rate
    β = ``lr`` on it (line 11, Eq. 2). The paper sums over tasks; the mean differs by the
    constant T, which Adam's normalization removes, and makes DDP's averaging across ranks
    equal to one process over all ranks' tasks.

    Args:
        aus: the training AUs (the data's ``aus``).
        image_size: the input side (the data's ``crop_size``).
        inner_lr, inner_optimizer: α and the per-task optimizer, in training and when
            adapting at evaluation. ``sgd`` (default) is Alg. 1 line 8 and Eq. 1; ``adam``
            reads Sec. 4.2.1 ("Adam ... 0.03 for both α and β") as the inner optimizer too.
            Second order through one inner Adam step gave meta-gradients 22-88 times the
            first-order ones early in training, at cosine 0.07-0.11 to them (issue 26), so
            it is an option, not the default.
        inner_steps: per-task steps in training (Alg. 1: one).
        first_order: drop the second-order term (inner gradients detached).
        adapt_steps: adaptation steps at evaluation (the paper's tables: 5).
        eval_bn: batch-norm statistics at evaluation (see :class:`AdaptiveDetector`).
        backend: ``higher`` or ``func`` (torch.func), see :class:`au_lightning.InnerLoop`.
        lr, weight_decay: β and weight decay of the outer Adam.
    """

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        image_size: int = 64,
        inner_lr: float = INNER_LR,
        inner_steps: int = 1,
        inner_optimizer: InnerOptimizer = "sgd",
        first_order: bool = False,
        adapt_steps: int = 5,
        eval_bn: EvalBatchNorm = "batch",
        backend: MetaBackend = "higher",
        lr: float = 0.03,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            aus, image_size, inner_lr, inner_optimizer, adapt_steps, eval_bn, backend, lr,
            weight_decay,
        )  # fmt: skip
        self.save_hyperparameters()
        self.inner = InnerLoop(inner_lr, inner_steps, inner_optimizer, first_order, backend)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        support = zip(batch["support_image"], batch["support_label"], strict=True)
        query = zip(batch["query_image"], batch["query_label"], strict=True)
        losses = [
            self.inner.query_loss(self.net, binary_bce, s, q)
            for s, q in zip(support, query, strict=True)
        ]
        loss = torch.stack(losses).mean()
        self._outer_step(loss)
        if self.eval_bn == "running":
            # The inner loops never touch the running statistics (they run on copies); they
            # follow θ's batch statistics on D[tr], at the cost of one more forward.
            with torch.no_grad():
                self.net(batch["support_image"].flatten(0, 1))
        self.log("train/query_loss", loss.detach(), prog_bar=True, batch_size=len(losses))
        return loss.detach()


class MAMLBaseline(AdaptiveDetector):
    """The baseline of Lee et al. 2019, Sec. 3.3: the same detector trained without tasks,
    on frames labelled positive when any training AU is present and negative when every
    training AU is known absent (frames with an unknown AU and none present are left out),
    then adapted and evaluated exactly like :class:`MAML`. Needs the data's
    ``train_on: frames``.

    Args: as :class:`MAML` (``inner_lr``, ``inner_optimizer`` and ``adapt_steps`` are used
    at evaluation only; ``lr`` is the Adam learning rate of training), and ``adapt_lrs``:
    candidate adaptation learning rates, the best on the validation episodes used for test
    (see :class:`AdaptiveDetector`; ``configs/maml_baseline.yaml`` lists them). The paper
    gives its baseline no adaptation settings, and a step size tuned for a meta-learned θ
    need not suit a θ that was never trained to adapt.
    """

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        image_size: int = 64,
        inner_lr: float = INNER_LR,
        inner_optimizer: InnerOptimizer = "sgd",
        adapt_steps: int = 5,
        eval_bn: EvalBatchNorm = "batch",
        backend: MetaBackend = "higher",
        lr: float = 0.03,
        weight_decay: float = 0.0,
        adapt_lrs: list[float] | None = None,
    ) -> None:
        super().__init__(
            aus, image_size, inner_lr, inner_optimizer, adapt_steps, eval_bn, backend, lr,
            weight_decay, adapt_lrs,
        )  # fmt: skip
        self.save_hyperparameters()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if "occurrence" not in batch:
            raise ConfigError("MAMLBaseline trains on frames: set data.train_on: frames")
        positive, known = any_au_present(batch["occurrence"])
        logits = self.net(batch["image"])
        loss = binary_bce(logits[known], positive[known])
        self._outer_step(loss)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=int(known.sum()))
        return loss.detach()
