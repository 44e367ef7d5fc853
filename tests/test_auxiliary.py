"""MAL's data (Li & Shan, Alg. 1): DrawnBatches' passes over the positions, and
AuxiliaryDataModule on a tiny SynthAU set, whose combined training batches hold AU frames,
auxiliary expression images and meta-test frames of the validation reserve; the x values
of the training-curve plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.utilities import CombinedLoader
from PIL import Image

from au_lightning import ConfigError
from au_lightning.data import (
    RAFDB_EXPRESSIONS,
    AuxiliaryDataModule,
    DrawnBatches,
    EpochPlan,
    LabelBatchSampler,
    MatchedBatchSampler,
    load_frame,
)
from au_lightning.reports import line_plot
from tests.layouts import write_affectnet
from tests.mal_data import SYNTH, TINY_DATA

FE_ROWS = 48  # SynthAU's RAF-DB layout: 80% of the 60 images are in the train partition


def no_labels(n: int) -> np.ndarray:
    return np.zeros((n, 0), np.int8)


# -- DrawnBatches ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size", "num_batches"),
    [(10, 4, 23), (10, 10, 5), (10, 1, 25), (7, 3, 40), (13, 12, 9), (48, 6, 19)],
)
def test_drawn_batches_finish_a_pass_before_drawing_again(
    n: int, size: int, num_batches: int
) -> None:
    batches = DrawnBatches(no_labels(n), size, num_batches)(np.random.default_rng(4))
    assert len(batches) == num_batches
    counts = np.zeros(n, dtype=int)
    for m, batch in enumerate(batches, start=1):
        assert isinstance(batch, np.ndarray) and batch.shape == (size,)
        assert ((batch >= 0) & (batch < n)).all()
        assert len(set(batch.tolist())) == size  # no position twice in a batch
        counts += np.bincount(batch, minlength=n)
        drawn = m * size
        # at every batch boundary each position has been drawn floor or ceil(drawn / n) times
        assert set(counts.tolist()) <= {drawn // n, -(-drawn // n)}, (m, counts)
        if drawn % n == 0:
            assert (counts == drawn // n).all()  # whole passes: every position equally often


def test_drawn_batches_depend_on_the_generator_only() -> None:
    plan = DrawnBatches(no_labels(11), 4, 12)
    first = plan(np.random.default_rng(7))
    again = DrawnBatches(no_labels(11), 4, 12)(np.random.default_rng(7))
    other = plan(np.random.default_rng(8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    # the spanning batches mix passes: not simply consecutive cuts of one permutation
    assert len({tuple(sorted(b.tolist())) for b in first}) > 2


def test_drawn_batches_reject_impossible_plans() -> None:
    DrawnBatches(no_labels(5), 5, 1)  # the whole data per batch is allowed
    with pytest.raises(ConfigError, match=r"batch_size 6 exceeds the 5 samples"):
        DrawnBatches(no_labels(5), 6, 3)
    for bad in (0, -2, 2.0):
        with pytest.raises(ConfigError, match="num_batches"):
            DrawnBatches(no_labels(5), 2, bad)
    with pytest.raises(ConfigError, match="batch_size"):
        DrawnBatches(no_labels(5), 0, 3)


# -- AuxiliaryDataModule --------------------------------------------------------------------


def setup_data(**changes) -> AuxiliaryDataModule:
    dm = AuxiliaryDataModule(**(TINY_DATA | changes))
    dm.setup("fit")
    return dm


def epoch_batches(combined: CombinedLoader) -> list[dict]:
    batches = []
    for i, (batch, batch_idx, dataloader_idx) in enumerate(combined):
        assert (batch_idx, dataloader_idx) == (i, 0)
        batches.append(batch)
    return batches


def test_validation_reserve_is_drawn_from_every_training_subject(cache: Path) -> None:
    dm = setup_data()
    ix = dm.index
    test_subjects = set(ix.subject[dm.test_rows].tolist())
    training = np.setdiff1d(np.arange(len(ix)), dm.test_rows)
    assert not set(dm.train_rows.tolist()) & set(dm.val_rows.tolist())
    np.testing.assert_array_equal(np.union1d(dm.train_rows, dm.val_rows), training)
    subjects = sorted(set(ix.subject[training].tolist()))
    assert len(subjects) == 4 and not set(subjects) & test_subjects  # 3 folds of 6 subjects
    assert sorted(set(ix.subject[dm.val_rows].tolist())) == subjects
    for s in subjects:
        frames = int((ix.subject[training] == s).sum())
        reserved = int((ix.subject[dm.val_rows] == s).sum())
        assert reserved == max(1, round(0.05 * frames)) == 2
    assert dm.expression_names == RAFDB_EXPRESSIONS
    assert dm.expression_names == (
        "surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"
    )  # fmt: skip
    assert len(dm.aux_index) == FE_ROWS
    assert set(dm.aux_index.extras["partition"].tolist()) == {"train"}


def test_reserve_rates_are_the_known_positive_rates_of_the_reserve(cache: Path) -> None:
    dm = setup_data()

    def by_hand(occ: np.ndarray) -> np.ndarray:
        rates = []
        for column in occ.T:
            known = column[column >= 0]
            rates.append((known == 1).sum() / len(known) if len(known) else math.nan)
        return np.array(rates)

    expected = by_hand(dm.index.occurrence[dm.val_rows])
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(dm.reserve_rates, expected, rtol=0, atol=1e-12)
    # unknown labels do not count; an AU unknown in the whole reserve has NaN
    occ = dm.index.occurrence.copy()
    val = dm.val_rows
    occ[val, 0] = -1
    occ[val[:3], 1] = -1
    assert len(val) == 8
    occ[val, 2] = [-1, -1, -1, 1, 1, 0, -1, -1]
    occ[dm.train_rows, 2] = 1  # training rows are not the reserve
    dm.index = dm.index.replace(occurrence=occ)
    rates = dm.reserve_rates
    assert np.isnan(rates[0]) and not np.isnan(rates[1:]).any()
    assert rates[2] == pytest.approx(2 / 3)
    np.testing.assert_allclose(rates, by_hand(occ[val]), rtol=0, atol=1e-12)


def test_combined_batches_hold_au_fe_and_reserve_frames(cache: Path) -> None:
    dm = setup_data()
    combined = dm.train_dataloader()
    assert isinstance(combined, CombinedLoader) and combined._mode == "min_size"
    au_loader = combined.iterables["au"]
    assert len(au_loader) == len(dm.train_rows) // 8 == 19
    batches = epoch_batches(combined)
    assert len(batches) == len(au_loader) == len(combined)
    train, val = set(dm.train_rows.tolist()), set(dm.val_rows.tolist())
    fe_counts = np.zeros(FE_ROWS, dtype=int)
    val_counts: dict[int, int] = dict.fromkeys(val, 0)
    for batch in batches:
        assert set(batch) == {"au", "fe", "val"}
        au, fe, meta = batch["au"], batch["fe"], batch["val"]
        assert au["image"].shape == (8, 3, 16, 16) and au["occurrence"].shape == (8, 12)
        au_rows = au["index"].numpy()
        assert set(au_rows.tolist()) <= train
        np.testing.assert_array_equal(au["occurrence"].numpy(), dm.index.occurrence[au_rows])

        assert fe["image"].shape == (6, 3, 16, 16)
        fe_rows = fe["index"].numpy()
        assert len(set(fe_rows.tolist())) == 6 and ((fe_rows >= 0) & (fe_rows < FE_ROWS)).all()
        expression = fe["expression"].numpy()
        assert ((expression >= 0) & (expression <= 6)).all()
        np.testing.assert_array_equal(expression, dm.aux_index.expression[fe_rows])
        fe_counts += np.bincount(fe_rows, minlength=FE_ROWS)

        assert meta["image"].shape == (5, 3, 16, 16)
        meta_rows = meta["index"].tolist()
        assert len(set(meta_rows)) == 5 and set(meta_rows) <= val and not set(meta_rows) & train
        np.testing.assert_array_equal(meta["occurrence"].numpy(), dm.index.occurrence[meta_rows])
        for row in meta_rows:
            val_counts[row] += 1
    # 19 batches: 114 FE draws over 48 images (2 passes and a part), 95 over the 8 reserved
    assert set(fe_counts.tolist()) == {2, 3}
    assert set(val_counts.values()) == {11, 12}
    # the meta-test frames go through the evaluation transform
    row = int(batches[0]["val"]["index"][0])
    expected = dm.eval_transform(load_frame(dm.index, row))
    torch.testing.assert_close(batches[0]["val"]["image"][0], expected)


def test_fe_and_reserve_batches_follow_the_seed_and_the_epoch(cache: Path) -> None:
    def fe_indices(dm: AuxiliaryDataModule, epoch: int = 0) -> list[list[int]]:
        combined = dm.train_dataloader()
        iter(combined)  # lightning builds the flattened loaders on iteration
        for loader in combined.flattened:
            _set_sampler_epoch(loader, epoch)  # as the fit loop does at each epoch start
        return [[b["fe"]["index"].tolist(), b["val"]["index"].tolist()] for b, _, _ in combined]

    first = fe_indices(setup_data())
    assert fe_indices(setup_data()) == first
    assert fe_indices(setup_data(seed=1))[0][0] != first[0][0]
    next_epoch = fe_indices(setup_data(), epoch=1)
    assert [fe for fe, _ in next_epoch] != [fe for fe, _ in first]
    assert [v for _, v in next_epoch] != [v for _, v in first]

    combined = setup_data().train_dataloader()
    for name in ("fe", "val"):
        sampler = combined.iterables[name].batch_sampler
        a, b = sampler.plan(0), sampler.plan(1)
        assert len(a) == len(b) == 19
        assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_meta_batch_size_zero_or_beyond_the_reserve(cache: Path) -> None:
    dm = setup_data(meta_batch_size=0)
    batches = epoch_batches(dm.train_dataloader())
    assert len(batches) == 19
    assert all(set(b) == {"au", "fe"} for b in batches)

    dm = setup_data(meta_batch_size=100)
    assert len(dm.val_rows) == 8
    for batch in epoch_batches(dm.train_dataloader())[:3]:
        assert sorted(batch["val"]["index"].tolist()) == sorted(dm.val_rows.tolist())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aux_root": "/nowhere"}, "aux_root or aux_synth"),
        ({"val_strategy": "none"}, "meta_batch_size"),
        ({"aux_batch_size": 0}, "aux_batch_size"),
        ({"meta_batch_size": -1}, "meta_batch_size"),
    ],
)
def test_invalid_auxiliary_options_are_named(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AuxiliaryDataModule(**(TINY_DATA | changes))


def test_aux_dataset_needs_expression_labels(cache: Path) -> None:
    AuxiliaryDataModule(**(TINY_DATA | {"val_strategy": "none", "meta_batch_size": 0}))
    dm = AuxiliaryDataModule(
        **(TINY_DATA | {"aux_dataset": "bp4d", "aux_synth": SYNTH, "aux_reader_options": None})
    )
    with pytest.raises(ConfigError, match="no expression labels") as error:
        dm.setup("fit")
    assert "data.aux_dataset" in str(error.value) and "bp4d" in str(error.value)


def test_fe_and_meta_batches_follow_a_leader_whose_epochs_differ_in_length() -> None:
    """ML-ROS clones a varying number of frames: the drawn plans take each epoch's count."""

    class Growing(EpochPlan):
        def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
            return [np.arange(2)] * (3 + int(rng.integers(0, 5)))

    leader = LabelBatchSampler(Growing(no_labels(10), 2), seed=0)
    follower = MatchedBatchSampler(DrawnBatches(no_labels(7), 3, 1), seed=5, leader=leader)
    counts = [(len(leader.plan(e)), len(follower.plan(e))) for e in range(6)]
    assert all(a == b for a, b in counts)
    assert len({a for a, _ in counts}) > 1  # the leader's length did change


