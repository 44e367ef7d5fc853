"""STL, MTL and MAL: the LightningModules of Li & Shan's Table 1 rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from au_lightning import (
    AUMethod,
    ConfigError,
    InnerLoop,
    MetaBackend,
    check_meta_precision,
    masked_bce,
    positive_weights,
)
from au_mal.curves import TrainingCurves
from au_mal.net import Backbone, MetaWeightNet, MultiTaskNet, MultiTaskOutput, normalized_weights

MetaOptimizer = Literal["sgd", "adam"]


class MultiTaskAU(AUMethod):
    """The shared base of STL, MTL and MAL: a :class:`MultiTaskNet`, the per-sample losses
    of Eq. 1-2, plain SGD on the base net (Eq. 11, learning rate α), and the training curves
    of Fig. 3/4 written into the run directory when training ends.

    Trained on :class:`au_lightning.data.AuxiliaryDataModule` batches ``{"au", "fe",
    "val"}``; validated, tested and used for prediction on AU frames through the AU head.

    Args:
        aus: the AUs to detect.
        expressions: the number of FE classes (RAF-DB's 7 basic expressions); must match
            the data's.
        backbone: a torchvision ResNet (``resnet34`` in the paper).
        pretrained: ImageNet weights (``True``) or a weights file / earlier checkpoint.
        lr: α, the base net's SGD learning rate (0.001, Sec. 4.1.2).
        momentum, weight_decay: of that SGD (the paper's update, Eq. 11, has neither).
        curve_every: the training curves average every this many steps (20 in Fig. 3).
        thresholds, threshold_search: see :class:`au_lightning.AUMethod`.
    """

    #: whether the net has the FE head (and the data must provide FE batches)
    uses_expressions: ClassVar[bool] = True

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        expressions: int = 7,
        backbone: Backbone = "resnet34",
        pretrained: bool | str = False,
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        curve_every: int = 20,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
    ) -> None:
        super().__init__(aus, thresholds, threshold_search, lr, weight_decay, "none")
        if not isinstance(expressions, int) or expressions < 2:
            raise ConfigError(
                f"expressions must be the number of FE classes (>= 2), got {expressions!r}"
            )
        if not isinstance(curve_every, int) or curve_every < 1:
            raise ConfigError(f"curve_every must be a positive integer, got {curve_every!r}")
        self.save_hyperparameters()
        self.expressions = expressions
        self.momentum = momentum
        self.net = MultiTaskNet(
            len(self.aus), expressions if self.uses_expressions else 0, backbone, pretrained
        )
        self.curves = TrainingCurves(curve_every)

    def forward(self, images: Tensor) -> Tensor:
        """Per-AU logits of AU frames (the FE head is for training only, Sec. 4.1.3)."""
        return self.net(images).au

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or not self.uses_expressions:
            return
        names = getattr(datamodule, "expression_names", None)
        if names is None:
            raise ConfigError(
                f"{type(self).__name__} trains on AU and FE batches; use "
                "data.class_path au_lightning.data.AuxiliaryDataModule"
            )
        if len(names) != self.expressions:
            raise ConfigError(
                f"model.expressions is {self.expressions} but the FE data has {len(names)} "
                f"classes ({', '.join(names)}); set model.expressions {len(names)}"
            )

    # -- the losses of Eq. 1 and 2, per sample ------------------------------------------------

    def au_losses(self, logits: Tensor, target: Tensor, pos_weight: Tensor | None = None) -> Tensor:
        """L_i^AU (Eq. 1): each sample's BCE summed over its known AU labels, (B,)."""
        return masked_bce(logits, target, pos_weight=pos_weight, per_sample=True)

    def fe_losses(self, logits: Tensor, target: Tensor) -> Tensor:
        """L_i^FE (Eq. 2): each sample's softmax cross-entropy, (B,); 0 for an unknown (-1)
        expression."""
        return F.cross_entropy(logits, target.long(), ignore_index=-1, reduction="none")

    # -- curves -------------------------------------------------------------------------------

    def record(self, batch_size: int, **values: Tensor | float) -> None:
        """Log ``train/<name>`` and keep the values for the training curves (under DDP the
        mean over the ranks, so that the curves are of every rank's batches)."""
        stacked = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
        if self._trainer is not None and self.trainer.world_size > 1:
            stacked = self.trainer.strategy.reduce(stacked.to(self.device), reduce_op="mean")
        values = dict(zip(values, stacked.tolist(), strict=True))
        parts = {f"train/{k}": v for k, v in values.items() if k != "loss"}
        self.log_dict(parts, batch_size=batch_size)
        self.log("train/loss", values["loss"], prog_bar=True, batch_size=batch_size)
        self.curves.add(self.global_step, values)

    @rank_zero_only
    def on_train_end(self) -> None:
        self.curves.write(self.run_dir, type(self).__name__)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["training_curves"] = self.curves.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "training_curves" in checkpoint:
            self.curves.load_state_dict(checkpoint["training_curves"])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(
            self.net.parameters(),
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )


class STL(MultiTaskAU):
    """Single-task learning (Sec. 4.3): the backbone and the AU classifier, trained on the
    AU batches alone with the mean of L_i^AU (Eq. 1)."""

    uses_expressions = False

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        au = batch["au"]
        loss = self.au_losses(self(au["image"]), au["occurrence"]).mean()
        self.record(len(au["image"]), loss=loss, loss_au=loss)
        return loss


class MTL(MultiTaskAU):
    """Multi-task learning (Sec. 4.3): the base net of MAL, trained on AU and FE batches
    with the loss weights fixed at 1 : 1, mean L^AU + mean L^FE."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        au, fe = batch["au"], batch["fe"]
        b = len(au["image"])
        out = self.net(torch.cat([au["image"], fe["image"]]))
        loss_au = self.au_losses(out.au[:b], au["occurrence"]).mean()
        loss_fe = self.fe_losses(out.expression[b:], fe["expression"]).mean()
        loss = loss_au + loss_fe
        self.record(b, loss=loss, loss_au=loss_au, loss_fe=loss_fe)
        return loss


class MAL(MultiTaskAU):
    """Meta Auxiliary Learning (Li & Shan, Alg. 1): the base net and a meta net that weighs
    every AU and FE training sample, meta-learned on the reserved AU validation set.

    Each training step runs the three stages of Alg. 1 on one ``{"au", "fe", "val"}``
    batch (AU frames X, FE images E, validation frames V):

    1. Meta-train (lines 3-8): w_i = g(f(x_i); ψ) for every sample (Eq. 4), the weighted
       multi-task loss L_total (Eq. 5), and the virtual SGD step θ*(ψ) = θ − α∇θ L_total
       (Eq. 6), differentiable w.r.t. ψ (``higher`` or ``torch.func``, through
       :class:`au_lightning.InnerLoop`).
    2. Meta-test (lines 9-11): the validation loss L_val(θ*_AU) of the virtual model on V,
       its class imbalance reweighted (Sec. 4.1.4), and ψ̂ = ψ − β∇ψ L_val, the gradient
       through the gradient of Eq. 8 (Eq. 7).
    3. Base-learning (lines 12-15): ŵ = g(f(x); ψ̂) (Eq. 9), the re-weighted loss (Eq. 10)
       and the real update θ̂ = θ − α∇θ L̂_total (Eq. 11).

    The weights of both stages are normalised per batch (Sec. 4.1.2). The meta net reads
    the features detached: ψ is learned only from the validation loss (Eq. 7), and θ is not
    trained to move its own features towards lower weights. ψ's step is not counted in
    ``trainer.global_step`` (one step per base update).

    The effective step. Normalised to sum to one over the AU and FE batch (Sec. 4.1.2),
    weights near uniform give each AU sample 1/(b_AU + b_FE): with equal batches the AU
    loss enters at half the weight it has in STL (mean L^AU) and MTL (mean L^AU + mean
    L^FE), so MAL's AU step is half theirs at the same α. ``weight_sum`` is the control:
    the normalised weights are scaled to sum to it, in the virtual step (Eq. 5-6) and the
    real one (Eq. 10-11) alike. ``weight_sum: 2`` (the number of tasks) gives, at uniform
    weights and equal batch sizes, exactly MTL's loss, and the AU term STL's and MTL's
    step; for plain SGD it equals doubling α in Eq. 6 and 11. The paper's reading is the
    default, 1.

    The checkpoint: ψ descends the loss of the reserve (Eq. 7), so a checkpoint selected on
    the same frames is selected on ψ's training data. Train with
    :class:`au_mal.MALDataModule` (``configs/mal.yaml``), whose validation set is disjoint
    from the reserve; with a plain :class:`au_lightning.data.AuxiliaryDataModule` a warning
    says that validation is the reserve.

    Args:
        meta_lr: β, the meta net's learning rate (0.001, Sec. 4.1.2).
        meta_optimizer: ``sgd`` (Eq. 7) or ``adam`` (as Meta-Weight-Net, Shu et al. 2019,
            trains its weighting net).
        backend: the differentiable virtual step's backend, ``higher`` or ``func``.
        weight_sum: the sum of the normalised weights (Sec. 4.1.2: 1; 2 matches STL's and
            MTL's effective AU step, see above).
        other arguments: see :class:`MultiTaskAU`.
    """

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        expressions: int = 7,
        backbone: Backbone = "resnet34",
        pretrained: bool | str = False,
        lr: float = 1e-3,
        meta_lr: float = 1e-3,
        meta_optimizer: MetaOptimizer = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        backend: MetaBackend = "higher",
        curve_every: int = 20,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
        weight_sum: float = 1.0,
    ) -> None:
        super().__init__(
            aus,
            expressions,
            backbone,
            pretrained,
            lr,
            momentum,
            weight_decay,
            curve_every,
            thresholds,
            threshold_search,
        )
        if meta_optimizer not in ("sgd", "adam"):
            raise ConfigError(f"meta_optimizer must be sgd or adam, got {meta_optimizer!r}")
        if not (isinstance(weight_sum, int | float) and weight_sum > 0):
            raise ConfigError(f"weight_sum must be a number > 0, got {weight_sum!r}")
        self.save_hyperparameters()
        self.weight_sum = float(weight_sum)
        self.automatic_optimization = False
        self.meta_net = MetaWeightNet(self.net.feature_dim)
        self.virtual_step = InnerLoop(lr, steps=1, optimizer="sgd", backend=backend)
        # the reserve's inverse class-frequency weights (Sec. 4.1.4), set when fitting starts
        self.register_buffer("reserve_pos_weight", torch.ones(len(self.aus)))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_meta_precision(self.trainer, "MAL")
        if stage != "fit":
            return
        if self.trainer.world_size > 1:
            # ψ's gradient comes from autograd.grad, which DDP's reducer never sees, and the
            # base update's backward leaves ψ unused: DDP syncs θ only, ψ is synced here
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self, [f"meta_net.{name}" for name, _ in self.meta_net.named_parameters()]
            )
        datamodule = self.trainer.datamodule
        if getattr(datamodule, "select_rows", None) is None:
            rank_zero_warn(
                "MAL: the validation set (which selects the checkpoint) is the meta-test "
                "reserve that the meta net trains on; use data.class_path au_mal.MALDataModule "
                "for a selection set disjoint from it"
            )
        rates = getattr(datamodule, "reserve_rates", None)
        if rates is not None:
            rates = torch.from_numpy(np.nan_to_num(np.asarray(rates), nan=0.5))
            self.reserve_pos_weight.copy_(positive_weights(rates.float()))

    def on_fit_start(self) -> None:
        # DDP broadcasts rank 0's θ when it wraps the model, but not the ignored ψ
        if self.trainer.world_size > 1:
            state = self.trainer.strategy.broadcast(self.meta_net.state_dict())
            self.meta_net.load_state_dict(state)

    def sample_weights(self, features: Tensor) -> Tensor:
        """w = g(f(x); ψ) (Eq. 4, 9) of features, unnormalised, (B,)."""
        return self.meta_net(features.detach())

    def weighted_loss(
        self, out: MultiTaskOutput, targets: tuple[Tensor, Tensor], fixed_weights: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_total (Eq. 5, 10) of the concatenated AU and FE batch, with the normalised
        weights of Sec. 4.1.2 (summing to ``weight_sum``), and the parts to record. The
        weights are functions of ψ (meta-train, Eq. 5), or constants with ``fixed_weights``
        (base-learning, Eq. 10: ψ gets no gradient from the training loss)."""
        au_target, fe_target = targets
        b = len(au_target)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not fixed_weights):
            w = self.sample_weights(out.features)
        w_au, w_fe = normalized_weights(w[:b], w[b:])
        loss_au = self.au_losses(out.au[:b], au_target)
        loss_fe = self.fe_losses(out.expression[b:], fe_target)
        loss = self.weight_sum * ((w_au * loss_au).sum() + (w_fe * loss_fe).sum())
        parts = {
            "loss_au": loss_au.mean().detach(),
            "loss_fe": loss_fe.mean().detach(),
            "weight_au": w[:b].mean().detach(),
            "weight_fe": w[b:].mean().detach(),
        }
        return loss, parts

    def validation_loss(self, out: MultiTaskOutput, target: Tensor) -> Tensor:
        """L_val (Eq. 7): the mean over the validation batch of L_i^AU, positives weighted
        by the reserve's ``(1 - p) / p`` (Sec. 4.1.4)."""
        return self.au_losses(out.au, target, self.reserve_pos_weight).mean()

    def meta_update(self, images: Tensor, targets: tuple[Tensor, Tensor], val: dict) -> Tensor:
        """Stages 1-2: the virtual step (Eq. 4-6), L_val of the virtual model, and ψ's
        update along -∇ψ L_val (Eq. 7-8); returns L_val."""
        val_loss = self.virtual_step.query_loss(
            self.net,
            lambda out, target: self.weighted_loss(out, target)[0],
            (images, targets),
            (val["image"], val["occurrence"]),
            query_loss_fn=self.validation_loss,
        )
        params = list(self.meta_net.parameters())
        grads = self.mean_over_ranks(torch.autograd.grad(val_loss, params))
        _, meta_opt = self.optimizers()
        meta_opt.optimizer.zero_grad()
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        # the raw optimizer: a LightningOptimizer step would count as a global step
        meta_opt.optimizer.step()
        return val_loss.detach()

    def mean_over_ranks(self, grads: Sequence[Tensor]) -> list[Tensor]:
        """ψ's gradients averaged over the DDP ranks in one all-reduce, as DDP averages θ's
        (unchanged in one process)."""
        if self.trainer.world_size == 1:
            return list(grads)
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        parts = flat.split([g.numel() for g in grads])
        return [f.view_as(g) for f, g in zip(parts, grads, strict=True)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "val" not in batch:
            raise ConfigError("MAL needs meta-test batches: set data.meta_batch_size > 0")
        au, fe = batch["au"], batch["fe"]
        images = torch.cat([au["image"], fe["image"]])
        targets = (au["occurrence"], fe["expression"])
        val_loss = self.meta_update(images, targets, batch["val"])
        base_opt, _ = self.optimizers()
        loss, parts = self.weighted_loss(self.net(images), targets, fixed_weights=True)
        self.record(len(au["image"]), loss=loss.detach(), loss_val=val_loss, **parts)
        base_opt.zero_grad()
        self.manual_backward(loss)
        base_opt.step()

    def configure_optimizers(self) -> Any:
        base = super().configure_optimizers()
        params = self.meta_net.parameters()
        meta = (
            torch.optim.Adam(params, lr=self.hparams.meta_lr)
            if self.hparams.meta_optimizer == "adam"
            else torch.optim.SGD(params, lr=self.hparams.meta_lr)
        )
        return [base, meta]

    @torch.no_grad()
    def expression_weights(self, images: Tensor) -> Tensor:
        """The learned weight g(f(e); ψ) of FE images (unnormalised, in [0, 1]), for the
        analysis of Fig. 5/6."""
        return self.sample_weights(self.net(images).features)
