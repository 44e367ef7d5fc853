"""torchvision ResNet backbones and a multi-label linear head.

The papers' ResNets (Li & Shan's 34-layer MAL network, RE-Net's and Ji et al.'s ResNet-18)
are He et al.'s ImageNet ResNets; this module gives them as feature extractors, offline
first: ImageNet weights come from the torch hub cache or a local file. It also holds what
``au_lightning.nn.irnet`` shares with them: the flattening "E" output layer (Ji et al.
Sec. 4.4.1, ArcFace's output layer E) and the loading of local weight files.
"""

from __future__ import annotations

import math
import os
import urllib.error
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision import models

__all__ = ["MultiLabelHead", "resnet_backbone"]

_RESNETS: dict[int, tuple[Callable[..., models.ResNet], models.WeightsEnum]] = {
    18: (models.resnet18, models.ResNet18_Weights.DEFAULT),
    34: (models.resnet34, models.ResNet34_Weights.DEFAULT),
    50: (models.resnet50, models.ResNet50_Weights.DEFAULT),
    101: (models.resnet101, models.ResNet101_Weights.DEFAULT),
    152: (models.resnet152, models.ResNet152_Weights.DEFAULT),
}
_SHOWN_KEYS = 5
Pooling = Literal["avg", "flatten"]
OUTPUT_LAYER = "output_layer"
_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet_backbone(
    depth: int = 18,
    pretrained: bool | str | os.PathLike[str] = False,
    pooling: Pooling = "avg",
    in_size: int = 224,
    dropout: float = 0.0,
    embedding_dim: int = 512,
) -> tuple[nn.Module, int]:
    """A torchvision ResNet-``depth`` feature extractor and its feature dimension.

    ``pooling``:

    - ``"avg"`` (default): the ResNet with ``fc`` replaced by ``nn.Identity()``, so its
      global average pooling gives the features (512-D for depths 18/34, 2048-D for
      50/101/152) at any input size; ``in_size``, ``dropout`` and ``embedding_dim`` are
      unused.
    - ``"flatten"``: Ji et al. Sec. 4.4.1 "remove the 7x7 pooling layer" (after Xiong et
      al. 2017): the final C x s x s feature map (s = ceil(``in_size`` / 32), 7 at 224) is
      flattened by ArcFace's output layer "E" (Deng et al. 2019, Sec. 3.1), BN2d(C) ->
      Dropout(``dropout``) -> Flatten -> Linear(C*s*s, ``embedding_dim``) ->
      BN1d(``embedding_dim``), and the features are ``embedding_dim``-D. The module is an
      ``nn.Sequential`` of the ResNet's trunk (``conv1`` ... ``layer4``, torchvision's
      state_dict keys) and ``output_layer``, and takes ``in_size`` x ``in_size`` inputs
      only (others raise a ``ValueError`` naming the size).

    ``pretrained``:

    - ``False``: random initialisation (torchvision's; PyTorch's default for the output
      layer).
    - ``True``: torchvision's ImageNet weights (``ResNet<depth>_Weights.DEFAULT``), read
      from ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>`` when that
      file exists, else downloaded there with ``torch.hub.load_state_dict_from_url``. If
      neither works a ``RuntimeError`` names the model, the URL and the cache path. With
      ``pooling="flatten"`` they fill the trunk and the output layer, which replaces
      ImageNet's classifier, keeps its fresh initialisation.
    - a path (``str`` or ``os.PathLike``): a local file holding either a plain torchvision
      state_dict (``fc.*`` keys optional, they are ignored; such a file fills the trunk of
      a ``"flatten"`` model like ``True`` does) or a checkpoint dict whose ``state_dict``
      holds the backbone under a dotted prefix, such as a Lightning checkpoint
      (``net.backbone.conv1.weight``) or a DDP-wrapped model (``module.conv1.weight``).
      The prefix stripped is the one, among the keys' dotted prefixes ending where
      ``conv1.weight`` starts, under which most of the model's keys are found; keys
      outside it (heads, other modules) are ignored. Every key of the model, a
      ``"flatten"`` output layer included, must be found with its shape: a missing file
      raises ``FileNotFoundError``; missing, unexpected or reshaped keys (such as a
      checkpoint saved with another ``pooling`` or ``in_size``) raise ``ValueError``
      naming the file and the first offending keys.
    """
    if depth not in _RESNETS:
        raise ValueError(f"unknown ResNet depth {depth}; choose one of {sorted(_RESNETS)}")
    _check_pooling(pooling)
    builder, weights = _RESNETS[depth]
    resnet = builder(weights=None)
    name = f"resnet{depth}"
    if pooling == "avg":
        model, feature_dim = resnet, resnet.fc.in_features
        resnet.fc = nn.Identity()
    else:
        if in_size < 1:
            raise ValueError(f"in_size must be >= 1, got {in_size}")
        name = f"{name} (pooling='flatten', in_size={in_size})"
        head = _flatten_output_layer(
            resnet.fc.in_features, math.ceil(in_size / 32), dropout, embedding_dim
        )
        model, feature_dim = _FlatResNet(resnet, head, in_size, name), embedding_dim
    if pretrained is True:
        state = _imagenet_state_dict(depth, weights)
        _load_into(model, state, weights.url, name, classifier="fc.")
    elif pretrained is not False:
        _load_file(model, pretrained, name, classifier="fc.")
    return model, feature_dim


