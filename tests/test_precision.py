"""Mixed precision for every plugin: each fits a few steps with ``precision="bf16-mixed"`` on
CPU with autocast really active in its training step (bf16 layer outputs) and float32
parameters; its first-step loss is close to, not equal to, the float32 run's; test and
predict give float32 probabilities and write their tables. The meta plugins (MAML, MAL)
refuse float16, which their inner loop cannot take.

Kept small: on a CPU without native bf16 (AVX2 only) a bf16 convolution falls back to a slow
kernel, some 20 times slower than float32 there, so the networks see 24-px crops, one step
and one test and predict batch. Not 16 px: there ResNet-18's ``layer4.0.conv1`` (3x3, stride
2) sees a 1x1 map, and torch 2.14's oneDNN bf16 weight gradient of that convolution is
garbage on AVX-512 CPUs (up to 1e37, sometimes inf: 34 to 40 of 40 random draws wrong,
``python bench/bf16_conv_grad.py``), which made the parameters non-finite after one step.
Torch runs on one thread (two threads on two busy cores are much slower). Batches of 8
where the losses are compared: with 4, the batch statistics of ResNet's last BN layers (4
values per channel) turn bf16 rounding into first-step loss differences of up to 13%
(measured over seeds, at 16 px), with 8 they stay under 2%."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import au_hybrid.module
import au_maml.module
from au_baseline import Baseline
from au_hybrid import Hybrid
from au_lightning import AUMethod, ConfigError, PredictionWriter, check_meta_precision
from au_lightning.data import (
    AUDataModule,
    AuxiliaryDataModule,
    EpisodeDataModule,
    PretextDataModule,
    SequenceDataModule,
)
from au_mal import MAL, STL, MetaWeightNet, MultiTaskOutput
from au_maml import MAML, MAMLBaseline
from au_renet import RENet, RENetIntensity, mix_parameters
from au_transfer import Transfer, TransferEnsemble, TransferPretrain, ViewNet
from tests.mal_data import TINY_DATA as MAL_DATA

BF16 = "bf16-mixed"
FP32 = "32-true"
AUS = [1, 2, 4, 12]
SYNTH = {"subjects": 6, "videos": 1, "frames": 8, "size": 32, "seed": 1, "workers": 1}
#: 24 px: the smallest crop at which no stride-2 3x3 convolution of ResNet-18 sees a 1x1 map
#: (module docstring)
CROP = 24
SMALL = {"image_size": 28, "crop_size": CROP, "batch_size": 8}
#: test and predict on at most this many batches
EVAL_BATCHES = 1
MAML_DATA = {
    "dataset": "bp4d", "synth": {**SYNTH, "frames": 40, "seed": 0}, "aus": "bp4d",
    "protocol": "loso", "fold": 0, "val_fraction": 0.25, "image_size": 16, "crop_size": 16,
    "tasks_per_batch": 2, "train_shots": 2, "shots": [1], "query_shots": 2, "repeats": 1,
    "val_repeats": 1, "meta_batches": 2,
}  # fmt: skip
#: the first-step loss under bf16-mixed may differ from float32's by this relative amount
LOSS_RTOL = 5e-2
#: measured first-step losses (float32, bf16-mixed) by plugin
MEASURED: dict[str, tuple[float, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def report_losses() -> Iterator[None]:
    """Prints the measured first-step losses when the module's tests end (pytest -s)."""
    yield
    for name, (loss32, loss16) in MEASURED.items():
        rel = abs(loss16 - loss32) / abs(loss32)
        print(f"\n{name}: float32 {loss32:.6f}, bf16-mixed {loss16:.6f}, rel diff {rel:.2e}")


def _au_data(**overrides: Any) -> AUDataModule:
    options = {"dataset": "bp4d", "synth": SYNTH, "aus": AUS, "protocol": "bp4d_3fold"}
    return AUDataModule(**(options | SMALL | overrides))


def _trainer(root: Path, precision: str, **kwargs: Any) -> L.Trainer:
    options = {
        "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
        "limit_val_batches": 0, "max_steps": 1, "default_root_dir": root, "precision": precision,
        "limit_test_batches": EVAL_BATCHES, "limit_predict_batches": EVAL_BATCHES,
    }  # fmt: skip
    return L.Trainer(**(options | kwargs))


