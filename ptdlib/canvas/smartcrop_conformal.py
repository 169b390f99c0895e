"""Calibrated SmartCrop: SmartCrop's probe estimate plus a split-conformal pad chosen on ``calib``.

SmartCrop ("Diffusion LMs are natively length-aware") crops the canvas where the model's own EOS
probabilities pass a threshold τ; the truncation that τ gives depends on the model and the workload and
carries no guarantee. Here τ only turns the probe's EOS curve into a point estimate ``ê`` of the length,
and the pad is the one-sided split-conformal quantile of ``length − ê`` on the ``calib`` split (Vovk et al.
2005; Lei et al., JASA 2018; Angelopoulos & Bates 2021), exactly the rule of the predicted canvas's
conformal margin (:class:`~ptdlib.predictor.calibration.ConformalMargin`). On queries exchangeable with
``calib``, ``P(length ≥ canvas) ≤ α`` (and ``≥ α − 1/(n+1)`` without ties, before rounding up to blocks and
the cap at the maximum canvas, which only lower the truncation). The pad may be negative when the estimate
over-shoots.

The probe passes on ``calib`` are calibration cost (like the predictor's training), not counted; the probe
pass of every served query is counted as kind ``probe``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy
from ptdlib.canvas.policies import ended_by, eos_probabilities
from ptdlib.predictor.calibration import check_disjoint
from ptdlib.predictor.conformal import ConformalMargin, check_alpha
from ptdlib.sampling.sampler import SamplerConfig


def crossing_estimate(p_eos: np.ndarray, tau: float, rule: str) -> np.ndarray:
    """First position where P(ended by i) reaches ``tau``.

    Args:
        p_eos: Per-position EOS probabilities, shape ``(n, L)``.
        tau: The level to reach.
        rule: How P(ended by i) is formed (:func:`~ptdlib.canvas.policies.ended_by`).

    Returns:
        Float array of shape ``(n,)``; ``L`` for a row that never reaches ``tau``.

    Raises:
        ValueError: If ``p_eos`` is not 2-D, or for an unknown rule.
    """
    p = np.asarray(p_eos, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"EOS probabilities must be (queries, canvas positions), got shape {p.shape}")
    crossed = ended_by(p, rule) >= tau
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1), p.shape[1]).astype(float)


class CalibratedSmartCrop(CanvasPolicy):
    """SmartCrop whose pad is a split-conformal margin fitted on ``calib`` (truncation ≤ ``alpha``).

    ``tau``, ``rule``: how the probe's EOS curve becomes an estimate (see :class:`~ptdlib.canvas.SmartCrop`);
    ``alpha``: the target truncation rate; ``early_stop``: also stop after the block in which EOS is committed.
    """

    name = "smartcrop_conformal"

    def __init__(self, alpha: float = 0.05, tau: float = 0.9, rule: str = "running_max", early_stop: bool = False):
        self.alpha = check_alpha(alpha)
        if not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        ended_by(np.zeros((1, 1)), rule)  # validates the rule name
        self.tau, self.rule, self.early_stop = float(tau), rule, bool(early_stop)
        self.margin: ConformalMargin | None = None
        self._calib: list = []

    def calibrate(self, p_eos_calib, calib_lengths) -> CalibratedSmartCrop:
        """Fit the conformal pad from calibration EOS curves and the queries' own lengths.

        Args:
            p_eos_calib: EOS probabilities of the calibration queries, shape ``(n, L)``.
            calib_lengths: Their own lengths in tokens, shape ``(n,)``.

        Returns:
            The policy itself.
        """
        self.margin = ConformalMargin.fit(
            crossing_estimate(p_eos_calib, self.tau, self.rule), calib_lengths, alpha=self.alpha
        )
        return self

    def canvases(self, p_eos, limits: CanvasLimits) -> np.ndarray:
        """Canvas per query from its EOS curve: estimate + pad, + 1 for EOS, in whole blocks, capped.

        Args:
            p_eos: EOS probabilities, shape ``(n, L)``.
            limits: Block length and maximum canvas.

        Returns:
            Int array of shape ``(n,)``.

        Raises:
            ValueError: If the policy is not calibrated.
        """
        if self.margin is None:
            raise ValueError("smartcrop_conformal is not calibrated: call fit() with a calib split first")
        return self.margin.canvas(crossing_estimate(p_eos, self.tau, self.rule), limits.max_canvas, limits.round_to)

    def fit(
        self,
        lm,
        train,
        train_lengths,
        calib=None,
        calib_lengths=None,
        limits: CanvasLimits = CanvasLimits(),
        recovery: str = "max",
        sampler=None,
    ) -> CalibratedSmartCrop:
        """Calibrate the pad on probe passes over ``calib`` (``train`` is not used).

        Raises:
            ValueError: Without a calibration split.
        """
        if calib is None or calib_lengths is None:
            raise ValueError("smartcrop_conformal needs a calibration split (calib queries and their own lengths)")
        self._calib = list(calib)
        return self.calibrate(eos_probabilities(lm, self._calib, limits.max_canvas), calib_lengths)

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """One probe pass per batch, then :meth:`canvases`; ValueError if ``queries`` overlap the calib split."""
        if self._calib:
            check_disjoint(self._calib, queries)  # never report on the split the pad was calibrated on
        return self.canvases(eos_probabilities(lm, queries, limits.max_canvas, callbacks), limits)

    def sampler_config(self, base: SamplerConfig) -> SamplerConfig:
        return dataclasses.replace(base, stop_after_eos_block=True) if self.early_stop else base

    def params(self) -> dict:
        p = {"alpha": self.alpha, "tau": self.tau, "rule": self.rule}
        return {**p, "early_stop": True} if self.early_stop else p
