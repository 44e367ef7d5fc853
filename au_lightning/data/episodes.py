"""Few-shot task episodes for meta-learning AU detectors (Lee, Rudovic, Pavlovic, Pantic).

A **task** is a (subject, AU) pair (Sec. 4.1.3). Only known labels count: a frame is a
positive of the task when its label for the AU is 1, a negative when it is 0; a -1
(unknown) frame is neither.

- :class:`MetaTrainEpisodes`: training episodes (Alg. 1, lines 4-5): a task drawn
  uniformly, a support set D[tr] of (N+, N-) frames and a disjoint query set D[trv] of
  (N+, N-) (Sec. 3.2.2, 4.1.4); tasks with fewer than 2N positives or negatives are
  skipped (Sec. 4.1.5).
- :class:`AdaptationEpisodes`: evaluation episodes (Sec. 4.1.4, 4.2.2): every task of the
  evaluation subjects, R repeats of a (K+, K-) adaptation set D[tea] and a disjoint
  (Q+, Q-) evaluation set D[te]; missing positives are filled with negatives (Sec. 4.1.5).
- :class:`EpisodeBatchSampler`: meta-batches of T consecutive episode ids, sharded by rank.
- :class:`EpisodeDataModule`: :class:`~au_lightning.data.AUDataModule` (reading, protocols,
  folds, validation reserve) with episode loaders.

Every episode is a deterministic function of its seed and id, so a run is reproducible
whatever the number of processes or DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from au_lightning.data import transforms
from au_lightning.data.datamodules import AUDataModule, Protocol
from au_lightning.data.datasets import load_frame
from au_lightning.data.image_cache import DecodedImages
from au_lightning.data.index import FrameIndex, resolve_aus
from au_lightning.data.loaders import make_loader
from au_lightning.data.sampling import _OneProcess
from au_lightning.data.splits import ValidationStrategy
from au_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from au_lightning.errors import ConfigError

__all__ = [
    "AdaptationEpisodes",
    "EpisodeBatchSampler",
    "EpisodeDataModule",
    "FrameImages",
    "MetaTrainEpisodes",
    "Task",
    "task_frames",
]

logger = logging.getLogger("au_lightning.data")

Transform = Callable[[torch.Tensor], torch.Tensor]


# -- tasks --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One (subject, AU) task (Sec. 4.1.3) and its frames: FrameIndex rows whose label for
    ``au`` is 1 (``positives``) or 0 (``negatives``), ascending; unknown frames are in
    neither."""

    subject: str
    au: int
    positives: np.ndarray
    negatives: np.ndarray


