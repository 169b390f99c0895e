"""The AdaRLP length predictor on held-out queries: against the baselines, by feature set, and what it costs.

Predict-then-Diffuse (AdaRLP) predicts a D-LLM's own response length from the prompt before generating,
then adds a calibrated margin. This module answers three questions a notebook plots:

* how its point estimate compares with the heuristic baseline (a line in the prompt length, the paper's
  baseline) and with SmartCrop's probe estimate (:func:`heuristic_estimates`; the table itself is
  :func:`ptdlib.analysis.estimates.metrics_table`);
* which features carry the signal: prompt text statistics, the D-LLM's own prompt states, or both, under a
  linear and a boosted-tree regressor (:func:`feature_ablation`);
* whether the predictor pays for itself: its prompt pass plus regressor FLOPs as a fraction of the
  generation FLOPs its canvases save against the fixed maximum canvas (:func:`predictor_cost`, built on
  :func:`ptdlib.predictor.predictor_cost_report`; Predict-then-Diffuse reports this overhead as well below
  one percent).

Generation FLOPs here are priced from the canvas plan, not sampled: a run on a canvas of ``L`` tokens is
the sampler's steps (``SamplerConfig.plan``) of full forward passes over prompt + canvas, and a query is
re-run on the maximum canvas when its own length does not fit the chosen canvas (own length >= canvas, the
labelling run's answer standing in for the cropped run's; :func:`generation_flops`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd

from ptdlib.canvas import CanvasLimits, HeuristicCanvas
from ptdlib.cost.flops import FlopLedger
from ptdlib.cost.plans import plan_flops, query_plans, sampler_plan
from ptdlib.predictor import FeatureSet, LengthPredictor, PredictorConfig, predictor_cost_report
from ptdlib.predictor.training import length_metrics
from ptdlib.sampling.sampler import SamplerConfig

#: Feature sets of the ablation: text statistics only, the D-LLM's prompt states only, both.
ABLATION_FEATURES = (("text",), ("hidden",), ("text", "hidden"))
#: Regressors of the ablation: linear on log length, and boosted trees on log length.
ABLATION_REGRESSORS = ("ridge_log", "gbm_log")


def prompt_lengths(lm, queries: Sequence) -> np.ndarray:
    """Prompt tokens of each query (chat-formatted, as the sampler sees it)."""
    return np.array([len(lm.encode_prompt(q.prompt)) for q in queries], dtype=int)


def heuristic_estimates(lm, train: Sequence, train_lengths, queries: Sequence) -> np.ndarray:
    """The heuristic baseline's length estimate (no margin): the line in prompt length fitted on ``train``."""
    policy = HeuristicCanvas(margin=0).fit(lm, train, train_lengths)
    intercept, slope = policy.coef
    return np.clip(intercept + slope * prompt_lengths(lm, queries), 0.0, None)


