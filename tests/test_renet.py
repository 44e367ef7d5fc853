"""RE-Net (Yang & Yin): the AU-specific BN against plain BN and hand-computed Eq. 5, batched
all-AU inference against C passes, the output layers (per AU: Sec. 4.6's vanilla ResNet-18;
shared), the relation graph and its row-sum guard, the training strategies, unseen AUs (what
trains them, what their ω reads), intensity, and the plugin through the CLI on SynthAU."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18

from au_lightning import ConfigError
from au_lightning.cli import main
from au_renet import (
    AURelationGraph,
    AUSpecificBatchNorm,
    RelationEmbeddedResNet,
    RENet,
    RENetIntensity,
    check_relation,
    label_correlation,
    mix_parameters,
    read_relation,
)
from au_renet.relation import MIN_ROW_SUM

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "--data.init_args.synth={subjects: 6, videos: 1, frames: 16, size: 32, workers: 1}",
    "--data.image_size=32",
    "--data.crop_size=28",
    "--data.batch_size=8",
    "--trainer.enable_progress_bar=false",
]


def _layer(num_aus: int, features: int, relation: torch.Tensor) -> AUSpecificBatchNorm:
    layer = AUSpecificBatchNorm(features, num_aus).double()
    layer.context = (torch.arange(num_aus), relation.double())
    return layer


def _randomize(net: RelationEmbeddedResNet) -> None:
    """Per-AU parameters and statistics that differ, so that AU mix-ups show."""
    with torch.no_grad():
        for norm in net.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.2)
            norm.running_mean.normal_(0, 0.2)
            norm.running_var.uniform_(0.5, 2.0)


# -- AUSpecificBatchNorm and Eq. 5 -----------------------------------------------------------


def test_identity_graph_unit_scale_zero_bias_is_plain_bn_per_au() -> None:
    """Eq. 2: with ω = I, γ = 1, β = 0 each AU's slice is batch-normalised with its own
    batch statistics (training) and its own running statistics (evaluation)."""
    torch.manual_seed(0)
    num_aus, features, images = 3, 4, 5
    layer = _layer(num_aus, features, torch.eye(num_aus))
    plain = [nn.BatchNorm2d(features, affine=False).double() for _ in range(num_aus)]
    for _ in range(3):  # three training batches: outputs and running statistics
        x = torch.randn(images * num_aus, features, 6, 6, dtype=torch.float64) * 3 + 1
        out = layer(x)
        for c in range(num_aus):
            expected = plain[c](x[c::num_aus])  # image-major: AU c's rows are c, c+K, ...
            torch.testing.assert_close(out[c::num_aus], expected, rtol=0, atol=1e-12)
            torch.testing.assert_close(layer.running_mean[c], plain[c].running_mean)
            torch.testing.assert_close(layer.running_var[c], plain[c].running_var)
    layer.eval()
    x = torch.randn(images * num_aus, features, 6, 6, dtype=torch.float64)
    out = layer(x)
    for c in range(num_aus):
        plain[c].eval()
        torch.testing.assert_close(out[c::num_aus], plain[c](x[c::num_aus]), rtol=0, atol=1e-12)


def test_mixed_parameters_by_hand() -> None:
    omega = torch.tensor([[1.0, 0.5, -0.25], [0.5, 1.0, 0.0], [-0.25, 0.0, 1.0]])
    gamma = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    expected = torch.tensor(
        [
            [(1 + 0.5 * 3 - 0.25 * 5) / 1.25, (2 + 0.5 * 4 - 0.25 * 6) / 1.25],
            [(0.5 * 1 + 3) / 1.5, (0.5 * 2 + 4) / 1.5],
            [(-0.25 * 1 + 5) / 0.75, (-0.25 * 2 + 6) / 0.75],
        ]
    )
    torch.testing.assert_close(mix_parameters(omega, gamma), expected)


def test_all_ones_graph_gives_every_au_the_same_parameters() -> None:
    torch.manual_seed(1)
    num_aus, features = 4, 3
    layer = _layer(num_aus, features, torch.ones(num_aus, num_aus))
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    mixed = mix_parameters(torch.ones(num_aus, num_aus).double(), layer.weight)
    assert torch.allclose(mixed, layer.weight.mean(0).expand_as(mixed))
    # same input for every AU and shared statistics: every AU's output is the same
    layer.eval()
    x = torch.randn(2, features, 5, 5, dtype=torch.float64).repeat_interleave(num_aus, 0)
    out = layer(x).view(2, num_aus, features, 5, 5)
    for c in range(1, num_aus):
        torch.testing.assert_close(out[:, c], out[:, 0])


def test_layer_equals_eq4_with_running_statistics() -> None:
    torch.manual_seed(2)
    omega = torch.tensor([[1.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 1.0]])
    layer = _layer(3, 2, omega).eval()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
        layer.running_mean.normal_()
        layer.running_var.uniform_(0.5, 2)
    x = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    out = layer(x)
    gamma, beta = (
        mix_parameters(omega.double(), layer.weight),
        mix_parameters(omega.double(), layer.bias),
    )
    for row in range(6):
        c = row % 3
        mean, var = layer.running_mean[c], layer.running_var[c]
        expected = (
            gamma[c, :, None, None]
            * (x[row] - mean[:, None, None])
            / torch.sqrt(var[:, None, None] + layer.eps)
            + beta[c, :, None, None]
        )
        torch.testing.assert_close(out[row], expected, rtol=0, atol=1e-12)


def test_layer_without_context_says_where_to_run_it() -> None:
    with pytest.raises(RuntimeError, match="inside RelationEmbeddedResNet"):
        AUSpecificBatchNorm(4, 2)(torch.zeros(2, 4, 2, 2))


def test_from_batchnorm_starts_every_au_from_the_pretrained_layer() -> None:
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 5.0, 6.0]))
    layer = AUSpecificBatchNorm.from_batchnorm(bn, 5)
    assert layer.weight.shape == (5, 3)
    assert (layer.weight == bn.weight).all() and (layer.running_var == bn.running_var).all()


def test_relation_graph_fixed_and_learnable() -> None:
    fixed = AURelationGraph(3)
    fixed.set_relation(torch.tensor([[9.0, 0.2, 0.3], [0.2, 9.0, 0.4], [0.3, 0.4, 9.0]]))
    torch.testing.assert_close(fixed().diagonal(), torch.ones(3))
    assert not list(fixed.parameters())
    learnable = AURelationGraph(3, learnable=True)
    omega = learnable()
    assert omega.requires_grad and (omega.diagonal() == 1).all()
    off = omega[~torch.eye(3, dtype=torch.bool)]
    assert ((off >= 0) & (off < 1)).all() and off.std() > 0  # random, non-negative start


def test_learnable_graph_guards_row_sums_by_hand() -> None:
    """Eq. 5 divides by ω's row sums; a learned row that crosses 0 has its off-diagonal
    weights raised uniformly until the sum is MIN_ROW_SUM (0.1); other rows are Eq. 5's."""
    graph = AURelationGraph(3, learnable=True)
    with torch.no_grad():
        graph.weight.copy_(torch.tensor([[5.0, -1.0, -0.5], [0.2, 5.0, 0.3], [-0.4, -0.45, 5.0]]))
    omega = graph()
    # row 0 sums to 1 - 1.5 = -0.5: each off-diagonal weight + (0.1 + 0.5) / 2 = 0.3;
    # row 2 sums to 0.15 >= 0.1 and is left alone
    expected = torch.tensor([[1.0, -0.7, -0.2], [0.2, 1.0, 0.3], [-0.4, -0.45, 1.0]])
    torch.testing.assert_close(omega, expected)
    assert MIN_ROW_SUM == 0.1 and omega.sum(1).min() >= MIN_ROW_SUM - 1e-7
    with torch.no_grad():
        graph.weight[0, 1:] = torch.tensor([-0.5, -0.5 + 1e-6])  # row sum 1e-6
    gamma = torch.tensor([[1.0], [2.0], [4.0]])
    mixed = mix_parameters(graph(), gamma)
    # guarded row 0: off-diagonal -0.5 + 0.05 each, sum 0.1: (1 - 0.45 * 2 - 0.45 * 4) / 0.1
    # = -17; unguarded it would be (1 - 0.5 * 2 - 0.5 * 4) / 1e-6, about -2e6
    assert mixed[0, 0].item() == pytest.approx(-17.0, rel=1e-4)
    # along the uniform shift the guarded row is flat: the gradient has no component there
    mixed[0, 0].backward()
    assert graph.weight.grad[0, 1:].sum().abs() < 1e-5 and graph.weight.grad[0, 1:].abs().max() > 1
    # a fixed graph is never shifted (check_relation refuses its bad rows instead)
    fixed = AURelationGraph(2)
    fixed.set_relation(torch.tensor([[1.0, -0.95], [-0.95, 1.0]]))
    torch.testing.assert_close(fixed(), torch.tensor([[1.0, -0.95], [-0.95, 1.0]]))


