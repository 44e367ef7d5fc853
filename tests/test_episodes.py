"""Few-shot episodes (Lee et al., Sec. 3.2, 4.1.3-4.1.5, 4.2.2): tasks, balanced disjoint
support/query sets, skipping and filling, meta-batch sharding, and EpisodeDataModule on
SynthAU."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods, _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from au_lightning.data import (
    AdaptationEpisodes,
    EpisodeBatchSampler,
    EpisodeDataModule,
    FrameImages,
    FrameIndex,
    MetaTrainEpisodes,
    eval_transform,
    load_frame,
    task_frames,
)
from au_lightning.errors import ConfigError
from tests.layouts import write_image

AUS = (1, 2, 12)
FRAMES = 60  # per subject
UNKNOWN = 3  # per subject and AU
#: positives per (subject, AU); the rest of the 60 frames are 3 unknown and negatives
POSITIVES = {
    "S1": {1: 10, 2: 3, 12: 6},
    "S2": {1: 4, 2: 0, 12: 8},
    "S3": {1: 1, 2: 2, 12: 12},
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> FrameIndex:
    """Three subjects with chosen positive counts, scattered over the frames, 3 unknown
    labels per AU, and a distinct tiny image per row."""
    root = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    path, subject, occurrence = [], [], []
    for name, counts in POSITIVES.items():
        occ = np.zeros((FRAMES, len(AUS)), dtype=np.int8)
        for j, au in enumerate(AUS):
            column = np.array([1] * counts[au] + [-1] * UNKNOWN + [0] * (FRAMES - counts[au] - 3))
            occ[:, j] = rng.permutation(column)
        occurrence.append(occ)
        for f in range(FRAMES):
            path.append(f"{name}/{f:03d}.png")
            subject.append(name)
            write_image(root / path[-1], size=12, seed=len(path))
    return FrameIndex.from_columns(
        path=path,
        subject=subject,
        video=subject,
        frame=np.tile(np.arange(FRAMES), len(POSITIVES)),
        aus=AUS,
        occurrence=np.concatenate(occurrence),
        root=str(root),
        dataset="hand",
    )


def images(index: FrameIndex, cache: bool = True) -> FrameImages:
    return FrameImages.eval(index, image_size=10, crop_size=8, cache=cache)


def check_episode(index: FrameIndex, item: dict, support: int, query: int) -> None:
    """Disjoint sets of the task's subject, labels = the index's known labels, sizes."""
    col = index.aus.index(item["au"])
    s_rows, q_rows = item["support_index"].numpy(), item["query_index"].numpy()
    assert len(s_rows) == support and len(q_rows) == query
    assert not set(s_rows) & set(q_rows)
    assert len(set(s_rows)) == support and len(set(q_rows)) == query
    for rows, key in ((s_rows, "support_label"), (q_rows, "query_label")):
        assert item[key].dtype == torch.float32
        assert item[key].tolist() == index.occurrence[rows, col].astype(float).tolist()
        assert (index.occurrence[rows, col] >= 0).all()  # never an unknown frame
        assert set(index.subject[rows]) == {item["subject"]}
    assert item["support_image"].shape == (support, 3, 8, 8)
    assert item["query_image"].shape == (query, 3, 8, 8)


# -- tasks ----------------------------------------------------------------------------------


def test_task_frames_are_the_known_labels_per_subject_and_au(index: FrameIndex) -> None:
    tasks = task_frames(index)
    assert [(t.subject, t.au) for t in tasks] == [(s, a) for s in POSITIVES for a in AUS]
    for task in tasks:
        col = AUS.index(task.au)
        mine = np.flatnonzero(index.subject == task.subject)
        np.testing.assert_array_equal(task.positives, mine[index.occurrence[mine, col] == 1])
        np.testing.assert_array_equal(task.negatives, mine[index.occurrence[mine, col] == 0])
        assert len(task.positives) == POSITIVES[task.subject][task.au]
        assert len(task.negatives) == FRAMES - len(task.positives) - UNKNOWN
    some = task_frames(index, rows=np.flatnonzero(index.subject == "S2"), aus=[12, 1])
    assert [(t.subject, t.au) for t in some] == [("S2", 12), ("S2", 1)]
    with pytest.raises(ConfigError, match=r"task AU\(s\) 4 not in the hand labels"):
        task_frames(index, aus=[1, 4])


# -- training episodes ----------------------------------------------------------------------


def test_training_episodes_are_balanced_disjoint_and_true(index: FrameIndex) -> None:
    ds = MetaTrainEpisodes(index, aus=AUS, shots=2, seed=3, images=images(index), length=40)
    assert len(ds) == 40
    eligible = [(s, a) for s in POSITIVES for a in AUS if POSITIVES[s][a] >= 4]
    assert ds.tasks == eligible
    first_labels, drawn = set(), set()
    for i in range(60):  # beyond len: the index space is unbounded
        item = ds[i]
        check_episode(index, item, 4, 4)
        assert item["support_label"].sum() == 2 and item["query_label"].sum() == 2  # (N+, N-)
        assert ds.tasks[item["task"]] == (item["subject"], item["au"])
        assert item["episode"] == i
        first_labels.add(item["support_label"][0].item())
        drawn.add(item["task"])
    assert first_labels == {0.0, 1.0}  # shuffled: positives are not always first
    assert drawn == set(range(len(ds.tasks)))
    # the images are the data module's eval pipeline of those frames
    row = int(item["query_index"][1])
    expected = eval_transform(10, 8)(load_frame(index, row))
    torch.testing.assert_close(item["query_image"][1], expected)


def test_training_items_depend_only_on_seed_and_id(index: FrameIndex) -> None:
    ds = MetaTrainEpisodes(index, shots=2, seed=5, images=images(index))
    fresh = MetaTrainEpisodes(index, shots=2, seed=5, images=images(index, cache=False))
    for i in (0, 7, 10**9):
        a, b, c = ds[i], ds[i], fresh[i]
        for key in ("support_index", "query_index", "support_label", "support_image"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    rows = {tuple(ds[i]["support_index"].tolist()) for i in range(20)}
    assert len(rows) == 20
    other = MetaTrainEpisodes(index, shots=2, seed=6, images=images(index))
    assert not torch.equal(other[7]["support_index"], ds[7]["support_index"])
    with pytest.raises(IndexError):
        ds[-1]


def test_training_skips_tasks_without_2n_of_each(index: FrameIndex, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="au_lightning.data"):
        ds = MetaTrainEpisodes(index, shots=3, images=images(index))
    short = [(s, a) for s in POSITIVES for a in AUS if POSITIVES[s][a] < 6]
    assert ds.skipped == short and len(ds.tasks) == 9 - len(short)
    assert f"{len(short)} of 9 tasks skipped (fewer than 6 positive" in caplog.text
    assert "S2/AU1" in caplog.text
    with pytest.raises(ConfigError, match=r"no training task .* has 26 positive and 26 neg"):
        MetaTrainEpisodes(index, shots=13)


def test_flip_is_drawn_from_the_episode(index: FrameIndex) -> None:
    plain = MetaTrainEpisodes(index, shots=2, seed=1, images=images(index))
    flipped = MetaTrainEpisodes(index, shots=2, seed=1, images=images(index), flip=True)
    a, b, c = plain[4], flipped[4], flipped[4]
    assert torch.equal(a["support_index"], b["support_index"])  # same frames
    assert torch.equal(b["support_image"], c["support_image"])  # deterministic
    pairs = list(zip(a["support_image"], b["support_image"], strict=True))
    same = [torch.equal(x, y) for x, y in pairs]
    mirrored = [torch.equal(x.flip(-1), y) for x, y in pairs]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and any(mirrored)


def test_frame_images_decode_each_frame_once(index: FrameIndex) -> None:
    cached, uncached = images(index), images(index, cache=False)
    ds = MetaTrainEpisodes(index, shots=2, images=cached)
    rows = set()
    for i in range(10):
        item = ds[i]
        rows |= set(item["support_index"].tolist()) | set(item["query_index"].tolist())
    assert cached.cached == len(rows)
    assert cached.uint8(next(iter(rows))).dtype == torch.uint8
    torch.testing.assert_close(cached(sorted(rows)), uncached(sorted(rows)))
    assert uncached.cached == 0


# -- evaluation episodes --------------------------------------------------------------------


@pytest.mark.parametrize(("shots", "query_shots"), [(1, 10), (5, 10), (3, 2)])
def test_adaptation_fills_missing_positives_with_negatives(
    index: FrameIndex, shots: int, query_shots: int
) -> None:
    ds = AdaptationEpisodes(
        index, aus=AUS, shots=shots, query_shots=query_shots, repeats=6, images=images(index)
    )
    evaluable = [(s, a) for s in POSITIVES for a in AUS if POSITIVES[s][a] >= 2]
    assert ds.tasks == evaluable and len(ds) == 6 * len(evaluable)
    assert ds.skipped == [(s, a) for s in POSITIVES for a in AUS if POSITIVES[s][a] < 2]
    for t, (subject, au) in enumerate(ds.tasks):
        p = POSITIVES[subject][au]
        k = min(shots, p - 1)  # D[tea] first, one positive always left for D[te]
        q = min(query_shots, p - k)
        assert ds.positive_split[t] == (k, q)
        for r in (0, 5):
            item = ds[t * 6 + r]
            assert (item["task"], item["repeat"], item["subject"], item["au"]) == (
                t,
                r,
                subject,
                au,
            )
            check_episode(index, item, 2 * shots, 2 * query_shots)
            # ((K-m)+, (K+m)-) with m = K - k, and likewise for D[te]
            assert item["support_label"].sum() == k and item["query_label"].sum() == q


def test_adaptation_examples_of_the_docstring(index: FrameIndex) -> None:
    ds = AdaptationEpisodes(index, aus=[2], shots=5, query_shots=10, images=images(index))
    assert ds.tasks == [("S1", 2), ("S3", 2)]
    assert ds.positive_split == [(2, 1), (1, 1)]  # p = 3: (2+, 8-), (1+, 19-)
    item = ds[0]
    assert item["support_label"].tolist().count(0.0) == 8
    assert item["query_label"].tolist().count(0.0) == 19
    full = AdaptationEpisodes(index, aus=[12], shots=5, query_shots=10, images=images(index))
    assert full.positive_split == [(5, 1), (5, 3), (5, 7)]  # p = 6, 8, 12


def test_adaptation_items_are_deterministic(index: FrameIndex) -> None:
    ds = AdaptationEpisodes(index, shots=1, query_shots=3, repeats=4, seed=2, images=images(index))
    fresh = AdaptationEpisodes(index, shots=1, query_shots=3, repeats=4, seed=2)
    for j in (0, 5, len(ds) - 1):
        assert torch.equal(ds[j]["support_index"], fresh[j]["support_index"])
        assert torch.equal(ds[j]["query_index"], ds[j]["query_index"])
    assert len({tuple(ds[j]["query_index"].tolist()) for j in range(4)}) == 4  # repeats differ
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_adaptation_errors_name_the_task(index: FrameIndex) -> None:
    with pytest.raises(ConfigError, match=r"subject S1 AU 1: 47 negative frames, but an ep"):
        AdaptationEpisodes(index, shots=5, query_shots=25)
    s3 = np.flatnonzero(index.subject == "S3")
    with pytest.raises(ConfigError, match=r"no evaluation task .* has 2 positive frames"):
        AdaptationEpisodes(index, rows=s3, aus=[1])
    with pytest.raises(ConfigError, match="query_shots must be a positive integer, got 0"):
        AdaptationEpisodes(index, query_shots=0)


# -- meta-batches ---------------------------------------------------------------------------


def shards(tasks: int, meta_batches: int, world: int, epoch: int) -> list[list[list[int]]]:
    """Every rank's meta-batches of one epoch, with the DistributedSampler DDP would inject."""
    out = []
    for rank in range(world):
        dist = DistributedSampler(range(10), num_replicas=world, rank=rank)
        dist.set_epoch(epoch)
        out.append(list(EpisodeBatchSampler(tasks, meta_batches, sampler=dist)))
    return out


