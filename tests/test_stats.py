"""Paired tests, bootstrap intervals and corrections against hand-computed values and simulation."""

from math import comb

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from ptdlib.stats import paired as stats


def _binary_pairs(both: int, x_only: int, y_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired 0/1 scores with the given 2x2 table (x = strategy, y = baseline)."""
    x = [1] * both + [1] * x_only + [0] * y_only + [0] * neither
    y = [1] * both + [0] * x_only + [1] * y_only + [0] * neither
    return np.array(x, float), np.array(y, float)


# ---------------------------------------------------------------- McNemar
def test_mcnemar_exact_p_is_two_sided_binomial_tail_of_discordant_pairs():
    x, y = _binary_pairs(both=30, x_only=10, y_only=2, neither=8)
    by_hand = 2 * sum(comb(12, k) for k in range(3)) / 2**12  # 2 P(X <= 2), X ~ Bin(12, 1/2)
    res = stats.mcnemar_exact(x, y)
    assert res.p_value == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.0386, abs=1e-4)
    assert res.statistic == 2 and res.n == 50


def test_mcnemar_ignores_concordant_pairs():
    p_small = stats.mcnemar_exact(*_binary_pairs(1, 7, 1, 1)).p_value
    p_large = stats.mcnemar_exact(*_binary_pairs(500, 7, 1, 300)).p_value
    assert p_small == pytest.approx(p_large) == pytest.approx(2 * (1 + 8) / 2**8)


def test_mcnemar_without_discordant_pairs_gives_p_one():
    assert stats.mcnemar_exact(*_binary_pairs(5, 0, 0, 5)).p_value == 1.0


def test_mcnemar_rejects_non_binary_scores():
    with pytest.raises(ValueError, match="binary.*strategy.*0.5"):
        stats.mcnemar_exact([1, 0, 0.5], [1, 0, 1])


@pytest.mark.parametrize("x, y, match", [([], [], "empty"), ([1, 0], [1], "same length"), ([1, np.nan], [1, 0], "NaN")])
def test_paired_tests_reject_bad_input_with_a_named_problem(x, y, match):
    for fn in (stats.mcnemar_exact, stats.sign_flip_test, stats.wilcoxon_test, stats.bootstrap_mean_diff):
        with pytest.raises(ValueError, match=match):
            fn(x, y)


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_mean_diff_covers_known_difference_at_nominal_rate():
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        y = rng.normal(0.0, 1.0, 40)
        x = y + 0.3 + rng.normal(0.0, 1.0, 40)  # true mean difference 0.3
        hits += stats.bootstrap_mean_diff(x, y, n_resamples=499, seed=i).contains(0.3)
    assert 0.90 <= hits / 200 <= 0.99


def test_bootstrap_mean_diff_covers_known_difference_of_binary_scores():
    # ~30 discordant pairs per sample; with ~12 the BCa interval under-covers (about 0.88, see bootstrap_mean_diff)
    rng = np.random.default_rng(2)
    hits = 0
    for i in range(200):
        y = (rng.random(300) < 0.6).astype(float)
        flip = rng.random(300) < 0.2  # a flipped query is redrawn: right with prob 1/2 -> shift 0.2 (0.5 - 0.6)
        x = np.where(flip, (rng.random(300) < 0.5).astype(float), y)
        hits += stats.bootstrap_mean_diff(x, y, n_resamples=499, seed=i).contains(0.2 * (0.5 - 0.6))
    assert 0.90 <= hits / 200 <= 0.99


def test_bootstrap_saved_pct_covers_known_ratio_of_sums():
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(200):
        y = rng.gamma(2.0, 50.0, 40)
        x = y * rng.uniform(0.2, 0.6, 40)  # E[x] / E[y] = 0.4 -> 60 % saved
        hits += stats.bootstrap_saved_pct(x, y, n_resamples=499, seed=i).contains(60.0)
    assert 0.90 <= hits / 200 <= 0.99


def test_saved_pct_is_a_ratio_of_sums_not_a_mean_of_ratios():
    iv = stats.bootstrap_saved_pct([50, 50], [100, 300], n_resamples=99)
    assert iv.estimate == pytest.approx(75.0)  # 1 - 100/400; the mean of per-query savings would be 66.7


def test_bootstrap_of_a_constant_difference_is_the_point():
    iv = stats.bootstrap_mean_diff(np.ones(20), np.zeros(20), n_resamples=99)
    assert (iv.estimate, iv.low, iv.high, iv.method) == (1.0, 1.0, 1.0, "degenerate")


def test_bootstrap_is_reproducible_with_a_seed_and_varies_without_it():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=30), rng.normal(size=30)
    a = stats.bootstrap_mean_diff(x, y, n_resamples=199, seed=7)
    assert a == stats.bootstrap_mean_diff(x, y, n_resamples=199, seed=7)
    assert a != stats.bootstrap_mean_diff(x, y, n_resamples=199, seed=8)


def test_bootstrap_rejects_confidence_outside_unit_interval():
    with pytest.raises(ValueError, match="confidence must be in"):
        stats.bootstrap_mean_diff([1, 2], [0, 1], confidence=95)


# ---------------------------------------------------------------- permutation and rank tests
def test_sign_flip_gives_p_one_for_symmetric_zero_mean_differences():
    rng = np.random.default_rng(5)
    half = rng.integers(1, 10, size=20).astype(float)  # integers: the mean is exactly 0, not 1e-17
    d = np.concatenate([half, -half])  # every flip is at least as extreme as the observed 0
    y = rng.integers(0, 10, size=40).astype(float)
    assert stats.sign_flip_test(y + d, y, n_resamples=999).p_value == pytest.approx(1.0)


def test_sign_flip_gives_small_p_for_a_clear_shift():
    rng = np.random.default_rng(6)
    y = rng.normal(size=30)
    res = stats.sign_flip_test(y + 1.0 + rng.normal(size=30), y, n_resamples=999)
    assert res.p_value < 0.01 and res.statistic > 0.5


def test_sign_flip_enumerates_all_flips_for_small_samples():
    # 5 positive differences: only "no flip" and "flip all" are as extreme -> p = 2 / 2**5 exactly.
    res = stats.sign_flip_test([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert res.p_value == pytest.approx(2 / 32)


def test_wilcoxon_detects_a_shift_and_not_identity():
    rng = np.random.default_rng(7)
    y = rng.normal(size=30)
    assert stats.wilcoxon_test(y + 1.0 + 0.3 * rng.normal(size=30), y).p_value < 0.001
    assert stats.wilcoxon_test(y, y).p_value == 1.0


# ---------------------------------------------------------------- non-inferiority
def test_noninferiority_accepts_a_small_loss_inside_the_margin():
    rng = np.random.default_rng(8)
    y = rng.normal(size=400)
    x = y - 0.01 + 0.1 * rng.normal(size=400)  # true loss 0.01 < margin 0.05
    res = stats.noninferiority(x, y, margin=0.05, n_resamples=199)
    assert res.non_inferior and res.p_value < 0.05 and res.delta.low > -0.05


def test_noninferiority_rejects_a_loss_beyond_the_margin_even_if_not_significant():
    rng = np.random.default_rng(9)
    half = rng.uniform(0.1, 1.0, size=15)
    y = rng.normal(size=30)
    x = y - 0.05 + np.concatenate([half, -half])  # mean loss exactly 0.05, too noisy to be significant
    res = stats.noninferiority(x, y, margin=0.02, n_resamples=199)
    assert stats.sign_flip_test(x, y, n_resamples=999).p_value > 0.05
    assert not res.non_inferior and res.delta.low < -0.02


def test_tango_score_test_matches_a_hand_computed_case():
    # n = 100, b = 5, c = 10, margin 0.1: B = -15 - 0.1 * 205 = -35.5, C = 1.1, q = (35.5 + 19.5) / 400.
    q = 0.1375
    z = (5 - 10 + 10) / np.sqrt(100 * (2 * q - 0.1 * 1.1))
    assert stats.tango_noninferiority_p(5, 10, 100, 0.1) == pytest.approx(sps.norm.sf(z), rel=1e-12)


def test_tango_noninferiority_keeps_its_size_at_the_margin_on_binary_scores():
    """At the H0 boundary (true loss = margin) the one-sided 5 % test rejects about 5 % of the time."""
    rng = np.random.default_rng(10)
    n, margin, p21 = 200, 0.05, 0.10  # p12 = p21 - margin: the strategy loses exactly the margin
    draws = rng.multinomial(n, [p21 - margin, p21, 1 - 2 * p21 + margin], size=4000)
    rejected = np.mean([stats.tango_noninferiority_p(b, c, n, margin) < 0.05 for b, c, _ in draws])
    assert 0.03 < rejected < 0.07


def test_binary_noninferiority_uses_the_score_test_and_the_newcombe_interval():
    y = np.array([1] * 60 + [0] * 40)
    x = y.copy()
    x[:3] = 0  # three losses, one win: Δ = -0.02
    x[60] = 1
    res = stats.noninferiority(x, y, margin=0.1)
    assert res.test == "tango_score_one_sided" and res.delta.method == "newcombe_score"
    assert res.non_inferior and res.delta.low > -0.1
    assert not stats.noninferiority(x, y, margin=0.0).non_inferior


def test_noninferiority_rejects_a_negative_margin():
    with pytest.raises(ValueError, match="margin must be >= 0"):
        stats.noninferiority([1, 0], [1, 1], margin=-0.1)


# ---------------------------------------------------------------- multiple comparisons
P = [0.01, 0.04, 0.03, 0.005]


def test_holm_matches_hand_computed_and_statsmodels():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    adj = stats.adjust_pvalues(P, "holm")
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(adj, multipletests(P, method="holm")[1])


def test_benjamini_hochberg_matches_hand_computed_and_statsmodels():
    # sorted p * 4 / rank = 0.02, 0.02, 0.04, 0.04 -> running min from the top leaves them unchanged
    adj = stats.adjust_pvalues(P, "fdr_bh")
    np.testing.assert_allclose(adj, [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adj, multipletests(P, method="fdr_bh")[1])


def test_adjust_pvalues_keeps_nan_out_of_the_family():
    adj = stats.adjust_pvalues([np.nan, 0.01, np.nan, 0.04], "holm")
    assert np.isnan(adj[[0, 2]]).all()
    np.testing.assert_allclose(adj[[1, 3]], [0.02, 0.04])


@pytest.mark.parametrize("method", ["hs", "bonferoni", "BH"])
def test_adjust_pvalues_rejects_unknown_methods(method):
    with pytest.raises(ValueError, match=f"unknown correction method '{method}'; choose from holm, fdr_bh"):
        stats.adjust_pvalues(P, method)


def test_stars_thresholds():
    assert [stats.stars(p) for p in (0.0009, 0.001, 0.009, 0.01, 0.049, 0.05, np.nan)] == [
        "***",
        "**",
        "**",
        "*",
        "*",
        "",
        "",
    ]


@pytest.mark.parametrize("n, p10, p01", [(120, 0.08, 0.02), (300, 0.05, 0.01), (120, 0.03, 0.0), (256, 0.02, 0.02)])
def test_paired_proportion_interval_covers_the_true_difference_at_the_nominal_rate(n, p10, p01):
    """Few discordant pairs, or none on one side: where bootstrap and conditional intervals under-cover."""
    rng = np.random.default_rng(0)
    cells = rng.multinomial(n, [0.5, p10, p01, 0.5 - p10 - p01], size=1000)
    hits = 0
    for a, b, c, d in cells:
        x = np.repeat([1.0, 1.0, 0.0, 0.0], [a, b, c, d])
        y = np.repeat([1.0, 0.0, 1.0, 0.0], [a, b, c, d])
        iv = stats.paired_proportion_diff(x, y)
        assert iv.estimate == pytest.approx((b - c) / n) and iv.low <= iv.estimate <= iv.high
        hits += iv.contains(p10 - p01)
    assert hits / 1000 >= 0.93  # 95 % nominal; binomial standard error of the rate ~0.007


def test_paired_proportion_interval_is_wider_with_fewer_queries_and_rejects_non_binary():
    x, y = np.array([1, 1, 0, 1, 0] * 4, float), np.array([1, 0, 0, 1, 1] * 4, float)
    small, large = stats.paired_proportion_diff(x, y), stats.paired_proportion_diff(np.tile(x, 10), np.tile(y, 10))
    assert small.method == "newcombe_score" and small.estimate == pytest.approx(large.estimate) == 0.0
    assert small.high - small.low > large.high - large.low > 0
    with pytest.raises(ValueError, match=r"binary scores.*\[0.5\]"):
        stats.paired_proportion_diff([0.5, 1], [1, 1])
