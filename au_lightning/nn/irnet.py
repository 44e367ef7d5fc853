"""IR networks: ArcFace's improved-residual ResNets IR-50/100/152 (Deng et al. 2019).

Ji et al. (Sec. 3.3) "choose IR-152 [4] as our backbone", pre-trained on face
recognition (MS-Celeb-1M) or expression recognition (AffectNet) and fine-tuned for AU
detection; [4] is ArcFace (Deng, Guo, Xue & Zafeiriou, CVPR 2019). Sec. 4.4.1 "remove[s]
the 7x7 pooling layer" after Xiong et al. 2017, which is what ArcFace's output layer "E"
already does: the final 512 x 7 x 7 map is flattened into an FC layer, not averaged.

The layers follow InsightFace_Pytorch (TreB1eN, ``model.py``: ``Backbone(num_layers,
drop_ratio, mode='ir')``), module names included, so a state_dict of its IR backbones
loads here. Two departures: the embedding is returned as is, not L2-normalised (the
normalisation belongs to ArcFace's angular-margin loss, not to an AU head), and
``pooling="avg"`` offers global average pooling instead of the output layer.
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from au_lightning.nn.resnet import (
    Pooling,
    _check_input_size,
    _check_pooling,
    _flatten_output_layer,
    _load_file,
)

__all__ = ["IRNet", "ir_backbone"]

#: Units per stage of IR-50/100/152 (InsightFace_Pytorch's ``get_blocks``).
IR_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
STAGE_CHANNELS = (64, 128, 256, 512)
#: The body halves the input four times (the first unit of each stage has stride 2).
STRIDE = 16


class BottleneckIR(nn.Module):
    """ArcFace's improved residual unit, as InsightFace_Pytorch's ``bottleneck_IR``.

    residual = BN(in) -> Conv3x3(in, out) -> PReLU(out) -> Conv3x3(out, out, ``stride``)
    -> BN(out); shortcut = ``MaxPool2d(1, stride)`` (identity or subsampling) when
    ``in_channels == channels``, else Conv1x1(in, out, ``stride``) -> BN(out); output =
    residual + shortcut, with no activation after the sum. The ArcFace paper's unit has a
    further BN after the first conv (BN-Conv-BN-PReLU-Conv-BN); InsightFace_Pytorch, whose
    keys this module keeps, has none.
    """

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.stride = stride
        self.shortcut_layer: nn.Module
        if in_channels == channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps (B, ``in_channels``, H, W) to (B, ``channels``, ceil(H / ``stride``),
        ceil(W / ``stride``))."""
        return self.res_layer(x) + self.shortcut_layer(x)


