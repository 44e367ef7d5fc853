"""IR-50/100/152 (ArcFace, Ji et al. Sec. 3.3) and the flattening output layer of Ji et al.
Sec. 4.4.1 on ResNets: shapes, parameter arithmetic, residual semantics, no pooling,
local weights round trips."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision import models

from au_lightning.nn import IRNet, MultiLabelHead, ir_backbone, resnet_backbone
from au_lightning.nn.irnet import BottleneckIR


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _unit_params(c_in: int, c: int) -> int:
    # residual: BN(c_in) + Conv3x3(c_in, c) + PReLU(c) + Conv3x3(c, c) + BN(c)
    residual = 2 * c_in + 9 * c_in * c + c + 9 * c * c + 2 * c
    # shortcut: MaxPool2d (no parameters) if c_in == c, else Conv1x1(c_in, c) + BN(c)
    shortcut = 0 if c_in == c else c_in * c + 2 * c
    return residual + shortcut


def _output_layer_params(s: int, embedding_dim: int = 512) -> int:
    # BN2d(512), Linear(512*s*s, E) with bias, BN1d(E)
    return 2 * 512 + 512 * s * s * embedding_dim + embedding_dim + 2 * embedding_dim


def _ir_params(units: tuple[int, ...], s: int) -> int:
    input_layer = 3 * 64 * 3 * 3 + 2 * 64 + 64  # Conv3x3(3, 64), BN(64), PReLU(64)
    body, c_in = 0, 64
    for c, n in zip((64, 128, 256, 512), units, strict=True):
        # the first unit of a stage goes c_in -> c (stride 2), the others c -> c
        body += _unit_params(c_in, c) + (n - 1) * _unit_params(c, c)
        c_in = c
    return input_layer + body + _output_layer_params(s)


def _units_per_stage(net: IRNet) -> list[int]:
    units = [m for m in net.modules() if isinstance(m, BottleneckIR)]
    return [sum(u.channels == c for u in units) for c in (64, 128, 256, 512)]


def _randomise_bn_stats(net: nn.Module) -> None:
    """BN running statistics unlike a fresh net's, so a round trip must carry them."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    net.eval()


@functools.cache
def _ir(depth: int, in_size: int = 112, pooling: str = "flatten") -> IRNet:
    """One eval-mode net per configuration for the whole module; tests only read them."""
    torch.manual_seed(depth + in_size)
    net, feature_dim = ir_backbone(depth, in_size=in_size, pooling=pooling)  # type: ignore[arg-type]
    assert isinstance(net, IRNet) and feature_dim == net.feature_dim
    return net.eval()


def _save_lightning_checkpoint(backbone: nn.Module, path: Path) -> None:
    """A Lightning-style checkpoint of a net holding ``backbone`` and a head."""
    net = nn.Module()
    net.backbone = backbone
    net.head = MultiLabelHead(12, 5)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    assert "net.head.linear.weight" in state
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state}, path)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --- IR networks ---------------------------------------------------------------------


@pytest.mark.parametrize("depth", [50, 100, 152])
@pytest.mark.parametrize(("in_size", "s"), [(112, 7), (64, 4)])
def test_ir_output_shapes(depth: int, in_size: int, s: int) -> None:
    net = _ir(depth, in_size)
    assert net.feature_dim == 512
    assert net.output_layer[3].in_features == 512 * s * s
    maps: list[Tensor] = []
    handle = net.body.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        out = net(torch.randn(2 if depth == 50 else 1, 3, in_size, in_size))
    handle.remove()
    assert out.shape == (2 if depth == 50 else 1, 512)
    assert maps[0].shape[1:] == (512, s, s)


def test_ir152_parameter_count_and_units_per_stage() -> None:
    net = _ir(152)
    assert _units_per_stage(net) == [3, 8, 36, 3]
    assert len(net.body) == 50
    strides = [u.stride for u in net.body]
    assert [i for i, stride in enumerate(strides) if stride == 2] == [0, 3, 11, 47]
    assert _params(net) == _ir_params((3, 8, 36, 3), s=7) == 70_737_600
    assert _params(net.output_layer) == _output_layer_params(7)
    assert _params(_ir(152, 64)) == _ir_params((3, 8, 36, 3), s=4)


