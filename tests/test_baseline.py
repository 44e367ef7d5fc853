"""The ``baseline`` plugin: BaselineNet, pretrained weights, init_from, and the plugin through
the CLI (print_config for every method, overrides, a short fit/test/predict on SynthAU)."""

from __future__ import annotations

import csv
import inspect
import os
import re
import shutil
import sys
import urllib.error
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torchvision import models

from au_baseline import Baseline, BaselineNet
from au_lightning import ConfigError
from au_lightning.cli import AUCLI, _resolve_model_names, main
from au_lightning.data import AUDataModule
from au_lightning.registry import METHODS_GROUP, describe, load

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "baseline.yaml"
SYNTH = {"subjects": 6, "videos": 1, "frames": 8, "size": 32, "seed": 1, "workers": 1}
SYNTH_ARG = "{subjects: 6, videos: 1, frames: 8, size: 32, seed: 1, workers: 1}"
OLD_AUS = [1, 2, 4, 12]  # the earlier (BP4D-like) run
NEW_AUS = [1, 2, 6, 12]  # the DISFA-like run started from it: AU 4 dropped, AU 6 new
HEAD = ("net.head.linear.weight", "net.head.linear.bias")


def _data(aus: list[int]) -> AUDataModule:
    return AUDataModule(
        dataset="bp4d",
        synth=SYNTH,
        aus=aus,
        protocol="bp4d_3fold",
        image_size=32,
        crop_size=28,
        batch_size=8,
    )


def _cli_data(aus: list[int]) -> list[str]:
    return [
        "--data.dataset=bp4d",
        f"--data.synth={SYNTH_ARG}",
        f"--data.aus={aus}",
        "--data.protocol=bp4d_3fold",
        "--data.image_size=32",
        "--data.crop_size=28",
        "--data.batch_size=8",
        f"--model.aus={aus}",
    ]


def _trainer(root: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root,
    )