def test_batches_larger_than_their_data_are_named(cache: Path) -> None:
    dm = setup_data(aux_batch_size=FE_ROWS + 1)
    with pytest.raises(ConfigError, match=r"aux_batch_size .*49 exceeds the 48 images"):
        dm.train_dataloader()
    dm = setup_data()
    dm.val_rows = dm.val_rows[:0]
    with pytest.raises(ConfigError, match="reserve is empty"):
        dm.train_dataloader()


def test_fe_images_can_come_from_the_affectnet_layout(cache: Path, tmp_path: Path) -> None:
    rows = [(f"{i % 3}/img{i}.jpg", i % 8) for i in range(16)]
    write_affectnet(tmp_path / "affectnet", "training.csv", rows)
    dm = setup_data(aux_dataset="affectnet", aux_synth=None, aux_reader_options=None,
                    aux_root=str(tmp_path / "affectnet"))  # fmt: skip
    assert len(dm.expression_names) == 8 and len(dm.aux_index) == 16
    batch = epoch_batches(dm.train_dataloader())[0]
    labels = dm.aux_index.expression[batch["fe"]["index"].numpy()]
    assert batch["fe"]["expression"].tolist() == labels.tolist()
    assert batch["fe"]["image"].shape == (6, 3, 16, 16)  # resized like the AU frames


