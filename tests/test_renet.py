"""RE-Net (Yang & Yin): the AU-specific BN against plain BN and hand-computed Eq. 5, batched
all-AU inference against C passes, the relation graph, the training strategies, unseen AUs,
intensity, and the plugin through the CLI on SynthAU."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

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
)

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
    model = RENet(aus=[1, 2, 4, 6], unseen_aus=[4])
    drawn = {model.training_aus()[0] for _ in range(200)}
    assert drawn == {0, 1, 3}  # every seen AU, never the unseen AU 4 (position 2)
    assert RENet(aus=[1, 2, 4, 6], strategy="all", unseen_aus=[4]).training_aus() == [0, 1, 3]


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
    main(["test", *args, f"--ckpt_path={best}"])
    (table,) = workdir.rglob("test_results.md")
    assert "| AU1 |" in table.read_text() and "| AU24 |" in table.read_text()


def test_learnable_graph_is_trained_and_written(workdir: Path) -> None:
    args = ["--config", str(CONFIGS / "renet.yaml"), *TINY, "--trainer.default_root_dir=runs"]
    main(["fit", *args, "--trainer.max_epochs=1", "--model.graph=learnable", "--model.lr=0.01"])
    (learned_csv,) = workdir.rglob("relation_learned.csv")
    (last,) = workdir.rglob("last.ckpt")
    learned = torch.load(last, weights_only=True)["state_dict"]["net.graph.weight"].numpy()
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(_read_csv_matrix(learned_csv)[off], learned[off], atol=1e-4)
    torch.manual_seed(0)  # the CLI's seed_everything: 0 gives the same random start
    start = RENet(graph="learnable").net.graph.weight.detach().numpy()
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
    # the seen AUs keep their training averages (the initial zeros for any not drawn yet),
    # not the estimate
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
    # for every AU; the training averages (previous test) differ from AU to AU
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
