"""RE-Net's networks (Yang & Yin, Sec. 3), pure ``nn.Module``s: the AU relation graph, the
AU-specific batch norm that mixes its parameters through it, and the ResNet built on it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from au_lightning import ConfigError
from au_lightning.nn import resnet_backbone
from au_renet.relation import MIN_ROW_SUM

__all__ = [
    "BACKBONES",
    "HEADS",
    "AURelationGraph",
    "AUSpecificBatchNorm",
    "PerAUOutput",
    "RelationEmbeddedResNet",
    "mix_parameters",
]

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
BACKBONES: tuple[str, ...] = get_args(Backbone)
#: the output layer: ``per_au``, C rows (the pass for AU c reads row c); ``shared``, one row
#: that every AU's pass reads
Head = Literal["per_au", "shared"]
HEADS: tuple[str, ...] = get_args(Head)


def mix_parameters(relation: Tensor, params: Tensor) -> Tensor:
    """Eq. 5: row c is Σ_k ω_ck p_k / Σ_k ω_ck, for ``relation`` ω (C, C) and per-AU
    parameters ``params`` (C, F).

    Computed in the parameters' dtype with autocast off: under mixed precision the matmul
    would round γ and β to bf16/fp16 (steps of 2^-7 at 1, so a small update of γ would not
    reach the forward), where a plain ``BatchNorm2d`` keeps its affine parameters float32."""
    with torch.autocast(params.device.type, enabled=False):
        return (relation @ params) / relation.sum(1, keepdim=True)


class AURelationGraph(nn.Module):
    """ω of Eq. 5, with ω_cc = 1.

    Args:
        num_aus: C.
        learnable: False: ω is a fixed buffer, set with :meth:`set_relation` (the Pearson
            correlations of the training labels, Sec. 3.3; :func:`check_relation` refuses
            row sums below :data:`MIN_ROW_SUM`). True: the off-diagonal ω are parameters,
            initialised uniformly in [0, 1) ("Ours+learnable", Sec. 4.6; the paper says only
            "randomly"; non-negative starts keep Eq. 5's row sums >= 1). Nothing keeps a
            learned row sum positive, and Eq. 5 divides by it, so :meth:`forward` guards
            it: a row whose off-diagonal weights sum to less than ``MIN_ROW_SUM - 1`` has
            them all raised by the same amount until its sum is ``MIN_ROW_SUM`` (not in the
            paper). Along that uniform shift the loss is then flat, so gradient descent
            does not push the parameters' sum further down.
    """

    def __init__(self, num_aus: int, learnable: bool = False) -> None:
        super().__init__()
        self.learnable = learnable
        off_diagonal = ~torch.eye(num_aus, dtype=torch.bool)
        self.register_buffer("off_diagonal", off_diagonal, persistent=False)
        if learnable:
            self.weight = nn.Parameter(torch.rand(num_aus, num_aus))
        else:
            self.register_buffer("weight", torch.eye(num_aus))

    def set_relation(self, relation: Tensor) -> None:
        """Fix ω to ``relation`` (its diagonal is taken as 1)."""
        with torch.no_grad():
            self.weight.copy_(relation)

    def forward(self) -> Tensor:
        """ω (C, C): the weights off the diagonal, 1 on it; a learnable graph's rows with
        their sums guarded (see the class)."""
        omega = torch.where(self.off_diagonal, self.weight, torch.ones_like(self.weight))
        if not self.learnable:
            return omega
        deficit = (MIN_ROW_SUM - omega.sum(1, keepdim=True)).clamp_min(0)
        return omega + self.off_diagonal * deficit / max(len(omega) - 1, 1)


class AUSpecificBatchNorm(nn.Module):
    """BN(x, c, G) of Eq. 4: per-AU statistics μ_c, σ_c² and per-AU scale γ_c and bias β_c
    (Eq. 3), the scale and bias mixed over all AUs through the relation graph (Eq. 5).

    The layer computes several AUs in one pass. Its input holds K copies of each image's
    features, image-major: row ``b * K + k`` is image b computed for AU ``aus[k]`` (set by
    :meth:`RelationEmbeddedResNet.forward` through :attr:`context`). Viewed as
    ``(B, K * F, H, W)`` this is a plain batch norm over K·F channels: each AU's channels get
    their own batch statistics over the images (training) or their own running statistics
    (evaluation), so one pass equals K separate passes, and a training pass updates the
    running statistics of exactly the AUs in it.

    Args:
        num_features: channels F.
        num_aus: C.
        eps, momentum: as in ``nn.BatchNorm2d``.
    """

    def __init__(
        self, num_features: int, num_aus: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_aus = num_aus
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_aus, num_features))
        self.bias = nn.Parameter(torch.zeros(num_aus, num_features))
        self.register_buffer("running_mean", torch.zeros(num_aus, num_features))
        self.register_buffer("running_var", torch.ones(num_aus, num_features))
        #: (AU positions (K,), ω (C, C)) of the current pass
        self.context: tuple[Tensor, Tensor] | None = None

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, num_aus: int) -> AUSpecificBatchNorm:
        """A layer whose every AU starts from ``bn``'s scale, bias and running statistics
        (e.g. ImageNet's)."""
        layer = cls(bn.num_features, num_aus, bn.eps, bn.momentum or 0.1)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                source = getattr(bn, name)
                if source is not None:
                    getattr(layer, name).copy_(source.expand(num_aus, -1))
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if self.context is None:
            raise RuntimeError(
                "AUSpecificBatchNorm needs the AUs of the pass; run it inside "
                "RelationEmbeddedResNet, which sets `context`"
            )
        aus, relation = self.context
        k = len(aus)
        gamma = mix_parameters(relation, self.weight)[aus].reshape(-1)
        beta = mix_parameters(relation, self.bias)[aus].reshape(-1)
        mean, var = self.running_mean[aus].reshape(-1), self.running_var[aus].reshape(-1)
        grouped = x.reshape(x.shape[0] // k, k * self.num_features, *x.shape[2:])
        out = F.batch_norm(grouped, mean, var, gamma, beta, self.training, self.momentum, self.eps)
        if self.training:
            # F.batch_norm updated the gathered copies; store them back per AU
            with torch.no_grad():
                self.running_mean[aus] = mean.view(k, -1)
                self.running_var[aus] = var.view(k, -1)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_aus={self.num_aus}, eps={self.eps}"


class PerAUOutput(nn.Module):
    """RE-Net's C-way output layer: ``outputs`` rows per AU, of which AU c's pass reads AU
    c's; the parameters are a ``Linear(in_features, C * outputs)``'s (``weight``, ``bias``).

    The AUs at positions ``unseen`` never run in training, so their rows are never trained:
    they start at 0 and their passes read the rows of Eq. 5 instead,
    Σ_k ω_ck w_k / Σ_k ω_ck over all AUs, their own zero rows included (not in the paper).
    """

    def __init__(
        self, in_features: int, num_aus: int, outputs: int = 1, unseen: Sequence[int] = ()
    ) -> None:
        super().__init__()
        self.num_aus, self.outputs = num_aus, outputs
        linear = nn.Linear(in_features, num_aus * outputs)  # its initialisation
        self.weight, self.bias = linear.weight, linear.bias
        unseen_mask = torch.zeros(num_aus, dtype=torch.bool)
        unseen_mask[list(unseen)] = True
        self.register_buffer("unseen_mask", unseen_mask, persistent=False)
        with torch.no_grad():
            self.weight.view(num_aus, outputs, -1)[unseen_mask] = 0.0
            self.bias.view(num_aus, outputs)[unseen_mask] = 0.0

    def rows(self, relation: Tensor) -> tuple[Tensor, Tensor]:
        """The weights ``(C, outputs, in_features)`` and biases ``(C, outputs)`` each AU's
        pass reads: its own, or for an unseen AU those mixed by Eq. 5 with ω ``relation``."""
        weight = self.weight.view(self.num_aus, self.outputs, -1)
        bias = self.bias.view(self.num_aus, self.outputs)
        if not self.unseen_mask.any():
            return weight, bias
        mixed_weight = mix_parameters(relation, weight.flatten(1)).view_as(weight)
        mixed_bias = mix_parameters(relation, bias)
        unseen = self.unseen_mask
        return (
            torch.where(unseen[:, None, None], mixed_weight, weight),
            torch.where(unseen[:, None], mixed_bias, bias),
        )

    def forward(self, features: Tensor, positions: Tensor, relation: Tensor) -> Tensor:
        """Outputs ``(B, K, outputs)`` of features ``(B, K, in_features)``, where column k
        was computed for the AU at position ``positions[k]``."""
        weight, bias = self.rows(relation)
        # one (B, D) @ (D, outputs) product per AU, the bias added inside it, so that under
        # autocast the output has the autocast dtype, as nn.Linear's
        out = torch.baddbmm(
            bias[positions].unsqueeze(1),
            features.transpose(0, 1),
            weight[positions].transpose(1, 2),
        )
        return out.transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, num_aus={self.num_aus}, outputs={self.outputs}"


class RelationEmbeddedResNet(nn.Module):
    """RE-Net (Sec. 3.4, 4.3): a torchvision ResNet whose every BN layer is an
    :class:`AUSpecificBatchNorm`. θ_c = (γ_c, β_c) of all BN layers belong to AU c; the
    convolutions are shared θ_s.

    Running the network for AU c gives that AU's output: one logit for occurrence (Eq. 6) or
    ``outputs`` intensity-level logits (Sec. 4.5). Several AUs run in one batched pass:
    the first convolution precedes every BN, so it is computed once per image; from the
    first BN on, each image is carried K times.

    The output layer (``head``):

    - ``per_au`` (default): a C-way layer (``C * outputs`` rows), of which the pass for AU c
      reads AU c's rows, as ResNet-18's multi-label output layer does. This is the reading
      under which Sec. 4.6 holds: with every γ = 1 and β = 0, Eq. 5 gives every AU the same
      features, and the network is the vanilla ResNet-18. An AU in ``unseen`` never trains
      its rows: they start at 0 and its pass reads the rows of Eq. 5 instead,
      Σ_k ω_ck w_k / Σ_k ω_ck over all AUs (the unseen AU's own zero rows included), as
      its γ and β are mixed (:class:`PerAUOutput`; not in the paper, which does not
      describe the output layer).
    - ``shared``: one layer of ``outputs`` rows that every AU's pass reads; the AUs then
      differ only through their BN parameters (all equal at the start).

    Args:
        num_aus: C.
        backbone: the ResNet (``resnet18`` in the paper).
        pretrained: ImageNet weights (every AU starts from the pretrained BN) or a file; see
            :func:`au_lightning.nn.resnet_backbone`.
        learnable_graph: see :class:`AURelationGraph`.
        outputs: 1 (occurrence) or the number of intensity levels (6).
        head: ``per_au`` or ``shared`` (above).
        unseen: positions of the AUs training never runs (Sec. 4.6); used by the ``per_au``
            head only (:class:`PerAUOutput`).
    """

    def __init__(
        self,
        num_aus: int,
        backbone: Backbone = "resnet18",
        pretrained: bool | str = False,
        learnable_graph: bool = False,
        outputs: int = 1,
        head: Head = "per_au",
        unseen: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if head not in HEADS:
            raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        self.num_aus = num_aus
        self.outputs = outputs
        self.head_kind = head
        self.backbone, feature_dim = resnet_backbone(int(backbone[6:]), pretrained)
        _replace_batchnorms(self.backbone, num_aus)
        self.norms = [m for m in self.backbone.modules() if isinstance(m, AUSpecificBatchNorm)]
        self.graph = AURelationGraph(num_aus, learnable_graph)
        if head == "per_au":
            self.head: nn.Module = PerAUOutput(feature_dim, num_aus, outputs, unseen)
        else:
            self.head = nn.Linear(feature_dim, outputs)

    def _positions(self, aus: Sequence[int] | Tensor | None) -> Tensor:
        if aus is None:
            return torch.arange(self.num_aus, device=self.head.weight.device)
        positions = torch.as_tensor(aus, dtype=torch.long, device=self.head.weight.device)
        if positions.ndim != 1 or len(positions) == 0:
            raise ValueError(f"aus must be a non-empty list of AU positions, got {aus}")
        if positions.min() < 0 or positions.max() >= self.num_aus:
            raise ValueError(f"AU positions {positions.tolist()} outside 0..{self.num_aus - 1}")
        return positions

    def forward(self, images: Tensor, aus: Sequence[int] | Tensor | None = None) -> Tensor:
        """Outputs ``(B, K, outputs)`` of images (B, 3, H, W) for the AUs at positions
        ``aus`` (K of them; None: all C), in one pass."""
        positions = self._positions(aus)
        relation = self.graph()
        for norm in self.norms:
            norm.context = (positions, relation)
        try:
            net = self.backbone
            x = net.conv1(images).repeat_interleave(len(positions), dim=0)
            x = net.maxpool(net.relu(net.bn1(x)))
            x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
            features = torch.flatten(net.avgpool(x), 1)
        finally:
            for norm in self.norms:
                norm.context = None
        features = features.view(len(images), len(positions), -1)
        if self.head_kind == "shared":
            return self.head(features)
        return self.head(features, positions, relation)

    def forward_each(self, images: Tensor) -> Tensor:
        """The naive inference: C passes, one per AU; equals :meth:`forward` for all AUs."""
        return torch.cat([self(images, [c]) for c in range(self.num_aus)], dim=1)

    @torch.no_grad()
    def estimate_statistics(self, batches: Iterable[Tensor], aus: Sequence[int]) -> int:
        """Re-estimate the running statistics of the AUs at positions ``aus`` from image
        batches, as the cumulative mean over the batches, without labels: the AUs left out
        of training (Sec. 4.6) never had a pass that updated theirs. Returns the number of
        batches used."""
        positions = self._positions(aus)
        was_training = self.training
        momenta = [norm.momentum for norm in self.norms]
        for norm in self.norms:
            norm.running_mean[positions] = 0.0
            norm.running_var[positions] = 1.0
        self.train()
        used = 0
        try:
            for used, images in enumerate(batches, start=1):
                for norm in self.norms:
                    norm.momentum = 1.0 / used
                self(images, positions)
        finally:
            for norm, momentum in zip(self.norms, momenta, strict=True):
                norm.momentum = momentum
            self.train(was_training)
        return used


def _replace_batchnorms(module: nn.Module, num_aus: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, AUSpecificBatchNorm.from_batchnorm(child, num_aus))
        else:
            _replace_batchnorms(child, num_aus)
