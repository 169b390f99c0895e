"""Margin rules: conformal guarantees on synthetic exchangeable data, ACI under a shift, hand-computed cases."""

import math

import numpy as np
import pytest

from ptdlib.predictor import (
    AdaptiveConformalMargin,
    ConformalMargin,
    CostOptimalMargin,
    FixedMargin,
    PercentileMargin,
    calibrate,
    canvas_from_upper,
    check_disjoint,
    conformal_quantile,
    expected_cost,
    quadratic_cost,
    truncation_rate,
)
from ptdlib.tasks import Query, make_split

MAX = 10**6  # a cap that never binds, so that the guarantee is tested on the bound itself


def _stream(rng, shape):
    """Exchangeable (prediction, length) pairs: lognormal lengths, a noisy log-scale predictor."""
    mu = rng.normal(3.0, 0.5, size=shape)
    lengths = np.round(np.exp(mu + rng.normal(0.0, 0.3, size=shape)))
    preds = np.exp(mu + rng.normal(0.0, 0.1, size=shape))
    return preds, lengths


# ---------------------------------------------------------------- conformal
def test_conformal_quantile_uses_finite_sample_rank():
    scores = np.arange(1, 100)  # n = 99
    assert conformal_quantile(scores, 0.1) == 90  # ceil(100 · 0.9) = 90th smallest, despite float rounding
    assert conformal_quantile(np.arange(1, 10), 0.05) == math.inf  # ceil(10 · 0.95) = 10 > n = 9
    assert conformal_quantile([5.0, 1.0, 3.0], 0.5) == 3.0  # ceil(4 · 0.5) = 2nd smallest


@pytest.mark.parametrize("scale", ["additive", "log"])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_conformal_truncation_rate_is_within_guarantee(alpha, scale):
    rng = np.random.default_rng(int(alpha * 1000))
    reps, n, m = 200, 500, 2000
    preds, lengths = _stream(rng, (reps, n + m))
    miss = []
    for r in range(reps):
        rule = ConformalMargin.fit(preds[r, :n], lengths[r, :n], alpha=alpha, scale=scale)
        miss.append(truncation_rate(rule.canvas(preds[r, n:], max_canvas=MAX), lengths[r, n:]))
    # Noise: the miss rate given one calib draw varies (Beta, var ≈ α(1-α)/(n+2)); plus binomial test noise.
    se = math.sqrt(alpha * (1 - alpha) * (1 / (n + 2) + 1 / m) / reps)
    assert np.mean(miss) <= alpha + 1 / (n + 1) + 4 * se
    assert np.mean(miss) >= alpha - 1 / (n + 1) - 4 * se  # valid, and not absurdly conservative
    # Without ties the marginal miss rate is exactly 1 - k/(n+1), k = ceil((n+1)(1-α)): catches off-by-ones.
    exact = 1 - math.ceil((n + 1) * (1 - alpha) - 1e-9) / (n + 1)
    assert abs(np.mean(miss) - exact) <= 4 * se


def test_conformal_margin_may_shrink_an_over_predicting_predictor():
    lengths = np.full(200, 10.0)
    rule = ConformalMargin.fit(lengths + 5.0, lengths, alpha=0.1)
    assert rule.margin == -5.0
    assert rule.canvas([15.0], max_canvas=128).tolist() == [11]


def test_too_few_calibration_points_give_the_maximum_canvas():
    rule = ConformalMargin.fit([1.0, 2.0, 3.0], [1, 2, 3], alpha=0.01)
    assert rule.margin == math.inf
    assert rule.canvas([1.0, 50.0], max_canvas=128, round_to=32).tolist() == [128, 128]


# ---------------------------------------------------------------- canvases
def test_canvas_leaves_room_for_eos_and_rounds_up_to_blocks():
    assert canvas_from_upper([10.0, 10.5, 0.0], max_canvas=128).tolist() == [11, 11, 1]
    assert canvas_from_upper([10.0, 31.0, 31.5, 32.0], max_canvas=128, round_to=32).tolist() == [32, 32, 32, 64]
    assert canvas_from_upper([500.0, math.inf, -math.inf], max_canvas=128, round_to=32).tolist() == [128, 128, 32]
    assert canvas_from_upper([99.0], max_canvas=100, round_to=32).tolist() == [100]  # the cap wins


def test_truncation_means_no_room_for_eos():
    assert truncation_rate([10, 10, 10, 10], [8, 9, 10, 11]) == 0.5