@pytest.fixture(scope="module")
def old_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lightning checkpoint of a ResNet-18 Baseline on AUs 1, 2, 4, 12 (one step)."""
    root = tmp_path_factory.mktemp("old_run")
    torch.manual_seed(123)
    trainer = _trainer(root, max_steps=1)
    trainer.fit(Baseline(aus=OLD_AUS), _data(OLD_AUS))
    path = root / "bp4d.ckpt"
    trainer.save_checkpoint(path, weights_only=True)  # init_from reads state_dict and aus
    return path


# -- BaselineNet ------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["resnet18", "anet"])
def test_net_gives_one_logit_per_au(backbone: str) -> None:
    net = BaselineNet(5, backbone, in_size=64).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 3, 64, 64)).shape == (3, 5)


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet19'; choose one of resnet18, "):
        BaselineNet(3, "resnet19")  # type: ignore[arg-type]


@pytest.mark.parametrize("pretrained", [True, "/some/weights.pth"])
def test_anet_with_pretrained_is_an_error(pretrained: bool | str) -> None:
    with pytest.raises(ValueError, match=r"'anet' has no pretrained weights.*init_from"):
        BaselineNet(3, "anet", pretrained=pretrained, in_size=64)


def test_pretrained_local_file_is_loaded(tmp_path: Path) -> None:
    torch.manual_seed(7)
    state = models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    net = BaselineNet(4, "resnet18", pretrained=str(path))
    loaded = net.backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_pretrained_offline_without_cache_says_pass_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    file_name = os.path.basename(models.ResNet18_Weights.DEFAULT.url)
    with pytest.raises(RuntimeError) as info:
        Baseline(aus=[1, 2], pretrained=True)
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / file_name) in message
    assert f"pass `pretrained: /path/to/{file_name}` instead" in message


# -- init_from --------------------------------------------------------------------------------


@pytest.mark.parametrize("aus", [NEW_AUS, [12, 6, 2, 1]], ids=["disfa_order", "reversed"])
def test_init_from_copies_backbone_and_maps_head_rows_by_au(
    old_run: Path, tmp_path: Path, aus: list[int]
) -> None:
    old = torch.load(old_run, map_location="cpu", weights_only=True)["state_dict"]
    model = Baseline(aus=aus, init_from=str(old_run))
    fresh = {name: model.state_dict()[name].clone() for name in HEAD}
    assert not torch.equal(model.net.backbone.conv1.weight, old["net.backbone.conv1.weight"])

    _trainer(tmp_path, max_steps=0).fit(model, _data(aus))  # init_from applies at setup("fit")

    state = model.state_dict()
    backbone = [k for k in state if k.startswith("net.backbone.")]
    assert backbone and set(backbone) == {k for k in old if k.startswith("net.backbone.")}
    for key in backbone:
        assert torch.equal(state[key], old[key]), key
    for name in HEAD:
        for au in (1, 2, 12):
            assert torch.equal(state[name][aus.index(au)], old[name][OLD_AUS.index(au)]), (name, au)
        row6 = state[name][aus.index(6)]
        assert torch.equal(row6, fresh[name][aus.index(6)]), "AU 6 should keep its fresh init"
        assert not any(torch.equal(row6, old_row) for old_row in old[name]), name


@pytest.mark.parametrize("backbone", ["resnet34", "anet"])
def test_init_from_another_backbone_names_the_file(
    old_run: Path, tmp_path: Path, backbone: str
) -> None:
    model = Baseline(aus=NEW_AUS, backbone=backbone, in_size=64, init_from=str(old_run))  # type: ignore[arg-type]
    named = f"{re.escape(str(old_run))} holds a resnet18 backbone, this model has {backbone} "
    with pytest.raises(ConfigError, match=named):
        _trainer(tmp_path, max_steps=0).fit(model, _data(NEW_AUS))


def test_init_from_missing_or_foreign_file_is_named(tmp_path: Path, cache: Path) -> None:
    missing = tmp_path / "no_such_run.ckpt"
    with pytest.raises(FileNotFoundError, match=f"checkpoint not found: {re.escape(str(missing))}"):
        _trainer(tmp_path, 0).fit(Baseline(aus=NEW_AUS, init_from=str(missing)), _data(NEW_AUS))
    foreign = tmp_path / "r18.pth"
    torch.save(models.resnet18(weights=None).state_dict(), foreign)
    named = f"{re.escape(str(foreign))} is not a checkpoint of an au-lightning run"
    with pytest.raises(ValueError, match=named):
        _trainer(tmp_path, 0).fit(Baseline(aus=NEW_AUS, init_from=str(foreign)), _data(NEW_AUS))


TRAIN_BRIEFLY = [  # (--trainer.limit_train_batches=1 would parse as 1.0, i.e. every batch)
    "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def init_run(
    old_run: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """``au-lightning fit`` one step from a copy of ``old_run``, then the copy deleted: the
    run's checkpoint and the deleted init_from path."""
    root = tmp_path_factory.mktemp("init_run")
    init_file = root / "bp4d_copy.ckpt"
    shutil.copy(old_run, init_file)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["au-lightning"])
        mp.chdir(root)
        init = [f"--model.init_from={init_file}", "--trainer.max_steps=1", *TRAIN_BRIEFLY]
        init += ["--trainer.default_root_dir=fit"]
        main(["fit", "--model", "baseline", *_cli_data(NEW_AUS), *init])
    (checkpoint,) = (root / "fit").rglob("*.ckpt")
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 1
    init_file.unlink()
    return checkpoint, init_file