def test_one_process_steps_through_consecutive_ids() -> None:
    sampler = EpisodeBatchSampler(3, 4)
    assert len(sampler) == 4 and sampler.batch_size == 3
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    sampler.set_epoch(2)
    assert next(iter(sampler)) == [24, 25, 26]


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_are_disjoint_equal_and_new_each_epoch(world: int) -> None:
    seen = []
    for epoch in (0, 1):
        ranks = shards(4, 5, world, epoch)
        assert [len(r) for r in ranks] == [5] * world
        ids = [i for r in ranks for batch in r for i in batch]
        assert len(ids) == len(set(ids)) == 4 * 5 * world
        assert sorted(ids) == list(range(epoch * 20 * world, (epoch + 1) * 20 * world))
        seen.append(set(ids))
    assert not seen[0] & seen[1]


@pytest.mark.parametrize(("world", "tasks"), [(2, 3), (3, 2), (4, 1)])
def test_ranks_together_see_what_one_process_with_all_tasks_sees(world: int, tasks: int) -> None:
    """At every step, W ranks with T tasks each = 1 process with W*T tasks (same M)."""
    for epoch in (0, 1, 3):
        ranks = shards(tasks, 6, world, epoch)
        single = shards(world * tasks, 6, 1, epoch)[0]
        for step, batch in enumerate(single):
            union = [i for r in ranks for i in r[step]]
            assert sorted(union) == batch


