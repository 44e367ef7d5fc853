"""The harness of the 2-process DDP tests (CPU, gloo, ``ddp_spawn``).

A 2-rank run is compared with a 1-process reference on the same data. For the methods
Lightning optimizes automatically, the reference takes the same batches one after the other
with ``accumulate_grad_batches=2``: step s of the 2 ranks is batches 2s (rank 0) and 2s+1
(rank 1) of the sampler's plan, DDP averages their gradients, and the reference averages
the same two gradients. Batch norm then normalises with the same per-batch statistics; its
running statistics follow rank 0's batches under DDP (DDP broadcasts rank 0's buffers
before every forward), which :class:`RankZeroStatistics` reproduces.

The runs are in float64 (``precision="64-true"``): DDP sums the ranks' gradients in another
order than the reference, and in float32 that 1e-7 noise grows, within a few steps of a
ResNet on 28 px frames, into differences of 1e-2 (ties in max-pooling over flat background,
batch norm over 4 frames at 1 x 1); in float64 it stays below 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from au_lightning.distributed import spool_spawn_results

__all__ = [
    "RankState",
    "RankZeroStatistics",
    "assert_scores_close",
    "load_rank_states",
    "trainer",
]


class EndProcessGroup(Callback):
    """Destroys the process group when a run ends: a spawned worker exits without running
    atexit, where Lightning destroys it, and gloo then now and then aborts the worker on its
    way out (SIGABRT)."""

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class RankState(Callback):
    """Saves every rank's final state dict as ``rank{r}_of_{w}.pt`` in ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        name = f"rank{trainer.global_rank}_of_{trainer.world_size}.pt"
        torch.save(state, self.out / name)


class RankZeroStatistics(Callback):
    """In the 1-process reference of a 2-rank run: the running statistics of every batch
    norm (any module with ``running_mean`` and ``momentum``) are updated on the even
    micro-batches only, rank 0's, and left unchanged (momentum 0) on the odd ones."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        for module in pl_module.modules():
            if hasattr(module, "running_mean") and hasattr(module, "momentum"):
                if not hasattr(module, "rank_zero_momentum"):
                    module.rank_zero_momentum = module.momentum
                module.momentum = 0.0 if batch_idx % 2 else module.rank_zero_momentum


def trainer(root: Path, devices: int, callbacks: Sequence[Callback] = (), **options: Any):
    """A quiet float64 CPU Trainer: ``ddp_spawn`` over ``devices`` processes (``options``
    may name another strategy or precision) with the project's launcher
    (:func:`spool_spawn_results`, as the CLI), no logger, checkpoints or sanity check."""
    options = {"precision": "64-true"} | options
    strategy = options.pop("strategy", "ddp_spawn" if devices > 1 else "auto")
    made = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0,
                     default_root_dir=root, callbacks=[EndProcessGroup(), *callbacks],
                     **options)  # fmt: skip
    return spool_spawn_results(made)


def load_rank_states(out: Path, world: int) -> list[dict[str, torch.Tensor]]:
    """The states :class:`RankState` saved for ranks ``0 .. world - 1``."""
    return [torch.load(out / f"rank{r}_of_{world}.pt", weights_only=True) for r in range(world)]


def assert_scores_close(
    got: Mapping[str, float], expected: Mapping[str, float], atol: float
) -> None:
    """The same metric names, every value within ``atol`` (NaN matching NaN)."""
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert abs(got[name] - value) <= atol, (name, got[name], value)
