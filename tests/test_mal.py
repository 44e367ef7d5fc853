"""The MAL plugin (Li & Shan): one step of Alg. 1 against a hand-unrolled autograd
computation of Eq. 4-11, where the meta net's gradient comes from, the zero-initialised
meta net, the STL and MTL rows, the weight analysis, and the shipped configs through the CLI
on a tiny SynthAU set."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from au_lightning import ConfigError
from au_lightning.cli import main
from au_lightning.data import AUDataModule, AuxiliaryDataModule, load_frame, positive_rates
from au_mal import (
    MAL,
    MTL,
    STL,
    ExpressionWeightAnalysis,
    MALDataModule,
    MetaWeightNet,
    MultiTaskOutput,
    TrainingCurves,
    normalized_weights,
    weight_consistency_summary,
)
from tests.mal_data import TINY_DATA

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class TinyNet(nn.Module):
    """A conv, batch norm and mean pool to a 4-d feature, and the two heads."""

    feature_dim = 4

    def __init__(self, num_aus: int = 12, num_expressions: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.au_head = nn.Linear(4, num_aus)
        self.fe_head = nn.Linear(4, num_expressions)

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        f = F.relu(self.bn(self.conv(x))).mean((2, 3))
        return MultiTaskOutput(f, self.au_head(f), self.fe_head(f))


def _tiny_mal(**kwargs) -> MAL:
    torch.manual_seed(1)
    model = MAL(backbone="resnet18", **kwargs)
    model.net = TinyNet()
    model.meta_net = MetaWeightNet(TinyNet.feature_dim)
    nn.init.normal_(model.meta_net.linear.weight, std=2.0)  # unequal weights from the start
    return model


def _trainer(root: Path, **kwargs) -> L.Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False,
               "default_root_dir": root, "num_sanity_val_steps": 0, "limit_val_batches": 0,
               "max_steps": 1, "precision": "64-true"}  # fmt: skip
    return L.Trainer(**(options | kwargs))


class Capture(L.Callback):
    """Keeps the first batch and the module's state before the first step; ``edit`` may
    change the batch in place first."""

    def __init__(self, edit=None) -> None:
        self.edit = edit

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            if self.edit:
                self.edit(batch)
            self.batch = copy.deepcopy(batch)
            self.module = copy.deepcopy(pl_module)


def _bce_sum(logits: torch.Tensor, z: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Eq. 1 per sample over the known labels, positives weighted, written out."""
    known = (z >= 0).to(logits)
    zf = z.clamp(min=0).to(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    return (-(pos_weight * zf * log_p + (1 - zf) * log_not_p) * known).sum(1)


def _hand_unrolled(module: MAL, batch: dict, alpha: float):
    """Alg. 1 lines 4-11 written out with torch.func: the weights of Eq. 4 normalised as
    Sec. 4.1.2, L_total (Eq. 5), θ* = θ − α∇θ L_total (Eq. 6), L_val(θ*) on the
    validation batch (Eq. 7), and ∇ψ L_val through the inner gradient (Eq. 8)."""
    net, meta = module.net, module.meta_net
    au, fe, val = batch["au"], batch["fe"], batch["val"]
    x = torch.cat([au["image"], fe["image"]]).double()
    b = len(au["image"])
    theta = dict(net.named_parameters())
    W = meta.linear.weight.detach().clone().requires_grad_()
    c = meta.linear.bias.detach().clone().requires_grad_()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    out = functional_call(net, (theta, buffers), (x,))
    w = torch.sigmoid(out.features.detach() @ W.T + c).squeeze(1)
    w_au, w_fe = w[:b] / w.sum(), w[b:] / w.sum()
    ones = torch.ones(out.au.shape[1], dtype=x.dtype)
    l_au = _bce_sum(out.au[:b], au["occurrence"], ones)
    l_fe = -F.log_softmax(out.expression[b:], 1)[torch.arange(len(fe["image"])),
                                                  fe["expression"].long()]  # fmt: skip
    total = (w_au * l_au).sum() + (w_fe * l_fe).sum()
    grads = torch.autograd.grad(total, list(theta.values()), create_graph=True)
    theta_star = {k: p - alpha * g for (k, p), g in zip(theta.items(), grads, strict=True)}
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    out_val = functional_call(net, (theta_star, buffers), (val["image"].double(),))
    rates = np.nan_to_num(module.trainer_reserve_rates, nan=0.5)
    pos_weight = torch.from_numpy(np.minimum((1 - rates) / np.maximum(rates, 1e-12), 20.0))
    l_val = _bce_sum(out_val.au, val["occurrence"], pos_weight.to(x)).mean()
    return torch.autograd.grad(l_val, [W, c])


def _fit_one_step(model: MAL, cache: Path, tmp_path: Path, edit=None) -> tuple[Capture, MAL]:
    data = AuxiliaryDataModule(**TINY_DATA)
    capture = Capture(edit)
    _trainer(tmp_path, callbacks=[capture]).fit(model, datamodule=data)
    capture.module.trainer_reserve_rates = data.reserve_rates
    return capture, model


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_one_mal_step_moves_psi_by_the_hand_unrolled_meta_gradient(
    cache: Path, tmp_path: Path, backend: str
) -> None:
    alpha, beta = 0.5, 2.0
    model = _tiny_mal(lr=alpha, meta_lr=beta, backend=backend)
    capture, model = _fit_one_step(model, cache, tmp_path)
    before = capture.module
    g_w, g_c = _hand_unrolled(before, capture.batch, alpha)
    assert g_w.abs().max() > 1e-6  # the meta-gradient is not trivially zero
    moved_w = model.meta_net.linear.weight.detach() - before.meta_net.linear.weight.detach()
    moved_c = model.meta_net.linear.bias.detach() - before.meta_net.linear.bias.detach()
    torch.testing.assert_close(moved_w, -beta * g_w, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(moved_c, -beta * g_c, atol=1e-10, rtol=1e-7)


def test_the_base_update_uses_the_weights_of_the_updated_meta_net(
    cache: Path, tmp_path: Path
) -> None:
    """Eq. 9-11: θ̂ = θ − α∇θ L̂_total, with ŵ = g(f(x); ψ̂) held fixed."""
    alpha = 0.5
    model = _tiny_mal(lr=alpha, meta_lr=2.0)
    capture, model = _fit_one_step(model, cache, tmp_path)
    before, batch = capture.module, capture.batch
    net = before.net
    au, fe = batch["au"], batch["fe"]
    b = len(au["image"])
    x = torch.cat([au["image"], fe["image"]]).double()
    out = net(x)
    with torch.no_grad():  # ψ̂: the meta net after this step
        w = model.meta_net(out.features)
    w_au, w_fe = w[:b] / w.sum(), w[b:] / w.sum()
    l_au = _bce_sum(out.au[:b], au["occurrence"], torch.ones(12, dtype=x.dtype))
    l_fe = F.cross_entropy(out.expression[b:], fe["expression"].long(), reduction="none")
    loss = (w_au * l_au).sum() + (w_fe * l_fe).sum()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    for (name, p), g in zip(net.named_parameters(), grads, strict=True):
        after = dict(model.net.named_parameters())[name].detach()
        torch.testing.assert_close(after, p.detach() - alpha * g, atol=1e-10, rtol=1e-7)
    # the BN running statistics saw exactly one real forward (the base-learning one)
    assert int(model.net.bn.num_batches_tracked) == 1


def test_the_meta_net_learns_only_from_the_validation_loss(cache: Path, tmp_path: Path) -> None:
    """With every validation label unknown, L_val is constant: ψ must not move, although
    the training loss depends on the weights and θ is updated."""

    def unknown_validation(batch: dict) -> None:
        batch["val"]["occurrence"].fill_(-1)

    model = _tiny_mal(lr=0.5, meta_lr=2.0)
    capture, model = _fit_one_step(model, cache, tmp_path, edit=unknown_validation)
    before = capture.module
    batch = capture.batch
    images = torch.cat([batch["au"]["image"], batch["fe"]["image"]]).double()
    targets = (batch["au"]["occurrence"], batch["fe"]["expression"])
    loss, _ = before.weighted_loss(before.net(images), targets)
    psi_grad = torch.autograd.grad(loss, [before.meta_net.linear.weight])[0]
    assert psi_grad.abs().max() > 1e-4  # the training loss would move ψ ...
    for p, q in zip(model.meta_net.parameters(), before.meta_net.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach())  # ... but ψ learns from L_val alone
    assert all(p.grad is None or not p.grad.any() for p in model.meta_net.parameters())
    assert not torch.equal(model.net.conv.weight, before.net.conv.weight)


def test_zero_initialised_meta_net_gives_every_sample_weight_one_half() -> None:
    meta = MetaWeightNet(512)
    features = torch.randn(10, 512) * 5
    w = meta(features)
    assert torch.equal(w, torch.full((10,), 0.5))
    w_au, w_fe = normalized_weights(w[:6], w[6:])
    torch.testing.assert_close(w_au, torch.full((6,), 0.1))
    torch.testing.assert_close(w_fe, torch.full((4,), 0.1))
    assert math.isclose(float(w_au.sum() + w_fe.sum()), 1.0, rel_tol=1e-6)
    model = MAL(backbone="resnet18")
    assert torch.equal(model.meta_net(torch.randn(3, 512)), torch.full((3,), 0.5))


def test_normalisation_divides_by_both_tasks_sums() -> None:
    w_au, w_fe = torch.tensor([0.2, 0.6]), torch.tensor([0.1, 0.3, 0.8])
    n_au, n_fe = normalized_weights(w_au, w_fe)
    torch.testing.assert_close(n_au, w_au / 2.0)
    torch.testing.assert_close(n_fe, w_fe / 2.0)


def test_stl_and_mtl_losses_are_the_paper_rows(cache: Path, tmp_path: Path) -> None:
    stl = STL(backbone="resnet18")
    assert stl.net.fe_head is None
    mtl = MTL(backbone="resnet18")
    assert mtl.net.fe_head.out_features == 7
    data = AuxiliaryDataModule(**(TINY_DATA | {"meta_batch_size": 0}))
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))[0]
    assert set(batch) == {"au", "fe"}
    au, fe = batch["au"], batch["fe"]
    mtl.eval()  # the same batch statistics in both forwards below
    out = mtl.net(torch.cat([au["image"], fe["image"]]))
    b = len(au["image"])
    ones = torch.ones(12)
    expected = _bce_sum(out.au[:b], au["occurrence"], ones).mean() + F.cross_entropy(
        out.expression[b:], fe["expression"].long()
    )
    torch.testing.assert_close(mtl.training_step(batch, 0), expected)