def test_lightning_injects_its_distributed_sampler(index: FrameIndex) -> None:
    dataset = MetaTrainEpisodes(index, shots=2, images=images(index), length=12)
    with _replace_dunder_methods(BatchSampler):
        loader = DataLoader(dataset, batch_sampler=EpisodeBatchSampler(2, 3))
    distributed = DistributedSampler(dataset, num_replicas=2, rank=1)
    sharded = _update_dataloader(loader, distributed)
    assert isinstance(sharded.batch_sampler, EpisodeBatchSampler)
    assert sharded.batch_sampler.sampler is distributed
    episodes = [batch["episode"].tolist() for batch in sharded]
    assert episodes == [[2, 3], [6, 7], [10, 11]]


# -- data module ----------------------------------------------------------------------------

BP4D = {"subjects": 6, "videos": 1, "frames": 60, "size": 32, "seed": 0, "workers": 1}
DISFA = {"subjects": 3, "videos": 1, "frames": 60, "size": 32, "seed": 0, "workers": 1}


def module(**kwargs) -> EpisodeDataModule:
    options = dict(
        dataset="bp4d",
        synth=BP4D,
        aus="bp4d",
        protocol="loso",
        fold="F001",
        image_size=32,
        crop_size=28,
        tasks_per_batch=3,
        train_shots=2,
        shots=[1, 3],
        query_shots=2,
        repeats=4,
        val_repeats=2,
        meta_batches=5,
    )
    options.update(kwargs)
    return EpisodeDataModule(**options)


