"""Margins, regressors and paired tests are chosen by name from registries that a decorator fills."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from ptdlib.canvas import CanvasLimits
from ptdlib.canvas.predicted import PredictedCanvas
from ptdlib.predictor import (
    MARGIN_METHODS,
    REGRESSORS,
    LengthPredictor,
    MarginRule,
    PredictorConfig,
    calibrate,
    margin_parameters,
    register_margin,
)
from ptdlib.predictor.regressors import register_regressor
from ptdlib.registry import Registry
from ptdlib.stats.summary import CONTINUOUS_TESTS, QUALITY_DELTAS, summary_table


def test_an_unknown_name_fails_naming_it_and_the_registered_ones_in_order():
    widgets = Registry("widget")
    widgets.register("b")(len)
    widgets.register("a")(abs)
    assert widgets.lookup("a") is abs
    with pytest.raises(ValueError, match=r"^unknown widget 'c'; choose from b, a$"):
        widgets.lookup("c")
    with pytest.raises(ValueError, match=r"unknown widget \['a'\]; choose from b, a"):
        widgets.check(["a"])  # an unhashable value is a wrong name, not a TypeError


def test_registering_a_name_twice_is_refused():
    widgets = Registry("widget")
    widgets.register("a")(len)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        widgets.register("a")(abs)
    assert widgets["a"] is len


def test_the_shipped_choices_are_registered_in_their_documented_order():
    assert list(MARGIN_METHODS) == ["percentile", "conformal", "conformal_log", "cost_optimal", "aci"]
    assert list(REGRESSORS) == ["ridge_log", "gbm_quantile", "gbm_log"]
    assert list(CONTINUOUS_TESTS) == ["sign_flip", "wilcoxon"]
    assert list(QUALITY_DELTAS) == ["points", "relative"]


def test_each_margin_reads_only_its_own_parameters():
    assert margin_parameters("percentile") == ["percentile"]
    assert margin_parameters("conformal") == margin_parameters("conformal_log") == ["alpha"]
    assert margin_parameters("aci") == ["alpha", "gamma", "window", "scale"]
    assert {"max_canvas", "round_to", "recovery", "early_stop"} <= set(margin_parameters("cost_optimal"))
    with pytest.raises(ValueError, match="unknown margin method 'x'; choose from percentile, conformal"):
        margin_parameters("x")


@dataclass(frozen=True)
class _ScaledMargin(MarginRule):
    factor: float

    def upper(self, predictions):
        return self.factor * np.asarray(predictions, dtype=float)


@pytest.fixture
def scaled_margin():
    """A margin registered for one test: ``U = factor · pred``, factor = max(length / pred) on calib."""

    @register_margin("scaled")
    def _fit_scaled(predictions, lengths, alpha: float = 0.05) -> _ScaledMargin:
        return _ScaledMargin(float(np.max(np.asarray(lengths) / np.maximum(predictions, 1))))

    yield "scaled"
    MARGIN_METHODS.pop("scaled")


def test_a_registered_margin_is_built_by_calibrate_and_by_the_predicted_policy(scaled_margin):
    rule = calibrate(scaled_margin, [10.0, 20.0], [15.0, 20.0])
    assert rule == _ScaledMargin(1.5)
    assert rule.canvas([10.0], max_canvas=64, round_to=8).tolist() == [16]  # floor(15) + 1 = 16
    policy = PredictedCanvas(margin=scaled_margin, alpha=0.2, percentile=50.0)
    assert policy.params()["alpha"] == 0.2 and "percentile" not in policy.params()
    assert policy._margin_params(CanvasLimits(), np.array([3]), "max", sampler=None) == {"alpha": 0.2}


def test_a_registered_regressor_is_fitted_and_priced():
    from sklearn.linear_model import LinearRegression

    register_regressor("ols_log", flops=lambda model, cfg, d: {"model_flops": 2.0 * d, "n_weights": d})(
        lambda cfg: LinearRegression()
    )
    try:
        X = np.arange(12, dtype=float).reshape(6, 2)
        y = np.expm1(X[:, 0] / 10 + X[:, 1] / 20)  # log1p(y) is linear in X: OLS recovers it
        predictor = LengthPredictor(PredictorConfig(regressor="ols_log")).fit(X, y)
        np.testing.assert_allclose(predictor.predict(X), y, rtol=1e-9)
        assert predictor.model_flops() == {"model_flops": 4.0, "text_ops_per_word": 0.0, "n_weights": 2}
    finally:
        REGRESSORS.pop("ols_log")
    with pytest.raises(ValueError, match="unknown regressor 'ols_log'; choose from ridge_log, gbm_quantile, gbm_log"):
        PredictorConfig(regressor="ols_log")


@pytest.mark.parametrize(
    "option, message",
    [
        ({"continuous_test": "ttest"}, "unknown continuous test 'ttest'; choose from sign_flip, wilcoxon"),
        ({"quality_delta": "ratio"}, "unknown quality delta 'ratio'; choose from points, relative"),
    ],
)
def test_summary_table_names_an_unknown_test_or_delta(option, message):
    with pytest.raises(ValueError, match=message):
        summary_table(pd.DataFrame(), correction="holm", **option)
