"""The transfer plugin (Ji et al. 2020): pretext data, views, the ensemble, final scores."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from au_lightning import (
    ConfigError,
    final_scores,
    load_method,
    search_thresholds,
    selective_weights,
)
from au_lightning.cli import main
from au_lightning.data import AUDataModule, FrameIndex, PretextDataModule, read_images
from au_lightning.reports import per_au_table
from au_transfer import Transfer, TransferEnsemble, TransferPretrain, ViewNet
from tests.layouts import write_affectnet

ROOT = Path(__file__).resolve().parents[1]
SYNTH = {"subjects": 6, "videos": 2, "frames": 10, "size": 32, "seed": 2, "workers": 1}
SYNTH_ARG = "{subjects: 6, videos: 2, frames: 10, size: 32, seed: 2, workers: 1}"
AUS = [1, 2, 4, 12]
SMALL = {"backbone": "resnet18", "pooling": "flatten", "in_size": 28}


def _au_data(**overrides: object) -> AUDataModule:
    options = {
        "dataset": "bp4d", "synth": SYNTH, "aus": AUS, "protocol": "bp4d_3fold",
        "fold": "part1", "image_size": 32, "crop_size": 28, "batch_size": 8,
    }  # fmt: skip
    return AUDataModule(**(options | overrides))


def _identity(**overrides: object) -> PretextDataModule:
    options = {
        "task": "identity", "dataset": "bp4d", "synth": SYNTH, "protocol": "bp4d_3fold",
        "fold": "part1", "image_size": 32, "crop_size": 28, "batch_size": 8,
    }  # fmt: skip
    return PretextDataModule(**(options | overrides))


# -- pretext data (Sec. 3.3) --------------------------------------------------------------


def _subjects(data: AUDataModule, rows: np.ndarray) -> set[str]:
    return {str(s) for s in data.index.subject[rows]}


def test_identity_classes_are_the_au_stages_training_subjects_only(cache: Path) -> None:
    pretext = _identity()
    pretext.setup("fit")
    au = _au_data()  # the AU stage: val_strategy subjects, val_fraction 0.2, seed 0
    au.setup("fit")
    index = pretext.index
    train_subjects = _subjects(au, au.train_rows)
    test_subjects = _subjects(au, au.test_rows) | _subjects(au, au.val_rows)
    assert set(pretext.class_names) == train_subjects and not train_subjects & test_subjects
    # every training subject has training and validation frames, labelled by its class
    for rows in (pretext.train_rows, pretext.val_rows):
        subjects = index.subject[rows]
        assert set(subjects) == train_subjects
        names = np.array(pretext.class_names)[index.expression[rows]]
        assert (names == subjects).all()
    assert not set(pretext.train_rows) & set(pretext.val_rows)
    # the test subjects' frames have no class and are never served
    assert (index.expression[np.isin(index.subject, list(test_subjects))] == -1).all()
    assert set(pretext.test_rows) == set(pretext.val_rows)
    batch = next(iter(pretext.train_dataloader()))
    assert batch["expression"].min() >= 0 and batch["image"].shape[1:] == (3, 28, 28)


@pytest.mark.parametrize(
    ("protocol", "fold", "seed", "fraction"),
    [("bp4d_3fold", "part1", 0, 0.2), ("bp4d_3fold", "part1", 1, 0.2),
     ("bp4d_3fold", "part3", 1, 0.5), ("kfold", 0, 3, 0.2)],
)  # fmt: skip
def test_identity_pretext_never_holds_an_au_validation_or_test_subject(
    cache: Path, caplog: pytest.LogCaptureFixture, protocol: str, fold: object, seed: int,
    fraction: float,
) -> None:  # fmt: skip
    split = {"protocol": protocol, "fold": fold, "seed": seed}
    au = _au_data(**split, val_strategy="subjects", val_fraction=fraction)
    au.setup("fit")
    au_val, au_test = _subjects(au, au.val_rows), _subjects(au, au.test_rows)
    assert au_val and au_test
    with caplog.at_level("INFO", logger="au_lightning.data"):
        pretext = _identity(**split, au_val_strategy="subjects", au_val_fraction=fraction)
        pretext.setup("fit")
    served = np.concatenate([pretext.train_rows, pretext.val_rows, pretext.test_rows])
    pretext_subjects = _subjects(pretext, served) | set(pretext.class_names)
    assert not pretext_subjects & au_val, "an AU validation subject leaked into the pretext"
    assert not pretext_subjects & au_test, "an AU test subject leaked into the pretext"
    assert pretext_subjects == _subjects(au, au.train_rows)
    # the frames of the left-out subjects have no class
    left_out = np.isin(pretext.index.subject, sorted(au_val | au_test))
    assert (pretext.index.expression[left_out] == -1).all()
    # explicit: the module says what it left out, and so does the log
    assert set(pretext.excluded_subjects["au_val"]) == au_val
    assert set(pretext.excluded_subjects["test"]) == au_test
    (message,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert all(name in message for name in au_val | au_test)
    assert f"val_fraction {fraction:g}, seed {seed}" in message


def test_identity_pretext_without_the_exclusion_would_leak(cache: Path) -> None:
    # the control for the test above: the AU stage's validation subjects are training
    # subjects of the fold, so only the exclusion keeps them out of the pretext
    au = _au_data()
    au.setup("fit")
    leaky = _identity(au_val_strategy="none")
    leaky.setup("fit")
    assert _subjects(au, au.val_rows) <= set(leaky.class_names)
    assert leaky.excluded_subjects["au_val"] == ()


def test_identity_pretext_with_a_frames_reserve_leaves_out_those_frames(cache: Path) -> None:
    au = _au_data(val_strategy="frames", val_fraction=0.25)
    au.setup("fit")
    pretext = _identity(au_val_strategy="frames", au_val_fraction=0.25)
    pretext.setup("fit")
    # the subjects stay (the AU stage trains on them too); its validation frames do not
    assert set(pretext.class_names) == _subjects(au, au.train_rows)
    served = set(pretext.index.path[np.concatenate([pretext.train_rows, pretext.val_rows])])
    assert not served & set(au.index.path[au.val_rows])
    assert served == set(au.index.path[au.train_rows])
    assert pretext.excluded_subjects["au_val"] == ()


def test_shipped_face_pretext_config_leaves_out_the_au_configs_val_subjects(
    cache: Path,
) -> None:
    # configs/transfer_pretrain_identity.yaml and configs/transfer_bp4d.yaml, on the tests'
    # small SynthAU set: the split options of the two must agree
    pretext_args = yaml.safe_load((ROOT / "configs/transfer_pretrain_identity.yaml").read_text())
    au_args = yaml.safe_load((ROOT / "configs/transfer_bp4d.yaml").read_text())
    small = {"synth": SYNTH, "image_size": 32, "crop_size": 28}
    pretext = PretextDataModule(**(pretext_args["data"]["init_args"] | small))
    au = AUDataModule(**(au_args["data"]["init_args"] | small | {"aus": AUS}))
    pretext.setup("fit")
    au.setup("fit")
    assert not set(pretext.class_names) & (_subjects(au, au.val_rows) | _subjects(au, au.test_rows))
    assert set(pretext.class_names) == _subjects(au, au.train_rows)


def test_expression_classes_come_from_the_expression_dataset(cache: Path) -> None:
    pretext = PretextDataModule(
        task="expression", dataset="rafdb", synth={"images": 60, "size": 32, "workers": 1},
        image_size=32, crop_size=28, val_fraction=0.25, batch_size=8,
    )  # fmt: skip
    pretext.setup("fit")
    assert pretext.num_classes == 7 and pretext.class_names[3] == "happiness"
    rows = np.concatenate([pretext.train_rows, pretext.val_rows])
    assert sorted(rows) == list(range(len(pretext.index)))  # every image, once
    assert len(pretext.val_rows) == round(0.25 * len(rows))
    assert (pretext.index.expression[rows] >= 0).all()


def test_expression_pretext_reads_the_affectnet_layout(tmp_path: Path) -> None:
    # classes 0..7; 8-10 (none, uncertain, non-face) are not expressions and are left out
    rows = [(f"1/{i}.png", label) for i, label in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 10] * 2)]
    write_affectnet(tmp_path, "training.csv", rows)
    pretext = PretextDataModule(
        task="expression", dataset="affectnet", root=str(tmp_path), image_size=8, crop_size=8,
        val_fraction=0.25, cache=False,
    )  # fmt: skip
    pretext.setup("fit")
    assert pretext.num_classes == 8 and pretext.class_names[-1] == "contempt"
    assert len(pretext.train_rows) + len(pretext.val_rows) == 16
    labels = pretext.index.expression[np.concatenate([pretext.train_rows, pretext.val_rows])]
    assert sorted(labels.tolist()) == sorted([0, 1, 2, 3, 4, 5, 6, 7] * 2)


def test_identity_on_data_without_subjects_is_refused(cache: Path) -> None:
    pretext = _identity(dataset="emotionet", protocol="kfold", fold=0)
    with pytest.raises(ConfigError, match="one image"):
        pretext.setup("fit")


# -- views ---------------------------------------------------------------------------------


def test_pretrain_takes_its_classes_from_the_data_and_saves_them(
    workdir: Path, cache: Path
) -> None:
    model = TransferPretrain(**SMALL)
    assert model.net is None
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace(num_classes=5))
    model.setup("fit")
    assert model.net.head.out_features == 5 and model.hparams.num_classes == 5
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace(num_classes=4))
    with pytest.raises(ConfigError, match="5 pretext classes but the data has 4"):
        model.setup("fit")


def test_transfer_takes_the_pretext_backbone_at_fit_start_not_its_head(tmp_path: Path) -> None:
    pretext = TransferPretrain(**SMALL, num_classes=5)
    path = tmp_path / "pretext.ckpt"
    torch.save({"state_dict": pretext.state_dict()}, path)
    model = Transfer(aus=AUS, **SMALL, pretrained=str(path))
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    model._trainer = SimpleNamespace(ckpt_path=None)
    model.on_fit_start()
    for key, value in model.net.backbone.state_dict().items():
        assert torch.equal(value, pretext.net.backbone.state_dict()[key]), key
    assert torch.equal(model.net.head.weight, before["head.weight"])  # 4 AUs, not 5 classes
    missing = Transfer(aus=AUS, **SMALL, pretrained=str(tmp_path / "none.ckpt"))
    missing._trainer = SimpleNamespace(ckpt_path=None)
    with pytest.raises(FileNotFoundError, match=r"none\.ckpt not found; train the view's pretext"):
        missing.on_fit_start()
    # a resumed fit keeps its own weights
    other = Transfer(aus=AUS, **SMALL, pretrained=str(path))
    other._trainer = SimpleNamespace(ckpt_path="resumed.ckpt")
    kept = other.net.backbone.conv1.weight.clone()
    other.on_fit_start()
    assert torch.equal(other.net.backbone.conv1.weight, kept)


def test_pretext_checkpoint_records_its_task_and_classes() -> None:
    model = TransferPretrain(**SMALL, num_classes=2)
    datamodule = SimpleNamespace(class_names=("F003", "M010"), hparams={"task": "identity"})
    model._trainer = SimpleNamespace(datamodule=datamodule)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["pretext"] == {"task": "identity", "classes": ["F003", "M010"]}


def _au_stage(subjects: list[str], val: list[int], test: list[int]) -> SimpleNamespace:
    index = SimpleNamespace(subject=np.array(subjects))
    return SimpleNamespace(
        index=index, test_index=index, val_rows=np.array(val), test_rows=np.array(test)
    )


@pytest.mark.parametrize(
    ("classes", "refused"),
    [(["A", "B"], None), (["A", "B", "C"], "validation subjects C"),
     (["A", "D"], "test subjects D"), (["C", "D"], "validation subjects C and test subjects D")],
)  # fmt: skip
def test_transfer_refuses_a_face_pretext_taught_its_val_or_test_subjects(
    tmp_path: Path, classes: list[str], refused: str | None
) -> None:
    pretext = TransferPretrain(**SMALL, num_classes=len(classes))
    path = tmp_path / "face.ckpt"
    record = {"task": "identity", "classes": classes}
    torch.save({"state_dict": pretext.state_dict(), "pretext": record}, path)
    model = Transfer(aus=AUS, **SMALL, pretrained=str(path))
    # subjects A, B train; C validates; D tests
    datamodule = _au_stage(["A", "A", "B", "C", "C", "D"], val=[3, 4], test=[5])
    model._trainer = SimpleNamespace(ckpt_path=None, datamodule=datamodule)
    if refused is None:
        model.on_fit_start()
        return
    with pytest.raises(ConfigError, match=f"include this run's {refused}"):
        model.on_fit_start()
    # an expression pretext's classes are not subjects: never refused
    torch.save(
        {"state_dict": pretext.state_dict(), "pretext": record | {"task": "expression"}}, path
    )
    model.on_fit_start()


def test_pretext_of_another_backbone_is_named(tmp_path: Path) -> None:
    path = tmp_path / "avg.ckpt"
    pretext = TransferPretrain(backbone="resnet18", pooling="avg", in_size=28, num_classes=3)
    torch.save({"state_dict": pretext.state_dict()}, path)
    model = Transfer(aus=AUS, **SMALL, pretrained=str(path))
    model._trainer = SimpleNamespace(ckpt_path=None)
    with pytest.raises(ValueError, match=r"avg\.ckpt"):
        model.on_fit_start()


def test_paper_optimizer_sgd_divided_by_ten_every_ten_epochs() -> None:
    model = Transfer(aus=AUS, **SMALL)
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]
    (group,) = optimizer.param_groups
    assert type(optimizer) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 1e-5)
    rates = []
    for _ in range(21):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[9] == pytest.approx(0.01) and rates[10] == pytest.approx(0.001)
    assert rates[20] == pytest.approx(0.0001)


def test_pretrain_optimizer_choice_covers_the_lazily_built_classifier() -> None:
    model = TransferPretrain(**SMALL, num_classes=3, optimizer="adam", lr=1e-3)
    optimizer = model.configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.Adam
    (group,) = optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    assert any(p is model.net.head.weight for p in group["params"])
    with pytest.raises(ConfigError, match="sgd or adam"):
        TransferPretrain(**SMALL, optimizer="rmsprop")


def test_view_net_refuses_unknown_backbone_and_pooling() -> None:
    with pytest.raises(ConfigError, match="ir152"):
        ViewNet(3, backbone="vgg16")
    with pytest.raises(ConfigError, match="avg or flatten"):
        ViewNet(3, backbone="resnet18", pooling="max")


# -- final score and the ensemble (Sec. 3.5, 3.6, 4.3) ---------------------------------------


def test_final_scores_are_the_mean_of_accuracy_and_f1() -> None:
    scores = {"f1_AU1": 0.4, "acc_AU1": 0.9, "f1_AU2": 0.2, "acc_AU2": 0.6,
              "f1_mean": 0.3, "acc_mean": 0.75, "auc_mean": 0.5}  # fmt: skip
    final = final_scores(scores, [1, 2])
    assert final == pytest.approx({"score_AU1": 0.65, "score_AU2": 0.4, "score_mean": 0.525})
    rows = per_au_table(scores | final, [1, 2])
    assert rows[0] == ["AU", "F1", "accuracy", "AUC", "score"]
    assert rows[-1] == ["mean", "30.0", "75.0", "50.0", "52.5"]


def _saved_view(tmp_path: Path, name: str, seed: int, aus: list[int] = AUS) -> Path:
    torch.manual_seed(seed)
    model = Transfer(aus=aus, **SMALL)
    path = tmp_path / f"{name}.ckpt"
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    checkpoint["hyper_parameters"]["_class_path"] = "au_transfer.Transfer"
    checkpoint["pytorch-lightning_version"] = "2.6.6"
    torch.save(checkpoint, path)
    return path


def test_ensemble_averages_the_views_probabilities(tmp_path: Path) -> None:
    paths = [_saved_view(tmp_path, "a", 0), _saved_view(tmp_path, "b", 1)]
    ensemble = TransferEnsemble(views=[str(p) for p in paths]).eval()
    views = [load_method(p).eval() for p in paths]
    images = torch.randn(5, 3, 28, 28)
    with torch.no_grad():
        expected = (torch.sigmoid(views[0](images)) + torch.sigmoid(views[1](images))) / 2
        assert torch.allclose(ensemble.probabilities(images).float(), expected, atol=1e-6)
        assert torch.allclose(torch.sigmoid(ensemble(images)).float(), expected, atol=1e-6)
        assert not torch.allclose(torch.sigmoid(views[0](images)), expected, atol=1e-3)
    assert ensemble.aus == tuple(AUS)
    assert not any(p.requires_grad for p in ensemble.parameters())


def test_ensemble_refuses_views_with_other_aus(tmp_path: Path) -> None:
    paths = [_saved_view(tmp_path, "a", 0), _saved_view(tmp_path, "c", 1, aus=[1, 2, 6, 12])]
    with pytest.raises(ConfigError, match=r"\[1, 2, 6, 12\].*same AUs"):
        TransferEnsemble(views=[str(p) for p in paths])
    with pytest.raises(ConfigError, match="one or more"):
        TransferEnsemble(views=[])


# -- selective learning's target (Sec. 3.4) ------------------------------------------------

# A batch of 8 frames, 3 AUs; training base rates 0.1, 0.4, 0.05.
#   AU a: 2 of 8 positive (share 0.25).
#   AU b: 6 of 7 known positive (share 6/7), one unknown.
#   AU c: no positive.
SL_BATCH = torch.tensor(
    [[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0], [0, -1, 0]]
)
SL_RATE = torch.tensor([0.1, 0.4, 0.05])
# target data (t = the base rates):
#   a: 0.25 > 0.1, negatives weigh n+ (1 - t) / (n- t) = 2 * 0.9 / (6 * 0.1) = 3, positives 1
#   b: 6/7 > 0.4, the negative weighs 6 * 0.6 / (1 * 0.4) = 9, positives 1
#   c: one class only: all 1
SL_DATA = [[1, 1, 1], [1, 1, 1], [3, 1, 1], [3, 1, 1], [3, 1, 1], [3, 1, 1], [3, 9, 1], [3, 0, 1]]
# target balanced (t = 0.5):
#   a: 0.25 < 0.5, positives weigh n- t / (n+ (1 - t)) = 6 * 0.5 / (2 * 0.5) = 3, negatives 1
#   b: 6/7 > 0.5, the negative weighs 6 * 0.5 / (1 * 0.5) = 6, positives 1
#   c: one class only: all 1
SL_BALANCED = [
    [3, 1, 1],
    [3, 1, 1],
    [1, 1, 1],
    [1, 1, 1],
    [1, 1, 1],
    [1, 1, 1],
    [1, 6, 1],
    [1, 0, 1],
]


@pytest.mark.parametrize(
    ("goal", "expected", "shares"),
    [("data", SL_DATA, (0.1, 0.4)), ("balanced", SL_BALANCED, (0.5, 0.5))],
)
def test_selective_weights_of_both_targets_by_hand(
    goal: str, expected: list[list[int]], shares: tuple[float, float]
) -> None:
    weights = selective_weights(SL_BATCH, SL_RATE, goal)
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float32))
    # the weighted positive share of each AU with both classes is the target's
    for j, share in enumerate(shares):
        pos = (weights[:, j] * (SL_BATCH[:, j] == 1)).sum() / weights[:, j].sum()
        assert float(pos) == pytest.approx(share)
    with pytest.raises(ValueError, match="data or balanced"):
        selective_weights(SL_BATCH, SL_RATE, "true")


@pytest.mark.parametrize(
    ("goal", "pos_weight", "neg_weight"),
    # sums of the weights above over the positives and over the known negatives
    [("data", 2 + 6, 18 + 9 + 8), ("balanced", 6 + 6, 6 + 6 + 8)],
)
def test_transfer_selective_loss_of_both_targets_by_hand(
    goal: str, pos_weight: int, neg_weight: int
) -> None:
    model = Transfer(aus=[1, 2, 4], **SMALL, selective_target=goal)
    assert model.hparams.selective_target == goal
    model.base_rate.copy_(SL_RATE)
    logits = torch.ones(8, 3)  # every label's BCE: log(1 + e^-1) if positive, log(1 + e) if not
    known = 23
    expected = (pos_weight * np.log1p(np.exp(-1)) + neg_weight * np.log1p(np.exp(1))) / known
    assert float(model.label_loss(logits, SL_BATCH)) == pytest.approx(expected, rel=1e-6)


def test_selective_target_is_data_by_default_and_checked() -> None:
    assert Transfer(aus=AUS, **SMALL).selective_target == "data"
    with pytest.raises(ConfigError, match="selective_target must be data or balanced"):
        Transfer(aus=AUS, **SMALL, selective_target="true")


# -- the command line ------------------------------------------------------------------------


def _tiny_trainer(root: Path) -> list[str]:
    return [
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
    ]


@pytest.fixture(scope="module")
def views(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Identity pretext, then two AU views (one from it, one from scratch), through the CLI;
    the pretext checkpoint is then deleted: a view's checkpoint must not need it."""
    root = tmp_path_factory.mktemp("views")
    pretext_config = ROOT / "configs/transfer_pretrain_identity.yaml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["au-lightning"])
        mp.chdir(root)
        main(
            [
                "fit", f"--config={pretext_config}", f"--data.synth={SYNTH_ARG}",
                "--data.image_size=32", "--data.crop_size=28", "--data.batch_size=8",
                "--model.in_size=28", *_tiny_trainer(root / "pretext"),
                "--trainer.callbacks=[]", "--trainer.enable_checkpointing=true",
            ]
        )  # fmt: skip
        (pretext,) = (root / "pretext").rglob("*.ckpt")
        found = []
        for name, start in (("face", str(pretext)), ("scratch", "false")):
            main(["fit", *_au_args(root / name), f"--model.pretrained={start}"])
            found.append(max((root / name).rglob("best.ckpt"), key=lambda p: p.stat().st_mtime))
    pretext.unlink()
    return found