# -- the relation graph (Sec. 3.3) -----------------------------------------------------------


def test_label_correlation_is_pearson_over_rows_where_both_are_known() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < [0.3, 0.5, 0.2]).astype(np.int8)
    labels[:, 1] = np.where(rng.random(200) < 0.8, labels[:, 0], labels[:, 1])
    labels[rng.random((200, 3)) < 0.1] = -1
    omega = label_correlation(labels, (1, 2, 4))
    for i in range(3):
        for j in range(3):
            both = (labels[:, i] >= 0) & (labels[:, j] >= 0)
            expected = 1.0 if i == j else np.corrcoef(labels[both, i], labels[both, j])[0, 1]
            assert omega[i, j] == pytest.approx(expected)
    assert omega[0, 1] > 0.5  # the coupled pair


def test_label_correlation_of_a_constant_au_is_no_edge_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels = np.array([[1, 0, 1], [0, 0, 0], [1, 0, -1], [0, 0, 1]], dtype=np.int8)
    with caplog.at_level(logging.WARNING):
        omega = label_correlation(labels, (1, 2, 4))
    assert omega[0, 1] == omega[1, 2] == 0 and omega[1, 1] == 1
    assert "AU1-AU2" in caplog.text and "AU2-AU4" in caplog.text


def _relation_labels() -> np.ndarray:
    """Labels of AUs 1, 2, 4 where AU4 follows AU1 in 80% of the frames."""
    rng = np.random.default_rng(1)
    labels = (rng.random((300, 3)) < [0.4, 0.3, 0.3]).astype(np.int8)
    labels[:, 2] = np.where(rng.random(300) < 0.8, labels[:, 0], labels[:, 2])
    labels[rng.random((300, 3)) < 0.05] = -1
    return labels


