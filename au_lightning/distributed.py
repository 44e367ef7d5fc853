"""What the methods need of torch.distributed beyond Lightning and torchmetrics: gathering
results that are not tensors of one shape (per-episode records, event runs, predictions),
and a spawn launcher that returns results of any size."""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

__all__ = ["SpooledSpawnLauncher", "gather_objects", "spool_spawn_results"]

T = TypeVar("T")


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` in one process. Every
    rank must call it (it is a collective)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered: list[T] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _read_spool(path: str) -> Any:
    """Unpickling a :class:`_Spool` in the main process: the object written to ``path``."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    finally:
        os.remove(path)


class _Spool:
    """An object written to a temporary file that pickles as that file's name, so that it
    crosses a pipe in a few hundred bytes and is read back where it is unpickled."""

    __slots__ = ("path",)

    def __init__(self, obj: Any) -> None:
        fd, self.path = tempfile.mkstemp(prefix="au_lightning_spawn_", suffix=".pkl")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _read_spool, (self.path,)


class SpooledSpawnLauncher(_MultiProcessingLauncher):
    """Lightning's launcher of ``ddp_spawn`` (and ``ddp_fork``), with rank 0's results
    passed through a temporary file.

    Lightning's launcher joins the processes before it reads rank 0's results from a
    ``SimpleQueue``, a pipe. A result larger than the pipe's buffer (64 KiB on Linux) then
    blocks rank 0 in ``put`` while the main process waits for it to exit, and neither
    returns. Measured: the hybrid's 2-rank test with its ``cnn_smoothed`` control logs 209
    metrics, 65,677 bytes pickled (without the control 157 metrics, 48,861 bytes, which fit);
    any method logging per-AU scores for enough AUs reaches it. Here rank 0 writes the
    result to a file and sends its name; the main process reads and deletes it."""

    def _collect_rank_zero_results(self, trainer: L.Trainer, results: Any) -> Any:
        output = super()._collect_rank_zero_results(trainer, results)
        return None if output is None else _Spool(output)


def spool_spawn_results(trainer: L.Trainer) -> L.Trainer:
    """Give ``trainer`` a :class:`SpooledSpawnLauncher` where its strategy spawns or forks
    its processes (``ddp_spawn``, ``ddp_fork``); other strategies are left as they are."""
    launcher = trainer.strategy.launcher
    if type(launcher) is _MultiProcessingLauncher:
        trainer.strategy._launcher = SpooledSpawnLauncher(
            trainer.strategy, start_method=launcher._start_method
        )
    return trainer