def test_mal_needs_the_auxiliary_data_and_matching_classes(cache: Path, tmp_path: Path) -> None:
    data = AUDataModule(**{k: v for k, v in TINY_DATA.items() if not k.startswith(("aux", "meta"))})
    with pytest.raises(ConfigError, match="AuxiliaryDataModule"):
        _trainer(tmp_path, precision="32-true").fit(MAL(backbone="resnet18"), datamodule=data)
    with pytest.raises(ConfigError, match=r"model.expressions is 8 .* 7 classes"):
        _trainer(tmp_path, precision="32-true").fit(
            MAL(backbone="resnet18", expressions=8), datamodule=AuxiliaryDataModule(**TINY_DATA)
        )
    data = AuxiliaryDataModule(**(TINY_DATA | {"meta_batch_size": 0}))
    with pytest.raises(ConfigError, match="meta_batch_size > 0"):
        _trainer(tmp_path, precision="32-true").fit(_tiny_mal(), datamodule=data)


def test_training_curves_average_windows_and_survive_a_checkpoint() -> None:
    curves = TrainingCurves(every=2)
    for step in range(5):
        curves.add(step, {"loss_au": float(step), **({"weight_fe": 0.5} if step > 1 else {})})
    ends, means = curves.windows()
    assert ends == [1, 3, 4]
    assert means["loss_au"] == [0.5, 2.5, 4.0]
    assert means["weight_fe"][0] != means["weight_fe"][0]  # NaN: not recorded yet
    assert means["weight_fe"][1:] == [0.5, 0.5]
    restored = TrainingCurves(every=2)
    restored.load_state_dict(curves.state_dict())
    assert restored.windows()[0] == ends
    assert restored.windows()[1]["loss_au"] == means["loss_au"]


