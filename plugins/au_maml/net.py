"""Conv4: the network of Lee et al. 2019, Sec. 3.1 (Fig. 4), a pure ``nn.Module``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from au_lightning import ConfigError

#: the filters of the four conv modules (Sec. 3.1)
FILTERS = (64, 48, 32, 16)


class Conv4(nn.Module):
    """One binary detector for any AU and any subject: four modules of 5x5 convolution
    (64, 48, 32 and 16 filters), batch norm, ReLU and 2x2 max-pooling, then a
    fully-connected layer to one logit (the sigmoid is in the loss and the decision).

    The convolutions have no bias: the batch norm that follows cancels it, and a parameter
    whose gradient is always zero would only feed noise to Adam.

    Args:
        image_size: the (square) input side; a multiple of 16, since the FC layer's width
            is ``filters[-1] * (image_size / 16) ** 2``.
        filters: the filters of the conv modules.
        kernel_size: the convolutions' kernel.
    """

    def __init__(
        self, image_size: int = 64, filters: Sequence[int] = FILTERS, kernel_size: int = 5
    ) -> None:
        super().__init__()
        scale = 2 ** len(filters)
        if image_size < scale or image_size % scale:
            raise ConfigError(
                f"model.image_size must be a multiple of {scale} (one 2x2 pooling per conv "
                f"module), got {image_size}"
            )
        layers: list[nn.Module] = []
        channels = 3
        for out in filters:
            layers += [
                nn.Conv2d(channels, out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(channels * (image_size // scale) ** 2, 1)
        self.image_size = image_size

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B,)`` of images ``(B, 3, image_size, image_size)``."""
        return self.fc(self.encoder(images)).squeeze(1)