def _au_args(root: Path) -> list[str]:
    return [
        f"--config={ROOT / 'configs/transfer_bp4d.yaml'}", f"--data.synth={SYNTH_ARG}",
        f"--data.aus={AUS}", f"--model.aus={AUS}", "--data.image_size=32",
        "--data.crop_size=28", "--data.batch_size=8", "--model.in_size=28",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
    ]  # fmt: skip


def test_pretext_views_ensemble_and_thresholds_through_the_cli(
    workdir: Path, views: list[Path]
) -> None:
    main(
        [
            "test", *_au_args(workdir / "ensemble"), "--model=transfer-ensemble",
            f"--model.views=[{views[0]},{views[1]}]",
        ]
    )  # fmt: skip
    (table,) = (workdir / "ensemble").rglob("test_results.csv")
    rows = {row["AU"]: row for row in csv.DictReader(table.open())}
    assert {"score", "F1 untuned", "threshold"} <= set(rows["mean"])
    for au in [f"AU{a}" for a in AUS] + ["mean"]:
        f1, acc, score = (float(rows[au][k]) for k in ("F1", "accuracy", "score"))
        assert score == pytest.approx((f1 + acc) / 2, abs=0.051)

    # the thresholds are those of the validation subjects' averaged probabilities
    data = _au_data()
    data.setup("test")
    models = [load_method(v).eval() for v in views]
    probs, targets = [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            p = sum(torch.sigmoid(m(batch["image"]).double()) for m in models) / 2
            probs.append(torch.sigmoid(torch.logit(p, eps=1e-12).float()))
            targets.append(batch["occurrence"])
    expected, _ = search_thresholds(torch.cat(probs), torch.cat(targets), "score")
    got = [float(rows[f"AU{a}"]["threshold"]) for a in AUS]
    assert got == pytest.approx(expected.tolist(), abs=5e-4)


def test_a_face_pretext_taught_the_au_validation_subjects_is_refused(workdir: Path) -> None:
    # the pretext as it was before the exclusion (au_val_strategy none: the AU stage's
    # validation subjects become classes); the AU stage then refuses it when fitting starts
    main(
        [
            "fit", f"--config={ROOT / 'configs/transfer_pretrain_identity.yaml'}",
            f"--data.synth={SYNTH_ARG}", "--data.image_size=32", "--data.crop_size=28",
            "--data.batch_size=8", "--model.in_size=28", "--data.au_val_strategy=none",
            *_tiny_trainer(workdir / "leaky"), "--trainer.callbacks=[]",
            "--trainer.enable_checkpointing=true",
        ]
    )  # fmt: skip
    (leaky,) = (workdir / "leaky").rglob("*.ckpt")
    assert "M011" in torch.load(leaky, weights_only=True)["pretext"]["classes"]
    with pytest.raises(SystemExit, match="include this run's validation subjects M011"):
        main(["fit", *_au_args(workdir / "face"), f"--model.pretrained={leaky}"])


def test_configs_say_mlros_selective_and_the_paper_optimizer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["au-lightning"])
    for name, aus in (("transfer.yaml", "emotionet"), ("transfer_bp4d.yaml", "bp4d")):
        with pytest.raises(SystemExit):
            main(["fit", f"--config={ROOT / 'configs' / name}", "--print_config"])
        config = yaml.safe_load(capsys.readouterr().out)
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        assert config["model"]["class_path"] == "au_transfer.Transfer"
        assert (model["aus"], data["aus"]) == (aus, aus)
        assert (data["sampler"], model["loss_weights"]) == ("mlros", "selective")
        assert model["selective_target"] == "data"  # Sec. 3.4: the true distribution
        assert model["threshold_search"] and model["threshold_criterion"] == "score"
        assert (model["lr"], model["momentum"], model["weight_decay"]) == (0.01, 0.9, 1e-5)
        assert data["batch_size"] == 16


