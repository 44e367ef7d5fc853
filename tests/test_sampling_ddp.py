"""A sampler under real DDP: 2 CPU processes (gloo, ``ddp_spawn``) train on disjoint shards
of the one epoch plan."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from au_lightning.data import AUDataModule, make_batch_sampler

SYNTH = {"subjects": 6, "videos": 1, "frames": 16, "size": 32, "seed": 1, "workers": 1}


class ShardRecorder(L.LightningModule):
    """Writes the FrameIndex rows of every batch this rank trained on, per epoch."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.layer = torch.nn.Linear(1, 1)
        self.rows: list[list[int]] = []

    def training_step(self, batch, _):
        self.rows.append(batch["index"].tolist())
        return self.layer(torch.ones(1, 1)).sum()

    def on_train_epoch_end(self) -> None:
        name = f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        Path(self.out, name).write_text(json.dumps(self.rows))
        self.rows = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def teardown(self, stage: str) -> None:
        # A spawned worker exits without running atexit, where Lightning destroys the
        # process group; gloo then now and then aborts the worker on its way out (SIGABRT).
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def datamodule() -> AUDataModule:
    return AUDataModule(dataset="bp4d", synth=SYNTH, aus="bp4d", protocol="bp4d_3fold",
                        fold="part1", image_size=32, crop_size=28, batch_size=4,
                        val_strategy="none", sampler="momu")  # fmt: skip


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_ranks_train_on_disjoint_shards_of_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(ShardRecorder(str(tmp_path)), datamodule=datamodule())

    dm = datamodule()
    dm.setup("fit")
    labels = dm.index.occurrence[dm.train_rows]
    for epoch in (0, 1):
        plan = make_batch_sampler("momu", labels, 4).plan(epoch)
        per_rank = len(plan) // 2
        for rank in (0, 1):
            seen = json.loads((tmp_path / f"rank{rank}_epoch{epoch}.json").read_text())
            expected = [dm.train_rows[b].tolist() for b in plan[rank::2][:per_rank]]
            assert seen == expected
