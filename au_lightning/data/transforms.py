"""torchvision.transforms.v2 pipelines: train resize -> random crop + flip, eval center crop."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from au_lightning.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "eval_resize",
    "eval_transform",
    "normalize",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_sizes(image_size: int, crop_size: int) -> None:
    if not 0 < crop_size <= image_size:
        raise ConfigError(
            f"data.crop_size={crop_size} must be in 1..data.image_size ({image_size}): the crop "
            "is cut from the image resized to image_size"
        )


def train_transform(
    image_size: int = 256,
    crop_size: int = 224,
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize to ``image_size`` square, random ``crop_size`` crop, horizontal flip, normalize."""
    _check_sizes(image_size, crop_size)
    steps: list[v2.Transform] = [
        v2.Resize((image_size, image_size), antialias=True),
        v2.RandomCrop(crop_size),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def eval_resize(image_size: int = 256, crop_size: int = 224) -> v2.Compose:
    """The uint8 part of :func:`eval_transform`: resize to ``image_size`` square, center
    ``crop_size`` crop (a uint8 image stays uint8, so it can be cached)."""
    _check_sizes(image_size, crop_size)
    return v2.Compose(
        [v2.Resize((image_size, image_size), antialias=True), v2.CenterCrop(crop_size)]
    )


def normalize(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """The float part of :func:`eval_transform`: uint8 -> float32 in [0, 1], normalize."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def eval_transform(
    image_size: int = 256,
    crop_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize to ``image_size`` square, center ``crop_size`` crop, normalize
    (:func:`eval_resize` then :func:`normalize`)."""
    steps = eval_resize(image_size, crop_size).transforms + normalize(mean, std).transforms
    return v2.Compose(steps)