def test_cli_exposes_the_selective_target_as_a_choice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["au-lightning"])
    config = f"--config={ROOT / 'configs/transfer_bp4d.yaml'}"
    with pytest.raises(SystemExit):
        main(["fit", config, "--model.selective_target=balanced", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["selective_target"] == (
        "balanced"
    )
    with pytest.raises(SystemExit) as refused:
        main(["fit", config, "--model.selective_target=true", "--print_config"])
    assert refused.value.code != 0
    assert "selective_target" in capsys.readouterr().err


# -- predicting a folder of images -----------------------------------------------------------


def test_read_images_lists_every_image_with_unknown_labels(tmp_path: Path) -> None:
    for name in ("b/2.png", "a.jpg", "b/1.PNG", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        if name.endswith("txt"):
            (tmp_path / name).write_text("not an image")
        else:
            Image.new("RGB", (8, 8)).save(tmp_path / name, format=name[-3:].replace("jpg", "jpeg"))
    index = read_images(tmp_path, [1, 12])
    assert isinstance(index, FrameIndex)
    assert index.path.tolist() == ["a.jpg", "b/1.PNG", "b/2.png"]
    assert index.aus == (1, 12) and (index.occurrence == -1).all()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}: no image files"):
        read_images(empty)


def test_predict_root_writes_a_csv_row_per_image(workdir: Path, views: list[Path]) -> None:
    photos = workdir / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    main(
        ["predict", *_au_args(workdir / "predict"), f"--ckpt_path={views[0]}",
         f"--data.predict_root={photos}"]
    )  # fmt: skip
    (written,) = (workdir / "predict").rglob("predictions.csv")
    rows = list(csv.DictReader(written.open()))
    assert [row["path"] for row in rows] == ["0.png", "1.png", "2.png"]
    ensemble = [
        *_au_args(workdir / "ensemble"),
        "--model=transfer-ensemble",
        f"--model.views=[{views[0]},{views[1]}]",
        f"--data.predict_root={photos}",
    ]
    with pytest.raises(SystemExit, match="thresholds a test found"):
        main(["predict", *ensemble])
    model = load_method(views[0]).eval()
    thresholds = model.thresholds
    for row in rows:
        for a, t in zip(AUS, thresholds, strict=True):
            p = float(row[f"p_AU{a}"])
            assert 0 <= p <= 1 and row[f"AU{a}"] == str(int(p > t))


def test_align_a_real_photo_then_predict_its_aus(workdir: Path, views: list[Path]) -> None:
    """The new user's path: a folder of photos, aligned, then AU probabilities in a CSV."""
    data = pytest.importorskip("skimage.data")
    pytest.importorskip("facenet_pytorch")
    photos = workdir / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.jpg", quality=95)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(photos / "wall.png")
    main(["align", str(photos), str(workdir / "aligned"), "--size=112", "--progress=false"])
    main(
        ["predict", *_au_args(workdir / "predict"), f"--ckpt_path={views[0]}",
         f"--data.predict_root={workdir / 'aligned'}"]
    )  # fmt: skip
    (written,) = (workdir / "predict").rglob("predictions.csv")
    (row,) = csv.DictReader(written.open())  # the wall has no face: not predicted
    assert row["path"] == "astronaut.png"
    assert all(0 <= float(row[f"p_AU{a}"]) <= 1 for a in AUS)
