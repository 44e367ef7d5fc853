"""The mistakes a user makes on the ``au-lightning`` command line, driven through ``main`` in
process: each must end in one clear message naming the wrong value (and the right ones)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from au_lightning.cli import AUCLI, _resolve_model_names, main
from tests.distributions import install_distribution

DATA = [
    "--data.dataset=bp4d",
    "--data.synth={subjects: 6, videos: 1, frames: 8, size: 32, seed: 1, workers: 1}",
    "--data.protocol=bp4d_3fold",
    "--data.image_size=32",
    "--data.crop_size=28",
    "--data.batch_size=8",
]
MODEL = ["--model", "baseline"]
# errors at setup fire before the first batch; should one not fire, a single batch runs
TRAINER = [
    "--trainer.fast_dev_run=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(autouse=True)
def env(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working folder, the CLI's program name, and a registered plugin that cannot be
    imported (``broken``)."""
    install_distribution(
        tmp_path / "site",
        monkeypatch,
        "cli-errors",
        "1.0",
        "[au_lightning.methods]\nbroken = cli_errors_broken:Nothing\n",
        {"cli_errors_broken": "import not_a_module_here\n"},
    )
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(cache))
    monkeypatch.setattr(sys, "argv", ["au-lightning"])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _exit_message(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``au-lightning ARGS`` expecting a usage error (exit status 2): the ``error:`` part
    of what it printed on stderr (jsonargparse prints the whole usage before it)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err
    return err[err.rindex("error: ") :]


# -- (a) unknown plugin (``--model NAME`` itself: tests/test_cli.py) --------------------------


def test_unknown_plugin_in_a_config_file(env: Path) -> None:
    (env / "typo.yaml").write_text("model: basline\n")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "typo.yaml"])
    assert isinstance(info.value.code, str) and "\n" not in info.value.code
    assert info.value.code.startswith("au-lightning: error: unknown plugin 'basline'; known: ")
    assert "baseline (Baseline)" in info.value.code


def test_unknown_class_path(capsys: pytest.CaptureFixture[str]) -> None:
    message = _exit_message(["fit", "--model", "au_baseline.Basline"], capsys)
    assert "module 'au_baseline' has no attribute 'Basline'" in message


# -- (b) a plugin that fails to import -------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "config"])
def test_plugin_that_fails_to_import_is_named_with_its_error(env: Path, how: str) -> None:
    (env / "broken.yaml").write_text("model: broken\n")
    args = ["--model", "broken"] if how == "option" else ["--config", "broken.yaml"]
    with pytest.raises(SystemExit) as info:
        main(["fit", *args])
    assert info.value.code == (
        "au-lightning: error: au_lightning.methods plugin 'broken' (cli_errors_broken:Nothing, "
        "from cli-errors) failed to import: ModuleNotFoundError: No module named "
        "'not_a_module_here'"
    )


# -- (c) a typo in an option -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "owner"),
    [("--model.lrr=0.1", "au_baseline.Baseline"), ("--data.batchsize=4", "AUDataModule")],
)
def test_option_typo_names_the_option_and_its_class(
    typo: str, owner: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = _exit_message(["fit", *MODEL, typo, *DATA], capsys)
    option = typo.split(".", 1)[1].split("=")[0]
    assert f"Option '{option}' is not accepted" in message
    assert "Problem with given class_path '" in message and owner in message


def test_option_typo_in_a_config_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "typo.yaml").write_text("model:\n  class_path: baseline\n  init_args:\n    lrr: 0.1\n")
    message = _exit_message(["fit", "--config", "typo.yaml", *DATA], capsys)
    assert "Option 'lrr' is not accepted" in message


def test_misspelt_group_is_unrecognized(capsys: pytest.CaptureFixture[str]) -> None:
    message = _exit_message(["fit", "--modle", "baseline", *DATA], capsys)
    assert message.splitlines()[:2] == [
        "error: unrecognized arguments: --modle baseline",
        "did you mean: --model",
    ]