def test_weight_consistency_summary_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    consistency = rng.uniform(0.2, 1.0, 200)
    weights = 0.3 + 0.2 * consistency + rng.normal(0, 0.05, 200)
    expression = rng.integers(0, 3, 200)
    rows = weight_consistency_summary(weights, expression, ("a", "b", "c"), consistency)
    assert rows[0][:5] == ["expression", "images", "mean weight", "Pearson r", "Spearman rho"]
    table = {r[0]: r for r in rows[1:]}
    assert set(table) == {"a", "b", "c", "all"}
    r = np.corrcoef(weights, consistency)[0, 1]
    ranks = np.corrcoef(np.argsort(np.argsort(weights)), np.argsort(np.argsort(consistency)))
    assert float(table["all"][3]) == pytest.approx(r, abs=1e-3)
    assert float(table["all"][4]) == pytest.approx(ranks[0, 1], abs=1e-3)
    low = weights[consistency < np.median(consistency)].mean()
    assert float(table["all"][5]) == pytest.approx(low, abs=1e-3)
    mask = expression == 1
    assert table["b"][1] == str(mask.sum())
    assert float(table["b"][2]) == pytest.approx(weights[mask].mean(), abs=1e-3)
    without = weight_consistency_summary(weights, expression, ("a", "b", "c"))
    assert without[0] == ["expression", "images", "mean weight"]