class Probe(L.Callback):
    """Watches every training step: the output dtypes of the submodules at ``paths`` (forward
    hooks that record only inside a training step, i.e. inside Lightning's autocast), the
    parameters' dtypes and the ``train/`` metrics logged by each step."""

    def __init__(self, *paths: str) -> None:
        self.paths = paths
        self.outputs: dict[str, set[torch.dtype]] = {p: set() for p in paths}
        self.parameter_dtypes: set[torch.dtype] = set()
        self.logged: list[dict[str, float]] = []
        self._in_step = False
        self._handles: list[Any] = []

    def _record(self, path: str, module: nn.Module, args: Any, output: Any) -> None:
        if self._in_step:
            self.outputs[path].add((output[0] if isinstance(output, tuple) else output).dtype)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for path in self.paths:
            hook = partial(self._record, path)
            self._handles.append(pl_module.get_submodule(path).register_forward_hook(hook))

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._in_step = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._in_step = False
        self.parameter_dtypes |= {p.dtype for p in pl_module.parameters()}
        metrics = trainer.callback_metrics
        self.logged.append({k: float(v) for k, v in metrics.items() if k.startswith("train/")})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for handle in self._handles:
            handle.remove()


def _fit(
    make_model: Callable[[], L.LightningModule],
    make_data: Callable[[], L.LightningDataModule],
    root: Path,
    precision: str,
    paths: tuple[str, ...],
    **trainer_options: Any,
) -> tuple[L.LightningModule, Probe, dict[str, Tensor]]:
    """A seeded model fitted with ``precision``; the probe and the parameters before."""
    torch.manual_seed(0)
    model = make_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    probe = Probe(*paths)
    trainer = _trainer(root, precision, callbacks=[probe], **trainer_options)
    trainer.fit(model, datamodule=make_data())
    return model, probe, before


def _check_bf16_fit(
    model: L.LightningModule, probe: Probe, before: dict[str, Tensor], loss_key: str
) -> None:
    """Autocast was on in the steps, parameters stayed float32 and moved, losses finite."""
    assert probe.logged, "no training step ran"
    for path, dtypes in probe.outputs.items():
        assert dtypes == {torch.bfloat16}, (path, dtypes)
    assert probe.parameter_dtypes == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    losses = [step[loss_key] for step in probe.logged if loss_key in step]
    assert losses and all(math.isfinite(loss) for loss in losses), losses
    for path in probe.paths:
        weight = model.get_submodule(path).get_parameter(_weight_name(model, path))
        assert not torch.equal(weight.detach(), before[f"{path}.{_weight_name(model, path)}"]), path
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _weight_name(model: nn.Module, path: str) -> str:
    module = model.get_submodule(path)
    return "weight" if hasattr(module, "weight") else "weight_ih_l0"


def _compare_first_loss(name: str, fp32: Probe, bf16: Probe, key: str) -> None:
    """The same seeded first step under both precisions: close, but not bitwise equal."""
    loss32, loss16 = fp32.logged[0][key], bf16.logged[0][key]
    assert all(d == {torch.float32} for d in fp32.outputs.values())
    MEASURED[name] = (loss32, loss16)
    assert math.isfinite(loss32) and math.isfinite(loss16)
    assert abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (loss32, loss16)
    assert loss16 != loss32, "bf16-mixed gave the float32 loss bit for bit: autocast did nothing"


def _test_and_predict(
    model: AUMethod, make_data: Callable[[], L.LightningDataModule], root: Path, layer: str
) -> Tensor:
    """Test and predict under bf16-mixed (autocast on in predict, as the hook shows): the
    results table and the predictions CSV are written, the probabilities float32 in [0, 1].
    Returns them."""
    _trainer(root / "test", BF16).test(model, datamodule=make_data(), verbose=False)
    table = (root / "test" / "test_results.md").read_text()
    assert "| AU12 |" in table or "| 12 |" in table
    seen: list[torch.dtype] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, o: seen.append(o.dtype))
    writer = PredictionWriter()
    predictions = _trainer(root / "predict", BF16, callbacks=[writer]).predict(
        model, datamodule=make_data()
    )
    handle.remove()
    assert seen and set(seen) == {torch.bfloat16}
    probs = torch.cat([p["probs"] for p in predictions])
    assert probs.dtype == torch.float32 and probs.shape[1] == len(model.aus)
    assert ((probs >= 0) & (probs <= 1)).all()
    with (root / "predict" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(probs) and all(0 <= float(r["p_AU12"]) <= 1 for r in rows)
    return probs


# -- the plain plugins: baseline, RE-Net, transfer --------------------------------------------


@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_bf16_gradients_stay_near_float32_at_the_test_crop(cache: Path, pooling: str) -> None:
    """ResNet-18's weight gradients of one batch under autocast and in float32, from the
    same weights: bf16 rounding through 8-sample BN statistics moves them by up to ~0.6 of
    their norm (measured), the oneDNN bug of the module docstring by 1e6 and more; at 16 px
    this fails on AVX-512 CPUs."""
    data = _au_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))["image"]
    for seed in range(3):
        torch.manual_seed(seed)
        net = ViewNet(3, "resnet18", pooling, CROP).train()  # type: ignore[arg-type]
        grads = []
        for enabled in (False, True):
            net.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                net(batch).float().square().mean().backward()
            grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.dim() > 1})
        for name, exact in grads[0].items():
            error = (grads[1][name] - exact).norm() / exact.norm()
            assert error < 3, (seed, name, float(error))