def test_ir50_and_ir100_parameter_counts() -> None:
    assert _units_per_stage(_ir(50)) == [3, 4, 14, 3]
    assert _units_per_stage(_ir(100)) == [3, 13, 30, 3]
    assert _params(_ir(50)) == _ir_params((3, 4, 14, 3), s=7) == 43_574_976
    assert _params(_ir(100)) == _ir_params((3, 13, 30, 3), s=7) == 65_129_792
    assert _params(_ir(50, 64)) == _ir_params((3, 4, 14, 3), s=4)
    trunk = _ir_params((3, 4, 14, 3), s=7) - _output_layer_params(7)
    assert _params(_ir(50, pooling="avg")) == trunk


def test_ir_state_dict_keys_follow_insightface() -> None:
    state = _ir(50).state_dict()
    keys = set(state)
    assert next(iter(state)) == "input_layer.0.weight"
    assert {
        "input_layer.2.weight",
        "body.0.res_layer.0.running_mean",
        "body.0.res_layer.2.weight",
        "body.3.shortcut_layer.0.weight",
        "body.23.res_layer.4.weight",
        "output_layer.0.weight",
        "output_layer.3.weight",
        "output_layer.4.running_var",
    } <= keys
    assert not any(k.startswith("body.0.shortcut_layer") for k in keys)  # MaxPool2d(1, 2)
    assert not any(k.startswith("body.24") for k in keys)


def test_ir_unit_is_identity_plus_residual() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8)
    same = BottleneckIR(64, 64, 1).eval()
    strided = BottleneckIR(64, 64, 2).eval()
    projected = BottleneckIR(64, 128, 2).eval()
    with torch.no_grad():
        assert not torch.allclose(same(x), x)
        for unit in (same, strided, projected):
            unit.res_layer[-1].weight.zero_()
            unit.res_layer[-1].bias.zero_()
        assert torch.equal(same(x), x)
        assert torch.equal(strided(x), x[:, :, ::2, ::2])
        assert torch.allclose(projected(x), projected.shortcut_layer(x))
        assert projected(x).shape == (2, 128, 4, 4)


def test_ir_flatten_refuses_other_sizes_avg_takes_any() -> None:
    with torch.no_grad(), pytest.raises(ValueError, match=r"64x64 inputs, got 112x112"):
        _ir(50, 64)(torch.randn(1, 3, 112, 112))
    avg = _ir(50, pooling="avg")
    assert avg.feature_dim == 512
    with torch.no_grad():
        for size in (32, 48, 80):
            assert avg(torch.randn(1, 3, size, size)).shape == (1, 512)
    assert not any(isinstance(m, nn.Linear) for m in avg.modules())


def test_ir_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"multiple of 16, got 100"):
        IRNet(50, in_size=100)
    with pytest.raises(ValueError, match=r"\[50, 100, 152\]"):
        IRNet(34)
    with pytest.raises(ValueError, match=r"'avg', 'flatten'"):
        IRNet(50, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"local"):
        ir_backbone(152, pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        ir_backbone(50, pretrained="nowhere.pth")


def test_ir_embedding_dim_and_dropout() -> None:
    net, dim = ir_backbone(50, in_size=32, embedding_dim=128, dropout=0.4)
    assert dim == 128
    assert net.output_layer[1].p == 0.4
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def test_ir_lightning_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source, _ = ir_backbone(50, in_size=32)
    x = torch.randn(3, 3, 32, 32)
    _randomise_bn_stats(source)
    path = tmp_path / "ir50.ckpt"
    _save_lightning_checkpoint(source, path)
    loaded, _ = ir_backbone(50, in_size=32, pretrained=path)
    _assert_same_state(loaded, source)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), source(x))
    with pytest.raises(ValueError, match=r"ir50\.ckpt.*unexpected keys \['output_layer"):
        ir_backbone(50, pooling="avg", pretrained=path)


# --- ResNets with the flattening output layer --------------------------------------


