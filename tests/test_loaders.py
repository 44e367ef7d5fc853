"""make_loader and EvaluationShard: workers, pinned memory, and evaluation shards that cover
a split once (the 2-process runs are in tests/test_ddp.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler, TensorDataset

from au_lightning.data import EvaluationShard, make_loader


def stub_trainer(world: int = 1, rank: int = 0, device: str = "cpu") -> SimpleNamespace:
    """What make_loader reads of a Trainer."""
    strategy = SimpleNamespace(root_device=torch.device(device))
    return SimpleNamespace(world_size=world, global_rank=rank, strategy=strategy)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 11])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_item_once_in_order(n: int, world: int) -> None:
    dataset = TensorDataset(torch.arange(n))
    shards = [list(EvaluationShard(dataset, world, rank)) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(n))  # disjoint, in order
    assert [len(EvaluationShard(dataset, world, r)) for r in range(world)] == list(map(len, shards))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_evaluation_loaders_are_sharded_under_ddp_and_training_loaders_are_not() -> None:
    dataset = TensorDataset(torch.arange(10))
    seen = []
    for rank in (0, 1):
        loader = make_loader(dataset, stub_trainer(2, rank), batch_size=3, evaluation=True)
        assert isinstance(loader.sampler, EvaluationShard)
        seen += [int(x) for (batch,) in loader for x in batch]
    assert seen == list(range(10))
    # one process, or a training loader: Lightning's own handling is left in place
    assert isinstance(make_loader(dataset, stub_trainer(1), evaluation=True).sampler,
                      SequentialSampler)  # fmt: skip
    assert isinstance(make_loader(dataset, stub_trainer(2), shuffle=True).sampler, RandomSampler)


def test_workers_persist_and_memory_is_pinned_only_on_gpu() -> None:
    dataset = TensorDataset(torch.arange(4))
    cpu = make_loader(dataset, stub_trainer(device="cpu"), num_workers=2)
    assert cpu.persistent_workers and cpu.num_workers == 2 and not cpu.pin_memory
    gpu = make_loader(dataset, stub_trainer(device="cuda"), num_workers=0)
    assert gpu.pin_memory and not gpu.persistent_workers
    assert not make_loader(dataset, None).pin_memory  # no Trainer attached