# ---------------------------------------------------------------- Predict-then-Diffuse percentile
def test_percentile_rule_uses_positive_residuals_only():
    preds = [10, 10, 10, 10, 10, 10]
    lengths = [8, 11, 13, 15, 17, 10]  # residuals -2, 1, 3, 5, 7, 0 -> positive: 1, 3, 5, 7
    rule = PercentileMargin.fit(preds, lengths, percentile=50)
    assert rule.margin == pytest.approx(4.0)  # linear-interpolated median of 1, 3, 5, 7
    assert (rule.n, rule.n_positive) == (6, 4)
    assert PercentileMargin.fit(preds, lengths, percentile=100).margin == 7.0
    assert PercentileMargin.fit([10, 10], [5, 10], percentile=90).margin == 0.0  # no under-prediction
    assert rule.canvas([10.0], max_canvas=128).tolist() == [15]  # U = 14 -> 14 tokens + EOS


# ---------------------------------------------------------------- cost-optimal
def _heavy_tail_case():
    """pred = 10; residual e ∈ {0..8} (1/10 each) or 80 (1/10). Linear cost c(L) = L, re-run at 100 costs 100.

    Canvas(m) = 11 + m; truncated iff e ≥ m + 1. cost(m) = 101 - 9m for m ≤ 7, cost(8) = 19 + 10 = 29,
    then 21 + m up to m = 79, and min(11 + m, 100) beyond: the optimum is m = 8 (cost 29).
    """
    e = np.array(list(range(9)) + [80] * 1, dtype=float)
    lengths = np.tile(10 + e, 10)
    return np.full_like(lengths, 10.0), lengths


def test_cost_optimal_margin_matches_hand_computed_optimum():
    preds, lengths = _heavy_tail_case()
    linear = lambda L, P: np.asarray(L, float)  # noqa: E731
    rule = CostOptimalMargin.fit(preds, lengths, max_canvas=100, cost_fn=linear, recovery="max")
    costs = dict(zip(rule.margins, rule.expected_costs))
    assert rule.margin == 8.0
    assert costs[8.0] == pytest.approx(29.0)
    assert costs[0.0] == pytest.approx(101.0) and costs[100.0] == pytest.approx(100.0)
    assert costs[8.0] < min(costs[0.0], costs[100.0])  # beats no margin and a huge margin


def test_quadratic_cost_is_canvas_times_prompt_plus_canvas():
    assert quadratic_cost(np.array([32, 64]), np.array([10, 0])).tolist() == [32 * 42, 64 * 64]


def test_doubling_recovery_pays_every_attempt():
    # canvas 8, length 20: attempts at 8 (truncated), 16 (truncated), 32 (fits): cost 8 + 16 + 32 (linear).
    linear = lambda L, P: np.asarray(L, float)  # noqa: E731
    assert expected_cost([8], [20], [0], linear, max_canvas=128, recovery="double") == 56.0
    assert expected_cost([8], [20], [0], linear, max_canvas=24, recovery="double") == 8 + 16 + 24  # capped
    assert expected_cost([8], [20], [0], linear, max_canvas=128, recovery="max") == 8 + 128


def test_extend_recovery_pays_only_the_new_positions():
    # canvas 8, length 20: 8 passes, then 8 new positions at canvas 16, then 16 new ones at canvas 32.
    linear = lambda L, P: np.asarray(L, float)  # noqa: E731  (one unit per pass)
    assert expected_cost([8], [20], [0], linear, max_canvas=128, recovery="extend") == 8 + 8 + 16
    # Quadratic: a pass at canvas L after a prompt P covers P + L positions.
    assert expected_cost([8], [12], [4], quadratic_cost, max_canvas=128, recovery="extend") == 8 * 12 + 8 * 20


def test_early_stop_pays_up_to_the_block_holding_eos():
    linear = lambda L, P: np.asarray(L, float)  # noqa: E731
    kw = dict(max_canvas=128, early_stop=True, block=32)
    assert expected_cost([64], [10], [0], linear, recovery="max", **kw) == 32  # EOS at 10: first block only
    assert expected_cost([64], [40], [0], linear, recovery="max", **kw) == 64  # EOS in the second block
    assert expected_cost([32], [40], [0], linear, recovery="max", **kw) == 32 + 64  # truncated, re-run stops at 64
    assert expected_cost([32], [40], [0], linear, recovery="extend", **kw) == 32 + 32
    with pytest.raises(ValueError, match="block length"):
        expected_cost([64], [10], [0], linear, early_stop=True)