@pytest.mark.parametrize(("depth", "channels"), [(18, 512), (50, 2048)])
def test_resnet_flatten_features(depth: int, channels: int) -> None:
    net, dim = resnet_backbone(depth, pooling="flatten")
    assert dim == 512
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)) for m in net.modules())
    assert net.output_layer[3].in_features == channels * 7 * 7
    small, dim = resnet_backbone(depth, pooling="flatten", in_size=72)  # ceil(72/32) = 3
    assert small.output_layer[3].in_features == channels * 3 * 3
    with torch.no_grad():
        assert small.eval()(torch.randn(2, 3, 72, 72)).shape == (2, dim)
        with pytest.raises(ValueError, match=r"72x72 inputs, got 64x64"):
            small(torch.randn(2, 3, 64, 64))


def test_resnet_flatten_keeps_torchvision_trunk_keys() -> None:
    flat, _ = resnet_backbone(18, pooling="flatten")
    avg, _ = resnet_backbone(18)
    keys = set(flat.state_dict())
    assert {k for k in keys if not k.startswith("output_layer.")} == set(avg.state_dict())
    assert isinstance(avg.fc, nn.Identity)


def _spatial_shuffle(_module: nn.Module, _inputs: object, out: Tensor) -> Tensor:
    return out.flip(-1).roll(1, dims=-2)


@pytest.mark.parametrize(
    ("network", "pooling"),
    [("resnet", "avg"), ("resnet", "flatten"), ("ir", "avg"), ("ir", "flatten")],
)
def test_flatten_sees_where_features_are(network: str, pooling: str) -> None:
    torch.manual_seed(2)
    last: nn.Module
    if network == "resnet":
        net = resnet_backbone(18, pooling=pooling, in_size=96)[0].eval()  # type: ignore[arg-type]
        last, size = net.layer4, 96
    else:
        net = _ir(50, 48) if pooling == "flatten" else _ir(50, pooling="avg")
        last, size = net.body, 48
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        plain = net(x)
        handle = last.register_forward_hook(_spatial_shuffle)
        shuffled = net(x)
        handle.remove()
    # Average pooling is blind to where on the face a feature fires; the flattened map is not.
    assert torch.allclose(plain, shuffled, atol=1e-5) is (pooling == "avg")


def test_resnet_flatten_lightning_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source, _ = resnet_backbone(18, pooling="flatten", in_size=64)
    x = torch.randn(3, 3, 64, 64)
    _randomise_bn_stats(source)
    path = tmp_path / "r18_flat.ckpt"
    _save_lightning_checkpoint(source, path)
    loaded, dim = resnet_backbone(18, pretrained=str(path), pooling="flatten", in_size=64)
    assert dim == 512
    _assert_same_state(loaded, source)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), source(x))


def test_resnet_checkpoint_of_another_pooling_or_size_is_refused(tmp_path: Path) -> None:
    flat_path, avg_path = tmp_path / "r18_flat.ckpt", tmp_path / "r18_avg.ckpt"
    _save_lightning_checkpoint(resnet_backbone(18, pooling="flatten", in_size=64)[0], flat_path)
    _save_lightning_checkpoint(resnet_backbone(18)[0], avg_path)
    with pytest.raises(ValueError, match=r"r18_flat\.ckpt.*unexpected keys \['output_layer"):
        resnet_backbone(18, pretrained=flat_path)
    with pytest.raises(ValueError, match=r"r18_avg\.ckpt.*missing keys \['output_layer"):
        resnet_backbone(18, pretrained=avg_path, pooling="flatten", in_size=64)
    with pytest.raises(ValueError, match=r"r18_flat\.ckpt.*another shape.*output_layer\.3"):
        resnet_backbone(18, pretrained=flat_path, pooling="flatten", in_size=128)


def test_imagenet_weights_fill_the_trunk_of_a_flatten_resnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(4)
    imagenet = models.resnet18(weights=None).state_dict()
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    file_name = Path(models.ResNet18_Weights.DEFAULT.url).name
    torch.save(imagenet, hub / "checkpoints" / file_name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    for pretrained in (True, hub / "checkpoints" / file_name):
        net, _ = resnet_backbone(18, pretrained=pretrained, pooling="flatten", in_size=64)
        state = net.state_dict()
        for key, value in imagenet.items():
            if not key.startswith("fc."):
                assert torch.equal(state[key], value), key
        assert not any(k.startswith("fc.") for k in state)
        assert state["output_layer.3.weight"].shape == (512, 512 * 2 * 2)