@pytest.mark.parametrize(
    ("typo", "first", "closest"),
    [
        (
            "--data.batchsize=4",
            "error: au_lightning.AUDataModule takes no option 'batchsize' (--data.batchsize)",
            "did you mean: --data.batch_size",
        ),
        # an abbreviation is an error, not the option it abbreviates (allow_abbrev=False)
        (
            "--trainer.max_epoch=1",
            "error: unrecognized arguments: --trainer.max_epoch=1",
            "did you mean: --trainer.max_epochs, --trainer.min_epochs, --trainer.max_steps",
        ),
    ],
)
def test_a_typo_prints_the_error_and_the_closest_names_first(
    typo: str, first: str, closest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", *MODEL, typo, *DATA, *TRAINER])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[:2] == [first, closest]
    assert "usage:" not in err and err.splitlines()[-1].endswith("--help` lists every option")


def _error(args: list[str]) -> str:
    """Run ``au-lightning ARGS`` expecting a user error: the one-line message after
    ``au-lightning: error:`` (no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    message = info.value.code
    assert isinstance(message, str) and "\n" not in message, message
    assert message.startswith("au-lightning: error: ")
    return message.removeprefix("au-lightning: error: ")


# -- (d) a dataset root that does not exist ----------------------------------------------------


def test_missing_dataset_root_is_named() -> None:
    args = ["fit", *MODEL, "--data.root=/nonexistent", "--data.dataset=bp4d", *TRAINER]
    assert _error(args) == "bp4d dataset root '/nonexistent' does not exist"


def test_no_root_and_no_synth_says_what_to_set() -> None:
    assert _error(["fit", *MODEL, *TRAINER]) == (
        "no bp4d data: set data.root (the dataset folder) or data.synth (SynthAU generated "
        "in the bp4d layout)"
    )


def test_the_traceback_is_there_when_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AU_LIGHTNING_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="'/nonexistent' does not exist"):
        main(["fit", *MODEL, "--data.root=/nonexistent", *TRAINER])


# -- (e) AUs the dataset does not have; model and data AUs that differ -------------------------


def test_au_the_dataset_never_codes() -> None:
    assert _error(["fit", *MODEL, "--model.aus=[1, 99]", *DATA, *TRAINER]) == (
        "AU 99 has no known label in the bp4d data (every frame is unknown, e.g. 9 = not "
        "coded); choose AUs the dataset codes"
    )


def test_au_outside_the_layout_names_the_label_file() -> None:
    message = _error(["fit", *MODEL, "--model.aus=[1, 100]", *DATA, *TRAINER])
    assert "AUCoding/AU_OCC/" in message and ".csv:1: no column for AU 100;" in message


def test_unknown_au_set_name_for_the_data() -> None:
    assert _error(["fit", *MODEL, "--data.aus=bp4e", *DATA, *TRAINER]) == (
        "unknown AU set 'bp4e'; known sets: bp4d, bp4d_intensity, disfa, disfa8, gft, emotionet"
    )


@pytest.mark.parametrize(
    ("model_aus", "data_aus"),
    [(["--model.aus=[1, 2, 12]"], "[1, 2, 4]"), ([], "[1, 2]")],
    ids=["different", "model_default"],
)
def test_model_and_data_aus_must_match(model_aus: list[str], data_aus: str) -> None:
    message = _error(["fit", *MODEL, *model_aus, f"--data.aus={data_aus}", *DATA, *TRAINER])
    model = "[1, 2, 12]" if model_aus else "[1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]"
    assert message == (
        f"the model outputs AUs {model} but the data has AUs {data_aus}; "
        "set model aus and data aus alike"
    )


def test_data_aus_follow_the_model_when_unset() -> None:
    cli = AUCLI(args=_resolve_model_names([*MODEL, "--model.aus=[1, 2, 12]", *DATA]), run=False)
    assert cli.datamodule.hparams.aus == [1, 2, 12]


# -- (f) folds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fold", ["7", "-1"])
def test_fold_index_out_of_range_lists_the_folds(fold: str) -> None:
    assert _error(["fit", *MODEL, *DATA, f"--data.fold={fold}", *TRAINER]) == (
        f"fold {fold} out of range: this protocol has 3 folds (0..2: part1, part2, part3)"
    )


def test_unknown_fold_name_lists_the_folds() -> None:
    assert _error(["fit", *MODEL, *DATA, "--data.fold=part4", *TRAINER]) == (
        "fold 'part4' not found; folds are named part1, part2, part3"
    )


def test_unknown_protocol_lists_the_protocols(capsys: pytest.CaptureFixture[str]) -> None:
    message = _exit_message(["fit", *MODEL, *DATA, "--data.protocol=bp4d3fold"], capsys)
    assert "Expected a typing.Literal['kfold', 'loso', 'parts', 'bp4d_3fold', " in message
    assert "Got value: bp4d3fold" in message


# -- errors raised by a plugin's (or the data module's) __init__ -------------------------------

INIT_ERRORS = [
    (["--model.aus=bp4e"], "unknown AU set 'bp4e'; known sets: bp4d, "),
    (
        ["--model.backbone=anet", "--model.pretrained=true"],
        "backbone 'anet' has no pretrained weights; set pretrained: false, or start from an "
        "earlier run with init_from: /path/to/run.ckpt",
    ),
    (["--data.sampler=momo"], "unknown sampler 'momo'; known: random, stratified, momu"),
]


@pytest.mark.parametrize(("args", "expected"), INIT_ERRORS, ids=["aus", "anet", "sampler"])
def test_init_errors_are_the_plugin_message_alone(args: list[str], expected: str) -> None:
    assert _error(["fit", *MODEL, *args, *DATA, *TRAINER]).startswith(expected)


# -- issue 23 item 9: mistakes that used to end in a traceback --------------------------------

ONE_LINE = [
    (["--data.batch_size=0"], "batch_size must be a positive integer, got 0"),
    (
        ["--data.crop_size=40"],
        "data.crop_size=40 must be in 1..data.image_size (32): the crop is cut from the image",
    ),
    (
        ["--data.reader_options={nonsense: 1}"],
        "bp4d reader: got an unexpected keyword argument 'nonsense'; its options are: aus, ",
    ),
]


@pytest.mark.parametrize(("args", "expected"), ONE_LINE, ids=["batch", "crop", "reader"])
def test_data_mistakes_are_one_line(args: list[str], expected: str) -> None:
    assert _error(["fit", *MODEL, *DATA, *args, *TRAINER]).startswith(expected)


def test_disfa_without_its_intensity_threshold_is_one_line() -> None:
    disfa = ["--data.dataset=disfa", "--data.synth={subjects: 3, videos: 1, frames: 8, size: 32}"]
    message = _error(["fit", *MODEL, *disfa, "--data.image_size=32", "--data.crop_size=28",
                      *TRAINER])  # fmt: skip
    assert message.startswith("disfa reader: missing a required argument: 'intensity_threshold'")


def test_an_error_in_a_dataloader_worker_is_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 20000x20000 image (PIL's decompression bomb) mid-epoch, read in a worker process:
    the pixel limit is lowered so that SynthAU's 32-px frames trip it."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    message = _error(["fit", *MODEL, *DATA, "--data.num_workers=1", "--data.cache=false",
                      *TRAINER])  # fmt: skip
    assert ".jpg: image cannot be decoded" in message and "decompression bomb" in message
    assert "DataLoader worker" not in message
