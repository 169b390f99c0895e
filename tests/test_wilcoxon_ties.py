"""The Wilcoxon signed-rank test is exact with ties (issue 14, class 6): its p-value is the sign-flip
permutation distribution of the statistic with midranks, checked against full enumeration."""

import itertools

import numpy as np
import pytest
from scipy.stats import rankdata

from ptdlib.stats import paired as stats


def enumerated_p(x, y, alternative: str) -> float:
    """P-value by enumerating every sign pattern of the non-zero differences (zeros dropped, midranks)."""
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[d != 0]
    ranks = rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    null = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))])
    mean = ranks.sum() / 2
    if alternative == "greater":
        return float(np.mean(null >= observed - 1e-9))
    if alternative == "less":
        return float(np.mean(null <= observed + 1e-9))
    return float(np.mean(np.abs(null - mean) >= abs(observed - mean) - 1e-9))


def test_five_wins_among_forty_ties_give_the_exact_p_not_the_normal_approximation():
    x = np.r_[np.full(5, 1.0), np.zeros(40)]
    y = np.r_[np.full(5, 0.5), np.zeros(40)]
    assert stats.wilcoxon_test(x, y).p_value == pytest.approx(0.0625)  # 2 / 2**5
    assert enumerated_p(x, y, "two-sided") == pytest.approx(0.0625)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_p_value_with_tied_differences_equals_full_enumeration(seed, alternative):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=30) / 2  # scores in halves: many ties and zero differences
    x = y.copy()
    differ = rng.choice(30, size=11, replace=False)  # 2**11 sign patterns: enumerated, not drawn
    x[differ] += rng.choice([-0.5, 0.5, 1.0], size=11, p=[0.3, 0.4, 0.3])
    got = stats.wilcoxon_test(x, y, alternative=alternative).p_value
    assert got == pytest.approx(enumerated_p(x, y, alternative), abs=1e-12)


def test_many_differing_pairs_use_the_normal_approximation_and_still_detect_a_shift():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    assert stats.wilcoxon_test(y + 0.3 + 0.1 * rng.normal(size=200), y).p_value < 1e-6
