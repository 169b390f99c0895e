"""The hybrid predictor's probe features: SmartCrop's EOS curve summarised, its pass counted as a probe."""

import numpy as np
import pytest

from ptdlib.canvas import CanvasLimits, PredictedCanvas
from ptdlib.cost.flops import FlopLedger
from ptdlib.predictor import FeatureSet
from ptdlib.predictor.probe import PROBE_FEATURES, probe_features
from ptdlib.tasks import make_split


def test_a_sharp_end_at_position_five_reads_five_everywhere():
    p = np.zeros((1, 12))
    p[0, 5:] = 1.0
    f = dict(zip(PROBE_FEATURES, probe_features(p)[0]))
    assert (f["probe_tau50"], f["probe_tau90"], f["probe_tau99"], f["probe_product90"]) == (5, 5, 5, 5)
    assert f["probe_expected"] == 5 and f["probe_peak"] == 1
    assert f["log1p_probe_tau90"] == pytest.approx(np.log1p(5))


def test_a_soft_curve_orders_the_thresholds_and_never_crossing_reads_the_canvas():
    p = np.array([[0.0, 0.2, 0.6, 0.5, 0.95, 0.995, 0.999], [0.1] * 7])
    f = probe_features(p)
    names = list(PROBE_FEATURES)
    assert f[0, names.index("probe_tau50")] == 2 and f[0, names.index("probe_tau90")] == 4
    assert f[0, names.index("probe_tau99")] == 5
    assert f[0, names.index("probe_product90")] == 4  # 1 - 1·0.8·0.4·0.5·0.05 = 0.996 at 4 (0.84 at 3)
    assert f[1, names.index("probe_tau50")] == 7  # never crosses: the canvas length
    assert f[0, names.index("probe_expected")] == pytest.approx(1 + 0.8 + 0.4 + 0.4 + 0.05 + 0.005 + 0.001)


def test_probe_group_needs_the_model_and_is_a_named_group():
    assert FeatureSet(groups=("text", "probe")).groups == ("text", "probe")
    with pytest.raises(ValueError, match="probe_canvas must be an integer >= 1"):
        FeatureSet(groups=("probe",), probe_canvas=0)


def test_hybrid_predictor_charges_one_probe_pass_per_served_query(tiny_lm, counter):
    train, calib, test = make_split("train", 24, seed=4), make_split("calib", 24, seed=4), make_split("test", 3, seed=4)
    limits = CanvasLimits(max_canvas=128, round_to=8)
    pol = PredictedCanvas(margin="conformal", alpha=0.1, features="text+probe")
    pol.fit(tiny_lm, train, [5 + i % 7 for i in range(24)], calib, [5 + i % 5 for i in range(24)], limits)
    assert pol.predictor.extractor.feature_names[-len(PROBE_FEATURES) :] == list(PROBE_FEATURES)
    ledger = FlopLedger(counter)
    canvases = pol.choose(tiny_lm, test, limits, [ledger])
    assert all(c % 8 == 0 for c in canvases)
    per = ledger.per_query()
    P = max(len(tiny_lm.encode_prompt(q.prompt)) for q in test)
    assert all(per[q.qid] == {"probe": counter.forward_flops(P + 128)} for q in test)