def test_testing_a_checkpoint_does_not_need_the_init_from_file(
    init_run: tuple[Path, Path], workdir: Path
) -> None:
    checkpoint, deleted = init_run
    assert not deleted.exists()
    args = ["--model", "baseline", *_cli_data(NEW_AUS), "--trainer.enable_progress_bar=false",
            "--trainer.default_root_dir=runs"]  # fmt: skip
    cli = AUCLI(args=["test", *_resolve_model_names(args), f"--ckpt_path={checkpoint}"])
    # the model was built with the (deleted) init_from of the checkpoint's hyperparameters ...
    assert cli.model.hparams.init_from == str(deleted)
    saved = yaml.safe_load(next(Path("runs").rglob("config.yaml")).read_text())
    assert saved["model"]["init_args"]["init_from"] == str(deleted)
    # ... and tested with the checkpoint's weights
    weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in cli.model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert "| AU12 |" in next(Path("runs").rglob("test_results.md")).read_text()


def test_resuming_a_fit_does_not_need_the_init_from_file(
    init_run: tuple[Path, Path], workdir: Path
) -> None:
    checkpoint, _ = init_run
    args = ["--model", "baseline", *_cli_data(NEW_AUS), "--trainer.max_steps=2", *TRAIN_BRIEFLY,
            "--trainer.enable_checkpointing=false", "--trainer.default_root_dir=runs"]  # fmt: skip
    cli = AUCLI(args=["fit", *_resolve_model_names(args), f"--ckpt_path={checkpoint}"])
    assert cli.trainer.ckpt_path == str(checkpoint)
    assert cli.trainer.global_step == 2  # step 1 restored from the checkpoint, then one more


def test_cli_tests_a_checkpoint_saved_by_a_python_fit(old_run: Path, workdir: Path) -> None:
    args = ["--model", "baseline", *_cli_data(OLD_AUS), "--trainer.enable_progress_bar=false",
            "--trainer.default_root_dir=runs"]  # fmt: skip
    main(["test", *args, f"--ckpt_path={old_run}"])  # old_run was saved by Trainer.save_checkpoint
    assert list(Path("runs").rglob("test_results.md"))


# -- the plugin through the CLI ---------------------------------------------------------------