def test_unseen_au_relation_does_not_read_its_labels_by_default() -> None:
    """Table 6: with unseen_relation identity, ω of an unseen AU is the identity's and no
    label of that AU is read; ``labels`` is the paper's PCC over all AUs, the unseen too."""
    labels = _relation_labels()
    model = RENet(aus=[1, 2, 4], unseen_aus=[4])
    omega = model.set_training_relation(labels)
    np.testing.assert_allclose(omega[:2, :2], label_correlation(labels[:, :2], (1, 2)))
    np.testing.assert_array_equal(omega[2], [0, 0, 1])
    np.testing.assert_array_equal(omega[:, 2], [0, 0, 1])
    torch.testing.assert_close(model.net.graph(), torch.from_numpy(omega).float())
    scrambled = labels.copy()
    scrambled[:, 2] = np.random.default_rng(2).permutation(scrambled[:, 2])
    np.testing.assert_array_equal(model.training_relation_from(scrambled), omega)
    # the paper's reading: AU4's correlation with AU1 (0.8 of its frames copy AU1's) leaks in
    leaky = RENet(aus=[1, 2, 4], unseen_aus=[4], unseen_relation="labels")
    full = leaky.set_training_relation(labels)
    np.testing.assert_allclose(full, label_correlation(labels, (1, 2, 4)))
    assert full[0, 2] > 0.6
    assert abs(leaky.training_relation_from(scrambled)[0, 2] - full[0, 2]) > 0.5