class _FlatResNet(nn.Sequential):
    """A torchvision ResNet's trunk (same modules, same state_dict keys) followed by a
    flattening ``output_layer`` instead of its average pooling and ``fc``."""

    def __init__(self, resnet: models.ResNet, head: nn.Module, in_size: int, name: str) -> None:
        trunk = [(child, getattr(resnet, child)) for child in _TRUNK]
        super().__init__(OrderedDict([*trunk, (OUTPUT_LAYER, head)]))
        self.in_size = in_size
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, ``embedding_dim``) of images (B, 3, ``in_size``, ``in_size``)."""
        _check_input_size(x, self.in_size, self.name)
        return super().forward(x)


def _check_pooling(pooling: str) -> None:
    if pooling not in get_args(Pooling):
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(get_args(Pooling))}")


def _flatten_output_layer(
    channels: int, size: int, dropout: float, embedding_dim: int
) -> nn.Sequential:
    """ArcFace's output layer "E" (Deng et al. 2019: CVPR Sec. 3.1 "BN-Dropout-FC-BN" after
    the last conv layer, option E of the arXiv v1 network settings; after Xiong et al.
    2017): BN2d -> Dropout -> Flatten -> FC -> BN1d over the whole ``channels`` x ``size``
    x ``size`` map, in place of global average pooling. Indices as InsightFace's
    ``output_layer``, so its state_dict keys match."""
    return nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(channels * size * size, embedding_dim),
        nn.BatchNorm1d(embedding_dim),
    )


def _check_input_size(x: Tensor, in_size: int, name: str) -> None:
    # Without it a wrong size surfaces as a matmul shape error in the output layer's FC.
    if tuple(x.shape[-2:]) != (in_size, in_size):
        height, width = x.shape[-2:]
        raise ValueError(
            f"{name} flattens its final feature map, so it takes {in_size}x{in_size} inputs, "
            f"got {height}x{width}; resize the images, or build it with in_size={height} "
            "(square inputs) or pooling='avg'"
        )


def _imagenet_state_dict(depth: int, weights: models.WeightsEnum) -> dict[str, Tensor]:
    url = weights.url
    file_name = os.path.basename(urlparse(url).path)
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    cached = os.path.join(cache_dir, file_name)
    if os.path.isfile(cached):
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as err:
            raise RuntimeError(
                f"cannot read the cached resnet{depth} ImageNet weights {cached} ({err}); "
                f"delete the file or pass `pretrained: /path/to/{file_name}` instead"
            ) from err
    try:
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=cache_dir,
            map_location="cpu",
            progress=False,
            check_hash=True,
            file_name=file_name,
            weights_only=True,
        )
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise RuntimeError(
            f"cannot get ImageNet weights for resnet{depth}: download of {url} failed "
            f"({type(err).__name__}: {err}) and {cached} does not exist; put the file there "
            f"or pass `pretrained: /path/to/{file_name}` instead"
        ) from err


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read weights from {path}: {err}") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    return obj


def _load_file(
    model: nn.Module, pretrained: object, name: str, classifier: str | None = None
) -> None:
    """``_load_into`` from a local file, ``pretrained`` being its path."""
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f"pretrained must be a bool or a path, got {pretrained!r}")
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{name} pretrained weights file not found: {path}")
    _load_into(model, _read_state_dict(path), str(path), name, classifier)


def _strip_prefix(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> tuple[str, dict]:
    anchor = next(iter(expected))
    prefixes = {
        key[: -len(anchor)]
        for key in state
        if key.endswith(anchor) and (key == anchor or key[-len(anchor) - 1] == ".")
    }
    if not prefixes:
        return "", dict(state)

    def score(prefix: str) -> tuple[int, int]:
        hits = sum(k.startswith(prefix) and k[len(prefix) :] in expected for k in state)
        return hits, -len(prefix)

    prefix = max(prefixes, key=score)
    if not prefix:
        return "", dict(state)
    return prefix, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    name: str,
    classifier: str | None = None,
) -> None:
    """Load ``state`` into ``model``, stripping the dotted prefix that ends where the
    model's first state_dict key starts (``conv1.weight``, ``input_layer.0.weight``).

    Strict: every key of the model (BN ``num_batches_tracked`` aside) must be there with
    the model's shape, and no other key, or a ``ValueError`` names ``source`` and the first
    offending keys. Except for a classification head: keys under ``classifier`` (such as
    torchvision's ``fc.``) that the model does not have are ignored, and a state holding
    them is a classification-pretrained trunk (ImageNet weights), so the model's
    ``output_layer.*``, which stands in for that head, may be missing and keeps its
    fresh initialisation.
    """
    target = model.state_dict()
    prefix, state = _strip_prefix(state, target)
    head = {k for k in state if classifier and k.startswith(classifier) and k not in target}
    state = {k: v for k, v in state.items() if k not in head}
    fresh = f"{OUTPUT_LAYER}." if head else None
    missing = sorted(
        k
        for k in target.keys() - state.keys()
        if not k.endswith("num_batches_tracked") and not (fresh and k.startswith(fresh))
    )
    unexpected = sorted(state.keys() - target.keys())
    where = f" (after stripping prefix {prefix!r})" if prefix else ""
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match {name}{where}: "
            f"{len(missing)} missing keys {missing[:_SHOWN_KEYS]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:_SHOWN_KEYS]}"
        )
    reshaped = [
        f"{k}: {tuple(v.shape)} in the file, {tuple(target[k].shape)} in the model"
        for k, v in state.items()
        if isinstance(v, Tensor) and v.shape != target[k].shape
    ]
    if reshaped:
        raise ValueError(
            f"{source} does not fit {name}{where}: {len(reshaped)} keys of another shape "
            f"{reshaped[:_SHOWN_KEYS]}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{source} does not fit {name}: {err}") from err


class MultiLabelHead(nn.Module):
    """One logit per label from a feature vector: optional dropout, then a linear layer.

    The multi-label output of Chu et al. (Sec. 3.1, Eq. (1)) and of the papers' ResNet
    baselines: a sigmoid per AU (applied by the loss), not a softmax across AUs.
    """

    def __init__(self, feature_dim: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(feature_dim, num_outputs)

    def forward(self, features: Tensor) -> Tensor:
        """Logits (B, ``num_outputs``) of features (B, ``feature_dim``)."""
        return self.linear(self.dropout(features))