def test_the_analysis_writes_each_images_learned_weight(cache: Path, tmp_path: Path) -> None:
    model = _tiny_mal()
    data = AuxiliaryDataModule(**TINY_DATA)
    analysis = ExpressionWeightAnalysis(per_row=4, thumbnail=16)
    _trainer(tmp_path, callbacks=[analysis], precision="32-true").fit(model, datamodule=data)
    with open(tmp_path / "fe_weights.csv") as f:
        rows = list(csv.DictReader(f))
    index = data.aux_index
    assert len(rows) == len(index)
    assert [r["path"] for r in rows] == [str(p) for p in index.path]
    consistency = np.array([float(r["consistency"]) for r in rows])
    np.testing.assert_allclose(consistency, index.weight, atol=1e-4)
    model.eval()
    images = torch.stack([data.eval_transform(load_frame(index, i)) for i in range(3)])
    expected = model.expression_weights(images).numpy()
    np.testing.assert_allclose([float(r["weight"]) for r in rows[:3]], expected, atol=1e-5)
    assert (tmp_path / "fe_weights_sheet.png").is_file()
    table = (tmp_path / "fe_weights_results.md").read_text()
    assert "Spearman rho" in table and "| all | 48 |" in table
    with open(tmp_path / "fe_weights_results.csv") as f:
        summary = {r["expression"]: r for r in csv.DictReader(f)}
    assert summary["all"]["images"] == "48" and "weight (low consistency)" in summary["all"]
    with pytest.raises(ConfigError, match="meta net"):
        _trainer(tmp_path, callbacks=[analysis]).fit(STL(backbone="resnet18"), datamodule=data)


