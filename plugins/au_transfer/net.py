"""ViewNet: one view of Ji et al.'s multi-view model, a backbone and a linear layer."""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from au_lightning import ConfigError
from au_lightning.nn import ir_backbone, resnet_backbone

Backbone = Literal[
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "ir50", "ir100", "ir152"
]
BACKBONES: tuple[str, ...] = get_args(Backbone)
Pooling = Literal["avg", "flatten"]


class ViewNet(nn.Module):
    """``head(backbone(images))``: one output per class (pretext) or per AU (Ji et al. Sec. 3.3).

    Args:
        num_outputs: pretext classes, or AUs.
        backbone: torchvision ``resnet18`` ... ``resnet152`` (Table 1) or ArcFace's
            ``ir50`` / ``ir100`` / ``ir152`` (IR-152 is the paper's, Sec. 3.3).
        pooling: ``avg`` (global average pooling) or ``flatten``: the 7x7 pooling removed
            (Sec. 4.4.1), the last feature map flattened into a BN-Dropout-FC-BN embedding;
            it fixes the input side to ``in_size``.
        in_size: the input side (224 in the paper, Sec. 4.2; 112 is ArcFace's).
        pretrained: ``False``; ``True`` for ImageNet weights (ResNets); or a checkpoint,
            such as a :class:`~au_transfer.TransferPretrain` run's, whose backbone is taken
            (its classifier is not). The backbone must be built alike (depth, pooling, size).
        dropout: with ``flatten``, the embedding's dropout (ArcFace's output layer); with
            ``avg``, dropout before the output layer.
    """

    def __init__(
        self,
        num_outputs: int,
        backbone: Backbone = "ir152",
        pooling: Pooling = "flatten",
        in_size: int = 224,
        pretrained: bool | str = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.options = {"backbone": backbone, "pooling": pooling, "in_size": in_size}
        if backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if pooling not in get_args(Pooling):
            raise ConfigError(f"pooling must be avg or flatten, got {pooling!r}")
        self.backbone, feature_dim = build_backbone(backbone, pooling, in_size, pretrained, dropout)
        head_dropout = dropout if pooling == "avg" else 0.0
        self.dropout = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.head = nn.Linear(feature_dim, num_outputs)

    def load_backbone(self, checkpoint: str) -> None:
        """Take the backbone of ``checkpoint`` (a :class:`~au_transfer.TransferPretrain` run,
        or any file :func:`au_lightning.nn.resnet_backbone` reads); the head stays."""
        loaded, _ = build_backbone(**self.options, pretrained=checkpoint)
        self.backbone.load_state_dict(loaded.state_dict())

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, ``num_outputs``) of images (B, 3, ``in_size``, ``in_size``)."""
        return self.head(self.dropout(self.backbone(images)))


def build_backbone(
    backbone: Backbone, pooling: Pooling, in_size: int, pretrained: bool | str, dropout: float = 0.0
) -> tuple[nn.Module, int]:
    """The feature extractor named ``backbone`` and its feature dimension."""
    if backbone.startswith("ir"):
        depth = int(backbone[2:])
        return ir_backbone(depth, in_size, pooling, dropout, pretrained=pretrained)
    return resnet_backbone(int(backbone[6:]), pretrained, pooling, in_size, dropout)
