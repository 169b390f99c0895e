"""Conformal maths shared by the margin rules: checks, the bound -> canvas map, scores, quantile, split conformal.

Both the calibrated rules (:mod:`ptdlib.predictor.calibration`) and adaptive conformal inference
(:mod:`ptdlib.predictor.online`) build on this module; it imports neither of them.

A margin rule maps a predicted length to an upper bound ``U`` on the length, and the bound to a canvas
(:func:`canvas_from_upper`): ``floor(U) + 1`` positions (the answer and its EOS), rounded up to a multiple
of the sampler's block, capped at the maximum canvas. For integer lengths ``ℓ ≥ canvas ⇔ ℓ > U``.

One-sided split conformal prediction (Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random World*,
2005; Lei, G'Sell, Rinaldo, Tibshirani & Wasserman, "Distribution-free predictive inference for
regression", JASA 2018; Angelopoulos & Bates, "A gentle introduction to conformal prediction", 2021) scores
each calibration query by ``s = length - pred`` (additive scale, ``U = pred + q``) or
``s = log((1 + length) / (1 + pred))`` (log scale, ``U = (1 + pred)·e^q - 1``) and takes ``q`` = the
``ceil((n+1)(1-α))``-th smallest score. On exchangeable data ``P(length > U) ≤ α`` (and ``≥ α - 1/(n+1)``
without ties).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ptdlib.cost.plans import round_to_block
from ptdlib.predictor.regressors import check_lengths

#: Scales of a conformal score: ``additive`` (tokens) or ``log`` (log-ratio of ``1 + length``).
SCALES = ("additive", "log")
_INTEGER_TOL = 1e-9  # lengths are integers: float error in a bound is many orders of magnitude below a token


# ---------------------------------------------------------------- checks
def check_alpha(alpha: float, name: str = "alpha") -> float:
    """``alpha`` as a float if it lies in (0, 1).

    Args:
        alpha: A miss rate (a probability).
        name: How the error message names it.

    Returns:
        ``float(alpha)``.

    Raises:
        ValueError: If ``alpha`` is not a real number in (0, 1).
    """
    if not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"{name} must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_scale(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALES`; ValueError otherwise."""
    if scale not in SCALES:
        raise ValueError(f"scale must be 'additive' or 'log', got {scale!r}")
    return scale


def check_predictions(predictions, name: str = "predictions") -> np.ndarray:
    """Predictions as floats; non-finite values are rejected, negative ones clipped to 0 (a length).

    Args:
        predictions: Predicted lengths in tokens, any shape (flattened).
        name: How the error message names them.

    Returns:
        A 1-D float array, each value ``>= 0``.

    Raises:
        ValueError: If a prediction is NaN or infinite.
    """
    arr = np.asarray(predictions, dtype=float).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:3].tolist()}")
    return np.clip(arr, 0.0, None)


