"""Paired multi-seed evidence for a paper's claim: a difference, its 95% interval, a verdict.

A claim such as "RE-Net beats the ResNet-18 baseline" compares two rows trained on the same
data with the same seeds. Each seed gives one paired difference d_s = ours_s - theirs_s
(the seed fixes the initialisation, the batch order and the augmentation of both rows), and
the claim's evidence is the mean of the d_s with its Student-t interval over seeds:

    mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)

(the interval of a paired t-test, ``scipy.stats.ttest_rel(...).confidence_interval()``).
The verdict is *holds* when the whole interval is above the claim's margin (0 by default),
*fails* when it is below, and *inconclusive* when it contains it. A verdict needs at least
:data:`MIN_PAIRS` (3) pairs, the project's rule for a claim: with 2 the interval is
given and the verdict is *inconclusive*; with 1 there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

__all__ = ["MIN_PAIRS", "PairedDifference", "Verdict", "paired_difference"]

Verdict = Literal["holds", "fails", "inconclusive"]
#: the fewest pairs (seeds) a verdict other than inconclusive rests on
MIN_PAIRS = 3


@dataclass(frozen=True)
class PairedDifference:
    """The mean of ``n`` paired differences ``ours - theirs``, with its interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    margin: float = 0.0

    @property
    def verdict(self) -> Verdict:
        if self.n < MIN_PAIRS or math.isnan(self.low):
            return "inconclusive"
        if self.low > self.margin:
            return "holds"
        if self.high < self.margin:
            return "fails"
        return "inconclusive"

    def cell(self, scale: float = 1.0, digits: int = 1) -> str:
        """``+2.3 [+0.4, +4.2]``: the difference and its interval, times ``scale``."""
        if self.n < 2:
            return f"{self.mean * scale:+.{digits}f} (n={self.n})"
        values = (self.mean * scale, self.low * scale, self.high * scale)
        return "{:+.{d}f} [{:+.{d}f}, {:+.{d}f}]".format(*values, d=digits)


def paired_difference(
    ours: Sequence[float] | Mapping[object, float],
    theirs: Sequence[float] | Mapping[object, float],
    confidence: float = 0.95,
    margin: float = 0.0,
) -> PairedDifference:
    """The paired difference ``ours - theirs`` over seeds (or subjects, or episodes).

    Sequences pair by position; mappings pair by key (a seed, a subject), and a key present
    in one only raises a ``ValueError`` naming it, so that no pair is silently dropped.
    """
    a, b = _paired(ours, theirs)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}; expected a number in (0, 1)")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n == 0:
        raise ValueError("no pairs to compare")
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, confidence, margin)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, confidence, margin)


def _paired(
    ours: Sequence[float] | Mapping[object, float], theirs: Sequence[float] | Mapping[object, float]
) -> tuple[list[float], list[float]]:
    if isinstance(ours, Mapping) != isinstance(theirs, Mapping):
        raise TypeError("pass two sequences (paired by position) or two mappings (by key)")
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        only = sorted(map(str, set(ours) ^ set(theirs)))
        if only:
            raise ValueError(f"unpaired keys (in one side only): {', '.join(only)}")
        keys = sorted(ours, key=str)
        return [float(ours[k]) for k in keys], [float(theirs[k]) for k in keys]
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} values against {len(theirs)}; pairs need equal counts")
    return [float(x) for x in ours], [float(x) for x in theirs]