def test_cost_optimal_margin_prices_the_recovery_it_is_fitted_for():
    preds, lengths = _heavy_tail_case()
    linear = lambda L, P: np.asarray(L, float)  # noqa: E731
    costs = {}
    for recovery in ("max", "double", "extend"):
        rule = CostOptimalMargin.fit(preds, lengths, max_canvas=100, cost_fn=linear, recovery=recovery)
        assert rule.recovery == recovery
        costs[recovery] = dict(zip(rule.margins, rule.expected_costs))
    # Margin 0: canvas 11, 90 % truncated. max: 11 + 0.9·100. double: e ≤ 8 pays 11 + 22, e = 80 pays
    # 11 + 22 + 44 + 88 + 100. extend: e ≤ 8 pays 11 + 11, e = 80 pays 11 + 11 + 22 + 44 + 12.
    assert costs["max"][0.0] == pytest.approx(101.0)
    assert costs["double"][0.0] == pytest.approx(0.1 * 11 + 0.8 * 33 + 0.1 * 265)
    assert costs["extend"][0.0] == pytest.approx(0.1 * 11 + 0.8 * 22 + 0.1 * 100)
    with pytest.raises(ValueError, match="cannot price recovery 'none'"):
        CostOptimalMargin.fit(preds, lengths, max_canvas=100, recovery="none")


# ---------------------------------------------------------------- adaptive conformal inference
def _shifted_stream(rng, t_before, t_after):
    e = np.concatenate([rng.normal(0, 2, t_before), rng.normal(8, 6, t_after)])
    return np.full(e.size, 50.0), np.clip(50.0 + e, 0, None)


def test_aci_miss_rate_returns_to_alpha_after_a_jump():
    rng = np.random.default_rng(0)
    alpha, calib_n, before, after = 0.1, 500, 1000, 5000
    preds, lengths = _shifted_stream(rng, calib_n + before, after)
    aci = AdaptiveConformalMargin.from_calibration(
        preds[:calib_n], lengths[:calib_n], alpha=alpha, gamma=0.01, window=300
    )
    static = ConformalMargin.fit(preds[:calib_n], lengths[:calib_n], alpha=alpha)
    static_miss = lengths[calib_n + before :] > static.upper(preds[calib_n + before :])
    for p, y in zip(preds[calib_n:], lengths[calib_n:]):
        aci.update(p, y)
    tail = np.mean(aci.errors[-2500:])
    assert static_miss.mean() > 0.5  # the shift breaks the static margin ...
    assert abs(tail - alpha) < 0.03  # ... while ACI's miss rate comes back near α
    assert abs(aci.miss_rate - alpha) <= aci.guarantee()  # Gibbs & Candès, Prop. 4.1 (deterministic)


def test_aci_extreme_levels_serve_infinite_and_empty_bounds():
    aci = AdaptiveConformalMargin(alpha=0.1, gamma=0.5)
    assert aci.margin() == math.inf  # no scores yet: cover everything
    aci.update(10.0, 12.0)  # covered (err 0): α_t = 0.1 + 0.05
    assert aci.errors == [0] and aci.alpha_t == pytest.approx(0.15)
    aci.alpha_t = 1.2
    assert aci.margin() == -math.inf
    assert aci.update(10.0, 0.0) == 1  # the empty bound misses even a zero length
    assert aci.canvas([10.0], max_canvas=128, round_to=32).tolist() == [32]


def test_aci_update_with_served_canvas_counts_observed_truncation():
    aci = AdaptiveConformalMargin(alpha=0.1, scores=[0.0] * 50)
    assert aci.update(5.0, 10.0, canvas=10) == 1  # no room for EOS
    assert aci.update(5.0, 9.0, canvas=10) == 0


