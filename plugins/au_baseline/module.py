"""Baseline: the LightningModule of the plain multi-label CNN."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from au_baseline.net import Backbone, BaselineNet
from au_lightning import AUMethod, ConfigError, LossWeights, SelectiveTarget
from au_lightning.data import resolve_aus

logger = logging.getLogger(__name__)


class Baseline(AUMethod):
    """The plain multi-label CNN (ResNet-18..152 or ANet) with masked BCE.

    The defaults are RE-Net's ResNet-18 baseline (Yang & Yin, Sec. 4.2: Adam, learning
    rate 1e-4). For the SGD settings of Chu et al. or Ji et al. use LightningCLI's
    ``--optimizer`` and ``--lr_scheduler`` (see ``configs/baseline.yaml``).

    Args:
        aus: the AUs to detect (a set name such as ``bp4d`` or AU numbers).
        backbone: ``resnet18`` ... ``resnet152`` or ``anet`` (see :class:`BaselineNet`).
        pretrained: ``True`` for torchvision's ImageNet weights, or a local weights file.
        init_from: a checkpoint of an earlier run (e.g. trained on BP4D, to start DISFA
            from, as MAL and RE-Net do). Its backbone must be the same; the AU layer's rows
            are copied for the AUs both runs share, the other AUs start fresh.
        in_size: the input side ANet is built for (set it to the data's ``crop_size``).
        dropout: dropout before the AU layer.
        thresholds, threshold_search, lr, weight_decay, loss_weights, selective_target: see
            :class:`au_lightning.AUMethod`.
    """

    def __init__(
        self,
        aus: str | list[int] = "bp4d",
        backbone: Backbone = "resnet18",
        pretrained: bool | str = False,
        init_from: str | None = None,
        in_size: int = 224,
        dropout: float = 0.0,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        loss_weights: LossWeights = "none",
        selective_target: SelectiveTarget = "data",
    ) -> None:
        super().__init__(
            aus,
            thresholds,
            threshold_search,
            lr,
            weight_decay,
            loss_weights,
            selective_target=selective_target,
        )
        self.save_hyperparameters()
        self.net = BaselineNet(len(self.aus), backbone, pretrained, in_size, dropout)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def on_fit_start(self) -> None:
        # After Lightning restored a resumed run (trainer.ckpt_path is then set): a resumed
        # run keeps its own weights and does not need the file it was started from.
        if self.hparams.init_from and self.trainer.ckpt_path is None:
            init_from_run(self.net, Path(self.hparams.init_from), self.aus, self.hparams.backbone)


def init_from_run(net: BaselineNet, path: Path, aus: tuple[int, ...], backbone: str) -> None:
    """Load ``net`` from the ``net.*`` weights of an earlier run's Lightning checkpoint.

    The backbone must match key for key and shape for shape. The AU layer is matched by AU
    number through the checkpoint's ``aus`` hyperparameter: rows of shared AUs are copied,
    rows of AUs the earlier run did not have keep their fresh initialisation.
    """
    if not path.is_file():
        raise FileNotFoundError(f"init_from: checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
        old_aus = resolve_aus(checkpoint["hyper_parameters"]["aus"])
    except Exception as err:
        raise ConfigError(
            f"init_from: {path} is not a checkpoint of an au-lightning run "
            f"(expected state_dict and hyper_parameters.aus): {err}"
        ) from err
    prefix = "net.backbone."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    expected = net.backbone.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    wrong = sorted(
        k for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape
    )
    if missing or unexpected or wrong:
        old_backbone = checkpoint["hyper_parameters"].get("backbone", "?")
        raise ConfigError(
            f"init_from: {path} holds a {old_backbone} backbone, this model has {backbone} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes "
            f"{wrong[:3]}); use the backbone of that run"
        )
    net.backbone.load_state_dict(weights)
    shared = [a for a in aus if a in old_aus]
    with torch.no_grad():
        for name in ("weight", "bias"):
            old = state[f"net.head.linear.{name}"]
            new = getattr(net.head.linear, name)
            for au in shared:
                new[aus.index(au)].copy_(old[old_aus.index(au)])
    fresh = [a for a in aus if a not in old_aus]
    logger.info("init_from %s: backbone and AUs %s loaded; AUs %s start fresh", path, shared, fresh)
