"""Safety margins that turn predicted lengths into canvases, calibrated on a ``calib`` split (never ``test``).

A margin rule maps a predicted length to an upper bound ``U`` on the length, and the bound to a canvas
(:func:`canvas_from_upper`). A response of length ``ℓ`` needs ``ℓ + 1`` canvas positions (the answer and
its EOS; a canvas without EOS is *truncated*), so the canvas is ``floor(U) + 1``, rounded up to a multiple
of ``round_to`` (the sampler's block length), capped at ``max_canvas``. For integer lengths,
``ℓ ≥ canvas  ⇔  ℓ > U``: a rule that bounds ``P(length > U)`` bounds the truncation rate.

Rules (:func:`calibrate` builds each by name from calibration predictions and own lengths):

* ``percentile`` -- Predict-then-Diffuse (AdaRLP): the margin is a percentile of the *positive* residuals
  ``length - prediction`` (under-predictions) on calib.
* ``conformal`` / ``conformal_log`` -- one-sided split conformal prediction (Vovk, Gammerman & Shafer,
  *Algorithmic Learning in a Random World*, 2005; Lei, G'Sell, Rinaldo, Tibshirani & Wasserman,
  "Distribution-free predictive inference for regression", JASA 2018; Angelopoulos & Bates, "A gentle
  introduction to conformal prediction", 2021): scores ``s = length - pred`` (additive, ``U = pred + q``)
  or ``s = log((1 + length) / (1 + pred))`` (log, ``U = (1 + pred)·e^q - 1``), ``q`` = the
  ``ceil((n+1)(1-α))``-th smallest score. On exchangeable data ``P(length > U) ≤ α`` (and ``≥ α - 1/(n+1)``
  without ties).
* ``cost_optimal`` -- the margin on a grid minimising the expected cost on calib, re-runs included.
* ``aci`` -- :class:`~ptdlib.predictor.online.AdaptiveConformalMargin`, for a drifting stream.

The shared conformal maths (checks, :func:`canvas_from_upper`, scores, quantile, :class:`ConformalMargin`)
lives in :mod:`ptdlib.predictor.conformal` and is re-exported here. The rules are registered by name in
:data:`MARGIN_METHODS`; :func:`register_margin` adds one.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from inspect import signature

import numpy as np

from ptdlib.cost.plans import RERUN_RECOVERIES, attempts
from ptdlib.predictor.conformal import (
    ConformalMargin,
    MarginRule,
    calibration_pair,
    canvas_from_upper,
    check_canvas_args,
    check_predictions,
)
from ptdlib.predictor.online import AdaptiveConformalMargin
from ptdlib.predictor.regressors import check_lengths
from ptdlib.registry import Registry

#: Ways to recover a truncated answer that the cost-optimal margin can price (those of
#: :mod:`ptdlib.cost.plans` that spend FLOPs on a truncation; ``none`` spends score instead).
PRICED_RECOVERIES = RERUN_RECOVERIES


# ---------------------------------------------------------------- rules
@dataclass(frozen=True)
class AdditiveMargin(MarginRule):
    """``U = prediction + margin``."""

    margin: float  # tokens added to every prediction

    def upper(self, predictions) -> np.ndarray:
        return check_predictions(predictions) + self.margin


@dataclass(frozen=True)
class FixedMargin(AdditiveMargin):
    """A margin chosen by hand (e.g. the heuristic baseline's); it must be ≥ 0."""

    def __post_init__(self):
        if not np.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a finite number of tokens >= 0, got {self.margin!r}")


@dataclass(frozen=True)
class PercentileMargin(AdditiveMargin):
    """Predict-then-Diffuse (AdaRLP): margin = a percentile of the positive residuals on calib."""

    percentile: float = 90.0  # of the under-predictions only; larger: fewer truncations, bigger canvases
    n: int = 0  # calibration queries
    n_positive: int = 0  # of which under-predicted (length > prediction)

    @classmethod
    def fit(cls, predictions, lengths, percentile: float = 90.0) -> PercentileMargin:
        """``np.percentile`` (linear interpolation) of ``{length - pred : length > pred}``; 0 if none."""
        if not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
        pred, y = calibration_pair(predictions, lengths)
        pos = (y - pred)[y > pred]
        margin = float(np.percentile(pos, percentile)) if pos.size else 0.0
        return cls(margin, float(percentile), len(y), int(pos.size))


def quadratic_cost(canvas, prompt_len):
    """Relative cost of decoding a canvas of ``L`` after a prompt of ``P`` tokens: ``L · (P + L)``.

    LLaDA's reference sampler takes ``S = L`` steps, each a forward pass over ``P + L`` positions, whose
    cost is (to first order) proportional to the number of positions. Pass a ledger-based function instead
    for measured FLOPs; it must accept numpy arrays.
    """
    canvas = np.asarray(canvas, dtype=float)
    return canvas * (np.asarray(prompt_len, dtype=float) + canvas)


@dataclass(frozen=True)
class CostOptimalMargin(AdditiveMargin):
    """The additive margin on a grid that minimises mean cost on calib, re-runs of truncations included.

    ``cost(m) = mean_i[ c(canvas_i(m), P_i) + 1{length_i ≥ canvas_i(m)} · rerun_i ]`` where ``rerun_i`` is
    ``c(max_canvas, P_i)`` (Predict-then-Diffuse: re-run at the maximum) or, for ``"double"`` /
    ``"extend"``, the cost of the canvases doubled until the answer fits (or the maximum is reached), each
    attempt priced by :func:`expected_cost` (with ``early_stop``, up to the sampler's block holding EOS).
    Recovery ``"none"`` is refused: a truncation then costs score, not FLOPs, so the cheapest margin would
    always be the smallest.
    """

    recovery: str = "max"  # how a truncated answer is recovered (priced into the choice)
    early_stop: bool = False  # whether attempts stop after the block holding EOS (priced into the choice)
    margins: tuple[float, ...] = ()  # the grid searched
    expected_costs: tuple[float, ...] = ()  # mean cost per query at each grid margin (same units as cost_fn)

    @classmethod
    def fit(
        cls,
        predictions,
        lengths,
        *,
        max_canvas: int,
        round_to: int = 1,
        prompt_lengths=None,
        cost_fn: Callable = quadratic_cost,
        recovery: str = "max",
        early_stop: bool = False,
        block: int | None = None,
        margins=None,
    ) -> CostOptimalMargin:
        """Search ``margins`` for the least :func:`expected_cost` on calib.

        Args:
            predictions: Predicted lengths of the calibration queries, tokens, shape (n,).
            lengths: Their own lengths, tokens, shape (n,).
            max_canvas: The largest canvas (tokens).
            round_to: Canvases are whole multiples of it (tokens).
            prompt_lengths: Prompt tokens per query, shape (n,) (None: zeros).
            cost_fn: ``cost_fn(L, P)``: the cost of a fresh canvas of ``L`` after ``P`` prompt tokens.
            recovery: How a truncation is recovered (:data:`PRICED_RECOVERIES`).
            early_stop: Attempts stop after the block holding EOS.
            block: The sampler's block length (tokens), where an early stop ends an attempt; it may divide
                ``round_to``. None: ``round_to``.
            margins: The grid searched (tokens, default ``0 … max_canvas``).

        Returns:
            The rule with the first (smallest) cheapest margin, the grid and its expected costs.

        Raises:
            ValueError: For invalid data, limits, block, recovery or grid.
        """
        pred, y = calibration_pair(predictions, lengths)
        check_canvas_args(max_canvas, round_to)
        block = round_to if block is None else block
        if not isinstance(block, numbers.Integral) or block <= 0:
            raise ValueError(f"block (the sampler's block length) must be a positive integer, got {block!r}")
        check_priced_recovery(recovery)
        P = np.zeros_like(pred) if prompt_lengths is None else check_lengths(prompt_lengths, "prompt_lengths")
        if len(P) != len(pred):
            raise ValueError(f"got {len(P)} prompt lengths for {len(pred)} predictions")
        grid = np.arange(0, max_canvas + 1, dtype=float) if margins is None else np.asarray(margins, float)
        grid = grid.reshape(-1)
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
            raise ValueError(f"margins must be a non-empty grid of finite values >= 0, got {grid[:5].tolist()}")
        costs = np.array(
            [
                expected_cost(
                    canvas_from_upper(pred + m, max_canvas, round_to),
                    y,
                    P,
                    cost_fn,
                    max_canvas,
                    recovery,
                    early_stop,
                    block,
                )
                for m in grid
            ]
        )
        best = int(np.argmin(costs))  # first minimum: the smallest margin among ties
        return cls(float(grid[best]), recovery, bool(early_stop), tuple(grid.tolist()), tuple(costs.tolist()))


def check_priced_recovery(recovery: str) -> str:
    """``recovery`` if its re-runs can be priced in FLOPs (:data:`PRICED_RECOVERIES`); ValueError otherwise."""
    if recovery not in PRICED_RECOVERIES:
        raise ValueError(
            f"the cost-optimal margin cannot price recovery {recovery!r} (a truncation then costs "
            f"score, not FLOPs); choose from {', '.join(PRICED_RECOVERIES)}"
        )
    return recovery


def expected_cost(
    canvases,
    lengths,
    prompt_lengths,
    cost_fn: Callable = quadratic_cost,
    max_canvas: int = 128,
    recovery: str = "max",
    early_stop: bool = False,
    block: int | None = None,
) -> float:
    """Mean over queries of the first attempt's cost plus the re-runs its truncation causes.

    ``cost_fn(L, P)`` is the cost of decoding a fresh canvas of ``L`` in ``L`` passes (``S = L``), so one
    pass at that canvas costs ``cost_fn(L, P) / L``. An attempt decoding canvas positions ``[a, e)`` of a
    canvas ``L`` costs ``(e - a) · cost_fn(L, P) / L``:

    * ``max`` / ``double`` re-run from scratch (``a = 0``) at the maximum / twice the canvas;
    * ``extend`` keeps the decoded positions and decodes only the new ones (``a`` = the old canvas);
    * ``early_stop`` (EOS-led stopping, :class:`~ptdlib.sampling.sampler.SamplerConfig`'s ``stop_after_eos_block``)
      ends an attempt that holds the answer after the ``block`` in which its EOS lies (``block``: the
      sampler's block length, required with ``early_stop``).

    A query truncated at the maximum canvas is not re-run (nothing larger exists), as in
    :func:`ptdlib.canvas.recovery.recover`.
    """
    check_priced_recovery(recovery)
    c = np.asarray(canvases, dtype=float)
    y, P = np.asarray(lengths, dtype=float), np.asarray(prompt_lengths, dtype=float)
    total = 0.0
    for a in attempts(c, y, max_canvas=max_canvas, recovery=recovery, early_stop=early_stop, block=block):
        per_pass = np.asarray(cost_fn(a.canvas, P), dtype=float) / np.maximum(a.canvas, 1)
        total = total + np.where(a.rows, np.maximum(a.end - a.start, 0) * per_pass, 0.0)
    return float(total.mean())


# ---------------------------------------------------------------- split hygiene and the registry
def check_disjoint(calib: Sequence, test: Sequence, closed_families: Sequence[str] | None = None) -> None:
    """Raise ValueError if calibration queries overlap the test queries, by id or by prompt text.

    Items are ``Query``-like objects (``.qid``, ``.prompt``, optionally ``.split`` and ``.family``) or prompt
    strings. A calibration query whose ``split`` is ``"test"`` is an overlap. Prompts of families whose prompt
    space is closed (default: the synthetic suite's families with ``open_space=False``, e.g. ``spell``, shared
    by design by all splits) are exempt from the text check, never from the id check.
    """
    if closed_families is None:
        from ptdlib.tasks import FAMILIES

        closed_families = [name for name, fam in FAMILIES.items() if not fam.open_space]
    closed = set(closed_families)
    if len(calib) == 0:
        raise ValueError("empty calibration data: no calibration queries")
    shared_ids = _ids(calib) & _ids(test)
    if shared_ids:
        raise ValueError(
            f"calibration split overlaps test: {len(shared_ids)} shared query ids, "
            f"e.g. {sorted(map(str, shared_ids))[:3]}"
        )
    shared = _open_prompts(calib, closed) & _open_prompts(test, closed)
    if shared:
        raise ValueError(f"calibration split overlaps test: {len(shared)} shared prompts, e.g. {sorted(shared)[:3]}")
    from_test = [getattr(q, "qid", q) for q in calib if getattr(q, "split", None) == "test"]
    if from_test:
        raise ValueError(f"calibration queries come from the 'test' split: {from_test[:3]}")


def _ids(queries: Sequence) -> set:
    return {q.qid for q in queries if hasattr(q, "qid")}


def _open_prompts(queries: Sequence, closed: set) -> set[str]:
    """Prompt texts, leaving out queries of closed-prompt-space families (plain strings always count)."""
    return {
        q if isinstance(q, str) else q.prompt
        for q in queries
        if isinstance(q, str) or getattr(q, "family", None) not in closed
    }


#: Margin methods :func:`calibrate` builds by name: name -> fit function (see :func:`register_margin`).
MARGIN_METHODS = Registry("margin method")


def register_margin(name: str):
    """A decorator that makes a margin rule's fit function available to :func:`calibrate` as ``name``.

    The decorated function is returned unchanged. Its contract::

        fit(predictions, lengths, **params) -> MarginRule

    ``predictions`` and ``lengths`` are the calibration split's predicted and own lengths (tokens, shape
    (n,)); ``params`` are the rule's own keyword parameters, each with a default where one makes sense. The
    parameter names matter: :func:`margin_parameters` reads them from the signature, and the ``predicted``
    canvas policy passes a rule only those of its settings (``alpha``, ``percentile``, ``gamma``,
    ``max_canvas``, ``round_to``, ``prompt_lengths``, ``recovery``, ``early_stop``, ``block``) that the fit function
    names. Example, in this module (the registry's home: a rule defined elsewhere is imported here and
    registered here, so that importing :mod:`ptdlib.predictor` always registers every margin)::

        @register_margin("my_rule")
        def _fit_my_rule(predictions, lengths, alpha: float = 0.05) -> MarginRule:
            return MyRule.fit(predictions, lengths, alpha)

    Args:
        name: The method name configs and notebooks use (``PredictedCanvas(margin=name)``).

    Returns:
        The decorator.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    return MARGIN_METHODS.register(name)


register_margin("percentile")(PercentileMargin.fit)


@register_margin("conformal")
def _fit_conformal(predictions, lengths, alpha: float = 0.05) -> ConformalMargin:
    """Split conformal on the additive scale, ``U = pred + q``."""
    return ConformalMargin.fit(predictions, lengths, alpha=alpha, scale="additive")


@register_margin("conformal_log")
def _fit_conformal_log(predictions, lengths, alpha: float = 0.05) -> ConformalMargin:
    """Split conformal on the log scale, ``U = (1 + pred)·e^q - 1``."""
    return ConformalMargin.fit(predictions, lengths, alpha=alpha, scale="log")


register_margin("cost_optimal")(CostOptimalMargin.fit)
register_margin("aci")(AdaptiveConformalMargin.from_calibration)


def margin_parameters(method: str) -> list[str]:
    """The keyword parameters margin ``method``'s fit function accepts (beyond predictions and lengths).

    Raises:
        ValueError: If ``method`` is not registered (the message lists the registered ones).
    """
    params = list(signature(MARGIN_METHODS.lookup(method)).parameters)
    return params[2:]  # after predictions, lengths


def calibrate(
    method: str,
    predictions,
    lengths,
    *,
    calib_queries: Sequence | None = None,
    test_queries: Sequence | None = None,
    **params,
) -> MarginRule:
    """Fit margin rule ``method`` on calibration predictions and own lengths.

    Args:
        method: A name registered in :data:`MARGIN_METHODS` (``percentile``, ``conformal``,
            ``conformal_log``, ``cost_optimal``, ``aci``).
        predictions: Predicted lengths of the calibration queries, tokens, shape (n,).
        lengths: Their own lengths, tokens, shape (n,).
        calib_queries: The calibration queries; with ``test_queries``, the split is checked for overlap first.
        test_queries: The queries the rule will serve.
        **params: The rule's parameters (:func:`margin_parameters`): ``percentile=``; ``alpha=``;
            ``max_canvas=``, ``round_to=``, ``prompt_lengths=``, ``cost_fn=``, ``recovery=``, ``early_stop=``,
            ``block=``, ``margins=``; ``alpha=``, ``gamma=``, ``window=``, ``scale=``.

    Returns:
        The fitted rule.

    Raises:
        ValueError: If ``method`` is unknown (naming the registered ones), the split overlaps, or the data or
            parameters are invalid.
    """
    fit = MARGIN_METHODS.lookup(method)
    if test_queries is not None:
        if calib_queries is None:
            raise ValueError("test_queries given without calib_queries: cannot check the split for overlap")
        check_disjoint(calib_queries, test_queries)
    n_lengths = np.asarray(lengths).size
    if calib_queries is not None and len(calib_queries) != n_lengths:
        raise ValueError(f"got {len(calib_queries)} calibration queries but {n_lengths} lengths")
    return fit(predictions, lengths, **params)