# ---------------------------------------------------------------- the registry and bad inputs
def test_calibrate_builds_each_method_by_name():
    preds, lengths = _stream(np.random.default_rng(1), 300)
    assert isinstance(calibrate("percentile", preds, lengths, percentile=90), PercentileMargin)
    assert calibrate("conformal_log", preds, lengths, alpha=0.1).scale == "log"
    assert isinstance(calibrate("cost_optimal", preds, lengths, max_canvas=128, round_to=32), CostOptimalMargin)
    aci = calibrate("aci", preds, lengths, alpha=0.1, gamma=0.01)
    assert isinstance(aci, AdaptiveConformalMargin) and len(aci.scores) == 300
    with pytest.raises(ValueError, match="unknown margin method 'conformall'; choose from percentile"):
        calibrate("conformall", preds, lengths)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_open_unit_interval_is_rejected(alpha):
    with pytest.raises(ValueError, match=rf"alpha must be in \(0, 1\), got {alpha}"):
        ConformalMargin.fit([1.0, 2.0], [1, 2], alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be in"):
        AdaptiveConformalMargin(alpha=alpha)


@pytest.mark.parametrize("percentile", [-1, 100.5])
def test_percentile_outside_0_100_is_rejected(percentile):
    with pytest.raises(ValueError, match=rf"percentile must be in \[0, 100\], got {percentile}"):
        PercentileMargin.fit([1.0], [2], percentile=percentile)


def test_negative_margins_are_rejected():
    with pytest.raises(ValueError, match="margin must be a finite number of tokens >= 0, got -1"):
        FixedMargin(-1)
    with pytest.raises(ValueError, match="margins must be a non-empty grid of finite values >= 0"):
        CostOptimalMargin.fit([1.0], [2], max_canvas=8, margins=[-2, 0, 2])
    assert FixedMargin(3).canvas([4.0], max_canvas=128).tolist() == [8]


@pytest.mark.parametrize("gamma", [0, -0.01])
def test_gamma_must_be_positive(gamma):
    with pytest.raises(ValueError, match=f"gamma must be a finite number > 0, got {gamma}"):
        AdaptiveConformalMargin(alpha=0.1, gamma=gamma)


def test_empty_calibration_data_and_negative_lengths_are_rejected():
    with pytest.raises(ValueError, match="empty calibration data"):
        ConformalMargin.fit([], [], alpha=0.1)
    with pytest.raises(ValueError, match="empty calibration data"):
        PercentileMargin.fit([], [])
    with pytest.raises(ValueError, match=r"calibration lengths must be >= 0 tokens, got \[-3.0\]"):
        ConformalMargin.fit([1.0, 2.0], [1, -3], alpha=0.1)
    with pytest.raises(ValueError, match="got 2 predictions but 3 calibration lengths"):
        PercentileMargin.fit([1.0, 2.0], [1, 2, 3])


def test_calibration_overlapping_test_is_rejected_by_id_and_by_prompt():
    calib, test = make_split("calib", 40), make_split("test", 40)
    check_disjoint(calib, test)  # disjoint (closed-space families such as spell may share prompts)
    with pytest.raises(ValueError, match="shared query ids"):
        check_disjoint(calib + test[:1], test)
    relabelled = [Query(f"x-{i}", "calib", q.family, q.prompt, q.answer) for i, q in enumerate(test[:5])]
    with pytest.raises(ValueError, match="shared prompts"):
        check_disjoint(calib + relabelled, test)
    with pytest.raises(ValueError, match="come from the 'test' split"):
        check_disjoint([Query("x-1", "test", "count", "count from 1 to 3", "1 2 3")], test)
    with pytest.raises(ValueError, match="shared prompts"):
        check_disjoint(["count from 1 to 5"], ["count from 1 to 5"])  # plain prompt strings


def test_closed_prompt_space_families_are_exempt_from_the_text_check_only():
    a = Query("c-1", "calib", "spell", "spell banana", "b a n a n a")
    b = Query("t-1", "test", "spell", "spell banana", "b a n a n a")
    check_disjoint([a], [b])
    with pytest.raises(ValueError, match="shared prompts"):
        check_disjoint([a], [b], closed_families=())


def test_calibrate_checks_the_split_when_given_queries():
    test = make_split("test", 20)
    preds = np.arange(20, dtype=float)
    with pytest.raises(ValueError, match="shared query ids"):
        calibrate("conformal", preds, preds, alpha=0.1, calib_queries=test, test_queries=test)
    with pytest.raises(ValueError, match="without calib_queries"):
        calibrate("conformal", preds, preds, alpha=0.1, test_queries=test)


def test_no_rerun_is_charged_for_a_query_already_at_the_maximum_canvas():
    linear = lambda c, P: np.asarray(c, float)  # noqa: E731
    for recovery in ("max", "double"):
        assert expected_cost([128], [128], [0], linear, max_canvas=128, recovery=recovery) == 128.0


def test_log_scale_bound_at_a_calibration_point_serves_that_length_plus_eos():
    """expm1(log1p(p) + (log1p(y) - log1p(p))) can land just below y; the canvas must still hold y + EOS."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 60, 2000)
    y = rng.integers(0, 100, 2000).astype(float)
    upper = np.expm1(np.log1p(pred) + (np.log1p(y) - np.log1p(pred)))
    assert (upper < y).any()  # the float error this guards against does occur
    assert (canvas_from_upper(upper, 128) == y + 1).all()


def test_aci_counts_a_first_attempt_truncation_even_if_the_rerun_answer_is_short():
    aci = AdaptiveConformalMargin(alpha=0.1, gamma=0.05, scores=[0.0, 1.0, 2.0])
    assert aci.update(10.0, 5.0, canvas=32, missed=True) == 1  # the re-run's length 5 fits 32; the miss counts
    assert aci.update(10.0, 40.0, canvas=32) == 1 and aci.update(10.0, 5.0, canvas=32) == 0
    assert aci.alpha_t == pytest.approx(0.1 + 0.05 * (0.1 - 1) * 2 + 0.05 * 0.1)
