"""Fit the AdaRLP length predictor on the model's own lengths, evaluate it and save it (``ptd train-predictor``).

Steps: load the embedded D-LLM; draw the ``train`` and ``calib`` splits of the synthetic suite; label each
query with the length the model itself produces on the maximum canvas (``ptdlib.experiment.labels.own_lengths``);
fit; report held-out MAE, Spearman correlation and under-prediction rate on ``calib``; save the predictor,
``metrics.json`` and the calib predictions (``calib.npz``, for margin calibration without re-labelling).
:func:`fit_and_evaluate` and :func:`save_run` do the work on given lengths, so they are testable without
a sampler.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ptdlib.predictor.calibration import check_disjoint
from ptdlib.predictor.regressors import LengthPredictor, PredictorConfig, check_lengths

CALIB_FILE = "calib.npz"


class TokenCounter:
    """Callback tallying the predictor's forward passes: passes and positions (batch × sequence length)."""

    def __init__(self):
        self.passes = self.positions = 0

    def on_forward(self, event) -> None:
        if event.kind == "predictor":
            self.passes += 1
            self.positions += event.batch_size * event.seq_len


def length_metrics(predictions, lengths) -> dict:
    """MAE, median absolute error, Spearman ρ and under-prediction rate (length > prediction)."""
    from scipy.stats import spearmanr

    pred, y = np.asarray(predictions, float).reshape(-1), check_lengths(lengths)
    if len(pred) != len(y):
        raise ValueError(f"got {len(pred)} predictions but {len(y)} lengths")
    rho = spearmanr(pred, y).statistic if np.ptp(pred) > 0 and np.ptp(y) > 0 else float("nan")
    err = pred - y
    return {
        "n": int(len(y)),
        "mae": float(np.abs(err).mean()),
        "median_ae": float(np.median(np.abs(err))),
        "spearman": float(rho),
        "under_rate": float(np.mean(y > pred)),
        "bias": float(err.mean()),
        "mean_length": float(y.mean()),
    }


def fit_and_evaluate(
    lm,
    train_queries: Sequence,
    train_lengths,
    calib_queries: Sequence,
    calib_lengths,
    config: PredictorConfig = PredictorConfig(),
    callbacks=(),
) -> tuple[LengthPredictor, dict, np.ndarray]:
    """Fit on ``train``, evaluate on ``calib``: ``(predictor, metrics, calib predictions)``.

    Raises ValueError if the two splits share query ids or (open-space) prompts.
    """
    check_disjoint(calib_queries, train_queries)
    counter = TokenCounter()
    cbs = [counter, *callbacks]
    t0 = time.perf_counter()
    predictor = LengthPredictor(config).fit_prompts(train_queries, train_lengths, lm, cbs)
    fit_s = time.perf_counter() - t0
    train_pred = predictor.predict_prompts(train_queries, lm, cbs)
    passes_before, positions_before = counter.passes, counter.positions
    t0 = time.perf_counter()
    calib_pred = predictor.predict_prompts(calib_queries, lm, cbs)
    predict_s = time.perf_counter() - t0
    metrics = {
        "model_id": getattr(lm, "model_id", None),
        "calib": length_metrics(calib_pred, calib_lengths),
        "train": length_metrics(train_pred, train_lengths),
        "n_features": predictor.n_features,
        "fit_seconds": fit_s,
        "predict_seconds_per_query": predict_s / len(calib_queries),
        # Positions the prompt pass computes per query (FLOPs ∝ positions; the ledger prices them).
        "predictor_positions_per_query": (counter.positions - positions_before) / len(calib_queries),
        "predictor_passes": counter.passes - passes_before,
        **predictor.model_flops(),
    }
    predictor.metrics = metrics
    return predictor, metrics, calib_pred


def save_run(
    predictor: LengthPredictor,
    metrics: dict,
    out_dir: str | Path,
    calib_queries: Sequence,
    calib_predictions,
    calib_lengths,
) -> Path:
    """Save predictor + metrics JSON, and the calib (qid, prediction, length) triples as ``calib.npz``."""
    out = predictor.save(out_dir, metrics)
    np.savez(
        out / CALIB_FILE,
        qid=np.array([q.qid for q in calib_queries]),
        prediction=np.asarray(calib_predictions, float),
        length=check_lengths(calib_lengths),
    )
    return out


def load_calibration(directory: str | Path) -> dict:
    """The ``calib.npz`` saved by :func:`save_run`: arrays ``qid``, ``prediction``, ``length``."""
    path = Path(directory) / CALIB_FILE
    if not path.exists():
        raise FileNotFoundError(f"no calibration predictions at {path}")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
