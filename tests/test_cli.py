"""The au-lightning CLI, driven in-process with a method registered by a real distribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from au_lightning.cli import AUCLI, _resolve_model_names, main
from tests.distributions import install_distribution

PLUGIN = '''
import torch
from torch import nn
from au_lightning import AUMethod


class LinearAU(AUMethod):
    """A linear AU detector on pooled pixels."""

    def __init__(self, aus: list[int] = [1, 2, 12], lr: float = 0.05) -> None:
        super().__init__(aus=aus, lr=lr)
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, len(aus)))

    def forward(self, images):
        return self.net(images)


class AdaptingAU(LinearAU):
    """Adapts at evaluation time."""

    adapts_at_evaluation = True
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_distribution(
        tmp_path / "site",
        monkeypatch,
        "cli-methods",
        "1.0",
        "[au_lightning.methods]\nlin = cli_methods:LinearAU\nadapt = cli_methods:AdaptingAU\n"
        "broken = cli_methods_broken:Nothing\n",
        {"cli_methods": PLUGIN, "cli_methods_broken": "import not_a_module_here\n"},
    )
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


DATA = [
    "--data.dataset=bp4d",
    "--data.synth={subjects: 6, videos: 1, frames: 8, size: 32, seed: 1, workers: 1}",
    "--data.aus=[1, 2, 12]",
    "--data.protocol=bp4d_3fold",
    "--data.image_size=32",
    "--data.crop_size=28",
    "--data.batch_size=8",
]
TRAINER = ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]


def test_fit_then_test_from_the_checkpoint(plugin: Path) -> None:
    main(["fit", "--model", "lin", *DATA, *TRAINER, "--trainer.default_root_dir=runs"])
    checkpoints = sorted(Path("runs").rglob("*.ckpt"))
    assert checkpoints, "fit should leave a checkpoint"
    main(["test", "--model", "LinearAU", *DATA, "--trainer.default_root_dir=runs",
          f"--ckpt_path={checkpoints[-1]}"])  # fmt: skip
    tables = sorted(Path("runs").rglob("test_results.md"))
    assert tables and "| AU12 |" in tables[-1].read_text()


def test_config_file_may_name_the_model_by_entry_point(plugin: Path) -> None:
    (plugin / "lin.yaml").write_text("model:\n  class_path: lin\n  init_args:\n    lr: 0.01\n")
    cli = AUCLI(args=_resolve_model_names(["--config", "lin.yaml", *DATA]), run=False)
    assert type(cli.model).__name__ == "LinearAU" and cli.model.lr == 0.01


def test_unknown_plugin_and_option_typo(plugin: Path, capsys) -> None:
    with pytest.raises(SystemExit, match=r"unknown plugin 'linn'; known: .*lin \(LinearAU\)"):
        main(["fit", "--model", "linn", *DATA])
    with pytest.raises(SystemExit):
        main(["fit", "--model", "lin", "--model.lrr=0.1", *DATA])
    assert "lrr" in capsys.readouterr().err


def test_adapting_method_gets_inference_mode_off(plugin: Path) -> None:
    adapt = AUCLI(args=_resolve_model_names(["--model", "adapt", *DATA]), run=False)
    assert adapt.trainer.test_loop.inference_mode is False
    plain = AUCLI(args=_resolve_model_names(["--model", "lin", *DATA]), run=False)
    assert plain.trainer.test_loop.inference_mode is True


def test_plugins_lists_methods_formats_and_the_broken_one(plugin: Path, capsys) -> None:
    main(["plugins"])
    out = capsys.readouterr().out
    assert "lin" in out and "cli_methods.LinearAU" in out and "cli-methods 1.0" in out
    assert "A linear AU detector on pooled pixels." in out
    assert "FAILED TO IMPORT" in out and "not_a_module_here" in out
    assert "bp4d" in out and "au_lightning.data.formats.bp4d.read_bp4d" in out


def test_index_prints_a_summary(plugin: Path, capsys) -> None:
    main(["synth", "--out", "s", "--subjects", "2", "--videos", "1", "--frames", "6",
          "--size", "24", "--workers", "1", "--progress", "false"])  # fmt: skip
    main(["index", "--dataset", "bp4d", "--root", "s", "--cache_dir", "idx"])
    out = capsys.readouterr().out
    assert "bp4d: 12 frames, 2 subjects, 2 videos, 12 AUs" in out
    assert list(Path("idx").glob("bp4d-*.npz"))


def test_index_verify_lists_every_unreadable_frame(plugin: Path, capsys) -> None:
    main(["synth", "--out", "s", "--subjects", "2", "--videos", "1", "--frames", "6",
          "--size", "24", "--workers", "1", "--progress", "false"])  # fmt: skip
    main(["index", "--dataset", "bp4d", "--root", "s", "--verify", "true", "--workers", "2"])
    assert "verified: all 12 frames decode" in capsys.readouterr().out
    bad = sorted(Path("s").rglob("*.jpg"))[1:3]
    for file in bad:
        file.write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        main(["index", "--dataset", "bp4d", "--root", "s", "--verify", "true"])
    message = str(raised.value.code)
    assert "2 of the 12 frames of bp4d" in message
    assert all(f"{file.name}: image cannot be decoded" in message for file in bad)


CHECKPOINTS = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/f1_mean, mode: max, filename: best}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: last}
"""


def test_ckpt_path_best_and_last_name_the_latest_run(plugin: Path) -> None:
    Path("ckpt.yaml").write_text(CHECKPOINTS)
    fit = ["fit", "--model", "lin", *DATA, *TRAINER, "--config=ckpt.yaml"]
    main([*fit, "--trainer.default_root_dir=runs"])
    main([*fit, "--trainer.default_root_dir=runs", "--trainer.max_epochs=2"])
    latest = Path("runs/lightning_logs/version_1/checkpoints")
    test = ["test", *_resolve_model_names(["--model", "lin"]), *DATA]
    test += ["--trainer.default_root_dir=runs"]
    best = AUCLI(args=[*test, "--ckpt_path=best"])
    assert best.config_init["test"]["ckpt_path"] == str(latest / "best.ckpt")
    last = AUCLI(args=[*test, "--ckpt_path=last"])
    assert last.config_init["test"]["ckpt_path"] == str(latest / "last.ckpt")
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path best: no best checkpoint .* empty"):
        AUCLI(args=[*test[:-1], "--trainer.default_root_dir=empty", "--ckpt_path=best"])


def test_cv_tests_every_fold_and_writes_the_mean_table(plugin: Path, capsys) -> None:
    main(["cv", "--model", "lin", *DATA, *TRAINER, "--trainer.default_root_dir=runs"])
    out = Path("runs/cv")
    rows = [line.split(",") for line in (out / "cv_results.csv").read_text().splitlines()]
    assert rows[0] == ["AU", "F1 part1", "F1 part2", "F1 part3", "F1 mean", "accuracy mean",
                       "AUC mean"]  # fmt: skip
    assert [r[0] for r in rows[1:]] == ["AU1", "AU2", "AU12", "mean"]
    for fold, column in (("part1", 1), ("part2", 2), ("part3", 3)):
        [table] = (out / fold).rglob("test_results.csv")
        own = {r.split(",")[0]: r.split(",")[1] for r in table.read_text().splitlines()}
        assert [r[column] for r in rows[1:]] == [own[r[0]] for r in rows[1:]]
    for row in rows[1:]:
        folds = [float(v) for v in row[1:4] if v]
        assert float(row[4]) == pytest.approx(np.mean(folds), abs=0.051)
    assert (out / "cv_f1.png").is_file()
    assert "| AU12 |" in capsys.readouterr().out