def test_unseen_au_relation_from_a_prior_file(tmp_path: Path) -> None:
    """A relation CSV (e.g. from other subjects) gives the unseen AUs' rows and columns, by
    AU number; the seen AUs' part stays their training PCC."""
    prior = tmp_path / "relation.csv"
    prior.write_text(
        "AU,AU4,AU2,AU1,AU6\n"
        "AU4,1,0.25,0.5,0.1\n"
        "AU2,0.25,1,0.9,0.2\n"
        "AU1,0.5,0.9,1,0.3\n"
        "AU6,0.1,0.2,0.3,1\n"
    )
    np.testing.assert_array_equal(read_relation(prior, (1, 4)), [[1.0, 0.5], [0.5, 1.0]])
    labels = _relation_labels()
    model = RENet(aus=[1, 2, 4], unseen_aus=[4], unseen_relation=str(prior))
    omega = model.set_training_relation(labels)
    np.testing.assert_array_equal(omega[2], [0.5, 0.25, 1.0])
    np.testing.assert_array_equal(omega[:, 2], [0.5, 0.25, 1.0])
    # not the file's 0.9: the seen pair keeps its training-label correlation
    assert omega[0, 1] == pytest.approx(label_correlation(labels[:, :2], (1, 2))[0, 1])
    with pytest.raises(ConfigError, match=r"no row or column for AUs \[12\]"):
        read_relation(prior, (1, 12))


def test_check_relation_names_rows_eq5_cannot_divide_by() -> None:
    check_relation(np.eye(2), (1, 2))
    with pytest.raises(ConfigError, match=r"AU12 \(0\.050\).*sum to less than 0\.1"):
        check_relation(np.array([[1.0, -0.95], [-0.95, 1.0]]), (12, 15))


# -- RelationEmbeddedResNet: batched inference -----------------------------------------------


def test_every_bn_of_the_resnet_is_au_specific() -> None:
    net = RelationEmbeddedResNet(4, "resnet18")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert len(net.norms) == 20  # bn1, 2 per basic block x 8, 3 downsample BNs
    deep = RelationEmbeddedResNet(2, "resnet50")
    assert len(deep.norms) == 53


def test_batched_all_au_inference_equals_c_sequential_passes() -> None:
    torch.manual_seed(3)
    net = RelationEmbeddedResNet(5).double()
    _randomize(net)
    net.graph.set_relation(torch.rand(5, 5, dtype=torch.float64))
    net.eval()
    images = torch.randn(3, 3, 48, 48, dtype=torch.float64)
    batched = net(images)
    assert batched.shape == (3, 5, 1)
    torch.testing.assert_close(batched, net.forward_each(images), rtol=0, atol=1e-12)
    # a subset of AUs, in any order, is the same columns
    subset = net(images, [4, 1])
    torch.testing.assert_close(subset, batched[:, [4, 1]], rtol=0, atol=1e-12)
    # and the outputs of different AUs differ (no AU silently shares another's parameters)
    assert (batched[:, 0] - batched[:, 1]).abs().max() > 1e-3


def _plain_copy(net: RelationEmbeddedResNet) -> nn.Module:
    """A torchvision ResNet-18 with ``net``'s convolutions, AU 0's BN parameters and
    statistics, and ``net``'s C-way head as its ``fc``."""
    plain = resnet18(num_classes=net.num_aus).double()
    ours = net.backbone.state_dict()
    state = {}
    for name, value in plain.state_dict().items():
        if name.startswith("fc."):
            state[name] = getattr(net.head, name[3:]).detach().clone()
        elif name.endswith("num_batches_tracked"):
            state[name] = value
        else:
            state[name] = ours[name] if ours[name].shape == value.shape else ours[name][0]
    plain.load_state_dict(state)
    return plain


