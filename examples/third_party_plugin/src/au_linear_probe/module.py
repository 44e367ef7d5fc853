"""LinearProbe: the LightningModule of the linear AU probe."""

from __future__ import annotations

from torch import Tensor

from au_lightning import AUMethod, LossWeights
from au_linear_probe.net import LinearProbeNet


class LinearProbe(AUMethod):
    """A linear AU probe on average-pooled pixels, trained with masked BCE.

    Everything but the network comes from :class:`au_lightning.AUMethod`: the masked loss
    (optionally positive-weighted or selective), Adam, per-AU validation and test metrics,
    the results table and ``predict`` probabilities.

    Args:
        aus: the AUs to detect (a set name such as ``bp4d`` or AU numbers).
        grid: images are average-pooled to ``grid x grid`` cells before the linear layer.
        thresholds, threshold_search, lr, weight_decay, loss_weights: see
            :class:`au_lightning.AUMethod`.
    """

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        grid: int = 8,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        loss_weights: LossWeights = "positive",
    ) -> None:
        super().__init__(aus, thresholds, threshold_search, lr, weight_decay, loss_weights)
        self.save_hyperparameters()
        self.net = LinearProbeNet(len(self.aus), grid)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)
