"""LinearProbeNet: average-pooled pixels -> one logit per AU (pure ``nn.Module``)."""

from __future__ import annotations

from torch import Tensor, nn


class LinearProbeNet(nn.Module):
    """``linear(flatten(avg_pool(images)))``: per-AU logits (B, ``num_aus``).

    Args:
        num_aus: number of AU outputs.
        grid: the images are average-pooled to ``grid x grid`` cells per channel.
        channels: image channels (3 for RGB).
    """

    def __init__(self, num_aus: int, grid: int = 8, channels: int = 3) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.linear = nn.Linear(channels * grid * grid, num_aus)

    def forward(self, images: Tensor) -> Tensor:
        """Per-AU logits (B, ``num_aus``) of images (B, C, H, W)."""
        return self.linear(self.pool(images).flatten(1))
