"""Length margins under distribution shift: static rules calibrated once vs adaptive conformal inference.

A margin calibrated on ``calib`` promises a truncation rate only for queries exchangeable with ``calib``
(split conformal: Lei et al., JASA 2018; Angelopoulos & Bates, 2021). The shifted splits of the synthetic
suite break that on purpose: longer arguments (``shift_length``), other family proportions (``shift_mix``)
and a family no split trains on (``heldout_family``). This module measures what each rule realises there:

* :func:`static_rules` fits Predict-then-Diffuse's percentile margin and the additive / log split conformal
  margins on calib (:func:`ptdlib.predictor.calibrate`);
* :func:`evaluate_rules` serves each split with each rule and reports truncation, re-runs and FLOPs (the
  analytic cost of :mod:`ptdlib.analysis.margins`);
* :func:`drift_stream` chains splits into one stream that drifts, :func:`serve_stream` serves it query by
  query with a static rule or with :class:`~ptdlib.predictor.AdaptiveConformalMargin` (Gibbs & Candès,
  "Adaptive conformal inference under distribution shift", NeurIPS 2021), which updates its level after
  each query from the truncation it observed, and :func:`running_rate` smooths the resulting miss indicator.

Truncation uses the label model of :mod:`ptdlib.analysis.margins`: a canvas ``c`` truncates a query whose
own length (at the maximum canvas) is ``≥ c``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptdlib.analysis.margins import policy_outcome, reference_flops
from ptdlib.canvas.base import CanvasLimits
from ptdlib.predictor import AdaptiveConformalMargin, calibrate, margin_parameters
from ptdlib.sampling.sampler import SamplerConfig

#: Static margin methods compared here, with the parameter each takes.
STATIC_METHODS = ("percentile", "conformal", "conformal_log")
#: Columns a frame of queries must have (one row per query, as :func:`ptdlib.analysis.margins.run_predictions`).
QUERY_COLUMNS = ("split", "prediction", "own_length", "prompt_len")


def _check_queries(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise ValueError(f"{what}: expected a non-empty DataFrame of queries")
    missing = [c for c in QUERY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; have {list(frame.columns)}")
    return frame


def static_rules(calib: pd.DataFrame, *, alpha: float = 0.05, percentile: float = 90.0, methods=STATIC_METHODS) -> dict:
    """Margin rules fitted on calib predictions and own lengths: {method: MarginRule}."""
    _check_queries(calib, "calib")
    bad = [m for m in methods if m not in STATIC_METHODS]
    if bad or not methods:
        raise ValueError(
            f"static methods must be a non-empty subset of {', '.join(STATIC_METHODS)}, got {list(methods)}"
        )
    out = {}
    for m in methods:
        params = {k: v for k, v in (("percentile", percentile), ("alpha", alpha)) if k in margin_parameters(m)}
        out[m] = calibrate(m, calib["prediction"].to_numpy(), calib["own_length"].to_numpy(), **params)
    return out


def evaluate_rules(
    rules: dict,
    queries: pd.DataFrame,
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 32,
    chunk_size: int | None = None,
    recovery: str = "max",
) -> pd.DataFrame:
    """One row per (split, method): truncation, re-run rate, mean canvas and FLOPs of serving the split.

    ``flops_vs_fixed`` and ``flops_vs_oracle`` divide the method's total FLOPs (re-runs and the predictor
    pass in ``flops_predictor``, if that column is present, included) by the fixed maximum canvas's and the
    oracle's on the same queries.
    """
    _check_queries(queries, "queries")
    kw = dict(limits=limits, sampler=sampler, batch_size=batch_size, chunk_size=chunk_size)
    rows = []
    for split, g in queries.groupby("split", sort=False):
        ref = reference_flops(g["own_length"], g["prompt_len"], counter, **kw)
        extra = g["flops_predictor"].to_numpy() if "flops_predictor" in g else 0
        for method, rule in rules.items():
            c = rule.canvas(g["prediction"].to_numpy(), limits.max_canvas, limits.round_to)
            out = policy_outcome(
                c, g["own_length"], g["prompt_len"], counter, recovery=recovery, extra_flops=extra, **kw
            )
            total = out["flops_total"].sum()
            rows.append(
                {
                    "split": split,
                    "method": method,
                    "alpha": getattr(rule, "alpha", np.nan),
                    "n": len(g),
                    "truncation": out["truncated"].mean(),
                    "rerun_rate": (out["reruns"] > 0).mean(),
                    "mean_canvas": out["chosen_canvas"].mean(),
                    "flops_vs_fixed": total / ref["fixed"].sum(),
                    "flops_vs_oracle": total / ref["oracle"].sum(),
                }
            )
    return pd.DataFrame(rows)


def drift_stream(queries: pd.DataFrame, order) -> pd.DataFrame:
    """The queries of the splits in ``order``, one split after the other: a stream whose distribution drifts.

    Adds ``t`` (position in the stream) and keeps ``split`` as the segment label.
    """
    _check_queries(queries, "queries")
    order = list(order)
    unknown = [s for s in order if s not in set(queries["split"])]
    if not order or unknown:
        raise ValueError(
            f"stream order must name splits present in the queries ({sorted(set(queries['split']))}), got {order}"
        )
    stream = pd.concat([queries[queries["split"] == s] for s in order], ignore_index=True)
    stream.insert(0, "t", np.arange(len(stream)))
    return stream


def serve_stream(stream: pd.DataFrame, rule, *, limits: CanvasLimits = CanvasLimits()) -> pd.DataFrame:
    """Serve ``stream`` query by query with ``rule``; per query the canvas, the miss and the rule's state.

    A static rule serves every query with the same margin. An :class:`AdaptiveConformalMargin` serves query
    ``t`` with its current bound, then observes the query's own length and updates with the canvas it served
    (``err_t = 1{length ≥ canvas}``), so it steers the realised truncation rate towards its ``α``. Columns:
    ``t``, ``split``, ``canvas``, ``miss``, ``margin`` (the rule's margin when serving), ``level`` (ACI's
    ``α_t``; the nominal level of a static conformal rule; NaN otherwise).
    """
    _check_queries(stream, "stream")
    pred, y = stream["prediction"].to_numpy(dtype=float), stream["own_length"].to_numpy(dtype=float)
    online = isinstance(rule, AdaptiveConformalMargin)
    canvas, miss, margin, level = (
        np.zeros(len(stream), dtype=np.int64),
        np.zeros(len(stream), dtype=bool),
        np.zeros(len(stream)),
        np.zeros(len(stream)),
    )
    for t in range(len(stream)):
        c = int(rule.canvas(pred[t : t + 1], limits.max_canvas, limits.round_to)[0])
        canvas[t], miss[t] = c, y[t] >= c
        margin[t] = rule.margin() if online else getattr(rule, "margin", np.nan)
        level[t] = rule.alpha_t if online else getattr(rule, "alpha", np.nan)
        if online:
            rule.update(pred[t], y[t], canvas=c)
    return pd.DataFrame(
        {
            "t": stream["t"] if "t" in stream else np.arange(len(stream)),
            "split": stream["split"],
            "canvas": canvas,
            "miss": miss,
            "margin": margin,
            "level": level,
        }
    )


def running_rate(miss, window: int) -> np.ndarray:
    """Trailing mean of a 0/1 sequence over the last ``window`` items (fewer at the start)."""
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    x = np.asarray(miss, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def stream_table(
    served: dict,
    stream: pd.DataFrame,
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 32,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """One row per (method, split) and per method over the whole stream (split ``"all"``): truncation and FLOPs.

    ``served`` maps a method name to the output of :func:`serve_stream` on ``stream``.
    """
    kw = dict(limits=limits, sampler=sampler, batch_size=batch_size, chunk_size=chunk_size)
    ref = reference_flops(stream["own_length"], stream["prompt_len"], counter, **kw)
    extra = stream["flops_predictor"].to_numpy() if "flops_predictor" in stream else 0
    rows = []
    for method, s in served.items():
        if len(s) != len(stream):
            raise ValueError(f"method {method!r} served {len(s)} queries, the stream has {len(stream)}")
        out = policy_outcome(s["canvas"], stream["own_length"], stream["prompt_len"], counter, extra_flops=extra, **kw)
        out["split"] = stream["split"].to_numpy()
        for split, g in [("all", out), *out.groupby("split", sort=False)]:
            sel = g.index
            rows.append(
                {
                    "method": method,
                    "split": split,
                    "n": len(g),
                    "truncation": g["truncated"].mean(),
                    "rerun_rate": (g["reruns"] > 0).mean(),
                    "mean_canvas": g["chosen_canvas"].mean(),
                    "flops_vs_fixed": g["flops_total"].sum() / ref["fixed"][sel].sum(),
                    "flops_vs_oracle": g["flops_total"].sum() / ref["oracle"][sel].sum(),
                }
            )
    return pd.DataFrame(rows)


def aci_rule(
    calib: pd.DataFrame, *, alpha: float = 0.05, gamma: float = 0.02, window: int = 300, scale: str = "additive"
) -> AdaptiveConformalMargin:
    """A fresh :class:`AdaptiveConformalMargin` started from the calib scores."""
    _check_queries(calib, "calib")
    return AdaptiveConformalMargin.from_calibration(
        calib["prediction"].to_numpy(),
        calib["own_length"].to_numpy(),
        alpha=alpha,
        gamma=gamma,
        window=window,
        scale=scale,
    )