def test_datamodule_loaders(cache: Path) -> None:
    dm = module()
    dm.setup("fit")
    train = dm.train_dataloader()
    assert isinstance(train.batch_sampler, EpisodeBatchSampler) and len(train) == 5
    batches = list(train)
    batch = batches[0]
    assert batch["support_image"].shape == (3, 4, 3, 28, 28)
    assert batch["query_image"].shape == (3, 4, 3, 28, 28)
    assert batch["support_label"].sum(1).tolist() == [2.0] * 3  # (N+, N-) per episode
    assert [b["episode"].tolist() for b in batches[:2]] == [[0, 1, 2], [3, 4, 5]]
    train_subjects = set(dm.index.subject[dm.train_rows])
    assert {s for b in batches for s in b["subject"]} <= train_subjects
    assert {int(a) for b in batches for a in b["au"]} <= set(dm.aus)

    val = dm.val_dataloader()
    assert val.dataset.shots == 3 and val.dataset.repeats == 2
    assert {s for s, _ in val.dataset.tasks} <= set(dm.index.subject[dm.val_rows])

    tests = dm.test_dataloader()
    assert [loader.dataset.shots for loader in tests] == [1, 3]
    for loader, k in zip(tests, (1, 3), strict=True):
        b = next(iter(loader))
        assert b["support_image"].shape == (3, 2 * k, 3, 28, 28)
        assert b["query_image"].shape == (3, 4, 3, 28, 28)
        assert {s for s, _ in loader.dataset.tasks} == {"F001"}
        assert loader.dataset.repeats == 4
    assert tests[0].dataset.images is tests[1].dataset.images  # one image cache for the K
    assert dm.eval_aus == dm.aus
    with pytest.raises(ConfigError, match="has no predict loader"):
        dm.predict_dataloader()
    with pytest.raises(ConfigError, match="no training task"):
        _setup(module(train_shots=40)).train_dataloader()


