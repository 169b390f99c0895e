"""Calibrated SmartCrop: the conformal pad's coverage on synthetic EOS curves, and its plumbing."""

import math

import numpy as np
import pytest

from ptdlib.canvas import CalibratedSmartCrop, CanvasLimits, make_policy
from ptdlib.canvas.smartcrop_conformal import crossing_estimate
from ptdlib.predictor import truncation_rate

L = 256  # positions of the synthetic EOS curves; the cap never binds for the lengths drawn below
LIMITS = CanvasLimits(max_canvas=L, round_to=1)


def _curves(rng, n):
    """Synthetic (EOS curve, own length) pairs: the curve's step sits near the length, with noise and a bias.

    p_eos[i] is a logistic step at ``length + shift`` (shift ~ N(-2, 3): the probe tends to under-estimate), so
    raw SmartCrop truncates often and only a calibrated pad can bring truncation down to α.
    """
    lengths = rng.integers(5, 120, size=n)
    centre = lengths + rng.normal(-2.0, 3.0, size=n)
    pos = np.arange(L)[None, :]
    p = 1.0 / (1.0 + np.exp(-(pos - centre[:, None]) * 2.0))
    return p, lengths


@pytest.mark.parametrize("alpha", [0.02, 0.1])
def test_calibrated_crop_truncation_is_within_the_conformal_guarantee(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    reps, n, m = 100, 300, 1000
    miss = []
    for _ in range(reps):
        p, y = _curves(rng, n + m)
        crop = CalibratedSmartCrop(alpha=alpha, tau=0.9).calibrate(p[:n], y[:n])
        miss.append(truncation_rate(crop.canvases(p[n:], LIMITS), y[n:]))
    se = math.sqrt(alpha * (1 - alpha) * (1 / (n + 2) + 1 / m) / reps)
    assert np.mean(miss) <= alpha + 1 / (n + 1) + 4 * se
    # Integer estimates and lengths tie, so the rate may sit below α - 1/(n+1); it must still not be absurd.
    assert np.mean(miss) >= alpha / 2


def test_uncalibrated_threshold_misses_far_more_than_alpha_on_a_biased_probe():
    # The contrast that motivates calibration: the same curves cropped at tau with no pad.
    p, y = _curves(np.random.default_rng(0), 2000)
    raw = crossing_estimate(p, 0.9, "running_max") + 1
    assert truncation_rate(raw, y) > 0.3


def test_pad_is_negative_when_the_probe_over_estimates():
    y = np.full(200, 20)
    p = np.zeros((200, 64))
    p[:, 25:] = 1.0  # crossing at 25, five tokens late for every query
    crop = CalibratedSmartCrop(alpha=0.1).calibrate(p, y)
    assert crop.margin.margin == -5.0
    assert crop.canvases(p[:1], CanvasLimits(max_canvas=64, round_to=8)).tolist() == [24]  # 20 + EOS -> 3 blocks


def test_crossing_estimate_is_the_canvas_length_when_never_crossed():
    p = np.array([[0.1, 0.2, 0.95, 0.1], [0.1, 0.1, 0.1, 0.1]])
    assert crossing_estimate(p, 0.9, "running_max").tolist() == [2.0, 4.0]


def test_choose_before_calibration_is_an_error_naming_fit():
    with pytest.raises(ValueError, match="not calibrated: call fit"):
        CalibratedSmartCrop().canvases(np.zeros((1, 8)), CanvasLimits(max_canvas=8, round_to=8))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"alpha": 0.0}, r"alpha must be in \(0, 1\), got 0.0"),
        ({"tau": 1.5}, r"tau must be in \(0, 1\], got 1.5"),
        ({"rule": "sum"}, "unknown SmartCrop rule 'sum'"),
    ],
)
def test_bad_parameters_are_rejected_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        make_policy("smartcrop_conformal", **params)


def test_fit_probes_calib_and_choose_counts_one_probe_per_query(tiny_lm, counter):
    from ptdlib.cost.flops import FlopLedger
    from ptdlib.tasks import make_split

    calib, test = make_split("calib", 40, seed=3), make_split("test", 3, seed=3)
    limits = CanvasLimits(max_canvas=64, round_to=8)
    crop = CalibratedSmartCrop(alpha=0.1).fit(tiny_lm, [], [], calib, [5] * len(calib), limits)
    ledger = FlopLedger(counter)
    canvases = crop.choose(tiny_lm, test, limits, [ledger])
    assert all(c % 8 == 0 and 8 <= c <= 64 for c in canvases)
    assert all(set(k) == {"probe"} for k in ledger.per_query().values()) and len(ledger.per_query()) == 3
    with pytest.raises(ValueError, match="overlaps test"):
        crop.choose(tiny_lm, calib[:2], limits)
