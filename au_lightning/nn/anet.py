"""ANet: the multi-label AlexNet of Chu, De la Torre & Cohn (Sec. 3.1)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ANet"]

#: ``he``: He et al.'s initialisation (Caffe's ``msra`` filler); ``pytorch``: PyTorch's default
ANetInit = Literal["he", "pytorch"]

MIN_INPUT_SIZE = 63


def _pool5_size(in_size: int) -> int:
    size = (in_size + 2 * 2 - 11) // 4 + 1
    for _ in range(3):
        size = (size - 3) // 2 + 1
    return size


class ANet(nn.Module):
    """The modified AlexNet ("ANet") of Chu, De la Torre & Cohn, *Learning facial action
    units with spatiotemporal cues and multi-label sampling*, Sec. 3.1 and Fig. 2(b).

    Sec. 3.1 trains "a multi-label CNN by modifying the AlexNet [24]", an "8-layer CNN"
    (Fig. 2(b)) whose fc7 output is "a 4096-D vector"; Sec. 4.4 says ANet differs from
    AlexNet by a "slightly different architecture and loss function (multi-label
    cross-entropy instead of multi-class softmax)". The text gives no layer table
    (Fig. 2(b) is a drawing), so the five conv layers and fc6/fc7 follow AlexNet [24]
    (Krizhevsky et al., NIPS 2012) as the paper names it:

    =====  ==========================================  ================================
    layer  this module                                 source
    =====  ==========================================  ================================
    conv1  96 x 11x11, stride 4, pad 2; ReLU; LRN;     [24] Sec. 3.5/3.3/3.4; pad 2 as
           max-pool 3x3 stride 2                       torchvision
    conv2  256 x 5x5, pad 2; ReLU; LRN; max-pool 3/2   [24]; pad as torchvision
    conv3  384 x 3x3, pad 1; ReLU                      [24]; pad as torchvision
    conv4  384 x 3x3, pad 1; ReLU                      [24]; pad as torchvision
    conv5  256 x 3x3, pad 1; ReLU; max-pool 3/2        [24]; pad as torchvision
    pool   adaptive average pool to the pool5 grid     this module (see below)
    fc6    dropout; 4096; ReLU                         [24] Sec. 3.5 ("4096 neurons"),
                                                       Sec. 4.2 (dropout 0.5)
    fc7    dropout; 4096; ReLU                         [24]; Sec. 3.1 ("4096-D")
    fc8    ``num_outputs`` logits (one per AU)         Sec. 3.1, Eq. (1)
    =====  ==========================================  ================================

    LRN is [24]'s response normalisation with n=5, k=2, alpha=1e-4, beta=0.75 (PyTorch,
    like Caffe, divides alpha by n). [24]'s two-GPU split (grouped conv2/4/5) is a
    hardware artefact and is not kept: every conv sees all input channels. Where [24] and
    the paper are silent the module follows torchvision's ``AlexNet``: paddings and the
    dropout-before-linear order.

    **Initialisation** (``init``; the paper does not state one, Sec. 4.2 names only Caffe
    [38]). ``he`` (the default, a documented deviation): every conv and fc6/fc7 weight
    N(0, 2 / fan_in), He et al. 2015 (*Delving deep into rectifiers*, Eq. 10), which is
    Caffe's ``msra`` filler; fc8 N(0, 1 / fan_in) (the same rule with the gain of a linear
    output); every bias 0. It keeps the activation scale through the ReLUs of this
    network, which has no batch normalisation. ``pytorch`` keeps PyTorch's default
    (Kaiming-uniform with a = sqrt(5), i.e. variance 1 / (3 fan_in)): measured on
    N(0, 1) 96-px inputs, the activations shrink from SD 0.57 after conv1 to 0.01 at the
    logits, and SGD at the paper's 1e-3 barely moves the network; with ``he`` the logits
    start at SD ~1.4.

    The fc8 output is one logit per AU; Eq. (1)'s multi-label cross-entropy applies a
    sigmoid per AU (e.g. ``au_lightning.losses.masked_bce``), not a softmax across AUs.

    ``in_size`` is the side of the square input the network is built for (224 as in
    [24]; the paper trains on 176x176 crops). An ``nn.AdaptiveAvgPool2d`` before fc6 maps
    the pool5 map to the grid that ``in_size`` produces (6x6 at 224, 4x4 at 176), so at
    ``in_size`` it is the identity and fc6 has [24]'s fan-in, and other inputs (down to
    63 px, e.g. 64-px test images) still reach fc6 with the same shape.
    """

    def __init__(
        self,
        num_outputs: int,
        in_size: int = 224,
        dropout: float = 0.5,
        init: ANetInit = "he",
    ) -> None:
        super().__init__()
        if init not in ("he", "pytorch"):
            raise ValueError(f"init must be 'he' or 'pytorch', got {init!r}")
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        if in_size < MIN_INPUT_SIZE:
            raise ValueError(f"in_size must be >= {MIN_INPUT_SIZE} px, got {in_size}")
        self.num_outputs = num_outputs
        self.in_size = in_size
        self.feature_dim = 4096
        grid = _pool5_size(in_size)
        self.conv = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        self.fc = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * grid * grid, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(4096, num_outputs)
        if init == "he":
            self.reset_parameters_he()

    def reset_parameters_he(self) -> None:
        """He et al.'s initialisation (Caffe's ``msra`` filler): N(0, 2 / fan_in) for the
        layers followed by a ReLU, N(0, 1 / fan_in) for the fc8 logits, biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                linear = module is self.classifier
                nonlinearity = "linear" if linear else "relu"
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity=nonlinearity)
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor, normalize: bool = False) -> Tensor:
        """fc7 activations (B, 4096) of images ``x`` (B, 3, H, W).

        ``normalize=True`` L2-normalises them, the paper's "final representation"
        (Sec. 3.1) that the hybrid network's LSTMs take as input.
        """
        h = self.avgpool(self.conv(x))
        h = self.fc(h.flatten(1))
        return F.normalize(h, dim=1) if normalize else h

    def forward(self, x: Tensor) -> Tensor:
        """Per-AU logits (B, ``num_outputs``) of images ``x`` (B, 3, H, W)."""
        return self.classifier(self.features(x))