def test_per_au_head_with_unit_scale_zero_bias_is_the_vanilla_resnet18() -> None:
    """Sec. 4.6: with scale 1 and bias 0 in Eq. 4 RE-Net is the vanilla ResNet-18, whatever
    ω: every AU's pass computes the same features, and AU c reads row c of the C-way
    output layer, as ResNet-18's multi-label layer gives AU c's logit."""
    torch.manual_seed(9)
    net = RelationEmbeddedResNet(4).double()  # γ = 1, β = 0: the initial parameters
    net.graph.set_relation(torch.rand(4, 4, dtype=torch.float64))
    plain = _plain_copy(net)
    images = torch.randn(6, 3, 40, 40, dtype=torch.float64)
    net.train(), plain.train()
    torch.testing.assert_close(net(images)[..., 0], plain(images), rtol=0, atol=1e-10)
    # the training pass moved every AU's running statistics as the plain BN's
    torch.testing.assert_close(
        net.norms[-1].running_mean, plain.layer4[1].bn2.running_mean.expand(4, -1)
    )
    net.eval(), plain.eval()
    torch.testing.assert_close(net(images)[..., 0], plain(images), rtol=0, atol=1e-10)
    # pass c reads row c: AU 2's pass gives gradient to row 2 of the output layer only
    net.zero_grad()
    net(images, [2]).sum().backward()
    rows = net.head.weight.grad.abs().sum(1)
    assert rows[2] > 0 and (rows[[0, 1, 3]] == 0).all()


def test_shared_head_runs_one_detector_for_every_au_at_the_start() -> None:
    """With one logit shared by all AUs and the AUs' BN parameters equal (as they start),
    every AU's output is the same: the AUs can differ only as their γ, β drift apart."""
    torch.manual_seed(10)
    net = RelationEmbeddedResNet(4, head="shared").double().train()
    assert net.head.weight.shape == (1, 512)
    out = net(torch.randn(5, 3, 32, 32, dtype=torch.float64))[..., 0]
    torch.testing.assert_close(out, out[:, :1].expand_as(out), rtol=0, atol=1e-12)
    per_au = RelationEmbeddedResNet(4).double().train()
    assert per_au.head.weight.shape == (4, 512)
    out = per_au(torch.randn(5, 3, 32, 32, dtype=torch.float64))[..., 0]
    assert (out[:, 1:] - out[:, :1]).abs().min() > 1e-6


def test_unseen_au_reads_the_output_rows_mixed_by_eq5() -> None:
    """An unseen AU's output rows start at 0 and are never trained; its pass reads
    Σ_k ω_ck w_k / Σ_k ω_ck (its own zero row included), a seen AU its own row."""
    torch.manual_seed(11)
    net = RelationEmbeddedResNet(3, unseen=[2]).double()
    assert (net.head.weight[2] == 0).all() and net.head.bias[2] == 0
    _randomize(net)
    omega = torch.tensor([[1.0, 0.2, 0.5], [0.2, 1.0, 0.3], [0.5, 0.3, 1.0]], dtype=torch.float64)
    net.graph.set_relation(omega)
    features = []
    net.backbone.avgpool.register_forward_hook(lambda m, i, o: features.append(o.flatten(1)))
    net.eval()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    unseen, seen = net(images, [2])[:, 0, 0], net(images, [0])[:, 0, 0]
    w, b = net.head.weight.detach(), net.head.bias.detach()
    mixed_w = (0.5 * w[0] + 0.3 * w[1]) / 1.8
    mixed_b = (0.5 * b[0] + 0.3 * b[1]) / 1.8
    torch.testing.assert_close(unseen, features[0] @ mixed_w + mixed_b, rtol=0, atol=1e-12)
    torch.testing.assert_close(seen, features[1] @ w[0] + b[0], rtol=0, atol=1e-12)
    # with no edge to the unseen AU nothing transfers: its logit is 0 for every image
    net.graph.set_relation(torch.eye(3, dtype=torch.float64))
    assert (net(images, [2]) == 0).all()


def test_a_training_pass_updates_the_running_statistics_of_its_aus_only() -> None:
    torch.manual_seed(4)
    net = RelationEmbeddedResNet(4)
    before = [n.running_mean.clone() for n in net.norms]
    net.train()
    net(torch.randn(4, 3, 32, 32), [2])
    for norm, old in zip(net.norms, before, strict=True):
        changed = (norm.running_mean != old).any(1)
        assert changed.tolist() == [False, False, True, False]
    # Eq. 5: the other AUs' γ get gradient through ω (zero without an edge)
    net.graph.set_relation(torch.tensor([[1, 0, 0.5, 0], [0, 1, 0.0, 0], [0.5, 0, 1, 0], [0] * 4]))
    net.zero_grad()
    net(torch.randn(4, 3, 32, 32), [2]).sum().backward()
    grad = net.norms[0].weight.grad.abs().sum(1)
    assert grad[0] > 0 and grad[2] > 0 and grad[1] == 0 and grad[3] == 0