def test_baseline_bf16_fit_test_predict(cache: Path, tmp_path: Path) -> None:
    make = partial(Baseline, aus=AUS)
    layers = ("net.backbone.conv1", "net.head.linear")
    _, fp32, _ = _fit(make, _au_data, tmp_path / "fp32", FP32, layers)
    model, bf16, before = _fit(make, _au_data, tmp_path / "bf16", BF16, layers)
    _check_bf16_fit(model, bf16, before, "train/loss")
    _compare_first_loss("baseline", fp32, bf16, "train/loss")
    probs = _test_and_predict(model, _au_data, tmp_path, "net.backbone.conv1")
    # the same weights predicted in float32: close, and bf16 did change them
    exact = torch.cat(
        [p["probs"] for p in _trainer(tmp_path, FP32).predict(model, datamodule=_au_data())]
    )
    assert (probs - exact).abs().max() < 2e-2 and not torch.equal(probs, exact)


def test_renet_bf16_fit_test_predict(cache: Path, tmp_path: Path) -> None:
    make = partial(RENet, aus=AUS)  # one random AU per step
    layers = ("net.backbone.conv1",)
    _, fp32, _ = _fit(make, _au_data, tmp_path / "fp32", FP32, layers)
    model, bf16, before = _fit(make, _au_data, tmp_path / "bf16", BF16, layers)
    _check_bf16_fit(model, bf16, before, "train/loss")
    _compare_first_loss("renet", fp32, bf16, "train/loss")
    norm = model.net.backbone.bn1
    assert not torch.equal(norm.weight, before["net.backbone.bn1.weight"])  # γ trained
    _test_and_predict(model, _au_data, tmp_path, "net.backbone.conv1")


def test_renet_mixes_bn_parameters_in_float32_under_autocast() -> None:
    """Eq. 5 under autocast keeps γ's small updates, as a plain BatchNorm2d's float32 γ
    does; a bf16 matmul would round 1.001 to 1."""
    relation = torch.eye(3) + 0.25
    gamma = torch.full((3, 4), 1.001)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = mix_parameters(relation, gamma)
        assert (relation @ gamma).dtype == torch.bfloat16  # what the matmul alone would do
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, gamma)


