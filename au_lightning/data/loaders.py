"""The data modules' DataLoaders: workers, pinned memory and the DDP evaluation shard.

Under DDP Lightning gives a plain evaluation loader a ``DistributedSampler``, which pads the
last shard with repeated items so that every rank runs as many batches; a repeated frame or
episode then counts twice in the synchronised metrics. :func:`make_loader` gives evaluation
loaders an :class:`EvaluationShard` instead (Lightning keeps a loader's own
``DistributedSampler``): every item is evaluated once, on one rank, and torchmetrics'
synchronised states equal those of one process over the whole split. Training loaders are
left to Lightning and to the batch samplers, which shard themselves
(:class:`~au_lightning.data.LabelBatchSampler`, :class:`~au_lightning.data.EpisodeBatchSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = ["EvaluationShard", "make_loader"]


class EvaluationShard(DistributedSampler):
    """Rank ``rank``'s contiguous share of the positions ``0 .. len(dataset) - 1``, in order,
    with nothing repeated or dropped: rank r of W takes ``[r*n // W, (r+1)*n // W)``."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(dataset)  # type: ignore[arg-type]
        self.start, self.stop = n * rank // num_replicas, n * (rank + 1) // num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def make_loader(
    dataset: Dataset,
    trainer: L.Trainer | None,
    num_workers: int = 0,
    *,
    batch_size: int | None = 1,
    batch_sampler: Sampler | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    evaluation: bool = False,
) -> DataLoader:
    """A DataLoader with persistent workers (``num_workers > 0``), memory pinned when the
    Trainer runs on a GPU, and, for an ``evaluation`` loader under DDP, the rank's
    :class:`EvaluationShard`. Give ``batch_sampler`` or ``batch_size`` (with ``shuffle``
    and ``generator``)."""
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": trainer is not None and trainer.strategy.root_device.type == "cuda",
    }
    if not shuffle:
        # the loader then uses its generator only for its workers' base seed, which it would
        # otherwise draw from the process's RNG whenever it starts its workers: a resumed
        # fit, which starts them one epoch later, would then see other dropout masks
        generator = generator or torch.Generator().manual_seed(0)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, generator=generator, **options)
    if evaluation and trainer is not None and trainer.world_size > 1:
        options["sampler"] = EvaluationShard(dataset, trainer.world_size, trainer.global_rank)
        options["generator"] = generator
    else:
        options.update(shuffle=shuffle, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, **options)
