"""The hybrid network's parts (pure ``nn.Module``s): spatial CNN, PCA, stacked LSTMs, fusion."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from au_lightning import ConfigError
from au_lightning.nn import PCA, ANet, MultiLabelHead, resnet_backbone

Backbone = Literal["anet", "resnet18", "resnet34", "resnet50"]
BACKBONES: tuple[str, ...] = get_args(Backbone)
#: ANet's initialisation (:class:`au_lightning.nn.ANet`): He et al.'s (Caffe's ``msra``
#: filler, the default) or PyTorch's default
ANetInit = Literal["he", "pytorch"]


class SpatialCNN(nn.Module):
    """Stage 1 (Sec. 3.1): a multi-label CNN giving per-AU logits and its L2-normalised
    representation, the "fc7" feature of ANet (4096-D) or a ResNet's pooled feature.

    Args:
        num_aus: AU outputs.
        backbone: ``anet`` (Chu et al.'s modified AlexNet, :class:`au_lightning.nn.ANet`)
            or a torchvision ResNet.
        pretrained: ResNets only: ImageNet weights (True) or a local weights file.
        in_size: the input side ANet is built for (the data's ``crop_size``).
        anet_init: ANet's initialisation, ``he`` or ``pytorch`` (see :class:`ANet`).
    """

    def __init__(
        self,
        num_aus: int,
        backbone: Backbone = "anet",
        pretrained: bool | str = False,
        in_size: int = 176,
        anet_init: ANetInit = "he",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        if backbone == "anet":
            if pretrained is not False:
                raise ConfigError("backbone 'anet' has no pretrained weights; set pretrained false")
            if anet_init not in get_args(ANetInit):
                raise ConfigError(f"anet_init must be 'he' or 'pytorch', got {anet_init!r}")
            anet = ANet(num_aus, in_size=in_size, init=anet_init)
            self.body: nn.Module = nn.Sequential(anet.conv, anet.avgpool, nn.Flatten(1), anet.fc)
            self.head: nn.Module = anet.classifier
            self.feature_dim = anet.feature_dim
        else:
            self.body, self.feature_dim = resnet_backbone(int(backbone[6:]), pretrained)
            self.head = MultiLabelHead(self.feature_dim, num_aus)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(features, logits)`` of images (B, 3, H, W): the L2-normalised representation
        (B, feature_dim) and the per-AU logits (B, L) of the unnormalised one (Eq. 1)."""
        features = self.body(images)
        return F.normalize(features, dim=1), self.head(features)


class TemporalLSTM(nn.Module):
    """Stage 2 (Sec. 3.2): stacked LSTMs over a sequence of (PCA-reduced) frame features,
    with a per-frame output squeezed into [-1, 1] by tanh, trained with the max-margin loss.

    The paper: 3 LSTMs of 256 memory cells, dropout 0.5 "to the input and hidden layers"
    (here: on the input, between the LSTMs and on the last LSTM's output), and every weight
    matrix initialised uniformly in [-0.08, 0.08] (Sec. 4.2).
    """

    def __init__(
        self,
        in_features: int,
        num_aus: int,
        hidden: int = 256,
        layers: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            in_features, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0
        )
        self.output_dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_aus)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -0.08, 0.08)

    def forward(self, features: Tensor) -> Tensor:
        """Per-frame scores (B, T, L) in [-1, 1] of features (B, T, D).

        Under autocast (mixed precision) the LSTMs run in the autocast dtype, their input
        cast to it here: oneDNN's CPU LSTM under bf16 autocast fails on a float32 input
        ("could not create a primitive descriptor")."""
        x = self.input_dropout(features).transpose(0, 1)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            x = x.to(torch.get_autocast_dtype(device))
        h, _ = self.lstm(x)
        return torch.tanh(self.out(self.output_dropout(h.transpose(0, 1))))


class FusionNet(nn.Module):
    """Stage 3 (Sec. 3.3): two fully connected layers, shared over frames, on the stacked
    L2-normalised spatial (CNN logits) and temporal (LSTM) scores of each frame; one
    multi-label logit per AU."""

    def __init__(self, num_aus: int, hidden: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(2 * num_aus, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_aus)
        )

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        """Logits (..., L) from the CNN logits and LSTM scores (..., L) of the same frames."""
        stacked = torch.cat([F.normalize(spatial, dim=-1), F.normalize(temporal, dim=-1)], -1)
        return self.layers(stacked)


class HybridNet(nn.Module):
    """The hybrid network of Fig. 1/2(a): ``cnn`` on frames, ``pca`` on its features,
    ``lstm`` on sequences of those, ``fusion`` of the CNN's and LSTM's per-frame scores."""

    def __init__(
        self,
        num_aus: int,
        backbone: Backbone = "anet",
        pretrained: bool | str = False,
        in_size: int = 176,
        pca_components: int = 1024,
        lstm_hidden: int = 256,
        lstm_layers: int = 3,
        lstm_dropout: float = 0.5,
        fusion_hidden: int = 64,
        anet_init: ANetInit = "he",
    ) -> None:
        super().__init__()
        self.cnn = SpatialCNN(num_aus, backbone, pretrained, in_size, anet_init)
        if not 1 <= pca_components <= self.cnn.feature_dim:
            raise ConfigError(
                f"pca_components must be in [1, {self.cnn.feature_dim}] (the {backbone} "
                f"feature size), got {pca_components}"
            )
        self.pca = PCA(self.cnn.feature_dim, pca_components)
        self.lstm = TemporalLSTM(pca_components, num_aus, lstm_hidden, lstm_layers, lstm_dropout)
        self.fusion = FusionNet(num_aus, fusion_hidden)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Every head's per-frame output for one sequence of images (T, 3, H, W): ``cnn``
        logits, ``lstm`` scores in [-1, 1] and ``fused`` logits, each (T, L)."""
        features, cnn = self.cnn(images)
        lstm = self.lstm(self.pca(features)[None])[0]
        return {"cnn": cnn, "lstm": lstm, "fused": self.fusion(cnn, lstm)}