def _printed_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_of_every_importable_method(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugins = [info for info in describe(METHODS_GROUP) if info.error is None]
    assert "baseline" in {info.plugin.name for info in plugins}
    for info in plugins:
        config = _printed_config(["fit", "--model", info.plugin.name, "--print_config"], capsys)
        model = config["model"]
        assert model["class_path"] == info.plugin.class_path
        cls = load(METHODS_GROUP, info.plugin.name)
        params = [
            p.name
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        assert params and set(params) <= set(model["init_args"]), info.plugin.name
        if info.plugin.name == "baseline":
            assert model["init_args"]["backbone"] == "resnet18"
            assert model["init_args"]["init_from"] is None


def test_print_config_of_the_shipped_config_resolves_the_model_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["au-lightning"])
    monkeypatch.chdir(CONFIG.parents[1])
    config = _printed_config(["fit", "--config", "configs/baseline.yaml", "--print_config"], capsys)
    assert config["model"]["class_path"] == "au_baseline.Baseline"
    assert config["model"]["init_args"]["backbone"] == "resnet18"
    assert config["data"]["init_args"]["protocol"] == "bp4d_3fold"


def test_model_and_data_overrides_reach_the_objects(workdir: Path) -> None:
    args = ["--model", "baseline", *_cli_data(NEW_AUS), "--model.lr", "0.01", "--data.fold", "2"]
    cli = AUCLI(args=_resolve_model_names(args), run=False)
    assert isinstance(cli.model, Baseline) and cli.model.lr == 0.01
    assert cli.model.configure_optimizers().param_groups[0]["lr"] == 0.01  # Adam by default
    assert cli.datamodule.hparams.fold == 2


def test_optimizer_option_replaces_the_model_optimizer(workdir: Path) -> None:
    args = ["--model", "baseline", *_cli_data(NEW_AUS), "--optimizer", "SGD",
            "--optimizer.lr", "0.001", "--optimizer.momentum", "0.9"]  # fmt: skip
    cli = AUCLI(args=_resolve_model_names(args), run=False)
    optimizer = cli.model.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    (group,) = optimizer.param_groups
    assert group["lr"] == 0.001 and group["momentum"] == 0.9 and group["weight_decay"] == 0
    assert {id(p) for p in group["params"]} == {id(p) for p in cli.model.parameters()}


def test_config_fit_test_predict_on_synthau(workdir: Path) -> None:
    tiny = [
        "--data.init_args.synth={subjects: 6, videos: 1, frames: 8, size: 32, workers: 1}",
        "--data.image_size=32",
        "--data.crop_size=28",
        "--data.batch_size=8",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={workdir / 'runs'}",
    ]
    main(["fit", "--config", str(CONFIG), *tiny])
    best = list(workdir.rglob("best.ckpt"))
    assert len(best) == 1 and list(workdir.rglob("last.ckpt"))

    main(["test", "--config", str(CONFIG), *tiny, f"--ckpt_path={best[0]}"])
    (table,) = workdir.rglob("test_results.md")
    assert "| AU1 |" in table.read_text() and "| AU24 |" in table.read_text()

    main(["predict", "--config", str(CONFIG), *tiny, f"--ckpt_path={best[0]}"])
    (predictions,) = workdir.rglob("predictions.csv")
    with predictions.open() as f:
        rows = list(csv.DictReader(f))
    data = AUDataModule(
        dataset="bp4d",
        synth={"subjects": 6, "videos": 1, "frames": 8, "size": 32, "workers": 1},
        aus="bp4d",
        protocol="bp4d_3fold",
        fold="part1",
    )
    data.setup()
    expected = {str(data.test_index.path[r]) for r in data.test_rows}
    assert len(rows) == len(data.test_rows) > 0
    assert {row["path"] for row in rows} == expected
    assert {f"p_AU{a}" for a in (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)} <= set(rows[0])
    assert all(0.0 <= float(row["p_AU12"]) <= 1.0 and row["AU12"] in "01" for row in rows)


def test_imbalance_options_from_the_command_line(workdir: Path) -> None:
    tiny = [
        "--data.init_args.synth={subjects: 6, videos: 2, frames: 12, size: 32, workers: 1}",
        "--data.image_size=32",
        "--data.crop_size=28",
        "--data.batch_size=8",
        "--data.sampler=momu",
        "--data.sampler_options={sampling_size: 2}",
        "--model.loss_weights=selective",
        "--model.threshold_search=true",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={workdir / 'runs'}",
    ]
    main(["fit", "--config", str(CONFIG), *tiny])
    (best,) = workdir.rglob("best.ckpt")
    tuned = torch.load(best, weights_only=True)["state_dict"]["tuned_thresholds"]
    main(["test", "--config", str(CONFIG), *tiny, "--ckpt_path=best"])
    (table,) = workdir.rglob("test_results.csv")
    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert {"F1 untuned", "threshold"} <= set(rows[0])
    np.testing.assert_allclose([float(r["threshold"]) for r in rows[:-1]], tuned, atol=5e-4)


def test_baseline_passes_the_selective_target_to_its_loss() -> None:
    """One AU, 1 positive and 3 negatives (batch share 1/4), base rate 0.1: ``data`` weighs
    the positive 1 and each negative 1 * 0.9 / (3 * 0.1) = 3; ``balanced`` weighs the
    positive 3 * 0.5 / (1 * 0.5) = 3 and each negative 1."""
    target = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    logits = torch.tensor([[0.3], [-0.2], [0.5], [1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = {"data": [1.0, 3.0, 3.0, 3.0], "balanced": [3.0, 1.0, 1.0, 1.0]}
    for goal, weights in expected.items():
        model = Baseline(aus=[1], loss_weights="selective", selective_target=goal)
        model.base_rate.fill_(0.1)
        w = torch.tensor(weights)[:, None]
        want = (w * bce).mean()  # masked_bce: the mean over the known labels
        got = model.label_loss(logits, target)
        assert torch.allclose(got, want), (goal, got, want)