class IRNet(nn.Module):
    """IR-``depth`` of ArcFace (Deng et al. 2019), the backbone of Ji et al. Sec. 3.3.

    - ``input_layer``: Conv3x3(3, 64, stride 1) -> BN -> PReLU, keeping the resolution.
    - ``body``: ``BottleneckIR`` units in four stages of 64, 128, 256 and 512 channels,
      ``IR_UNITS[depth]`` units each ([3, 8, 36, 3] for IR-152), the first unit of each
      stage with stride 2, so the final map is 512 x ``in_size``/16 x ``in_size``/16.
    - ``output_layer``, by ``pooling``:

      - ``"flatten"`` (default): ArcFace's output layer "E" (CVPR Sec. 3.1
        "BN-Dropout-FC-BN" after the last conv layer; option E of the arXiv v1 network
        settings), BN2d(512) -> Dropout(``dropout``) -> Flatten -> Linear(512 * s * s,
        ``embedding_dim``) -> BN1d, s = ``in_size`` / 16 (7 at ArcFace's 112x112). It is
        Ji et al. Sec. 4.4.1's network without the 7x7 pooling layer. ``in_size`` must be
        a multiple of 16, and inputs of another size raise a ``ValueError`` naming it.
      - ``"avg"``: global average pooling -> Flatten, 512-D features at any input size
        (``in_size``, ``dropout`` and ``embedding_dim`` unused).

    ``feature_dim`` is the size of the features (``embedding_dim`` or 512). The weights
    keep PyTorch's default initialisation, as InsightFace_Pytorch's.
    """

    def __init__(
        self,
        depth: int = 152,
        in_size: int = 112,
        pooling: Pooling = "flatten",
        dropout: float = 0.0,
        embedding_dim: int = 512,
    ) -> None:
        super().__init__()
        if depth not in IR_UNITS:
            raise ValueError(f"unknown IR depth {depth}; choose one of {sorted(IR_UNITS)}")
        _check_pooling(pooling)
        if pooling == "flatten" and (in_size < STRIDE or in_size % STRIDE):
            raise ValueError(
                f"IR-{depth} with pooling='flatten' needs in_size a positive multiple of "
                f"{STRIDE}, got {in_size}"
            )
        self.depth = depth
        self.in_size = in_size
        self.pooling = pooling
        self.name = f"IR-{depth} (pooling={pooling!r}" + (
            f", in_size={in_size})" if pooling == "flatten" else ")"
        )
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units: list[BottleneckIR] = []
        in_channels = STAGE_CHANNELS[0]
        for channels, count in zip(STAGE_CHANNELS, IR_UNITS[depth], strict=True):
            units.append(BottleneckIR(in_channels, channels, 2))
            units += [BottleneckIR(channels, channels, 1) for _ in range(count - 1)]
            in_channels = channels
        # One flat Sequential, as InsightFace_Pytorch's, so its keys (body.<i>.*) match.
        self.body = nn.Sequential(*units)
        self.output_layer: nn.Sequential
        if pooling == "flatten":
            self.output_layer = _flatten_output_layer(
                in_channels, in_size // STRIDE, dropout, embedding_dim
            )
            self.feature_dim = embedding_dim
        else:
            self.output_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.feature_dim = in_channels

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, ``feature_dim``) of images (B, 3, H, W)."""
        if self.pooling == "flatten":
            _check_input_size(x, self.in_size, self.name)
        return self.output_layer(self.body(self.input_layer(x)))


def ir_backbone(
    depth: int = 152,
    in_size: int = 112,
    pooling: Pooling = "flatten",
    dropout: float = 0.0,
    embedding_dim: int = 512,
    pretrained: bool | str | os.PathLike[str] = False,
) -> tuple[nn.Module, int]:
    """An ``IRNet`` (Ji et al. Sec. 3.3's IR-152 by default, with Sec. 4.4.1's flattening
    output layer) and its feature dimension, like ``resnet_backbone``.

    ``pretrained``:

    - ``False``: random initialisation.
    - ``True``: refused with a ``ValueError``: there are no IR weights to fetch offline
      (Ji et al.'s MS-Celeb-1M / AffectNet pre-trainings are not published as a file this
      package knows); pass the path of a local file instead.
    - a path (``str`` or ``os.PathLike``): a local state_dict (such as an
      InsightFace_Pytorch IR backbone) or a checkpoint dict whose ``state_dict`` holds the
      network under a dotted prefix (a Lightning checkpoint's ``net.backbone.``, DDP's
      ``module.``), found as in ``resnet_backbone`` from ``input_layer.0.weight``. Every
      key, output layer included, must be found with its shape: a missing file raises
      ``FileNotFoundError``; missing, unexpected or reshaped keys (such as a file saved
      with another ``pooling`` or ``in_size``) raise ``ValueError`` naming the file.
    """
    if pretrained is True:
        raise ValueError(
            f"no published IR-{depth} weights can be fetched offline; pass the path of a "
            "local state_dict or checkpoint as `pretrained` (e.g. an IR backbone trained "
            "on face recognition), or pretrained=False"
        )
    model = IRNet(depth, in_size, pooling, dropout, embedding_dim)
    if pretrained is not False:
        _load_file(model, pretrained, model.name)
    return model, model.feature_dim