def task_frames(
    index: FrameIndex, rows: np.ndarray | None = None, aus: Sequence[int] | None = None
) -> list[Task]:
    """Every (subject, AU) task of ``rows`` (default: all rows) and ``aus`` (default: the
    index's AUs), subject by subject (sorted names), AUs in the given order; tasks without
    positives are included (the episode datasets decide what to skip)."""
    rows = np.arange(len(index)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    aus = index.aus if aus is None else tuple(int(a) for a in aus)
    missing = [a for a in aus if a not in index.aus]
    if missing:
        raise ConfigError(
            f"task AU(s) {', '.join(map(str, missing))} not in the {index.dataset or 'dataset'} "
            f"labels read (AUs {', '.join(map(str, index.aus))})"
        )
    cols = [index.aus.index(a) for a in aus]
    codes = index.subject_code[rows]
    tasks = []
    for code in np.unique(codes):
        subject_rows = rows[codes == code]
        labels = index.occurrence[subject_rows][:, cols]
        for j, au in enumerate(aus):
            tasks.append(
                Task(
                    subject=str(index.subject_names[code]),
                    au=au,
                    positives=subject_rows[labels[:, j] == 1],
                    negatives=subject_rows[labels[:, j] == 0],
                )
            )
    return tasks


def _task_names(pairs: Sequence[tuple[str, int]], limit: int = 20) -> str:
    names = [f"{s}/AU{a}" for s, a in pairs[:limit]]
    return ", ".join(names) + (f" ... ({len(pairs) - limit} more)" if len(pairs) > limit else "")


# -- images -------------------------------------------------------------------------------


class FrameImages:
    """The frames of one FrameIndex as float tensors, each decoded and resized only once.

    Episodes draw the same frames again and again (Sec. 4.1.4: a task's few positives are
    reused in every episode of it), so the uint8 result of ``resize`` is kept per row
    (3 x crop x crop bytes: 12 KB at 64 px) and only ``normalize`` runs on each access.

    Args:
        index: the frames (:func:`~au_lightning.data.load_frame` decodes them).
        resize: uint8 -> uint8 part, e.g. :func:`~au_lightning.data.transforms.eval_resize`;
            None keeps the decoded size.
        normalize: uint8 batch -> float batch, e.g.
            :func:`~au_lightning.data.transforms.normalize` (the default, ImageNet statistics).
        cache: keep the uint8 images (per process: each DataLoader worker has its own).
        decoded: the decoded image cache of ``index``
            (:func:`~au_lightning.data.find_image_cache`), read instead of decoding; its
            images are already at the resize's image size, so the resize leaves them as
            they are and only the crop applies.
    """

    def __init__(
        self,
        index: FrameIndex,
        resize: Transform | None = None,
        normalize: Transform | None = None,
        cache: bool = True,
        decoded: DecodedImages | None = None,
    ) -> None:
        self.index = index
        self.resize = resize
        self.normalize = normalize if normalize is not None else transforms.normalize()
        self.cache = cache
        self.decoded = decoded
        self._uint8: dict[int, torch.Tensor] = {}

    @classmethod
    def eval(
        cls,
        index: FrameIndex,
        image_size: int = 64,
        crop_size: int = 64,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        cache: bool = True,
        decoded: DecodedImages | None = None,
    ) -> FrameImages:
        """The evaluation pipeline of the data module: resize, center crop, normalize;
        ``decoded`` must hold the images at ``image_size``."""
        if decoded is not None and decoded.size != image_size:
            raise ValueError(f"{decoded!r} holds {decoded.size} px images; need {image_size}")
        resize = transforms.eval_resize(image_size, crop_size)
        return cls(index, resize, transforms.normalize(mean, std), cache, decoded)

    def uint8(self, row: int) -> torch.Tensor:
        """The resized uint8 image (3, H, W) of a FrameIndex row."""
        image = self._uint8.get(row)
        if image is None:
            decoded = self.decoded
            image = decoded[row] if decoded is not None else load_frame(self.index, row)
            if self.resize is not None:
                image = self.resize(image)
            if self.cache:
                self._uint8[row] = image = image.contiguous()  # a crop view would keep more
        return image

    def __call__(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The normalized images (n, 3, H, W) of FrameIndex rows."""
        return self.normalize(torch.stack([self.uint8(int(r)) for r in rows]))

    @property
    def cached(self) -> int:
        """How many images the cache holds."""
        return len(self._uint8)


def _episode(
    images: FrameImages, labels: np.ndarray, support: np.ndarray, query: np.ndarray
) -> dict[str, Any]:
    """The tensors of one episode; ``labels`` is the task's AU column of the index."""
    return {
        "support_image": images(support),
        "support_label": torch.from_numpy(labels[support].astype(np.float32)),
        "support_index": torch.from_numpy(support.astype(np.int64)),
        "query_image": images(query),
        "query_label": torch.from_numpy(labels[query].astype(np.float32)),
        "query_index": torch.from_numpy(query.astype(np.int64)),
    }


# -- training episodes ------------------------------------------------------------------


class MetaTrainEpisodes(Dataset[dict[str, Any]]):
    """Training episodes (Alg. 1, lines 4-5; Sec. 3.2.2, 4.1.4).

    Episode ``i`` is a function of ``(seed, i)`` only: ``rng = default_rng([seed, i])``
    draws a task uniformly among the eligible ones, then ``2N`` of its positives and ``2N``
    of its negatives without replacement; the first N of each form the support D[tr], the
    others the disjoint query D[trv]; each set is shuffled. A task is eligible when it has
    at least 2N positives and 2N negatives; the others are skipped (Sec. 4.1.5), logged and
    listed in ``skipped``.

    The index space is unbounded (any ``i >= 0``); ``len`` is the nominal epoch length
    (``meta_batches * tasks_per_batch`` in :class:`EpisodeDataModule`), which
    :class:`EpisodeBatchSampler` steps through epoch after epoch.

    Items: ``support_image`` (2N, 3, H, W) float, ``support_label`` (2N,) float32 0/1,
    ``support_index`` (2N,) FrameIndex rows, ``query_image``, ``query_label``,
    ``query_index`` likewise, ``episode`` (the id ``i``), ``task`` (position in ``tasks``),
    ``au`` and ``subject``.

    Args:
        index, rows: the frames (default: all rows).
        aus: the task AUs (default: the index's).
        shots: N.
        seed: with the item id, determines the episode.
        images: the image pipeline (default: decoded size, ImageNet normalization).
        length: the nominal epoch length.
        flip: flip each image horizontally with probability 1/2 (drawn from the episode's
            generator, so items stay deterministic).

    Attributes:
        tasks: the eligible tasks as (subject, AU); ``task_frames`` the same as :class:`Task`.
        skipped: the (subject, AU) tasks left out.
    """

    def __init__(
        self,
        index: FrameIndex,
        rows: np.ndarray | None = None,
        aus: Sequence[int] | None = None,
        shots: int = 5,
        seed: int = 0,
        images: FrameImages | None = None,
        length: int = 1200,
        flip: bool = False,
    ) -> None:
        _positive_int("shots", shots)
        _positive_int("length", length)
        self.index = index
        self.shots = shots
        self.seed = seed
        self.images = images if images is not None else FrameImages(index)
        self.length = length
        self.flip = flip
        need = 2 * shots
        candidates = task_frames(index, rows, aus)
        self.task_frames = [
            t for t in candidates if len(t.positives) >= need and len(t.negatives) >= need
        ]
        self.tasks = [(t.subject, t.au) for t in self.task_frames]
        eligible = set(map(id, self.task_frames))
        self.skipped = [(t.subject, t.au) for t in candidates if id(t) not in eligible]
        if self.skipped:
            logger.info(
                "training episodes: %d of %d tasks skipped (fewer than %d positive or negative "
                "frames): %s",
                len(self.skipped),
                len(candidates),
                need,
                _task_names(self.skipped),
            )
        if not self.task_frames:
            raise ConfigError(
                f"no training task (subject, AU) has {need} positive and {need} negative "
                f"frames (train_shots={shots}: support and query take {shots} of each); "
                f"{len(candidates)} tasks were skipped: lower train_shots or use more frames"
            )
        self._columns = {a: index.occurrence[:, index.aus.index(a)] for a in set(index.aus)}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if i < 0:
            raise IndexError(f"episode id {i}: ids are >= 0")
        n = self.shots
        rng = np.random.default_rng([self.seed, i])
        t = int(rng.integers(len(self.task_frames)))
        task = self.task_frames[t]
        pos = rng.choice(task.positives, 2 * n, replace=False)
        neg = rng.choice(task.negatives, 2 * n, replace=False)
        support = rng.permutation(np.concatenate([pos[:n], neg[:n]]))
        query = rng.permutation(np.concatenate([pos[n:], neg[n:]]))
        item = _episode(self.images, self._columns[task.au], support, query)
        if self.flip:
            flips = torch.from_numpy(rng.random(4 * n) < 0.5)
            for key, mask in (("support_image", flips[: 2 * n]), ("query_image", flips[2 * n :])):
                item[key][mask] = item[key][mask].flip(-1)
        item.update(episode=i, task=t, au=task.au, subject=task.subject)
        return item


# -- evaluation episodes ----------------------------------------------------------------


class AdaptationEpisodes(Dataset[dict[str, Any]]):
    """Evaluation episodes (Sec. 4.1.4, 4.1.5, 4.2.2): for every task of the evaluation
    rows, ``repeats`` draws of an adaptation set D[tea] of (K+, K-) frames and a disjoint
    evaluation set D[te] of (Q+, Q-) frames (K = ``shots``, Q = ``query_shots``).

    **Filling** (Sec. 4.1.5: at test time missing positives are replaced by negatives).
    With p positives, D[tea] gets ``k = min(K, p - 1)`` of them and D[te] ``q = min(Q,
    p - k)``: D[tea] is served first but always leaves one positive for D[te]. Each set is
    then filled to its size with negatives: D[tea] is ``(k+, (2K - k)-)``, i.e.
    ``((K-m)+, (K+m)-)`` with ``m = K - k``, and D[te] is ``(q+, (2Q - q)-)``. E.g. K = 5,
    Q = 10: p = 3 gives D[tea] (2+, 8-), D[te] (1+, 19-); p = 8 gives (5+, 5-) and
    (3+, 17-). The split is a property of the task (``positive_split``), the same in
    every repeat; which frames fill it is drawn per repeat.

    Tasks with fewer than 2 positives cannot have a positive on both sides and are skipped,
    logged and listed in ``skipped``. A task with fewer negatives than ``2K - k + 2Q - q``
    is an error (the negative class is almost never short), as is an empty task list.

    Item ``j`` is task ``t = j // repeats``, repeat ``r = j % repeats``, drawn by
    ``default_rng([seed, t, r])``: ``k + q`` positives and ``2K - k + 2Q - q`` negatives
    without replacement, the first ``k`` / ``2K - k`` to D[tea], each set shuffled. Labels
    are the frames' actual labels (filled negatives are 0).

    Items: ``support_image`` (2K, 3, H, W), ``support_label`` (2K,) float32,
    ``support_index`` (2K,), ``query_image`` (2Q, 3, H, W), ``query_label`` (2Q,),
    ``query_index`` (2Q,), ``task`` (position in ``tasks``), ``repeat``, ``au``, ``subject``.

    Args:
        index, rows: the evaluation frames (default: all rows).
        aus: the task AUs (default: the index's).
        shots: K.
        query_shots: Q (10 in the paper).
        repeats: R (500 in the paper).
        seed: with (t, r), determines the episode.
        images: the image pipeline (default: decoded size, ImageNet normalization).

    Attributes:
        tasks: the evaluated tasks as (subject, AU); ``task_frames`` the same as :class:`Task`.
        positive_split: (k, q) per task; ``skipped``: the (subject, AU) tasks left out.
    """

    def __init__(
        self,
        index: FrameIndex,
        rows: np.ndarray | None = None,
        aus: Sequence[int] | None = None,
        shots: int = 5,
        query_shots: int = 10,
        repeats: int = 500,
        seed: int = 0,
        images: FrameImages | None = None,
    ) -> None:
        for name, value in (("shots", shots), ("query_shots", query_shots), ("repeats", repeats)):
            _positive_int(name, value)
        self.index = index
        self.shots, self.query_shots, self.repeats = shots, query_shots, repeats
        self.seed = seed
        self.images = images if images is not None else FrameImages(index)
        candidates = task_frames(index, rows, aus)
        self.task_frames: list[Task] = []
        self.positive_split: list[tuple[int, int]] = []
        self.skipped: list[tuple[str, int]] = []
        for task in candidates:
            p = len(task.positives)
            if p < 2:
                self.skipped.append((task.subject, task.au))
                continue
            k = min(shots, p - 1)
            q = min(query_shots, p - k)
            need = 2 * shots - k + 2 * query_shots - q
            if len(task.negatives) < need:
                raise ConfigError(
                    f"subject {task.subject} AU {task.au}: {len(task.negatives)} negative "
                    f"frames, but an episode with shots={shots}, query_shots={query_shots} "
                    f"needs {need} ({2 * shots - k} in D[tea], {2 * query_shots - q} in D[te]); "
                    "lower shots or query_shots"
                )
            self.task_frames.append(task)
            self.positive_split.append((k, q))
        self.tasks = [(t.subject, t.au) for t in self.task_frames]
        if self.skipped:
            logger.info(
                "adaptation episodes: %d of %d tasks skipped (fewer than 2 positive frames): %s",
                len(self.skipped),
                len(candidates),
                _task_names(self.skipped),
            )
        if not self.task_frames:
            raise ConfigError(
                f"no evaluation task (subject, AU) has 2 positive frames ({len(candidates)} "
                "tasks, all skipped): an adaptation episode needs a positive in D[tea] and "
                "one in D[te]"
            )
        self._columns = {a: index.occurrence[:, index.aus.index(a)] for a in set(index.aus)}

    def __len__(self) -> int:
        return len(self.task_frames) * self.repeats

    def __getitem__(self, j: int) -> dict[str, Any]:
        j = int(j)
        if not 0 <= j < len(self):
            raise IndexError(f"episode {j} out of range 0..{len(self) - 1}")
        t, r = divmod(j, self.repeats)
        task = self.task_frames[t]
        k, q = self.positive_split[t]
        k_neg, q_neg = 2 * self.shots - k, 2 * self.query_shots - q
        rng = np.random.default_rng([self.seed, t, r])
        pos = rng.choice(task.positives, k + q, replace=False)
        neg = rng.choice(task.negatives, k_neg + q_neg, replace=False)
        support = rng.permutation(np.concatenate([pos[:k], neg[:k_neg]]))
        query = rng.permutation(np.concatenate([pos[k:], neg[k_neg:]]))
        item = _episode(self.images, self._columns[task.au], support, query)
        item.update(task=t, repeat=r, au=task.au, subject=task.subject)
        return item


# -- meta-batches -------------------------------------------------------------------------


class EpisodeBatchSampler(BatchSampler):
    """Meta-batches of ``tasks_per_batch`` (T) consecutive episode ids (Alg. 1, line 4).

    An epoch has ``meta_batches`` (M) steps on every process. With W processes, epoch ``e``
    holds the global meta-batches ``b = 0 .. M*W - 1``; global meta-batch ``b`` is ids
    ``[(e*M*W + b) * T, (e*M*W + b + 1) * T)`` and rank ``r`` takes ``b = s*W + r`` at its
    step ``s``. The ranks' shards are disjoint and all M long, and step ``s`` of the whole
    run covers ids ``[(e*M + s) * W*T, (e*M + s + 1) * W*T)``: it depends only on W*T, so
    2 processes with T tasks each see at every step exactly the episodes one process with
    2T tasks sees (the same M and seed).

    Rank, world size and epoch come from ``sampler``, as in
    :class:`~au_lightning.data.LabelBatchSampler`: a one-process default, replaced under DDP
    by the ``DistributedSampler`` Lightning injects (only its ``rank``, ``num_replicas``
    and ``epoch`` are used). Lightning calls ``set_epoch`` every epoch.

    Args:
        tasks_per_batch: T, episodes per meta-batch (per process).
        meta_batches: M, steps per epoch.
        sampler: the source of rank, world size and epoch; None for one process.
    """

    def __init__(
        self, tasks_per_batch: int, meta_batches: int, sampler: Sampler | None = None
    ) -> None:
        _positive_int("tasks_per_batch", tasks_per_batch)
        _positive_int("meta_batches", meta_batches)
        self.batch_size = tasks_per_batch
        self.meta_batches = meta_batches
        self.drop_last = False
        self.sampler = (
            sampler if sampler is not None else _OneProcess(tasks_per_batch * meta_batches)
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def batch(self, epoch: int, b: int, world: int = 1) -> list[int]:
        """The episode ids of global meta-batch ``b`` of ``epoch`` with ``world`` processes."""
        start = (epoch * self.meta_batches * world + b) * self.batch_size
        return list(range(start, start + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = int(self.sampler.rank), int(self.sampler.num_replicas)
        epoch = self.epoch
        for s in range(self.meta_batches):
            yield self.batch(epoch, s * world + rank, world)

    def __len__(self) -> int:
        return self.meta_batches


# -- data module --------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class EpisodeDataModule(AUDataModule):
    """Few-shot (subject, AU) task episodes of an AU dataset (Lee et al., Sec. 3.2, 4.1-4.2).

    Reading, protocols (``loso`` as in the paper, ``kfold``, published folds, ``cross``),
    :meth:`folds` and the validation reserve are :class:`AUDataModule`'s (see its
    arguments; the defaults here suit a 64 px conv4 network (the paper states no input
    size) and keep whole validation subjects, so validation tasks are new subjects as at
    test time).

    Loaders:

    - train: :class:`MetaTrainEpisodes` of the training rows and AUs, ``tasks_per_batch``
      episodes per step from :class:`EpisodeBatchSampler` (``train_on: episodes``), or
      AUDataModule's frame batches (``train_on: frames``: the non-meta baseline of Sec. 3.3,
      trained without tasks).
    - val: :class:`AdaptationEpisodes` of the validation rows and training AUs with the
      largest K of ``shots`` and ``val_repeats`` repeats (none without validation rows).
    - test: one loader per K of ``shots`` (in order) of :class:`AdaptationEpisodes` of the
      test rows and :attr:`eval_aus`, ``tasks_per_batch`` episodes per batch; each dataset
      has ``tasks`` ((subject, AU) list) and ``shots``.

    Images are resized and center-cropped once per frame and cached (``cache_images``),
    read from the decoded image cache when ``cache`` finds one at ``image_size``;
    ``flip`` flips training episode images at random (deterministically per episode).

    Args:
        tasks_per_batch: T, tasks per meta-batch per process (12 for BP4D, 8 for DISFA,
            Sec. 4.2.1).
        train_shots: N of the training support and query sets (5, Sec. 4.1.4).
        shots: the evaluation K values (1 and 5, Sec. 4.2.1), an int or a list.
        query_shots: Q of the evaluation set D[te] (10, Sec. 4.2.2).
        repeats: R, test episodes per task (500, Sec. 4.2.2).
        val_repeats: validation episodes per task.
        meta_batches: training steps per epoch.
        train_on: ``episodes`` or ``frames`` (see above).
        test_aus: AUs of the evaluation tasks when they differ from the training AUs (new-AU
            adaptation, Sec. 4.4: train on BP4D's AUs, test on DISFA's 8); other AUs than
            ``aus`` need ``protocol: cross`` (they are read from ``test_dataset``).
        cache_images: keep each decoded, resized frame in memory.
        other arguments: see :class:`AUDataModule`.
    """

    def __init__(
        self,
        dataset: str = "bp4d",
        root: str = "",
        synth: dict[str, int | float] | None = None,
        reader_options: dict[str, Any] | None = None,
        aus: str | list[int] | None = None,
        protocol: Protocol = "loso",
        num_folds: int = 3,
        fold: int | str = 0,
        parts: dict[str, list[str]] | None = None,
        test_dataset: str | None = None,
        test_root: str | None = None,
        test_reader_options: dict[str, Any] | None = None,
        test_synth: dict[str, int | float] | None = None,
        val_strategy: ValidationStrategy = "subjects",
        val_fraction: float = 0.2,
        image_size: int = 64,
        crop_size: int = 64,
        flip: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 32,
        num_workers: int = 0,
        sampler: str = "random",
        sampler_options: dict[str, Any] | None = None,
        seed: int = 0,
        cache: bool = True,
        tasks_per_batch: int = 12,
        train_shots: int = 5,
        shots: int | Sequence[int] = (1, 5),
        query_shots: int = 10,
        repeats: int = 500,
        val_repeats: int = 10,
        meta_batches: int = 100,
        train_on: Literal["episodes", "frames"] = "episodes",
        test_aus: str | list[int] | None = None,
        cache_images: bool = True,
    ) -> None:
        for name, value in (
            ("tasks_per_batch", tasks_per_batch),
            ("train_shots", train_shots),
            ("query_shots", query_shots),
            ("repeats", repeats),
            ("val_repeats", val_repeats),
            ("meta_batches", meta_batches),
        ):
            _positive_int(name, value)
        shot_list = [shots] if isinstance(shots, (int, np.integer)) else list(shots)
        if not shot_list:
            raise ConfigError("shots must name at least one K (e.g. [1, 5]), got []")
        for k in shot_list:
            _positive_int("shots", k)
        if train_on not in ("episodes", "frames"):
            raise ConfigError(f"train_on must be 'episodes' or 'frames', got {train_on!r}")
        if test_aus is not None:
            try:
                resolve_aus(test_aus)
            except ConfigError as err:
                raise ConfigError(f"test_aus: {err}") from None
        super().__init__(
            dataset=dataset,
            root=root,
            synth=synth,
            reader_options=reader_options,
            aus=aus,
            protocol=protocol,
            num_folds=num_folds,
            fold=fold,
            parts=parts,
            test_dataset=test_dataset,
            test_root=test_root,
            test_reader_options=test_reader_options,
            test_synth=test_synth,
            val_strategy=val_strategy,
            val_fraction=val_fraction,
            image_size=image_size,
            crop_size=crop_size,
            flip=flip,
            mean=mean,
            std=std,
            batch_size=batch_size,
            num_workers=num_workers,
            sampler=sampler,
            sampler_options=sampler_options,
            seed=seed,
            cache=cache,
        )
        self.shot_list: list[int] = [int(k) for k in shot_list]
        self._frame_images: dict[int, FrameImages] = {}

    def _test_aus(self) -> str | Sequence[int] | None:
        hp = self.hparams
        return hp.test_aus if hp.test_aus is not None else hp.aus

    @property
    def eval_aus(self) -> tuple[int, ...]:
        """The AUs of the test tasks: ``test_aus``, else the AUs of the test data (the
        training AUs, unless ``protocol: cross`` reads the test dataset's default set)."""
        if self.test_index is None:
            raise RuntimeError("call setup() before asking for the evaluation AUs")
        if self.hparams.test_aus is None:
            return self.test_index.aus
        aus = resolve_aus(self.hparams.test_aus)
        missing = [a for a in aus if a not in self.test_index.aus]
        if missing:
            raise ConfigError(
                f"test_aus: AU {', '.join(map(str, missing))} not among the AUs read "
                f"({', '.join(map(str, self.test_index.aus))}); AUs other than the training "
                "aus need protocol 'cross' (read from test_dataset)"
            )
        return aus

    def images(self, index: FrameIndex) -> FrameImages:
        """The (cached) image pipeline of ``index``, shared by the loaders that read it."""
        key = id(index)
        if key not in self._frame_images:
            hp = self.hparams
            self._frame_images[key] = FrameImages.eval(
                index,
                hp.image_size,
                hp.crop_size,
                hp.mean,
                hp.std,
                hp.cache_images,
                self.decoded_images(index),
            )
        return self._frame_images[key]

    def train_dataloader(self) -> DataLoader:
        """Meta-batches of training episodes (the batch sampler is built here, so Lightning
        can hand it its DDP rank), or frame batches with ``train_on: frames``."""
        hp = self.hparams
        if hp.train_on == "frames":
            return super().train_dataloader()
        dataset = MetaTrainEpisodes(
            self.index,
            self.train_rows,
            self.aus,
            shots=hp.train_shots,
            seed=hp.seed,
            images=self.images(self.index),
            length=hp.meta_batches * hp.tasks_per_batch,
            flip=hp.flip,
        )
        batch_sampler = EpisodeBatchSampler(hp.tasks_per_batch, hp.meta_batches)
        return make_loader(dataset, self.trainer, hp.num_workers, batch_sampler=batch_sampler)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_rows) == 0:
            return []
        hp = self.hparams
        dataset = AdaptationEpisodes(
            self.index,
            self.val_rows,
            self.aus,
            shots=max(self.shot_list),
            query_shots=hp.query_shots,
            repeats=hp.val_repeats,
            seed=hp.seed,
            images=self.images(self.index),
        )
        return make_loader(
            dataset, self.trainer, hp.num_workers, batch_size=hp.tasks_per_batch, evaluation=True
        )

    def test_dataloader(self) -> list[DataLoader]:  # type: ignore[override]
        """One loader per K of ``shots``, in order."""
        hp = self.hparams
        aus = self.eval_aus
        loaders = []
        for k in self.shot_list:
            dataset = AdaptationEpisodes(
                self.test_index,
                self.test_rows,
                aus,
                shots=k,
                query_shots=hp.query_shots,
                repeats=hp.repeats,
                seed=hp.seed,
                images=self.images(self.test_index),
            )
            loaders.append(
                make_loader(
                    dataset,
                    self.trainer,
                    hp.num_workers,
                    batch_size=hp.tasks_per_batch,
                    evaluation=True,
                )
            )
        return loaders

    def predict_dataloader(self) -> DataLoader:
        raise ConfigError(
            "EpisodeDataModule has no predict loader: episodic data are adapted and evaluated "
            "with test; use AUDataModule to predict frames"
        )