def feature_ablation(
    lm,
    train: Sequence,
    train_lengths,
    test: Sequence,
    test_lengths,
    features: Sequence[tuple[str, ...]] = ABLATION_FEATURES,
    regressors: Sequence[str] = ABLATION_REGRESSORS,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Fit a predictor per (feature set, regressor) on ``train``; score it on ``test``.

    Returns (table, predictions): one table row per predictor with the metrics of
    :func:`ptdlib.predictor.training.length_metrics`, ``n_features``, ``model_flops`` (the regressor's analytic
    cost per query) and ``fit_s``; predictions maps ``"<features> / <regressor>"`` to test predictions.
    """
    if not features or not regressors:
        raise ValueError("the ablation needs at least one feature set and one regressor")
    rows, predictions = [], {}
    for groups in features:
        for regressor in regressors:
            config = PredictorConfig(regressor=regressor, features=FeatureSet(groups=tuple(groups)), seed=seed)
            start = time.perf_counter()
            predictor = LengthPredictor(config).fit_prompts(train, train_lengths, lm)
            fit_s = time.perf_counter() - start
            pred = predictor.predict_prompts(test, lm)
            name = f"{'+'.join(groups)} / {regressor}"
            predictions[name] = pred
            rows.append(
                {
                    "predictor": name,
                    "features": "+".join(groups),
                    "regressor": regressor,
                    **length_metrics(pred, test_lengths),
                    "n_features": predictor.n_features,
                    "model_flops": predictor.model_flops()["model_flops"],
                    "fit_s": fit_s,
                }
            )
    return pd.DataFrame(rows), predictions


def generation_flops(
    counter, prompt_lens, canvases, own_lengths, max_canvas: int, sampler: SamplerConfig = SamplerConfig()
) -> np.ndarray:
    """Per query: FLOPs of denoising its canvas, plus a re-run on ``max_canvas`` if its own length does not fit.

    The passes are the plan of :func:`ptdlib.cost.plans.sampler_plan` for each attempt, one query at a time (no
    batch padding): ``sampler.plan(L)`` steps on canvas ``L`` (blocks × steps per block; LLaDA's S = L by
    default), each a forward pass over prompt + canvas (two with guidance), up to the EOS block when the
    sampler stops there; priced by ``counter.forward_flops``.

    Args:
        counter: a FLOP source with ``forward_flops(seq_len)``.
        prompt_lens: prompt tokens per query.
        canvases: chosen canvas per query (tokens).
        own_lengths: the model's own answer length per query (tokens; ``>= canvas`` is a truncation).
        max_canvas: the re-run canvas (tokens).
        sampler: the sampler settings.

    Returns:
        FLOPs per query (float array).

    Raises:
        ValueError: the inputs differ in length, or the sampler's passes are not known in advance (threshold).
    """
    p = np.asarray(prompt_lens, dtype=int)
    c = np.asarray(canvases, dtype=int)
    y = np.asarray(own_lengths, dtype=int)
    if not len(p) == len(c) == len(y):
        raise ValueError(f"need one prompt length, canvas and own length per query, got {len(p)}, {len(c)}, {len(y)}")
    runs = query_plans(
        p,
        c,
        y,
        max_canvas=max_canvas,
        run=partial(sampler_plan, sampler=sampler),
        recovery="max",
        early_stop=sampler.stops_after_eos_block,
        block=sampler.block_length,
    )
    return np.array([plan_flops(plan, counter) for plan in runs.plans], dtype=float)


def predictor_cost(
    lm,
    policy,
    queries: Sequence,
    own_lengths,
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
) -> dict:
    """The fitted ``predicted`` policy's cost against the generation FLOPs it saves vs the fixed maximum canvas.

    The policy chooses canvases for ``queries`` with a :class:`~ptdlib.cost.flops.FlopLedger` attached, which
    prices its prompt pass (kind ``predictor``); the regressor adds
    :meth:`~ptdlib.predictor.LengthPredictor.model_flops` per query. Returns
    :func:`~ptdlib.predictor.predictor_cost_report`'s dict (``fraction`` = predictor FLOPs / saved FLOPs)
    plus per-query means (``prompt_pass_flops``, ``regressor_flops``, ``baseline_flops``,
    ``strategy_flops``), the ``rerun_rate`` and the chosen ``canvases``.
    """
    ledger = FlopLedger(counter)
    canvases = np.asarray(policy.choose(lm, queries, limits, [ledger]), dtype=int)
    per_query = ledger.per_query()
    prompt_pass = np.array([per_query.get(q.qid, {}).get("predictor", 0) for q in queries], dtype=float)
    regressor = float(policy.predictor.model_flops()["model_flops"])
    lens, own = prompt_lengths(lm, queries), np.asarray(own_lengths, dtype=int)
    baseline = generation_flops(
        counter, lens, np.full(len(queries), limits.max_canvas), own, limits.max_canvas, sampler
    )
    strategy = generation_flops(counter, lens, canvases, own, limits.max_canvas, sampler)
    report = predictor_cost_report(prompt_pass + regressor, baseline, strategy)
    report.update(
        prompt_pass_flops=float(prompt_pass.mean()),
        regressor_flops=regressor,
        baseline_flops=float(baseline.mean()),
        strategy_flops=float(strategy.mean()),
        rerun_rate=float(np.mean((own >= canvases) & (canvases < limits.max_canvas))),
        canvases=canvases,
    )
    return report
