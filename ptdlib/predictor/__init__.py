"""AdaRLP (Predict-then-Diffuse): predict the response length before generation, add a calibrated margin.

* :mod:`~ptdlib.predictor.features` -- prompt text statistics and the D-LLM's own prompt states;
* :mod:`~ptdlib.predictor.regressors` -- :class:`LengthPredictor` (ridge / boosted trees on log length),
  its analytic cost and :func:`predictor_cost_report`;
* :mod:`~ptdlib.predictor.conformal` -- the conformal maths the margin rules share (checks, bound ->
  canvas, scores, quantile, split conformal);
* :mod:`~ptdlib.predictor.calibration` -- margin rules fitted on ``calib``: Predict-then-Diffuse's
  percentile, split conformal (additive or log), cost-optimal; :func:`calibrate` builds them by name from
  the registry :data:`MARGIN_METHODS` (:func:`register_margin` adds one);
* :mod:`~ptdlib.predictor.online` -- adaptive conformal inference for a drifting stream;
* :mod:`~ptdlib.predictor.training` -- fit, evaluate and save (``ptd train-predictor``).

A canvas policy uses them as::

    predictor = LengthPredictor.load(dir)
    pred = predictor.predict_prompts(queries, lm, callbacks)          # the counted predictor pass
    rule = calibrate("conformal", calib_pred, calib_lengths, alpha=0.05,
                     calib_queries=calib, test_queries=test)
    canvases = rule.canvas(pred, max_canvas=128, round_to=32)
"""

from ptdlib.predictor.calibration import (
    MARGIN_METHODS,
    PRICED_RECOVERIES,
    AdditiveMargin,
    CostOptimalMargin,
    FixedMargin,
    PercentileMargin,
    calibrate,
    check_disjoint,
    expected_cost,
    margin_parameters,
    quadratic_cost,
    register_margin,
)
from ptdlib.predictor.conformal import (
    ConformalMargin,
    MarginRule,
    canvas_from_upper,
    conformal_quantile,
    truncation_rate,
)
from ptdlib.predictor.features import FEATURE_GROUPS, FeatureExtractor, FeatureSet, prompt_representation
from ptdlib.predictor.online import AdaptiveConformalMargin
from ptdlib.predictor.regressors import REGRESSORS, LengthPredictor, PredictorConfig, predictor_cost_report

__all__ = [
    "FEATURE_GROUPS",
    "MARGIN_METHODS",
    "PRICED_RECOVERIES",
    "REGRESSORS",
    "AdaptiveConformalMargin",
    "AdditiveMargin",
    "ConformalMargin",
    "CostOptimalMargin",
    "FeatureExtractor",
    "FeatureSet",
    "FixedMargin",
    "LengthPredictor",
    "MarginRule",
    "PercentileMargin",
    "PredictorConfig",
    "calibrate",
    "canvas_from_upper",
    "check_disjoint",
    "conformal_quantile",
    "expected_cost",
    "margin_parameters",
    "predictor_cost_report",
    "prompt_representation",
    "quadratic_cost",
    "register_margin",
    "truncation_rate",
]