def test_estimate_statistics_is_the_mean_of_the_batch_statistics() -> None:
    torch.manual_seed(5)
    net = RelationEmbeddedResNet(3).double()
    _randomize(net)
    first = net.norms[0]
    kept = first.running_mean[[0, 2]].clone()
    batches = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in range(3)]
    net.eval()
    assert net.estimate_statistics(iter(batches), [1]) == 3
    assert not net.training
    conv = [net.backbone.conv1(b) for b in batches]
    mean = torch.stack([c.mean((0, 2, 3)) for c in conv]).mean(0)
    var = torch.stack([c.var((0, 2, 3), unbiased=True) for c in conv]).mean(0)
    torch.testing.assert_close(first.running_mean[1], mean.detach())
    torch.testing.assert_close(first.running_var[1], var.detach())
    torch.testing.assert_close(first.running_mean[[0, 2]], kept)  # other AUs untouched
    assert first.momentum == 0.1


# -- the LightningModules --------------------------------------------------------------------


def test_strategies_and_unseen_aus_choose_the_training_aus() -> None:
    torch.manual_seed(6)
    model = RENet(aus=[1, 2, 4, 6], strategy="random", unseen_aus=[4])
    drawn = {model.training_aus()[0] for _ in range(200)}
    assert drawn == {0, 1, 3}  # every seen AU, never the unseen AU 4 (position 2)
    assert RENet(aus=[1, 2, 4, 6], strategy="all", unseen_aus=[4]).training_aus() == [0, 1, 3]
    assert RENet(aus=[1, 2]).hparams.strategy == "all"  # the default (plugin README)


@pytest.mark.parametrize("unseen_aus", [[], [4]])
@pytest.mark.parametrize("edge", [0.5, 0.0])
def test_an_au_without_labels_is_trained_through_the_other_aus_rows_of_eq5(
    unseen_aus: list[int], edge: float
) -> None:
    """AU4's labels are all unknown (or AU4 is unseen): a training step still moves its
    γ and β when a seen AU's row of ω has weight on it (Eq. 5), and only then."""
    torch.manual_seed(12)
    model = RENet(aus=[1, 2, 4], strategy="all", unseen_aus=unseen_aus)
    relation = torch.tensor([[1.0, 0.2, edge], [0.2, 1.0, 0.0], [edge, 0.0, 1.0]])
    model.net.graph.set_relation(relation)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    target = torch.tensor([[1, 0, -1], [0, 1, -1], [1, 1, -1], [0, 0, -1]], dtype=torch.int8)
    layers = (model.net.norms[0], model.net.norms[-1])
    before = [(n.weight.detach().clone(), n.bias.detach().clone()) for n in layers]
    model.training_step({"image": torch.randn(4, 3, 32, 32), "occurrence": target}, 0).backward()
    optimizer.step()
    for norm, (gamma, beta) in zip(layers, before, strict=True):
        assert not torch.equal(norm.weight[0], gamma[0])  # a seen AU trains
        changed = not torch.equal(norm.weight[2], gamma[2]), not torch.equal(norm.bias[2], beta[2])
        assert changed == (edge != 0, edge != 0)


def test_training_loss_is_eq6_summed_over_the_pass_aus_and_ignores_unseen_labels() -> None:
    torch.manual_seed(7)
    model = RENet(aus=[1, 2, 4], strategy="all", unseen_aus=[4])
    images = torch.randn(4, 3, 32, 32)
    target = torch.tensor([[1, 0, 1], [0, -1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.int8)
    batch = {"image": images, "occurrence": target}
    torch.manual_seed(8)
    loss = model.training_step(batch, 0)
    torch.manual_seed(8)
    logits = model.net(images, [0, 1])[..., 0]
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0].float())
    known = target[:, 1] >= 0
    expected = expected + F.binary_cross_entropy_with_logits(
        logits[known, 1], target[known, 1].float()
    )
    torch.testing.assert_close(loss, expected)
    flipped = dict(batch, occurrence=target.clone())
    flipped["occurrence"][:, 2] = 1 - target[:, 2]
    torch.manual_seed(8)
    torch.testing.assert_close(model.training_step(flipped, 0), loss)