def _setup(dm: EpisodeDataModule) -> EpisodeDataModule:
    dm.setup("fit")
    return dm


def test_trainer_runs_epochs_of_new_episodes_and_one_test_loader_per_k(cache: Path) -> None:
    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.episodes: dict[int, list[int]] = {}
            self.val_support: set[int] = set()
            self.test_support: dict[int, set[int]] = {}

        def training_step(self, batch, _):
            self.episodes.setdefault(self.current_epoch, []).extend(batch["episode"].tolist())
            return self.layer(batch["support_label"][:, :1]).sum()

        def validation_step(self, batch, _):
            self.val_support.add(batch["support_label"].shape[1])

        def test_step(self, batch, _, dataloader_idx=0):
            self.test_support.setdefault(dataloader_idx, set()).add(batch["support_image"].shape[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = module(meta_batches=3)
    model = Recorder()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert model.episodes == {0: list(range(9)), 1: list(range(9, 18))}
    assert model.val_support == {6}  # the largest K of shots
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.test_support == {0: {2}, 1: {6}}


def test_frames_baseline_trains_on_the_frame_loader(cache: Path) -> None:
    dm = _setup(module(train_on="frames", batch_size=8, val_strategy="none"))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 28, 28) and batch["occurrence"].shape == (8, 12)
    assert dm.val_dataloader() == []
    assert len(dm.test_dataloader()) == 2  # still evaluated episodically


def test_cross_dataset_new_aus(cache: Path) -> None:
    dm = module(
        protocol="cross",
        test_dataset="disfa",
        test_synth=DISFA,
        test_reader_options={"intensity_threshold": ">0"},
        test_aus="disfa8",
        val_strategy="none",
    )
    dm.setup("test")
    assert dm.aus == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    assert dm.eval_aus == dm.test_index.aus == (1, 2, 4, 6, 9, 12, 25, 26)
    tests = dm.test_dataloader()
    test_aus = {a for _, a in tests[0].dataset.tasks}
    assert 25 in test_aus and test_aus <= set(dm.eval_aus)  # AU25 never seen in training
    assert {s for s, _ in tests[0].dataset.tasks} <= set(dm.test_index.subjects)
    assert {int(a) for a in next(iter(dm.train_dataloader()))["au"]} <= set(dm.aus)
    # within one dataset, test_aus must be among the AUs read
    within = _setup(module(aus=[1, 2, 12], test_aus=[1, 25]))
    with pytest.raises(ConfigError, match=r"test_aus: AU 25 not among the AUs read"):
        within.test_dataloader()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tasks_per_batch": 0}, "tasks_per_batch must be a positive integer, got 0"),
        ({"train_shots": 2.5}, "train_shots must be a positive integer, got 2.5"),
        ({"repeats": -1}, "repeats must be a positive integer"),
        ({"meta_batches": True}, "meta_batches must be a positive integer"),
        ({"shots": []}, r"shots must name at least one K"),
        ({"shots": [1, 0]}, "shots must be a positive integer, got 0"),
        ({"train_on": "tasks"}, "train_on must be 'episodes' or 'frames', got 'tasks'"),
        ({"test_aus": "disfa9"}, "test_aus: unknown AU set 'disfa9'"),
    ],
)
def test_option_errors_name_the_option(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        module(**options)


def test_single_int_shots() -> None:
    assert module(shots=5).shot_list == [5]
