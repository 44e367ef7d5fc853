"""MAML under real DDP (2 CPU processes, gloo, ``ddp_spawn``): one meta-batch of T tasks per
rank and one backward per step give the parameters of one process over the same 2T tasks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from au_lightning.data import EpisodeDataModule
from au_maml import MAML

SYNTH = {"subjects": 5, "videos": 1, "frames": 40, "size": 32, "seed": 0, "workers": 1}
STEPS = 3


class SGDMAML(MAML):
    """MAML with SGD inner and outer steps, which map equal gradients to equal parameters;
    Adam's g / sqrt(g^2) turns the float noise of a different summation order on a near-zero
    gradient into a full step, so Adam runs drift apart within a few steps. Saves θ."""

    def __init__(self, out: str) -> None:
        super().__init__(image_size=16, inner_optimizer="sgd", inner_lr=0.1, backend="higher")
        self.out = out

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def on_train_end(self) -> None:
        params = {k: v.detach().cpu() for k, v in self.net.named_parameters()}
        torch.save(
            params, Path(self.out) / f"rank{self.global_rank}_of_{self.trainer.world_size}.pt"
        )

    def teardown(self, stage: str) -> None:
        # a spawned worker skips atexit, where Lightning destroys the process group
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _fit(out: Path, devices: int, tasks_per_batch: int) -> None:
    data = EpisodeDataModule(dataset="bp4d", synth=SYNTH, aus="bp4d", protocol="loso",
                             val_strategy="none", image_size=16, crop_size=16, train_shots=2,
                             tasks_per_batch=tasks_per_batch, meta_batches=STEPS)  # fmt: skip
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(SGDMAML(str(out)), datamodule=data)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_ranks_end_equal_to_one_process_over_their_tasks(cache: Path, tmp_path: Path) -> None:
    _fit(tmp_path, devices=2, tasks_per_batch=3)
    _fit(tmp_path, devices=1, tasks_per_batch=6)
    rank0, rank1, single = (
        torch.load(tmp_path / name, weights_only=True)
        for name in ("rank0_of_2.pt", "rank1_of_2.pt", "rank0_of_1.pt")
    )
    torch.manual_seed(0)
    start = dict(SGDMAML("").net.named_parameters())
    for name, value in single.items():
        assert torch.equal(rank0[name], rank1[name]), name  # DDP: identical on both ranks
        # one process over the union of the ranks' tasks: equal up to float summation order
        torch.testing.assert_close(rank0[name], value, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(value, start[name].detach())
