"""torchvision ResNet backbones and a multi-label linear head.

The papers' ResNets (Li & Shan's 34-layer MAL network, RE-Net's and Ji et al.'s ResNet-18)
are He et al.'s ImageNet ResNets; this module gives them as feature extractors, offline
first: ImageNet weights come from the torch hub cache or a local file.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
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


def resnet_backbone(depth: int = 18, pretrained: bool | str = False) -> tuple[nn.Module, int]:
    """A torchvision ResNet-``depth`` with ``fc`` replaced by ``nn.Identity()``, and its
    feature dimension (512 for depths 18/34, 2048 for 50/101/152).

    ``pretrained``:

    - ``False``: random initialisation (torchvision's).
    - ``True``: torchvision's ImageNet weights (``ResNet<depth>_Weights.DEFAULT``), read
      from ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>`` when that
      file exists, else downloaded there with ``torch.hub.load_state_dict_from_url``. If
      neither works a ``RuntimeError`` names the model, the URL and the cache path.
    - a path (``str`` or ``os.PathLike``): a local file holding either a plain torchvision
      state_dict (``fc.*`` keys optional, they are ignored) or a checkpoint dict whose
      ``state_dict`` holds the ResNet under a dotted prefix, such as a Lightning
      checkpoint (``net.backbone.conv1.weight``) or a DDP-wrapped model
      (``module.conv1.weight``). The prefix stripped is the one, among the keys' dotted
      prefixes ending where ``conv1.weight`` starts, under which most of the ResNet's
      keys are found; keys outside it (heads, other modules) are ignored. A missing
      file raises ``FileNotFoundError``; missing or unexpected keys raise ``ValueError``
      naming the file and the first offending keys.
    """
    if depth not in _RESNETS:
        raise ValueError(f"unknown ResNet depth {depth}; choose one of {sorted(_RESNETS)}")
    builder, weights = _RESNETS[depth]
    model = builder(weights=None)
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    if pretrained is True:
        state, source = _imagenet_state_dict(depth, weights), weights.url
        _load_into(model, state, source, f"resnet{depth}")
    elif isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"resnet{depth} pretrained weights file not found: {path}")
        _load_into(model, _read_state_dict(path), str(path), f"resnet{depth}")
    elif pretrained is not False:
        raise TypeError(f"pretrained must be a bool or a path, got {pretrained!r}")
    return model, feature_dim


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


def _strip_prefix(state: Mapping[str, Tensor], expected: set[str]) -> tuple[str, dict]:
    anchor = "conv1.weight"
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


def _load_into(model: nn.Module, state: Mapping[str, Tensor], source: str, name: str) -> None:
    expected = set(model.state_dict())
    prefix, state = _strip_prefix(state, expected)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(k for k in expected - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        where = f" (after stripping prefix {prefix!r})" if prefix else ""
        raise ValueError(
            f"{source} does not match {name}{where}: "
            f"{len(missing)} missing keys {missing[:_SHOWN_KEYS]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:_SHOWN_KEYS]}"
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
