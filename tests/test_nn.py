"""Shared backbones: ANet shapes and size, ResNet features, local and offline weights."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from au_lightning.nn import ANet, MultiLabelHead, resnet_backbone

R18_FILE = os.path.basename(models.ResNet18_Weights.DEFAULT.url)


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fail(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return calls


@pytest.fixture(scope="module")
def anet224() -> ANet:
    return ANet(num_outputs=12).eval()


@pytest.fixture(scope="module")
def r18_state_module() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return models.resnet18(weights=None, num_classes=1000).state_dict()


@pytest.fixture
def r18_state(r18_state_module: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(r18_state_module)


def _assert_backbone_equals(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("size", [224, 64])
def test_anet_logits_and_fc7_shapes(size: int, anet224: ANet) -> None:
    net = anet224 if size == 224 else ANet(num_outputs=12, in_size=size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert net(x).shape == (2, 12)
        fc7 = net.features(x)
        unit = net.features(x, normalize=True)
    assert fc7.shape == (2, 4096)
    assert torch.allclose(unit.norm(dim=1), torch.ones(2))


def test_anet_built_for_224_runs_on_64px(anet224: ANet) -> None:
    with torch.no_grad():
        assert anet224(torch.randn(3, 3, 64, 64)).shape == (3, 12)
        assert anet224.features(torch.randn(1, 3, 176, 176)).shape == (1, 4096)


def test_anet_parameter_counts_match_the_layer_table(anet224: ANet) -> None:
    net = anet224
    # conv1: 96*3*11*11 + 96    =   34,944
    # conv2: 256*96*5*5 + 256   =  614,656
    # conv3: 384*256*3*3 + 384  =  885,120
    # conv4: 384*384*3*3 + 384  = 1,327,488
    # conv5: 256*384*3*3 + 256  =  884,992
    # total                      = 3,747,200
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [sum(p.numel() for p in c.parameters()) for c in convs] == [
        34_944,
        614_656,
        885_120,
        1_327_488,
        884_992,
    ]
    assert sum(p.numel() for c in convs for p in c.parameters()) == 3_747_200
    # fc6: 256*6*6*4096 + 4096 = 37,752,832; fc7: 4096*4096 + 4096 = 16,781,312;
    # fc8: 4096*12 + 12 = 49,164
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [sum(p.numel() for p in fc.parameters()) for fc in linears] == [
        37_752_832,
        16_781_312,
        49_164,
    ]
    assert sum(1 for m in net.modules() if isinstance(m, nn.LocalResponseNorm)) == 2


def test_anet_rejects_inputs_too_small_for_its_pools() -> None:
    with pytest.raises(ValueError, match="63"):
        ANet(num_outputs=3, in_size=48)


@pytest.mark.parametrize(("depth", "dim"), [(18, 512), (50, 2048)])
def test_resnet_features(depth: int, dim: int) -> None:
    net, feature_dim = resnet_backbone(depth)
    assert feature_dim == dim
    assert isinstance(net.fc, nn.Identity)
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 48, 48)).shape == (2, dim)


@pytest.mark.parametrize(("depth", "dim"), [(34, 512), (101, 2048), (152, 2048)])
def test_resnet_deep_construction(depth: int, dim: int) -> None:
    net, feature_dim = resnet_backbone(depth)
    assert feature_dim == dim
    assert isinstance(net.fc, nn.Identity)
    assert len(net.layer4) > 0


def test_resnet_unknown_depth_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"\[18, 34, 50, 101, 152\]"):
        resnet_backbone(20)


def test_multilabel_head() -> None:
    head = MultiLabelHead(512, 12, dropout=0.1)
    assert head(torch.randn(4, 512)).shape == (4, 12)
    assert sum(p.numel() for p in head.parameters()) == 512 * 12 + 12


def test_local_torchvision_state_dict_loads(
    tmp_path: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    state = r18_state
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    net, _ = resnet_backbone(18, pretrained=str(path))
    _assert_backbone_equals(net, state)


def test_local_state_dict_without_fc_loads(
    tmp_path: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    state = {k: v for k, v in r18_state.items() if not k.startswith("fc.")}
    path = tmp_path / "r18_nofc.pth"
    torch.save(state, path)
    net, _ = resnet_backbone(18, pretrained=path)
    _assert_backbone_equals(net, state)


def test_lightning_checkpoint_with_prefixed_keys_loads(
    tmp_path: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    state = r18_state
    backbone = {f"net.backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    head = {"net.head.linear.weight": torch.zeros(12, 512), "net.head.linear.bias": torch.zeros(12)}
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {**backbone, **head},
        "hyper_parameters": {"depth": 18, "lr": 1e-3},
    }
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(ckpt, path)
    net, _ = resnet_backbone(18, pretrained=str(path))
    _assert_backbone_equals(net, state)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        resnet_backbone(18, pretrained=str(tmp_path / "nowhere.pth"))


def test_state_dict_with_missing_key_is_named(
    tmp_path: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    state = r18_state
    del state["layer3.1.bn2.weight"]
    path = tmp_path / "broken_r18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken_r18\.pth.*layer3\.1\.bn2\.weight"):
        resnet_backbone(18, pretrained=str(path))


def test_wrong_depth_weights_are_rejected(
    tmp_path: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "r18_for_r34.pth"
    torch.save(r18_state, path)
    with pytest.raises(ValueError, match=r"r18_for_r34\.pth.*missing keys"):
        resnet_backbone(34, pretrained=str(path))


def test_imagenet_offline_error_names_url_cache_and_local_option(
    hub_dir: Path, no_download: list[str]
) -> None:
    with pytest.raises(RuntimeError) as info:
        resnet_backbone(18, pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert "resnet18" in message
    assert models.ResNet18_Weights.DEFAULT.url in message
    assert str(hub_dir / "checkpoints" / R18_FILE) in message
    assert f"pretrained: /path/to/{R18_FILE}" in message
    assert no_download == [models.ResNet18_Weights.DEFAULT.url]


def test_imagenet_weights_come_from_hub_cache_without_download(
    hub_dir: Path, no_download: list[str], r18_state: dict[str, torch.Tensor]
) -> None:
    state = r18_state
    (hub_dir / "checkpoints").mkdir()
    torch.save(state, hub_dir / "checkpoints" / R18_FILE)
    net, dim = resnet_backbone(18, pretrained=True)
    assert dim == 512
    assert no_download == []
    _assert_backbone_equals(net, state)


def test_imagenet_weights_downloaded_into_hub_cache(
    hub_dir: Path, monkeypatch: pytest.MonkeyPatch, r18_state: dict[str, torch.Tensor]
) -> None:
    state = r18_state
    seen: dict[str, object] = {}

    def fake_download(url: str, model_dir: str | None = None, **kwargs: object) -> dict:
        seen.update(url=url, model_dir=model_dir, file_name=kwargs.get("file_name"))
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    net, _ = resnet_backbone(18, pretrained=True)
    assert seen == {
        "url": models.ResNet18_Weights.DEFAULT.url,
        "model_dir": str(hub_dir / "checkpoints"),
        "file_name": R18_FILE,
    }
    _assert_backbone_equals(net, state)
