"""The base net and the meta net of MAL (Li & Shan, Sec. 3.2 and 4.1.1), pure ``nn.Module``s."""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from au_lightning import ConfigError
from au_lightning.nn import MultiLabelHead, resnet_backbone

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
BACKBONES: tuple[str, ...] = get_args(Backbone)


class MultiTaskOutput(NamedTuple):
    """The backbone feature f(x) and the logits of both heads (``expression`` is None for
    a net without the FE head)."""

    features: Tensor
    au: Tensor
    expression: Tensor | None


class MultiTaskNet(nn.Module):
    """The base net: a backbone f with parameters θ_b, an AU classifier θ_c^AU (one logit
    per AU, the sigmoid of Eq. 1) and an FE classifier θ_c^FE (softmax logits, Eq. 2), each
    one fully connected layer on the feature (Sec. 3.2, 4.1.1).

    Args:
        num_aus: AU outputs.
        num_expressions: FE classes; 0 builds the AU head only (the STL row).
        backbone: a torchvision ResNet (34 layers in the paper, 512-D feature); smaller
            ones suit a CPU.
        pretrained: ``True`` for torchvision's ImageNet weights (the paper's BP4D start) or
            the path of a weights file or checkpoint (e.g. a BP4D run, the paper's DISFA
            start); see :func:`au_lightning.nn.resnet_backbone`.
    """

    def __init__(
        self,
        num_aus: int,
        num_expressions: int,
        backbone: Backbone = "resnet34",
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        self.backbone, self.feature_dim = resnet_backbone(int(backbone[6:]), pretrained)
        self.au_head = MultiLabelHead(self.feature_dim, num_aus)
        self.fe_head = nn.Linear(self.feature_dim, num_expressions) if num_expressions else None

    def forward(self, images: Tensor) -> MultiTaskOutput:
        features = self.backbone(images)
        fe = self.fe_head(features) if self.fe_head is not None else None
        return MultiTaskOutput(features, self.au_head(features), fe)


class MetaWeightNet(nn.Module):
    """The meta net g(·; ψ): one fully connected layer, initialised to zero, then a sigmoid,
    mapping a sample's feature f(x) to its weight in [0, 1] (Eq. 4, Sec. 4.1.1); every
    weight is 0.5 before training."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(feature_dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Weights (B,) of features (B, ``feature_dim``)."""
        return torch.sigmoid(self.linear(features)).squeeze(-1)


def normalized_weights(w_au: Tensor, w_fe: Tensor) -> tuple[Tensor, Tensor]:
    """Sec. 4.1.2: both tasks' weights divided by w_ave^AU + w_ave^FE, the sums of the
    batch's AU and FE weights, so that all of them sum to one and the weighted loss keeps
    the step size of a mean (Ren et al. 2018)."""
    total = w_au.sum() + w_fe.sum()
    return w_au / total, w_fe / total
