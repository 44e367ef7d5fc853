"""BaselineNet: a backbone and one logit per AU (pure ``nn.Module``)."""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from au_lightning import ConfigError
from au_lightning.nn import ANet, MultiLabelHead, resnet_backbone

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "anet"]
BACKBONES: tuple[str, ...] = get_args(Backbone)


class BaselineNet(nn.Module):
    """``head(backbone(images))``: per-AU logits (B, ``num_aus``).

    Args:
        num_aus: number of AU outputs.
        backbone: a torchvision ResNet (He et al.; the 18/34/50/152-layer rows of the
            papers) or ``anet``, Chu et al.'s multi-label AlexNet (Sec. 3.1).
        pretrained: ResNets only: ``True`` for torchvision's ImageNet weights (hub cache,
            else a download; offline without the file it is an error that says where to put
            it), or the path of a local weights file. ANet has no published weights.
        in_size: the input side ANet is built for (its pool5 grid); ResNets take any size.
        dropout: dropout before the AU layer (ANet keeps its own fc6/fc7 dropout of 0.5).
    """

    def __init__(
        self,
        num_aus: int,
        backbone: Backbone = "resnet18",
        pretrained: bool | str = False,
        in_size: int = 224,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if backbone == "anet":
            if pretrained is not False:
                raise ConfigError(
                    "backbone 'anet' has no pretrained weights; set pretrained: false, or "
                    "start from an earlier run with init_from: /path/to/run.ckpt"
                )
            anet = ANet(num_aus, in_size=in_size)
            anet.classifier = nn.Identity()  # ANet's forward now returns fc7 features
            self.backbone, feature_dim = anet, anet.feature_dim
        else:
            self.backbone, feature_dim = resnet_backbone(int(backbone[6:]), pretrained)
        self.head = MultiLabelHead(feature_dim, num_aus, dropout)

    def forward(self, images: Tensor) -> Tensor:
        """Per-AU logits (B, ``num_aus``) of images (B, 3, H, W)."""
        return self.head(self.backbone(images))