def calibration_pair(predictions, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Checked calibration predictions and own lengths, as two equally long 1-D float arrays.

    Raises:
        ValueError: If either is empty or invalid, or their lengths differ.
    """
    pred = check_predictions(predictions)
    if pred.size == 0:
        raise ValueError("empty calibration data: no predictions")
    y = check_lengths(lengths, "calibration lengths")
    if len(pred) != len(y):
        raise ValueError(f"got {len(pred)} predictions but {len(y)} calibration lengths")
    return pred, y


def check_canvas_args(max_canvas: int, round_to: int) -> None:
    """Raise ValueError unless ``max_canvas`` and ``round_to`` are integers ``>= 1``."""
    if not isinstance(max_canvas, (int, np.integer)) or max_canvas < 1:
        raise ValueError(f"max_canvas must be an integer >= 1, got {max_canvas!r}")
    if not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise ValueError(f"round_to must be an integer >= 1, got {round_to!r}")


# ---------------------------------------------------------------- bounds -> canvases
def canvas_from_upper(upper, max_canvas: int, round_to: int = 1) -> np.ndarray:
    """Canvases that hold any length ≤ ``upper`` and its EOS.

    ``floor(U) + 1``, rounded up to a multiple of ``round_to``, capped at ``max_canvas``. ``U = +inf`` gives
    ``max_canvas``; ``U = -inf`` (an empty set) the smallest canvas, ``round_to``. A bound within
    ``_INTEGER_TOL`` below an integer counts as that integer: a log-scale bound ``expm1(log1p(pred) + q)``
    that should equal a calibration length ``y`` often comes out as ``y - 1e-14``, and flooring that would
    serve a canvas one token short for every query of length ``y``.

    Args:
        upper: Upper bounds on the lengths, tokens, shape (N,) (or any shape, kept).
        max_canvas: The largest canvas, tokens.
        round_to: Canvases are multiples of it (the sampler's block length), tokens.

    Returns:
        Integer canvases, the shape of ``upper``.

    Raises:
        ValueError: If ``max_canvas`` or ``round_to`` is not an integer ``>= 1``.
    """
    check_canvas_args(max_canvas, round_to)
    u = np.clip(np.asarray(upper, dtype=float), 0.0, float(max_canvas))
    c = np.floor(u + _INTEGER_TOL) + 1
    return round_to_block(c, round_to, max_canvas)


def truncation_rate(canvases, lengths) -> float:
    """Fraction of responses that do not fit their canvas with an EOS (``length ≥ canvas``).

    Args:
        canvases: Canvases, tokens, shape (N,).
        lengths: Own lengths, tokens, shape (N,).

    Returns:
        The fraction in [0, 1].

    Raises:
        ValueError: If the arrays differ in length or a length is invalid.
    """
    c, y = np.asarray(canvases).reshape(-1), check_lengths(lengths)
    if len(c) != len(y):
        raise ValueError(f"got {len(c)} canvases but {len(y)} lengths")
    return float(np.mean(y >= c))


# ---------------------------------------------------------------- conformal scores, quantile and bound
def conformal_scores(predictions, lengths, scale: str = "additive") -> np.ndarray:
    """Nonconformity scores of calibration queries: ``length - pred`` or ``log1p(length) - log1p(pred)``.

    Args:
        predictions: Predicted lengths, tokens, shape (N,).
        lengths: Own lengths, tokens, shape (N,).
        scale: ``"additive"`` or ``"log"``.

    Returns:
        Scores, shape (N,): tokens (additive) or log-ratios (log).

    Raises:
        ValueError: If the calibration data are empty or invalid.
    """
    pred, y = calibration_pair(predictions, lengths)
    return y - pred if scale == "additive" else np.log1p(y) - np.log1p(pred)


def conformal_quantile(scores, alpha: float) -> float:
    """The ``ceil((n+1)(1-α))``-th smallest of ``n`` scores (``+inf`` if that exceeds ``n``).

    Split conformal's finite-sample quantile (Lei et al. 2018; Angelopoulos & Bates 2021, Thm. 1): for a
    fresh exchangeable score ``s``, ``P(s ≤ q) ≥ 1 - α``.

    Args:
        scores: Calibration scores, shape (n,).
        alpha: Target miss rate in (0, 1).

    Returns:
        The quantile ``q`` (``inf`` when ``n`` is too small for ``alpha``).

    Raises:
        ValueError: If ``alpha`` is not in (0, 1) or there are no scores.
    """
    check_alpha(alpha)
    s = np.sort(np.asarray(scores, dtype=float).reshape(-1))
    if s.size == 0:
        raise ValueError("empty calibration data: no scores")
    # The small slack keeps (n+1)(1-α) = 90.00000000000001 from rounding up to 91.
    k = math.ceil((s.size + 1) * (1 - alpha) - 1e-9)
    return float(s[k - 1]) if k <= s.size else math.inf


def bound(pred: np.ndarray, q: float, scale: str) -> np.ndarray:
    """Upper bound from prediction and conformal quantile: ``pred + q`` or ``(1 + pred)·e^q - 1``.

    Args:
        pred: Checked predictions (:func:`check_predictions`), tokens, shape (N,).
        q: The quantile, in the units of ``scale``.
        scale: ``"additive"`` or ``"log"``.

    Returns:
        Upper bounds, tokens, shape (N,) (``inf`` where the log bound overflows).
    """
    if scale == "additive":
        return pred + q
    with np.errstate(over="ignore"):
        return np.expm1(np.log1p(pred) + q)


# ---------------------------------------------------------------- rules
class MarginRule:
    """A rule that bounds lengths from predictions (``upper``) and turns the bound into canvases."""

    def upper(self, predictions) -> np.ndarray:
        """Upper bounds on the lengths, tokens, one per prediction."""
        raise NotImplementedError

    def canvas(self, predictions, max_canvas: int, round_to: int = 1) -> np.ndarray:
        """Integer canvases for ``predictions`` (see :func:`canvas_from_upper`)."""
        return canvas_from_upper(self.upper(check_predictions(predictions)), max_canvas, round_to)


@dataclass(frozen=True)
class ConformalMargin(MarginRule):
    """One-sided split conformal bound (see module docstring): ``P(length > U) ≤ α`` on exchangeable data.

    ``margin`` is the conformal quantile ``q`` of the scores; it may be negative (a predictor that
    over-predicts gets its canvases shrunk: the guarantee needs nothing more) or ``inf`` (too few
    calibration points for this α: every canvas is the maximum).
    """

    margin: float  # q: tokens (additive) or log-ratio (log)
    alpha: float = 0.05  # target miss rate P(length > U)
    scale: str = "additive"  # "additive": U = pred + q; "log": U = (1 + pred)·exp(q) - 1
    n: int = 0  # calibration queries

    def __post_init__(self):
        check_alpha(self.alpha)
        check_scale(self.scale)

    @staticmethod
    def scores(predictions, lengths, scale: str = "additive") -> np.ndarray:
        """The calibration scores (:func:`conformal_scores`)."""
        return conformal_scores(predictions, lengths, scale)

    @classmethod
    def fit(cls, predictions, lengths, alpha: float = 0.05, scale: str = "additive") -> ConformalMargin:
        """Fit ``q`` on calibration predictions and own lengths.

        Args:
            predictions: Predicted lengths on calib, tokens, shape (n,).
            lengths: Own lengths on calib, tokens, shape (n,).
            alpha: Target miss rate in (0, 1).
            scale: ``"additive"`` or ``"log"``.

        Returns:
            The fitted rule.

        Raises:
            ValueError: If ``alpha``, ``scale`` or the calibration data are invalid.
        """
        check_alpha(alpha)
        check_scale(scale)
        s = conformal_scores(predictions, lengths, scale)
        return cls(conformal_quantile(s, alpha), float(alpha), scale, len(s))

    def upper(self, predictions) -> np.ndarray:
        """``pred + q`` or ``(1 + pred)·e^q - 1``, tokens."""
        return bound(check_predictions(predictions), self.margin, self.scale)
