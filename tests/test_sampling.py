"""Batch samplers: the algorithms' exact properties on hand-built label matrices, seeding,
unknown labels, DDP shards, and the loader Lightning builds from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods, _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from au_lightning.data.sampling import (
    SAMPLERS,
    EpochPlan,
    LabelBatchSampler,
    MLROSBatches,
    MOMUBatches,
    StratifiedBatches,
    WeightedBatches,
    imbalance_ratios,
    make_batch_sampler,
    presence_per_batch,
)


def skewed(n: int = 400, seed: int = 0, unknown: float = 0.0) -> np.ndarray:
    """Independent AUs with base rates from 3% to 45%, a few unknown labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 6)) < np.geomspace(0.03, 0.45, 6)).astype(np.int8)
    labels[rng.random(labels.shape) < unknown] = -1
    return labels


#: AU numbers for the 6 label columns of :func:`skewed` (the duplicate sampler needs them)
AUS6 = (1, 2, 4, 15, 23, 24)


def first_epoch(plan: EpochPlan) -> list[np.ndarray]:
    return LabelBatchSampler(plan).plan(0)


# -- every sampler ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_plans_are_a_function_of_seed_and_epoch(name: str) -> None:
    labels = skewed(unknown=0.05)
    a = make_batch_sampler(name, labels, 16, seed=3, aus=AUS6)
    b = make_batch_sampler(name, labels, 16, 3, aus=AUS6)
    flat = [np.concatenate(s.plan(e)) for s in (a, b) for e in (0, 1)]
    np.testing.assert_array_equal(flat[0], flat[2])
    np.testing.assert_array_equal(flat[1], flat[3])
    assert not np.array_equal(flat[0], flat[1])
    other_seed = np.concatenate(make_batch_sampler(name, labels, 16, seed=4, aus=AUS6).plan(0))
    assert not np.array_equal(flat[0], other_seed)
    assert all(f.min() >= 0 and f.max() < len(labels) for f in flat)
    assert all(len(batch) <= 16 for batch in a.plan(0))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_ddp_shards_are_disjoint_and_follow_the_epoch(name: str) -> None:
    labels = skewed(n=203)
    dataset = TensorDataset(torch.zeros(len(labels)))
    plan = make_batch_sampler(name, labels, 8, seed=1, aus=AUS6).plan(2)
    shards = []
    for rank in range(3):
        sampler = DistributedSampler(dataset, num_replicas=3, rank=rank)
        sampler.set_epoch(2)
        epoch_plan = make_batch_sampler(name, labels, 8, aus=AUS6).epoch_plan
        shard = LabelBatchSampler(epoch_plan, sampler=sampler, seed=1)
        shards.append([tuple(batch) for batch in shard])
        assert len(shard) == len(plan) // 3 == len(shards[-1])
    # every rank has its own batches of the one epoch plan, none shared
    expected = [tuple(b.tolist()) for b in plan]
    for rank, shard in enumerate(shards):
        assert shard == expected[rank::3][: len(plan) // 3]
    if name in ("random", "stratified"):  # without replacement: frames are disjoint too
        frames = [set(i for batch in shard for i in batch) for shard in shards]
        assert not (frames[0] & frames[1] or frames[0] & frames[2] or frames[1] & frames[2])


@pytest.mark.parametrize("name", ["random", "stratified", "momu", "mlros"])
def test_only_known_positives_count(name: str) -> None:
    """A label that turns from absent (0) to unknown (-1) changes nothing for samplers that
    count positives; an unknown label is never taken as present."""
    labels = skewed()
    hidden = labels.copy()
    hidden[(labels == 0) & (np.random.default_rng(5).random(labels.shape) < 0.3)] = -1
    a = make_batch_sampler(name, labels, 16).plan(0)
    b = make_batch_sampler(name, hidden, 16).plan(0)
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))


def test_lightning_gives_the_sampler_its_ddp_shard() -> None:
    """What Lightning's Trainer does to a training loader under DDP (``_prepare_dataloader``):
    rebuild the batch sampler with a DistributedSampler in place of ``sampler``."""
    labels = skewed(n=100)
    dataset = TensorDataset(torch.arange(len(labels)))
    with _replace_dunder_methods(BatchSampler):
        batch_sampler = LabelBatchSampler(MOMUBatches(labels, 10), seed=2)
        loader = DataLoader(dataset, batch_sampler=batch_sampler)
    plan = loader.batch_sampler.plan(0)
    distributed = DistributedSampler(dataset, num_replicas=2, rank=1)
    sharded = _update_dataloader(loader, distributed)
    assert isinstance(sharded.batch_sampler, LabelBatchSampler)
    assert sharded.batch_sampler.epoch_plan is batch_sampler.epoch_plan
    assert sharded.batch_sampler.sampler is distributed
    got = [batch[0].tolist() for batch in sharded]
    assert got == [b.tolist() for b in plan[1::2]]


