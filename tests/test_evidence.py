"""Paired multi-seed differences against scipy's paired t-test and a hand-worked example."""

import math

import numpy as np
import pytest
from scipy import stats

from au_lightning.evidence import paired_difference


def test_hand_worked_interval():
    # d = (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302653, half-width 4.302653 / sqrt(3)
    diff = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert diff.mean == pytest.approx(2.0)
    assert (diff.low, diff.high) == pytest.approx((2 - half, 2 + half))
    assert diff.verdict == "inconclusive"  # 2 - 2.48 < 0
    assert diff.cell() == "+2.0 [-0.5, +4.5]"


def test_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.05, 7), rng.normal(0.55, 0.05, 7)
    ours = paired_difference(list(a), list(b), confidence=0.9)
    ci = stats.ttest_rel(a, b).confidence_interval(0.9)
    assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize(
    ("ours", "theirs", "verdict"),
    [([3.0, 3.1, 2.9], [1.0, 1.0, 1.0], "holds"), ([1.0, 1.1, 0.9], [3.0, 3.0, 3.0], "fails")],
)
def test_verdicts(ours, theirs, verdict):
    assert paired_difference(ours, theirs).verdict == verdict


def test_margin_moves_the_verdict():
    assert paired_difference([3.0, 3.1, 2.9], [1.0, 1.0, 1.0], margin=2.5).verdict == "fails"


def test_mappings_pair_by_key_and_name_unpaired_keys():
    diff = paired_difference({1: 0.7, 0: 0.5}, {0: 0.4, 1: 0.5})
    assert diff.mean == pytest.approx(0.15)
    with pytest.raises(ValueError, match=r"unpaired keys.*2"):
        paired_difference({0: 0.5, 2: 0.6}, {0: 0.4})


def test_two_pairs_give_an_interval_but_no_verdict():
    diff = paired_difference([3.0, 3.1], [1.0, 1.0])
    assert diff.low > 0 and diff.verdict == "inconclusive"
    assert paired_difference([3.0, 3.1, 2.9], [1.0, 1.0, 1.0]).verdict == "holds"


def test_one_pair_has_no_interval():
    diff = paired_difference([0.7], [0.6])
    assert diff.n == 1 and math.isnan(diff.low) and diff.verdict == "inconclusive"
    assert diff.cell(100) == "+10.0 (n=1)"


def test_bad_input():
    with pytest.raises(ValueError, match="3 values against 2"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no pairs"):
        paired_difference([], [])
    with pytest.raises(TypeError, match="two sequences"):
        paired_difference({0: 1.0}, [1.0])
