"""The ``probe`` feature group: SmartCrop's length reading as features of the AdaRLP predictor (the hybrid).

SmartCrop ("Diffusion LMs are natively length-aware") reads the answer's length off one forward pass over
prompt + an all-mask canvas: ``p_i`` = P(end token at canvas position i). Predict-then-Diffuse (AdaRLP) predicts
the length from prompt features and puts a calibrated margin on top. Neither uses the other's signal; the
hybrid gives the regressor, beside the text features, a summary of the probe's EOS curve:

* ``probe_tau50``, ``probe_tau90``, ``probe_tau99``: the first position where ``max_{j≤i} p_j`` reaches 0.5,
  0.9, 0.99 (SmartCrop's ``running_max`` estimate at three thresholds; the canvas length if never);
* ``probe_product90``: the same for SmartCrop's ``product`` rule ``1 − ∏_{j≤i}(1 − p_j)`` at 0.9;
* ``probe_expected``: ``Σ_i (1 − max_{j≤i} p_j)``, the mean length of the distribution the running maximum
  defines (it reads ``max_{j≤i} p_j`` as P(length ≤ i));
* ``probe_peak``: ``max_i p_i`` (how sure the model is that the answer ends on this canvas at all);
* ``log1p_probe_tau90``, ``log1p_probe_expected``: for a linear model on log length.

The probe pass is reported as kind ``probe`` (:func:`ptdlib.canvas.policies.eos_probabilities`), so the FLOP
ledger charges it to the strategy that uses the features; on the training and calibration splits it is
fitting cost and not counted.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from types import SimpleNamespace

import numpy as np

#: Names of the probe features, in column order.
PROBE_FEATURES = (
    "probe_tau50",
    "probe_tau90",
    "probe_tau99",
    "probe_product90",
    "probe_expected",
    "probe_peak",
    "log1p_probe_tau90",
    "log1p_probe_expected",
)


def _crossing(ended: np.ndarray, tau: float) -> np.ndarray:
    hit = ended >= tau
    return np.where(hit.any(axis=1), hit.argmax(axis=1), ended.shape[1]).astype(float)


def probe_features(p_eos) -> np.ndarray:
    """(n, len(PROBE_FEATURES)) features from per-position end-token probabilities ``p_eos`` (n, canvas)."""
    p = np.clip(np.asarray(p_eos, dtype=float), 0.0, 1.0)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"EOS probabilities must be (queries, canvas positions > 0), got shape {p.shape}")
    run = np.maximum.accumulate(p, axis=1)
    prod = 1.0 - np.cumprod(1.0 - p, axis=1)
    tau90, expected = _crossing(run, 0.9), (1.0 - run).sum(axis=1)
    cols = [
        _crossing(run, 0.5),
        tau90,
        _crossing(run, 0.99),
        _crossing(prod, 0.9),
        expected,
        p.max(axis=1),
        np.log1p(tau90),
        np.log1p(expected),
    ]
    return np.stack(cols, axis=1)


def probe_representation(
    lm,
    prompts: Sequence[str],
    canvas: int,
    callbacks=(),
    query_ids: Sequence[Hashable] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Probe features of ``prompts``: one counted ``probe`` pass per batch over prompt + ``canvas`` masks."""
    from ptdlib.canvas.policies import eos_probabilities  # the canvas package imports the predictor

    if query_ids is None:
        query_ids = list(range(len(prompts)))
    if len(query_ids) != len(prompts):
        raise ValueError(f"got {len(query_ids)} query ids for {len(prompts)} prompts")
    items = [SimpleNamespace(prompt=p, qid=q) for p, q in zip(prompts, query_ids)]
    return probe_features(eos_probabilities(lm, items, canvas, callbacks, batch_size))
