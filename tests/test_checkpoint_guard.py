"""A checkpoint knows its method and its data split (issue 23, items 1, 2 and 9): evaluating
it on subjects it trained on, loading another method's, or a broken file, is one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from au_lightning.checkpoints import find_checkpoint
from au_lightning.cli import AUCLI, _resolve_model_names, main
from au_lightning.data import split_record_in
from tests.test_cli import CHECKPOINTS, DATA, TRAINER, plugin  # noqa: F401

FIT = ["fit", "--model", "lin", *DATA, *TRAINER, "--config=ckpt.yaml"]
TEST = ["test", "--model", "lin", *DATA, "--trainer.default_root_dir=runs"]

pytestmark = pytest.mark.usefixtures("plugin")


def _fit(*options: str) -> Path:
    """Fit into ``runs``; the new run's checkpoint folder."""
    Path("ckpt.yaml").write_text(CHECKPOINTS)
    before = set(Path("runs").rglob("last.ckpt")) if Path("runs").exists() else set()
    main([*FIT, "--trainer.default_root_dir=runs", *options])
    [last] = set(Path("runs").rglob("last.ckpt")) - before
    return last.parent


def _error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    message = str(raised.value.code)
    assert message.startswith("au-lightning: error: ") and "\n" not in message
    return message


def test_a_checkpoint_records_its_split() -> None:
    folder = _fit("--data.fold=part2")
    record = split_record_in(torch.load(folder / "last.ckpt", weights_only=True))
    assert record is not None and record.key.fold == "part2"
    assert record.key.protocol == "bp4d_3fold" and record.key.source.startswith("synthau:bp4d:")
    assert record.train and record.test
    assert not set(record.test) & (set(record.train) | set(record.val))


def test_testing_another_folds_checkpoint_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    folder = _fit("--data.fold=part2")
    record = split_record_in(torch.load(folder / "best.ckpt", weights_only=True))
    # part1's test subjects are among part2's training (or validation) subjects
    message = _error([*TEST, "--data.fold=part1", f"--ckpt_path={folder / 'best.ckpt'}"])
    assert "trained on fold part2" in message and "evaluated on fold part1" in message
    assert "--allow_fold_mismatch" in message
    assert any(subject in message for subject in record.train + record.val)
    # the aliases look among runs of the same fold only
    message = _error([*TEST, "--data.fold=part1", "--ckpt_path=best"])
    assert "no best checkpoint of a LinearAU run on fold part1" in message
    # the same fold is fine, and the override runs with a warning
    main([*TEST, "--data.fold=part2", "--ckpt_path=best"])
    with caplog.at_level(logging.WARNING, logger="au_lightning.data"):
        main([*TEST, "--data.fold=part1", f"--ckpt_path={folder / 'best.ckpt'}",
              "--allow_fold_mismatch=true"])  # fmt: skip
    assert "--allow_fold_mismatch" in caplog.text and "not held-out" in caplog.text


def test_resuming_on_another_fold_is_refused() -> None:
    folder = _fit("--data.fold=part2")
    message = _error([*FIT, "--trainer.default_root_dir=runs", "--data.fold=part1",
                      "--trainer.max_epochs=2", f"--ckpt_path={folder / 'last.ckpt'}"])  # fmt: skip
    assert "trained on fold part2" in message


def test_best_after_cv_is_the_folds_own() -> None:
    Path("ckpt.yaml").write_text(CHECKPOINTS)
    main(["cv", *FIT[1:], "--trainer.default_root_dir=runs"])
    for fold in ("part1", "part3"):  # part3 ran last
        cli = AUCLI(args=_resolve_model_names([*TEST, f"--data.fold={fold}", "--ckpt_path=best"]))
        assert Path(cli.config_init["test"]["ckpt_path"]).is_relative_to(Path("runs/cv") / fold)


def test_another_methods_checkpoint_is_refused_in_one_line() -> None:
    folder = _fit()
    message = _error(["test", "--model", "adapt", *DATA, f"--ckpt_path={folder / 'best.ckpt'}"])
    assert "was written by cli_methods.LinearAU, but the model is cli_methods.AdaptingAU" in (
        message
    )
    message = _error(["test", "--model", "adapt", *DATA, "--trainer.default_root_dir=runs",
                      "--ckpt_path=last"])  # fmt: skip
    assert "no last checkpoint of a AdaptingAU run" in message


@pytest.mark.parametrize("broken", ["empty", "garbage", "truncated", "keyless"])
def test_a_broken_checkpoint_file_is_one_line_naming_it(broken: str) -> None:
    folder = _fit()
    good = (folder / "best.ckpt").read_bytes()
    path = Path(f"{broken}.ckpt")
    if broken == "keyless":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        content = {"empty": b"", "garbage": b"not a checkpoint at all", "truncated": good[:4000]}
        path.write_bytes(content[broken])
    message = _error([*TEST, f"--ckpt_path={path}"])
    assert str(path) in message
    expected = {
        "empty": "is empty (0 bytes)",
        "garbage": "cannot be read, not a checkpoint",
        "truncated": "cannot be read, truncated",
        "keyless": "without a state_dict",
    }
    assert expected[broken] in message


def test_a_truncated_last_names_the_previous_good_one() -> None:
    first = _fit()
    second = _fit("--trainer.max_epochs=2")
    last = second / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    message = _error([*TEST, "--ckpt_path=last"])
    assert f"{last} cannot be read, truncated" in message
    assert f"the previous one is {first / 'last.ckpt'}" in message


def test_fit_with_best_or_without_a_last_checkpoint_is_an_error() -> None:
    Path("ckpt.yaml").write_text(CHECKPOINTS)
    message = _error([*FIT, "--trainer.default_root_dir=runs", "--ckpt_path=best"])
    assert "fit --ckpt_path best" in message and "--ckpt_path last" in message
    message = _error([*FIT, "--trainer.default_root_dir=nothing", "--ckpt_path=last"])
    assert "--ckpt_path last: no last checkpoint" in message and "nothing" in message


def test_checkpoints_without_a_record_never_match_a_fold() -> None:
    folder = _fit()
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    for key in [k for k in checkpoint if k.endswith("DataModule")]:
        del checkpoint[key]
    torch.save(checkpoint, folder / "last.ckpt")
    assert find_checkpoint("runs", "last") == folder / "last.ckpt"
    record = split_record_in(torch.load(folder / "best.ckpt", weights_only=True))
    assert find_checkpoint("runs", "last", fold=record.key) is None