def test_unknown_sampler_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'momo'; known: random, stratified"):
        make_batch_sampler("momo", skewed(), 8)
    with pytest.raises(ValueError, match=r"mlros sampler has no option P \(its options: perc"):
        make_batch_sampler("mlros", skewed(), 8, options={"P": 10})


# -- Alg. 1: multi-label stratification ---------------------------------------------------------


def test_stratification_spreads_the_rarest_au_evenly() -> None:
    labels = skewed(n=400)
    plan = first_epoch(StratifiedBatches(labels, 16))
    assert len(plan) == 25
    np.testing.assert_array_equal(np.sort(np.concatenate(plan)), np.arange(400))  # a partition
    assert {len(b) for b in plan} == {16}
    presence = presence_per_batch(labels, plan)
    rarest = int(np.argmin((labels == 1).sum(0)))
    assert presence[rarest].max() - presence[rarest].min() <= 1
    random = presence_per_batch(labels, first_epoch(SAMPLERS["random"](labels, 16)))
    assert presence[rarest].std() < random[rarest].std()


def test_stratification_deals_rarest_first_then_recounts() -> None:
    # AU0: 3 frames; AU1: 6 frames of which 2 also have AU0; 5 frames without AU; 3 batches.
    labels = np.zeros((12, 2), np.int8)
    labels[[0, 1, 2], 0] = 1
    labels[[1, 2, 3, 4, 5, 6], 1] = 1
    plan = first_epoch(StratifiedBatches(labels, 4))
    presence = presence_per_batch(labels, plan)
    assert presence[0].tolist() == [1, 1, 1]  # AU0's three frames, one per batch
    # AU1's frames left in D (3, 4, 5, 6) are dealt next, the round going on at the 4th
    # position (batches 0, 1, 2, 0), then the 5 frames without AU: sizes stay equal
    au1_only = sorted(int(np.isin(b, [3, 4, 5, 6]).sum()) for b in plan)
    assert au1_only == [1, 1, 2]
    assert sorted(len(b) for b in plan) == [4, 4, 4]


# -- Alg. 2: MOMU ------------------------------------------------------------------------------


def test_momu_fills_in_the_batchs_rarest_au() -> None:
    labels = skewed(n=600)
    size = 3
    positives = labels == 1
    for batch in first_epoch(MOMUBatches(labels, 16, sampling_size=size, num_batches=30)):
        assert len(batch) == 16  # 5 takes of 3, the last cut to 1
        counts = np.zeros(labels.shape[1], dtype=int)
        for start in range(0, 16, size):
            take = batch[start : start + size]
            if start:  # line 13: the AU with the fewest present frames in the batch so far
                au = int(np.argmin(counts))
                assert positives[take, au].all(), (counts, labels[take])
            counts += positives[take].sum(0)


def test_momu_first_take_is_the_populations_rarest_and_restores_it() -> None:
    # AU0 on 2 frames only, AU1 on 10, AU2 on 20; 8 frames without an AU.
    labels = np.zeros((40, 3), np.int8)
    labels[[0, 1], 0] = 1
    labels[2:12, 1] = 1
    labels[12:32, 2] = 1
    plan = first_epoch(MOMUBatches(labels, 6, sampling_size=2, num_batches=5))
    for batch in plan:
        # AU0 is the rarest in D (line 3); its 2 frames run out and are restored (lines 6-7)
        assert sorted(batch[:2].tolist()) == [0, 1]
        assert len(batch) == 6
    flat = np.concatenate(plan)
    assert not np.isin(flat, np.arange(32, 40)).any()  # frames without AU are never drawn
    presence = presence_per_batch(labels, plan)
    assert (presence[0] == 2).all()  # oversampled: 10 draws of a 2-frame AU


def test_momu_balances_within_batches() -> None:
    labels = skewed(n=2000)
    batches = {name: first_epoch(SAMPLERS[name](labels, 32)) for name in ("random", "momu")}
    spread = {k: presence_per_batch(labels, b).mean(1) for k, b in batches.items()}
    ratio = {k: v.max() / v.min() for k, v in spread.items()}
    assert ratio["momu"] < ratio["random"] / 2


# -- ML-ROS ------------------------------------------------------------------------------------


def test_imbalance_ratios_by_hand() -> None:
    labels = np.zeros((10, 3), np.int8)
    labels[:8, 0] = 1
    labels[:2, 1] = 1
    labels[:4, 2] = 1
    labels[9] = -1
    irlbl, mean_ir = imbalance_ratios(labels)
    np.testing.assert_allclose(irlbl, [1.0, 4.0, 2.0])
    assert mean_ir == pytest.approx(7 / 3)
    labels[:, 1] = 0
    assert np.isnan(imbalance_ratios(labels)[0][1])
    assert imbalance_ratios(labels)[1] == pytest.approx(1.5)