def test_intensity_loss_masks_unknown_levels() -> None:
    model = RENetIntensity(aus=[6, 12])
    outputs = torch.randn(3, 6, requires_grad=True)
    target = torch.tensor([2, -1, 5])
    loss = model.au_loss(outputs, target, 0)
    expected = F.cross_entropy(outputs[[0, 2]], target[[0, 2]])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (outputs.grad[1] == 0).all()
    assert model.au_loss(outputs, torch.full((3,), -1), 0) == 0


def test_intensity_cv_report_gives_each_fold_and_the_mean(tmp_path: Path) -> None:
    model = RENetIntensity(aus=[6, 12])
    folds = {
        "part1": {"icc_AU6": 0.5, "icc_AU12": 0.7, "icc_mean": 0.6, "mae_AU6": 1.0,
                  "mae_AU12": 0.5, "mae_mean": 0.75},
        "part2": {"icc_AU6": 0.3, "icc_AU12": float("nan"), "icc_mean": 0.3,
                  "mae_AU6": 2.0, "mae_AU12": 0.25, "mae_mean": 1.125},
    }  # fmt: skip
    md = model.write_cv_report(folds, {}, tmp_path)
    with (tmp_path / "cv_results.csv").open() as f:
        rows = {row["AU"]: row for row in csv.DictReader(f)}
    assert md.is_file() and list(rows) == ["AU6", "AU12", "mean"]
    assert rows["AU6"] == {"AU": "AU6", "ICC part1": "0.500", "ICC part2": "0.300",
                           "ICC mean": "0.400", "MAE part1": "1.000", "MAE part2": "2.000",
                           "MAE mean": "1.500"}  # fmt: skip
    assert rows["AU12"]["ICC mean"] == "0.700"  # the NaN fold is left out
    assert rows["mean"]["MAE mean"] == "0.938"


def test_option_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"model.unseen_aus \[9\] are not among"):
        RENet(aus=[1, 2], unseen_aus=[9])
    with pytest.raises(ConfigError, match="leaves no AU to train on"):
        RENet(aus=[1, 2], unseen_aus=[1, 2])
    with pytest.raises(ConfigError, match=r"model\.strategy must be random or all"):
        RENet(aus=[1, 2], strategy="each")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"model\.calibration_batches must be >= 1, got 0"):
        RENet(aus=[1, 2], calibration_batches=0)
    with pytest.raises(ConfigError, match=r"model\.head must be per_au or shared, got 'one'"):
        RENet(aus=[1, 2], head="one")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"model\.unseen_relation must be identity, labels"):
        RENet(aus=[1, 2], unseen_aus=[2], unseen_relation="nowhere.csv")


# -- through the CLI on SynthAU --------------------------------------------------------------


def _read_csv_matrix(path: Path) -> np.ndarray:
    with path.open() as f:
        rows = list(csv.reader(f))[1:]
    return np.array([[float(v) for v in row[1:]] for row in rows])


def test_config_fit_writes_the_training_relation_and_tests_all_aus(workdir: Path) -> None:
    from au_lightning.data import AUDataModule

    args = ["--config", str(CONFIGS / "renet.yaml"), *TINY, "--trainer.default_root_dir=runs"]
    main(["fit", *args, "--trainer.max_epochs=1", "--data.sampler=duplicate"])
    (relation_csv,) = workdir.rglob("relation.csv")
    assert (relation_csv.parent / "relation.png").is_file()
    data = AUDataModule(
        dataset="bp4d",
        synth={"subjects": 6, "videos": 1, "frames": 16, "size": 32, "workers": 1},
        aus="bp4d",
        protocol="bp4d_3fold",
        fold="part1",
        val_strategy="subjects",
        val_fraction=0.2,
    )
    data.setup()
    expected = label_correlation(data.index.occurrence[data.train_rows], data.aus)
    np.testing.assert_allclose(_read_csv_matrix(relation_csv), expected, atol=1e-4)
    (best,) = workdir.rglob("best.ckpt")
    state = torch.load(best, weights_only=True)["state_dict"]
    np.testing.assert_allclose(state["net.graph.weight"].numpy(), expected, atol=1e-12)
    assert state["net.head.weight"].shape == (12, 512)  # the per-AU head, the default
    main(["test", *args, f"--ckpt_path={best}"])
    (table,) = workdir.rglob("test_results.md")
    assert "| AU1 |" in table.read_text() and "| AU24 |" in table.read_text()


