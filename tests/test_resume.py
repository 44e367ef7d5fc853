"""Resume: a fit killed after its first checkpoint, restarted with ``--ckpt_path last``, ends
with the weights of an uninterrupted run (CPU, a tiny ResNet-18 baseline with dropout and
random crops and flips, so every random stream matters)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from au_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
RUN = [
    "--config", str(REPO / "configs" / "baseline.yaml"),
    "--data.init_args.synth={subjects: 6, videos: 1, frames: 8, size: 32, seed: 1, workers: 1}",
    "--data.image_size=32", "--data.crop_size=28", "--data.batch_size=8",
    "--model.dropout=0.5", "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false",
]  # fmt: skip


def _last(root: Path) -> dict:
    [newest] = sorted(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime_ns)[-1:]
    return torch.load(newest, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_fit_resumed_from_last_equals_an_uninterrupted_fit(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DataLoader workers too (issue 23, item 3): their (persistent) random streams
    would differ after a restart; the crops and flips are seeded per item instead."""
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run = [*RUN, f"--data.num_workers={workers}"]
    main(["fit", *run, "--trainer.default_root_dir=whole"])

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    killed = subprocess.run(
        [sys.executable, "-m", "au_lightning.cli", "fit", *run,
         "--trainer.default_root_dir=resumed", "--trainer.callbacks+=tests.kill.KillAtEpochStart"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _last(Path("resumed"))["epoch"] == 0, "the killed run should have left epoch 0"

    main(["fit", *run, "--trainer.default_root_dir=resumed", "--ckpt_path=last"])
    whole, resumed = _last(Path("whole")), _last(Path("resumed"))
    assert (resumed["epoch"], resumed["global_step"]) == (whole["epoch"], whole["global_step"])
    assert whole["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