def test_mlros_clones_minority_labels_until_balanced() -> None:
    # counts 100, 10, 20 without co-occurrence: IRLbl 1, 10, 5; MeanIR 16/3. Only label 1
    # is a minority; its bag leaves once 100 / c <= 16/3, i.e. c = 19: 9 clones.
    labels = np.zeros((130, 3), np.int8)
    labels[:100, 0] = 1
    labels[100:110, 1] = 1
    labels[110:130, 2] = 1
    mlros = MLROSBatches(labels, 8, percentage=100)
    clones = mlros.clones(np.random.default_rng(0))
    assert len(clones) == 9 and set(clones.tolist()) <= set(range(100, 110))
    plan = np.concatenate(first_epoch(mlros))
    assert len(plan) == 139
    assert np.bincount(plan, minlength=130)[:100].max() == 1


def test_mlros_budget_and_mean_ir_toward_one() -> None:
    labels = skewed(n=1000)
    before = imbalance_ratios(labels)[1]
    assert len(MLROSBatches(labels, 16, percentage=5).clones(np.random.default_rng(0))) == 50
    mlros = MLROSBatches(labels, 16, percentage=25)
    clones = mlros.clones(np.random.default_rng(0))
    assert 50 < len(clones) < 250  # every minority bag reached MeanIR before the budget
    after = imbalance_ratios(labels[np.concatenate(first_epoch(mlros))])[1]
    assert 1 < after < before - 1


# -- weighted ----------------------------------------------------------------------------------


def test_weighted_inverse_base_rates_by_hand() -> None:
    # AU0: 1 present of 4 known (p = 1/4); AU1: 2 of 3 known (p = 2/3), one unknown.
    labels = np.array([[1, 1], [0, 1], [0, 0], [0, -1], [-1, -1]], np.int8)
    weights = WeightedBatches.frame_weights(labels)
    au0 = {1: 0.5 / 0.25, 0: 0.5 / 0.75}
    au1 = {1: 0.5 / (2 / 3), 0: 0.5 / (1 / 3)}
    expected = [
        (au0[1] + au1[1]) / 2,
        (au0[0] + au1[1]) / 2,
        (au0[0] + au1[0]) / 2,
        au0[0],
        0.0,
    ]
    np.testing.assert_allclose(weights, expected)
    drawn = np.concatenate(first_epoch(WeightedBatches(labels, 4, num_samples=4000)))
    assert 4 not in drawn  # a frame without a known label is never drawn
    share = np.bincount(drawn, minlength=5) / len(drawn)
    np.testing.assert_allclose(share, weights / weights.sum(), atol=0.03)


def test_presence_per_batch_and_its_heatmap(tmp_path) -> None:
    from PIL import Image

    from au_lightning.reports import presence_heatmap

    labels = np.array([[1, 0], [1, 1], [0, -1], [0, 1]], np.int8)
    presence = presence_per_batch(labels, [np.array([0, 1]), np.array([2, 3, 1])])
    assert presence.tolist() == [[2, 1], [1, 2]]
    path = presence_heatmap({"a": presence, "b": np.zeros((2, 2), int)}, [1, 2], tmp_path / "h.png")
    image = Image.open(path).convert("RGB")
    left, title, gap, cell = 52, 16, 14, 11
    pixel = lambda b, i: image.getpixel((left + b * cell + 5, gap + title + i * cell + 5))  # noqa: E731
    assert pixel(0, 0) == pixel(1, 1) != (255, 255, 255)  # the largest count, darkest
    assert pixel(1, 0)[0] > pixel(0, 0)[0]  # a smaller count, lighter
    second = gap + title + 2 * cell + gap + title
    assert image.getpixel((left + 5, second + 5)) == (255, 255, 255)  # panel b: all zero


# -- duplication augmentation (Yang & Yin, Table 8) -------------------------------------------


def test_duplication_repeats_frames_with_a_listed_positive_once() -> None:
    aus = (1, 6, 23)
    labels = np.array(
        [
            [1, 0, 0],  # AU1 positive: duplicated
            [0, 1, 0],  # AU6 only: not listed
            [0, 0, 1],  # AU23 positive: duplicated
            [-1, 1, -1],  # unknown is not positive
            [1, 0, 1],  # both listed AUs: still one extra copy
        ],
        dtype=np.int8,
    )
    plan = make_batch_sampler(
        "duplicate", labels, 4, seed=2, options={"duplicate": [1, 23]}, aus=aus
    ).plan(0)
    counts = np.bincount(np.concatenate(plan), minlength=5)
    np.testing.assert_array_equal(counts, [2, 1, 2, 1, 2])
    assert [len(b) for b in plan] == [4, 4]
    two = make_batch_sampler(
        "duplicate", labels, 4, options={"duplicate": [6], "copies": 2}, aus=aus
    ).plan(0)
    np.testing.assert_array_equal(np.bincount(np.concatenate(two)), [1, 3, 1, 3, 1])


def test_duplication_names_aus_the_data_lacks() -> None:
    labels = skewed()
    with pytest.raises(ValueError, match=r"AUs \[17\] of sampler_options.duplicate are not"):
        make_batch_sampler("duplicate", labels, 8, options={"duplicate": [1, 17]}, aus=AUS6)
    with pytest.raises(ValueError, match="the AU numbers of the 6 label columns are needed"):
        make_batch_sampler("duplicate", labels, 8)