# -- line_plot's x values -------------------------------------------------------------------


def test_line_plot_takes_x_values(tmp_path: Path) -> None:
    series = {"a": [math.sin(i / 3) for i in range(30)], "b": [i / 30 for i in range(25)]}
    default = line_plot(series, tmp_path / "default.png", "t")
    spaced = line_plot(series, tmp_path / "spaced.png", "t", x=[20 * i for i in range(30)])
    squares = line_plot(series, tmp_path / "squares.png", "t", x=[i * i for i in range(30)])
    assert spaced == tmp_path / "spaced.png"
    images = [np.asarray(Image.open(p).convert("RGB")) for p in (default, spaced, squares)]
    assert Image.open(spaced).size == (560, 300)
    plot = slice(0, 260)  # the axes' area, above the tick labels
    # evenly spaced x puts the points where the default 0, 1, ... does; the labels differ
    np.testing.assert_array_equal(images[0][plot], images[1][plot])
    assert (images[0] != images[1]).any()
    assert (images[0][plot] != images[2][plot]).any()  # uneven x moves the points
    with pytest.raises(ValueError, match=r"29 x values for series of up to 30 points"):
        line_plot(series, tmp_path / "short.png", "t", x=list(range(29)))
    blank = line_plot({"a": []}, tmp_path / "blank.png", "nothing yet")
    assert Image.open(blank).size == (560, 300)
