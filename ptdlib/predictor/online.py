"""Adaptive conformal inference: a length margin that follows a drifting stream of queries.

Split conformal (``ptdlib.predictor.conformal``) is valid when test queries are exchangeable with the
calibration split; traffic drifts. Adaptive conformal inference (Gibbs & Candès, "Adaptive conformal
inference under distribution shift", NeurIPS 2021) keeps a working level ``α_t`` and after each observed
query updates it by

    α_{t+1} = α_t + γ (α - err_t),

where ``err_t = 1`` if the query's length exceeded the bound served at time ``t``. The bound at time ``t``
uses the conformal quantile at level ``α_t`` of the most recent ``window`` scores. Whatever the sequence,
the long-run miss rate satisfies (their Proposition 4.1)

    | (1/T) Σ_t err_t - α |  ≤  (max(α_1, 1 - α_1) + γ) / (γ T),

because ``α_t ≥ 1`` serves the empty bound (a certain miss) and ``α_t ≤ 0`` the infinite one (no miss).
"""

from __future__ import annotations

import math
import numbers
from collections import deque

import numpy as np

from ptdlib.predictor.conformal import (
    MarginRule,
    bound,
    check_alpha,
    check_predictions,
    check_scale,
    conformal_quantile,
    conformal_scores,
)
from ptdlib.predictor.regressors import check_lengths


class AdaptiveConformalMargin(MarginRule):
    """Online one-sided conformal margin with ``.margin()``, ``.canvas(...)`` and ``.update(pred, length)``."""

    def __init__(
        self, alpha: float = 0.05, gamma: float = 0.005, window: int = 500, scale: str = "additive", scores=()
    ):
        """Set up the online margin.

        Args:
            alpha: Target long-run miss rate.
            gamma: Step size of the level update (Gibbs & Candès use 0.005).
            window: How many recent scores the quantile uses.
            scale: ``"additive"`` or ``"log"`` scores, as in :class:`~ptdlib.predictor.conformal.ConformalMargin`.
            scores: Initial scores (e.g. from calib).
        """
        self.alpha = check_alpha(alpha)
        if not isinstance(gamma, numbers.Real) or not gamma > 0 or not math.isfinite(gamma):
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        check_scale(scale)
        self.gamma, self.window, self.scale = float(gamma), window, scale
        self.alpha_t = self.alpha  # α_1 = α
        self.scores: deque[float] = deque((float(s) for s in np.asarray(scores, float).reshape(-1)), maxlen=window)
        self.errors: list[int] = []  # err_t of every update, in order

    @classmethod
    def from_calibration(
        cls, predictions, lengths, alpha: float = 0.05, gamma: float = 0.005, window: int = 500, scale: str = "additive"
    ) -> AdaptiveConformalMargin:
        """Start from the scores of a calibration split (the last ``window`` of them)."""
        return cls(alpha, gamma, window, scale, conformal_scores(predictions, lengths, scale))

    def margin(self) -> float:
        """The current quantile ``q_t``: ``+inf`` if ``α_t ≤ 0`` or no scores yet, ``-inf`` if ``α_t ≥ 1``."""
        if self.alpha_t >= 1:
            return -math.inf
        if self.alpha_t <= 0 or not self.scores:
            return math.inf
        return conformal_quantile(np.fromiter(self.scores, float), self.alpha_t)

    def upper(self, predictions) -> np.ndarray:
        return bound(check_predictions(predictions), self.margin(), self.scale)

    def update(self, prediction: float, length: float, canvas: int | None = None, missed: bool | None = None) -> int:
        """Observe one query's length; return ``err_t`` and move ``α_t``.

        ``err_t`` is, in order of precedence: ``missed`` when given (what the server saw, e.g. the first
        attempt's truncation, which a re-run's shorter answer must not hide); else the observed truncation
        ``1{length ≥ canvas}`` when the served ``canvas`` is given, which steers the realised truncation rate
        (after rounding to blocks and capping) to ``α``; else ``1{length > U_t}`` against the current bound.
        With canvas-level errors, Gibbs & Candès' bound (:meth:`guarantee`) is a guide, not a theorem: the
        smallest canvas served at ``α_t ≥ 1`` is not a certain miss, nor is the maximum a certain hit.
        """
        pred = float(check_predictions([prediction])[0])
        y = float(check_lengths([length])[0])
        if missed is not None:
            err = int(bool(missed))
        elif canvas is not None:
            err = int(y >= canvas)
        else:
            err = int(y > float(bound(np.array([pred]), self.margin(), self.scale)[0]))
        self.alpha_t += self.gamma * (self.alpha - err)
        self.scores.append(y - pred if self.scale == "additive" else math.log1p(y) - math.log1p(pred))
        self.errors.append(err)
        return err

    @property
    def miss_rate(self) -> float:
        """Fraction of updates so far with ``err_t = 1`` (``nan`` before the first)."""
        return float(np.mean(self.errors)) if self.errors else math.nan

    def guarantee(self) -> float:
        """Gibbs & Candès' bound on ``|miss_rate - α|`` after the updates so far."""
        T = len(self.errors)
        return (max(self.alpha, 1 - self.alpha) + self.gamma) / (self.gamma * T) if T else math.inf