def test_renet_intensity_bf16_fit_test_predict(cache: Path, tmp_path: Path) -> None:
    def data() -> AUDataModule:
        options = {"reader_options": {"intensity": True}, "batch_size": 4}
        return _au_data(aus="bp4d_intensity", **options)

    layers = ("net.backbone.conv1", "net.head")  # (no float32 run: RENet's is compared)
    model, bf16, before = _fit(RENetIntensity, data, tmp_path / "bf16", BF16, layers)
    _check_bf16_fit(model, bf16, before, "train/loss")
    _trainer(tmp_path / "test", BF16).test(model, datamodule=data(), verbose=False)
    with (tmp_path / "test" / "test_results.csv").open() as f:
        rows = {row["AU"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["AU6", "AU10", "AU12", "AU14", "AU17", "mean"]
    assert all(0 <= float(rows[a]["MAE"]) <= 5 for a in rows)
    predictions = _trainer(tmp_path, BF16).predict(model, datamodule=data())
    levels = torch.cat([p["levels"] for p in predictions])
    assert levels.dtype == torch.int64 and levels.shape[1] == 5
    assert ((levels >= 0) & (levels <= 5)).all()


def test_transfer_bf16_fit_test_predict(cache: Path, tmp_path: Path) -> None:
    make = partial(Transfer, aus=AUS, backbone="resnet18", pooling="flatten", in_size=CROP)
    layers = ("net.backbone.conv1", "net.head")
    _, fp32, _ = _fit(make, _au_data, tmp_path / "fp32", FP32, layers)
    model, bf16, before = _fit(make, _au_data, tmp_path / "bf16", BF16, layers)
    _check_bf16_fit(model, bf16, before, "train/loss")
    _compare_first_loss("transfer", fp32, bf16, "train/loss")
    _test_and_predict(model, _au_data, tmp_path, "net.backbone.conv1")
    table = (tmp_path / "test" / "test_results.md").read_text()
    assert "score" in table  # Ji et al.'s final score column


def test_transfer_pretrain_bf16_fit_and_test(cache: Path, tmp_path: Path) -> None:
    def data() -> PretextDataModule:
        return PretextDataModule(
            task="identity", dataset="bp4d", synth=SYNTH, protocol="bp4d_3fold",
            fold="part1", **(SMALL | {"batch_size": 4}),
        )  # fmt: skip

    classes = data()
    classes.setup("fit")
    make = partial(
        TransferPretrain, backbone="resnet18", pooling="flatten", in_size=CROP,
        num_classes=classes.num_classes,
    )  # fmt: skip
    layers = ("net.backbone.conv1", "net.head")  # (no float32 run: Transfer's is compared)
    model, bf16, before = _fit(make, data, tmp_path / "bf16", BF16, layers)
    _check_bf16_fit(model, bf16, before, "train/loss")
    [scores] = _trainer(tmp_path, BF16).test(model, datamodule=data(), verbose=False)
    assert 0 <= scores["test/acc"] <= 1 and math.isfinite(scores["test/loss"])


def test_transfer_ensemble_searches_thresholds_with_the_test_precision(
    cache: Path, tmp_path: Path
) -> None:
    """The thresholds are searched before testing (outside the steps' autocast) on the
    probabilities the bf16 test step gives, not on float32 ones."""
    views = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        view = Transfer(aus=AUS, backbone="resnet18", pooling="flatten", in_size=CROP)
        path = tmp_path / f"view{seed}.ckpt"
        hparams = {**view.hparams, "_class_path": "au_transfer.Transfer"}
        checkpoint = {"state_dict": view.state_dict(), "hyper_parameters": hparams}
        torch.save(checkpoint | {"pytorch-lightning_version": L.__version__}, path)
        views.append(str(path))
    ensemble = TransferEnsemble(views=views)
    searched: list[Tensor] = []
    update = ensemble.val_search.update

    def recording(probs: Tensor, target: Tensor) -> None:
        searched.append(probs)
        update(probs, target)

    ensemble.val_search.update = recording  # type: ignore[method-assign]
    _trainer(tmp_path, BF16).test(ensemble, datamodule=_au_data(), verbose=False)
    data = _au_data()
    data.setup("test")
    ensemble.eval()
    expected: dict[bool, list[Tensor]] = {True: [], False: []}
    with torch.no_grad():
        for batch in data.val_dataloader():
            for bf16 in expected:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    expected[bf16].append(torch.sigmoid(ensemble(batch["image"]).float()))
    assert torch.equal(torch.cat(searched), torch.cat(expected[True]))
    assert not torch.equal(torch.cat(searched), torch.cat(expected[False]))
    assert "threshold" in (tmp_path / "test_results.csv").read_text()


# -- the hybrid network: three stages ----------------------------------------------------------


def _sequences() -> SequenceDataModule:
    return SequenceDataModule(
        dataset="bp4d", synth={**SYNTH, "frames": 16}, aus=AUS,
        protocol="bp4d_3fold", **SMALL, window=8, stride=4, burn_in=2, sequences_per_batch=2,
    )  # fmt: skip


def _hybrid(cnn: int = 1, lstm: int = 1, fusion: int = 1) -> Hybrid:
    return Hybrid(
        aus=AUS, backbone="resnet18", in_size=CROP, cnn_epochs=cnn, lstm_epochs=lstm,
        fusion_epochs=fusion, pca_components=16, lstm_hidden=8, fusion_hidden=8,
        cnn_optimizer="adam",
    )  # fmt: skip


def test_hybrid_bf16_trains_all_three_stages_tests_and_predicts(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    margin_dtypes: list[torch.dtype] = []
    margin_loss = au_hybrid.module.max_margin_loss

    def recording(scores: Tensor, *args: Any) -> Tensor:
        margin_dtypes.append(scores.dtype)
        return margin_loss(scores, *args)

    monkeypatch.setattr(au_hybrid.module, "max_margin_loss", recording)
    layers = ("net.cnn.body.conv1", "net.lstm.lstm", "net.lstm.out", "net.fusion.layers.0")
    cnn_only = partial(_hybrid, 1, 0, 0)
    _, fp32, _ = _fit(cnn_only, _sequences, tmp_path / "fp32", FP32, layers[:1], max_steps=-1,
                      max_epochs=1, limit_train_batches=1)  # fmt: skip
    model, bf16, before = _fit(
        _hybrid, _sequences, tmp_path / "bf16", BF16, layers, max_steps=-1, max_epochs=3,
        limit_train_batches=1, limit_val_batches=1,
    )  # fmt: skip
    # every stage trained its own part under autocast (the LSTMs included, whose oneDNN
    # kernel fails under bf16 autocast on a float32 input)
    _check_bf16_fit(model, bf16, before, "train/cnn_loss_step")
    assert model.trained.tolist() == [True, True, True]
    for stage in ("cnn", "lstm", "fusion"):
        key = f"train/{stage}_loss_step"
        assert any(key in step and math.isfinite(step[key]) for step in bf16.logged), key
    _compare_first_loss("hybrid (cnn stage)", fp32, bf16, "train/cnn_loss_step")
    assert margin_dtypes == [torch.float32]  # the LSTMs' bf16 scores, cast for the loss
    # the cached features are float32 whether extracted inside autocast (val) or not (train)
    assert {f.features.dtype for f in model._features.values()} == {torch.float32}
    _test_and_predict(model, _sequences, tmp_path, "net.cnn.body.conv1")
    table = (tmp_path / "test" / "test_results.md").read_text()
    assert "F1-frame LSTM" in table and "F1-event Ours" in table


# -- the meta plugins: MAML and MAL --------------------------------------------------------------


def _maml_data() -> EpisodeDataModule:
    return EpisodeDataModule(**MAML_DATA)


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_maml_bf16_meta_trains_and_tests(
    backend: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """higher's patched module runs no hooks of the real one: the loss function records the
    dtype of the logits it gets, the inner loop's and the query's."""
    logits_dtypes: list[torch.dtype] = []
    bce = au_maml.module.binary_bce

    def recording_bce(logits: Tensor, target: Tensor) -> Tensor:
        logits_dtypes.append(logits.dtype)
        return bce(logits, target)

    monkeypatch.setattr(au_maml.module, "binary_bce", recording_bce)
    make = partial(MAML, image_size=16, backend=backend)
    options = {"inference_mode": False}
    _, fp32, _ = _fit(make, _maml_data, tmp_path / "fp32", FP32, (), **options)
    assert set(logits_dtypes) == {torch.float32}
    logits_dtypes.clear()
    model, bf16, before = _fit(make, _maml_data, tmp_path / "bf16", BF16, (), **options)
    assert logits_dtypes and set(logits_dtypes) == {torch.bfloat16}
    assert bf16.parameter_dtypes == {torch.float32}
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert set(moved) == set(before)  # Adam moved every parameter
    _compare_first_loss(f"maml ({backend})", fp32, bf16, "train/query_loss")
    # evaluation adapts under autocast too, and writes its tables
    logits_dtypes.clear()
    trainer = _trainer(tmp_path / "test", BF16, inference_mode=False)
    [scores] = trainer.test(model, datamodule=_maml_data(), verbose=False)
    assert set(logits_dtypes) == {torch.bfloat16}
    assert 0 <= scores["test/acc_1shot"] <= 1 and 0 <= scores["test/acc_1shot_step0"] <= 1
    assert (tmp_path / "test" / "adaptation.csv").is_file()
    assert "| AVG |" in (tmp_path / "test" / "test_results.md").read_text()
    assert all(p.dtype == torch.float32 for p in model.parameters())


class TinyMultiTaskNet(nn.Module):
    """A conv, batch norm and mean pool to an 8-d feature, and MAL's two heads: MAL's
    training under autocast at a small part of a ResNet's bf16 cost (the ResNet backbone
    under autocast is the baseline's and RE-Net's)."""

    feature_dim = 8

    def __init__(self, num_aus: int = 12, num_expressions: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, self.feature_dim, 3, stride=2)
        self.bn = nn.BatchNorm2d(self.feature_dim)
        self.au_head = nn.Linear(self.feature_dim, num_aus)
        self.fe_head = nn.Linear(self.feature_dim, num_expressions)

    def forward(self, x: Tensor) -> MultiTaskOutput:
        features = F.relu(self.bn(self.conv(x))).mean((2, 3))
        return MultiTaskOutput(features, self.au_head(features), self.fe_head(features))


def test_mal_bf16_meta_trains_tests_and_predicts(cache: Path, tmp_path: Path) -> None:
    """The base net and the meta net are hooked; the virtual model (higher's patched copy,
    which runs no hooks) shows its dtype in the validation loss it feeds (Eq. 7)."""
    virtual: list[torch.dtype] = []

    def make() -> MAL:
        model = MAL(backbone="resnet18")
        model.net = TinyMultiTaskNet()
        model.meta_net = MetaWeightNet(TinyMultiTaskNet.feature_dim)
        loss = model.validation_loss

        def recording(out: MultiTaskOutput, target: Tensor) -> Tensor:
            virtual.append(out.au.dtype)
            return loss(out, target)

        model.validation_loss = recording  # type: ignore[method-assign]
        return model

    def data() -> AuxiliaryDataModule:
        return AuxiliaryDataModule(**MAL_DATA)

    layers = ("net.conv", "meta_net.linear")
    _, fp32, _ = _fit(make, data, tmp_path / "fp32", FP32, layers)
    assert set(virtual) == {torch.float32}
    virtual.clear()
    model, bf16, before = _fit(make, data, tmp_path / "bf16", BF16, layers)
    assert virtual and set(virtual) == {torch.bfloat16}
    _check_bf16_fit(model, bf16, before, "train/loss")  # ψ (meta_net) moved too
    # L_val of the virtual model: the first step's loss before ψ moves (the logged
    # train/loss is weighted by the ψ of after the meta step, a second-order quantity)
    _compare_first_loss("mal (L_val)", fp32, bf16, "train/loss_val")
    _compare_first_loss("mal (L_AU)", fp32, bf16, "train/loss_au")
    _test_and_predict(model, data, tmp_path, "net.conv")


@pytest.mark.parametrize("precision", ["16-mixed", "16-true", 16])
def test_meta_precision_check_refuses_float16(precision: str | int) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.precision 16.*MAML.*GradScaler.*bf16-mixed"):
        check_meta_precision(SimpleNamespace(precision=precision), "MAML")
    for allowed in ("bf16-mixed", "32-true", "64-true"):
        check_meta_precision(SimpleNamespace(precision=allowed), "MAML")


def test_meta_modules_refuse_float16_at_setup_and_stl_does_not() -> None:
    """Every stage (MAML adapts at evaluation too; MAL checks before its fit-only checks)."""
    stub = SimpleNamespace(precision="16-mixed", datamodule=None)
    models = {"fit": MAML(image_size=16), "test": MAMLBaseline(image_size=16)}
    models["predict"] = MAL(backbone="resnet18")  # (its fit checks its data first)
    for stage, model in models.items():
        model._trainer = stub
        with pytest.raises(
            ConfigError, match=f"16-mixed is not supported by {type(model).__name__}"
        ):
            model.setup(stage)
    stl = STL(backbone="resnet18")  # no inner loop: float16 is the user's choice
    stl._trainer = stub
    stl.setup("fit")
    # on CPU Lightning itself turns 16-mixed into bf16-mixed, which the check lets pass
    trainer = L.Trainer(accelerator="cpu", precision="16-mixed", logger=False)
    assert trainer.precision == BF16
    check_meta_precision(trainer, "MAML")


def test_a_real_float16_trainer_is_refused_before_any_step(cache: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MAML(image_size=16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tmp_path, "16-true", inference_mode=False)
    with pytest.raises(ConfigError, match=r"16-true is not supported by MAML.*bf16-mixed"):
        trainer.fit(model, datamodule=_maml_data())
    assert trainer.global_step == 0
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p.detach(), before[name])
    mal = MAL(backbone="resnet18")
    with pytest.raises(ConfigError, match=r"16-true is not supported by MAL"):
        _trainer(tmp_path, "16-true").fit(mal, datamodule=AuxiliaryDataModule(**MAL_DATA))