def test_the_mal_config_fits_and_writes_the_weight_curves(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    main([
        "fit", "--config", str(CONFIGS / "mal.yaml"),
        "--data.init_args.synth={subjects: 6, videos: 1, frames: 40, size: 32, seed: 0, "
        "workers: 1}", "--data.protocol=kfold", "--data.fold=0", "--data.val_fraction=0.05",
        "--data.aux_synth={images: 60, size: 32, seed: 0, workers: 1}",
        "--data.image_size=36", "--data.crop_size=32", "--data.batch_size=8",
        "--data.aux_batch_size=8", "--model.curve_every=2",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
    ])  # fmt: skip
    run = root / "lightning_logs" / "version_0"
    assert (run / "weight_curves.png").is_file() and (run / "loss_curves.png").is_file()
    assert (run / "fe_weights_sheet.png").is_file()
    with open(run / "training_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]  # windows of 2 steps, last step 0-based
    assert {"loss_au", "loss_fe", "loss_val", "weight_au", "weight_fe"} <= set(rows[0])
    assert all(0 < float(r["weight_fe"]) < 1 for r in rows)


@pytest.mark.parametrize("strategy", ["subjects", "frames"])
def test_the_selection_set_is_disjoint_from_the_meta_reserve(cache: Path, strategy: str) -> None:
    """ψ's meta step reads the reserve (Eq. 7); the checkpoint is selected on the validation
    loader. With MALDataModule the two, and the AU training frames, are disjoint frame sets
    and together the fold's training frames; with ``subjects`` no selection subject is in
    the other two. The plain AuxiliaryDataModule validates on the reserve itself."""
    plain = AuxiliaryDataModule(**TINY_DATA)
    plain.setup("fit")
    assert np.array_equal(plain.val_dataloader().dataset.rows, plain.val_rows)  # the overlap
    data = MALDataModule(**TINY_DATA, select_strategy=strategy, select_fraction=0.3)
    data.setup("fit")
    train, reserve, select = data.train_rows, data.val_rows, data.select_rows
    assert len(train) and len(reserve) and len(select)
    assert not set(train) & set(reserve) and not set(train) & set(select)
    assert not set(reserve) & set(select)
    assert sorted([*train, *reserve, *select]) == sorted([*plain.train_rows, *plain.val_rows])
    subject = data.index.subject_code
    if strategy == "subjects":
        assert not set(subject[select]) & (set(subject[train]) | set(subject[reserve]))
        assert set(subject[reserve]) == set(subject[train])  # 2% of each training subject
    else:
        assert set(subject[select]) == set(subject[train]) == set(subject[reserve])
    # what the loaders serve: validation = the selection set, the "val" batches = reserve
    assert np.array_equal(data.val_dataloader().dataset.rows, select)
    meta = data.train_dataloader().iterables["val"].dataset.rows
    assert np.array_equal(meta, reserve)
    np.testing.assert_array_equal(
        data.reserve_rates, positive_rates(data.index.occurrence[reserve])
    )
    assert data.hparams.select_strategy == strategy
    with pytest.raises(ConfigError, match="select_strategy"):
        MALDataModule(**TINY_DATA, select_strategy="test")


def test_weight_sum_two_gives_mtls_loss_at_uniform_weights(cache: Path) -> None:
    """Sum-to-one weights (Sec. 4.1.2) put the AU loss at half its STL/MTL weight; with
    ``weight_sum: 2`` and the zero-initialised meta net (every w = 1/2) MAL's L_total is
    MTL's mean L^AU + mean L^FE on equal AU and FE batches."""
    data = AuxiliaryDataModule(**(TINY_DATA | {"aux_batch_size": 8, "meta_batch_size": 0}))
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))[0]
    au, fe = batch["au"], batch["fe"]
    torch.manual_seed(0)
    mtl = MTL(backbone="resnet18").eval()
    expected = mtl.training_step(batch, 0)
    targets = (au["occurrence"], fe["expression"])
    out = mtl.net(torch.cat([au["image"], fe["image"]]))
    for weight_sum, scale in [(1.0, 0.5), (2.0, 1.0)]:
        mal = MAL(backbone="resnet18", weight_sum=weight_sum)
        mal.net = mtl.net
        loss, _ = mal.weighted_loss(out, targets)
        torch.testing.assert_close(loss, scale * expected)
    with pytest.raises(ConfigError, match="weight_sum"):
        MAL(backbone="resnet18", weight_sum=0)
