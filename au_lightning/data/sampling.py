"""Training batch samplers for skewed multi-label AU data, chosen by name (``sampler``).

| name         | what it does                                                              |
|--------------|---------------------------------------------------------------------------|
| `random`     | a random permutation cut into batches                                     |
| `stratified` | Chu et al. 2017, Alg. 1: the rarest AU's frames spread evenly over batches |
| `momu`       | Chu et al. 2017, Alg. 2: each batch filled greedily with its rarest AU     |
| `mlros`      | Charte et al. 2015 ML-ROS (used by Ji et al. 2020, Sec. 3.4): clones of   |
|              | frames with minority labels, then random batches                          |
| `weighted`   | frames drawn with replacement by inverse base-rate weights                |
| `duplicate`  | Yang & Yin 2020 (Table 8): frames with a positive of the listed AUs twice |

Every sampler plans a whole epoch from the ``(N, L)`` label matrix (1 present, 0 absent,
-1 unknown; only known positives count, an unknown label is never a negative) as a
deterministic function of ``(seed, epoch)``. Under DDP every rank plans the same epoch and
takes every ``world``-th batch, so the ranks' shards are disjoint and equally long.

An algorithm is an :class:`EpochPlan` (labels in, one epoch's batches out, given a random
generator); :class:`LabelBatchSampler` wraps one for the DataLoader. The rank, world size
and epoch come from the wrapper's ``sampler``: a one-process default here, and
under DDP the ``DistributedSampler`` that Lightning injects into any ``BatchSampler``
subclass (its order is not used, only its ``rank``, ``num_replicas`` and ``epoch``).
Lightning calls ``set_epoch`` on it every epoch, so a resumed run replays its epochs.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from torch.utils.data import BatchSampler, Sampler

from au_lightning.data.index import positive_rates
from au_lightning.errors import ConfigError

__all__ = [
    "SAMPLERS",
    "DuplicationBatches",
    "EpochPlan",
    "LabelBatchSampler",
    "MLROSBatches",
    "MOMUBatches",
    "RandomBatches",
    "SamplerName",
    "StratifiedBatches",
    "WeightedBatches",
    "check_sampler",
    "draw_seeds",
    "imbalance_ratios",
    "make_batch_sampler",
    "presence_per_batch",
]

logger = logging.getLogger("au_lightning.data")

SamplerName = Literal["random", "stratified", "momu", "mlros", "weighted", "duplicate"]


class _OneProcess(Sampler[int]):
    """The epoch counter and shard of a single process (Lightning replaces it under DDP)."""

    rank = 0
    num_replicas = 1

    def __init__(self, size: int) -> None:
        self.size = size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size


def _positives(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an (N, L) matrix, got shape {labels.shape}")
    return labels == 1


def _chunks(order: np.ndarray, size: int, drop_last: bool = False) -> list[np.ndarray]:
    batches = np.split(order, np.arange(size, len(order), size))
    if drop_last and len(batches[-1]) < size:
        batches.pop()
    return batches


class EpochPlan:
    """Base of the sampling algorithms: one epoch's batches from the labels and a generator.

    Args:
        labels: ``(N, L)`` labels of the dataset's positions: 1 present, 0 absent, -1 unknown.
        batch_size: frames per batch (per process under DDP).
        drop_last: drop a last, smaller batch (algorithms whose batches are all full ignore it).
    """

    def __init__(self, labels: np.ndarray, batch_size: int, drop_last: bool = False) -> None:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.positives = _positives(labels)
        if len(self.positives) == 0:
            raise ConfigError("cannot sample batches from an empty training set")
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The batches of one epoch, as arrays of dataset positions."""
        raise NotImplementedError

    def _eligible(self, name: str) -> np.ndarray:
        """The AUs with at least one known positive; the others cannot be balanced."""
        eligible = self.positives.any(0)
        if not eligible.all():
            missing = np.flatnonzero(~eligible).tolist()
            logger.warning(
                "%s sampler: label columns %s have no positive frame in the training set "
                "and are left out of the balancing",
                name,
                missing,
            )
        return eligible


