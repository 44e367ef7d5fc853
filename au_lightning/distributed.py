"""What the methods need of torch.distributed beyond Lightning and torchmetrics: gathering
results that are not tensors of one shape (per-episode records, event runs, predictions)."""

from __future__ import annotations

from typing import TypeVar

import torch

__all__ = ["gather_objects"]

T = TypeVar("T")


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` in one process. Every
    rank must call it (it is a collective)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered: list[T] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