def test_learnable_graph_is_trained_and_written(workdir: Path) -> None:
    args = ["--config", str(CONFIGS / "renet.yaml"), *TINY, "--trainer.default_root_dir=runs"]
    main(["fit", *args, "--trainer.max_epochs=1", "--model.graph=learnable", "--model.lr=0.01",
          "--model.head=shared"])  # fmt: skip
    (learned_csv,) = workdir.rglob("relation_learned.csv")
    (last,) = workdir.rglob("last.ckpt")
    state = torch.load(last, weights_only=True)["state_dict"]
    assert state["net.head.weight"].shape == (1, 512)  # the option reached the model
    learned = state["net.graph.weight"].numpy()
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(_read_csv_matrix(learned_csv)[off], learned[off], atol=1e-4)
    torch.manual_seed(0)  # the CLI's seed_everything: 0 gives the same random start
    start = RENet(graph="learnable", head="shared").net.graph.weight.detach().numpy()
    assert np.abs(learned[off] - start[off]).max() > 1e-3


def test_unseen_au_gets_estimated_statistics_before_evaluation(workdir: Path) -> None:
    args = ["--config", str(CONFIGS / "renet.yaml"), *TINY, "--trainer.default_root_dir=runs"]
    main(["fit", *args, "--trainer.max_epochs=1", "--model.unseen_aus=[12]"])
    (best,) = workdir.rglob("best.ckpt")
    state = torch.load(best, weights_only=True)["state_dict"]
    assert bool(state["statistics_current"])
    position = 6  # AU12 in the bp4d set
    mean = state["net.backbone.bn1.running_mean"]
    assert (mean[position] != 0).any()  # estimated, not the initial zeros
    # the seen AUs keep their training averages, not the estimate
    assert not torch.allclose(mean, mean[position].expand_as(mean))
    main(["test", *args, f"--ckpt_path={best}"])
    (table,) = workdir.rglob("test_results.md")
    assert "| AU12 |" in table.read_text()


def test_recalibration_estimates_every_aus_statistics_with_the_final_weights(
    workdir: Path,
) -> None:
    args = ["--config", str(CONFIGS / "renet.yaml"), *TINY, "--trainer.default_root_dir=runs"]
    main(["fit", *args, "--trainer.max_epochs=1", "--model.recalibrate_statistics=true"])
    (best,) = workdir.rglob("best.ckpt")
    state = torch.load(best, weights_only=True)["state_dict"]
    assert bool(state["statistics_current"])
    # bn1 follows the shared conv1, so statistics estimated on the same batches are the same
    # for every AU
    for name in ("running_mean", "running_var"):
        rows = state[f"net.backbone.bn1.{name}"]
        torch.testing.assert_close(rows, rows[:1].expand_as(rows), rtol=1e-5, atol=1e-6)
    deep = state["net.backbone.layer4.1.bn2.running_mean"]
    assert not torch.allclose(deep[0], deep[1])  # past AU-specific layers they differ


def test_intensity_config_fits_and_reports_icc_and_mae(workdir: Path) -> None:
    args = [
        "--config",
        str(CONFIGS / "renet_intensity_bp4d.yaml"),
        *TINY,
        "--trainer.default_root_dir=runs",
    ]
    main(["fit", *args, "--trainer.max_epochs=1"])
    (relation_csv,) = workdir.rglob("relation.csv")
    assert _read_csv_matrix(relation_csv).shape == (5, 5)
    main(["test", *args, "--ckpt_path=best"])
    (table,) = workdir.rglob("test_results.csv")
    with table.open() as f:
        rows = {row["AU"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["AU6", "AU10", "AU12", "AU14", "AU17", "mean"]
    maes = [float(rows[a]["MAE"]) for a in ("AU6", "AU10", "AU12", "AU14", "AU17")]
    assert all(0 <= m <= 5 for m in maes)
    assert float(rows["mean"]["MAE"]) == pytest.approx(np.mean(maes), abs=2e-3)