class LabelBatchSampler(BatchSampler):
    """The DataLoader's batch sampler: an :class:`EpochPlan` per ``(seed, epoch)``, this
    rank's share of it (see the module docstring), the current epoch's plan cached.

    Args:
        plan: the sampling algorithm, e.g. ``MOMUBatches(labels, 32)``.
        sampler: the source of rank, world size and epoch; None for one process.
        seed: with the epoch, determines the batches.
        seeded_draws: yield ``(position, draw)`` pairs instead of positions, ``draw`` the
            seed of that item's random augmentation (:func:`draw_seeds`), so that crops and
            flips are a function of (seed, epoch, batch, slot) alone, not of which DataLoader
            worker made the item or how long it has run: a resumed fit then repeats the
            uninterrupted one with any number of workers
            (:class:`~au_lightning.data.FrameDataset` takes such pairs).
    """

    def __init__(
        self,
        plan: EpochPlan,
        sampler: Sampler | None = None,
        seed: int = 0,
        seeded_draws: bool = False,
    ) -> None:
        self.epoch_plan = plan
        self.sampler = sampler if sampler is not None else _OneProcess(len(plan.positives))
        self.batch_size = plan.batch_size
        self.drop_last = plan.drop_last
        self.seed = seed
        self.seeded_draws = seeded_draws
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def plan(self, epoch: int) -> list[np.ndarray]:
        """All batches of ``epoch`` (every rank's), as arrays of dataset positions."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self.epoch_plan(np.random.default_rng([self.seed, epoch])))
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def _shard(self) -> list[tuple[int, np.ndarray]]:
        """This rank's batches, each with its number in the epoch's plan."""
        rank, world = int(self.sampler.rank), int(self.sampler.num_replicas)
        batches = list(enumerate(self.plan(self.epoch)))
        return batches[rank::world][: len(batches) // world]

    def __iter__(self) -> Iterator[list[Any]]:
        for number, batch in self._shard():
            if self.seeded_draws:
                draws = draw_seeds(self.seed, self.epoch, number, len(batch))
                yield list(zip(batch.tolist(), draws, strict=True))
            else:
                yield batch.tolist()

    def __len__(self) -> int:
        return len(self._shard())


def draw_seeds(seed: int, epoch: int, batch: int, size: int) -> list[int]:
    """The augmentation seeds of the ``size`` items of batch number ``batch`` of ``epoch``:
    a pure function of its arguments (NumPy's ``SeedSequence``), 63-bit integers."""
    state = np.random.SeedSequence([seed, epoch, batch]).generate_state(size, np.uint64)
    return [int(s >> np.uint64(1)) for s in state]


class RandomBatches(EpochPlan):
    """Plain random batches: a permutation of all frames, cut into batches."""

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(len(self.positives))
        return _chunks(order, self.batch_size, self.drop_last)


class StratifiedBatches(EpochPlan):
    """Multi-label stratification (Chu et al. 2017, Alg. 1): balance *between* batches.

    With B = ceil(N / batch_size) batches: repeatedly take the AU with the fewest frames
    left in D (line 3), deal all of D's frames that have it (line 4), shuffled, evenly over
    the batches (line 6: one dealing order runs on across AUs, so batch sizes differ by at
    most one), remove them from D (line 8) and recount (line 9). Frames without a positive
    AU are dealt last, so D empties (L + 1 rounds). The batch order is then shuffled.
    """

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        pos = self.positives
        n = len(pos)
        num_batches = math.ceil(n / self.batch_size)
        remaining = np.ones(n, dtype=bool)
        counts = pos.sum(0)
        dealt = []
        while remaining.any():
            if counts.any():
                rarest = int(np.argmin(np.where(counts > 0, counts, np.iinfo(counts.dtype).max)))
                group = np.flatnonzero(remaining & pos[:, rarest])
            else:
                group = np.flatnonzero(remaining)
            group = rng.permutation(group)
            dealt.append(group)
            remaining[group] = False
            counts -= pos[group].sum(0)
        order = np.concatenate(dealt)
        batch_of = np.arange(n) % num_batches
        by_batch = order[np.argsort(batch_of, kind="stable")]
        sizes = np.bincount(batch_of, minlength=num_batches)
        batches = np.split(by_batch, np.cumsum(sizes)[:-1])
        return [batches[i] for i in rng.permutation(num_batches)]


class MOMUBatches(EpochPlan):
    """Multi-label minority oversampling, majority undersampling (Chu et al. 2017, Alg. 2).

    Each of the B batches starts from the AU with the fewest frames left in D (line 3), then
    repeatedly takes ``sampling_size`` (S) frames with the batch's currently rarest AU
    (lines 9-13; the last take is cut to fit ``batch_size``), without replacement from D.
    When D holds fewer than S frames of that AU, all frames with it are restored to D
    (lines 6-7). Every frame has at least one present AU, so frames without one are never
    drawn (the majority undersampling); AUs with no positive frame are left out.

    Each AU keeps a shuffled queue of its frames; a frame taken through another AU is
    skipped, and a queue is reshuffled from D's frames when it runs out.

    Args:
        sampling_size: S, frames added per step.
        num_batches: B per epoch; None for ceil(N / batch_size), the budget of ``random``.
        labels, batch_size, drop_last: see :class:`EpochPlan`.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        drop_last: bool = False,
        sampling_size: int = 4,
        num_batches: int | None = None,
    ) -> None:
        super().__init__(labels, batch_size, drop_last)
        if sampling_size <= 0:
            raise ConfigError(f"momu: sampling_size must be positive, got {sampling_size}")
        if num_batches is not None and num_batches <= 0:
            raise ConfigError(f"momu: num_batches must be positive, got {num_batches}")
        self.sampling_size = sampling_size
        self.num_batches = num_batches or math.ceil(len(self.positives) / batch_size)
        self.eligible = self._eligible("momu")
        if not self.eligible.any():
            raise ConfigError("momu: no AU has a positive frame in the training set")
        self.members = [np.flatnonzero(column) for column in self.positives.T]

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        pos, members, size = self.positives, self.members, self.sampling_size
        available = np.ones(len(pos), dtype=bool)
        left = pos.sum(0)  # N_l: frames with AU l left in D
        never = np.where(self.eligible, 0, np.iinfo(np.int64).max)
        queues = [rng.permutation(m) for m in members]
        heads = [0] * len(members)

        def take(au: int, want: int) -> np.ndarray:
            got: list[np.ndarray] = []
            while want > 0:
                queue, head = queues[au], heads[au]
                if head >= len(queue):
                    queue = queues[au] = rng.permutation(members[au][available[members[au]]])
                    head = 0
                    if len(queue) == 0:
                        break
                window = queue[head : head + 4 * want + 8]
                fresh = window[available[window]][:want]
                if len(fresh) < want:
                    heads[au] = head + len(window)
                else:
                    heads[au] = head + int(np.searchsorted(np.cumsum(available[window]), want)) + 1
                available[fresh] = False
                got.append(fresh)
                want -= len(fresh)
            return np.concatenate(got) if got else np.zeros(0, dtype=np.int64)

        batches = []
        for _ in range(self.num_batches):
            au = int(np.argmin(left + never))  # line 3
            parts, filled = [], 0
            in_batch = np.zeros(pos.shape[1], dtype=np.int64)
            while filled < self.batch_size:
                if left[au] < size:  # lines 6-7: restore every frame with this AU
                    restored = members[au][~available[members[au]]]
                    available[restored] = True
                    left += pos[restored].sum(0)
                    queues[au], heads[au] = rng.permutation(members[au]), 0
                drawn = take(au, min(size, self.batch_size - filled))  # lines 9-11
                present = pos[drawn].sum(0)
                left -= present
                in_batch += present  # line 12
                parts.append(drawn)
                filled += len(drawn)
                au = int(np.argmin(in_batch + never))  # line 13
            batches.append(np.concatenate(parts))
        return batches


def imbalance_ratios(labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Charte et al. 2015, Eq. 1-2: IRLbl per label (the most frequent label's positive count
    over this label's) and MeanIR, their mean. 1 means balanced. Only known positives count
    (``labels`` may also be a boolean matrix of positives); a label without positives has
    IRLbl NaN and is left out of MeanIR."""
    counts = _positives(labels).sum(0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        irlbl = np.where(counts > 0, counts.max() / counts, np.nan)
    return irlbl, float(np.nanmean(irlbl)) if (counts > 0).any() else math.nan


class MLROSBatches(EpochPlan):
    """ML-ROS, multi-label random oversampling (Charte et al. 2015, Alg. 3; Ji et al. 2020).

    The minority labels are those with IRLbl > MeanIR (:func:`imbalance_ratios`, MeanIR fixed
    at the start); each has a bag of its frames. Clone rounds take one random frame from
    each bag in turn, updating the label counts, until ``percentage`` % of N frames have
    been cloned; a bag leaves once its label's IRLbl <= MeanIR. The epoch is the N frames
    plus the clones, shuffled and cut into batches. New clones are drawn every epoch.

    Args:
        percentage: P, the clones as a percentage of N.
        labels, batch_size, drop_last: see :class:`EpochPlan`.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        drop_last: bool = False,
        percentage: float = 25.0,
    ) -> None:
        super().__init__(labels, batch_size, drop_last)
        if percentage < 0:
            raise ConfigError(f"mlros: percentage must be >= 0, got {percentage}")
        self.percentage = percentage
        irlbl, self.mean_ir = imbalance_ratios(self.positives)
        self.minority = np.flatnonzero(np.nan_to_num(irlbl) > self.mean_ir)
        self.bags = [np.flatnonzero(self.positives[:, label]) for label in self.minority]

    def clones(self, rng: np.random.Generator) -> np.ndarray:
        """The frames ML-ROS clones (positions, with repeats) for one draw of ``rng``."""
        pos = self.positives
        counts = pos.sum(0)
        budget = int(len(pos) * self.percentage / 100)
        active = list(range(len(self.minority)))
        picks = rng.random(budget)
        cloned = np.empty(budget, dtype=np.int64)
        done = 0
        while done < budget and active:
            for bag in list(active):
                frame = self.bags[bag][int(picks[done] * len(self.bags[bag]))]
                cloned[done] = frame
                done += 1
                counts += pos[frame]
                if counts.max() / counts[self.minority[bag]] <= self.mean_ir:
                    active.remove(bag)
                if done == budget:
                    break
        return cloned[:done]

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        frames = np.concatenate([np.arange(len(self.positives)), self.clones(rng)])
        return _chunks(rng.permutation(frames), self.batch_size, self.drop_last)


class WeightedBatches(EpochPlan):
    """Frames drawn with replacement, with probability proportional to inverse base rates.

    A frame's weight is the mean over its known labels of 1 / (2 p_l) for a present AU l and
    1 / (2 (1 - p_l)) for an absent one, p_l being AU l's positive rate among its known
    labels: both classes of every AU then carry equal total weight. Frames without a known
    label carry no loss and are not drawn.

    Args:
        num_samples: frames per epoch; None for N.
        labels, batch_size, drop_last: see :class:`EpochPlan`.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        drop_last: bool = False,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(labels, batch_size, drop_last)
        if num_samples is not None and num_samples <= 0:
            raise ConfigError(f"weighted: num_samples must be positive, got {num_samples}")
        self.num_samples = num_samples or len(self.positives)
        self.weights = self.frame_weights(np.asarray(labels))

    @staticmethod
    def frame_weights(labels: np.ndarray) -> np.ndarray:
        """The per-frame sampling weights (see the class docstring), shape ``(N,)``."""
        known = labels >= 0
        rate = positive_rates(labels)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = np.where(labels == 1, 0.5 / rate, 0.5 / (1 - rate))
        per_class = np.where(known & np.isfinite(per_class), per_class, 0.0)
        return per_class.sum(1) / np.maximum(known.sum(1), 1)

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        total = self.weights.sum()
        if total <= 0:
            raise ConfigError("weighted: no training frame has a known label")
        drawn = rng.choice(len(self.weights), size=self.num_samples, p=self.weights / total)
        return _chunks(drawn, self.batch_size, self.drop_last)


class DuplicationBatches(EpochPlan):
    """Duplication augmentation (Yang & Yin 2020, Sec. 4.6, Table 8): every frame with a
    known positive label of one of the ``duplicate`` AUs is in the epoch ``1 + copies``
    times; the epoch is shuffled and cut into batches.

    Args:
        aus: the AU numbers of the label columns (given by the data module).
        duplicate: the AUs whose positive frames are duplicated (the paper's five rare
            BP4D AUs by default).
        copies: extra copies of each such frame (the paper: one).
        labels, batch_size, drop_last: see :class:`EpochPlan`.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        drop_last: bool = False,
        aus: Sequence[int] | None = None,
        duplicate: Sequence[int] = (1, 2, 15, 23, 24),
        copies: int = 1,
    ) -> None:
        super().__init__(labels, batch_size, drop_last)
        if aus is None or len(aus) != self.positives.shape[1]:
            raise ConfigError(
                f"duplicate: the AU numbers of the {self.positives.shape[1]} label columns are "
                f"needed, got {aus}"
            )
        missing = [a for a in duplicate if a not in aus]
        if missing:
            raise ConfigError(
                f"duplicate: AUs {missing} of sampler_options.duplicate are not among the "
                f"data's AUs {list(aus)}"
            )
        if copies < 0:
            raise ConfigError(f"duplicate: copies must be >= 0, got {copies}")
        columns = [list(aus).index(a) for a in duplicate]
        self.duplicated = np.flatnonzero(self.positives[:, columns].any(1))
        self.copies = copies

    def __call__(self, rng: np.random.Generator) -> list[np.ndarray]:
        frames = np.concatenate(
            [np.arange(len(self.positives)), np.tile(self.duplicated, self.copies)]
        )
        return _chunks(rng.permutation(frames), self.batch_size, self.drop_last)


SAMPLERS: dict[str, type[EpochPlan]] = {
    "random": RandomBatches,
    "stratified": StratifiedBatches,
    "momu": MOMUBatches,
    "mlros": MLROSBatches,
    "weighted": WeightedBatches,
    "duplicate": DuplicationBatches,
}

_COMMON = {"self", "labels", "batch_size", "drop_last", "aus"}


def _options_of(name: str) -> list[str]:
    parameters = inspect.signature(SAMPLERS[name].__init__).parameters
    return [p for p in parameters if p not in _COMMON]


def check_sampler(name: str, options: dict[str, Any] | None = None) -> None:
    """Raise :class:`ConfigError` for an unknown sampler name or an option it does not take."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    unknown = sorted(set(options or {}) - set(_options_of(name)))
    if unknown:
        accepted = ", ".join(_options_of(name)) or "none"
        raise ConfigError(
            f"data.sampler_options: the {name} sampler has no option {', '.join(unknown)} "
            f"(its options: {accepted})"
        )


def make_batch_sampler(
    name: str,
    labels: np.ndarray,
    batch_size: int,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    aus: Sequence[int] | None = None,
    seeded_draws: bool = False,
) -> LabelBatchSampler:
    """The batch sampler of algorithm ``name`` (:data:`SAMPLERS`) with its own ``options``
    (checked by name); an algorithm that takes ``aus`` is given the AU numbers of the label
    columns. ``seeded_draws``: see :class:`LabelBatchSampler`."""
    check_sampler(name, options)
    plan = SAMPLERS[name]
    given = dict(options or {})
    if "aus" in inspect.signature(plan.__init__).parameters:
        given["aus"] = aus
    return LabelBatchSampler(
        plan(labels, batch_size, **given), seed=seed, seeded_draws=seeded_draws
    )


def presence_per_batch(labels: np.ndarray, batches: Sequence[np.ndarray]) -> np.ndarray:
    """``(L, B)`` counts of present AUs in each batch (the quantity of Chu et al. Fig. 6)."""
    pos = _positives(labels)
    if not batches:
        return np.zeros((pos.shape[1], 0), dtype=np.int64)
    order = np.concatenate(batches)
    sums = np.vstack([np.zeros((1, pos.shape[1]), np.int64), np.cumsum(pos[order], 0)])
    ends = np.cumsum([len(b) for b in batches])
    return (sums[ends] - sums[np.concatenate([[0], ends[:-1]])]).T
