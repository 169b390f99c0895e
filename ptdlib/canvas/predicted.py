"""The ``predicted`` policy: AdaRLP (Predict-then-Diffuse) with a calibrated safety margin.

A light predictor (``ptdlib.predictor``) estimates each query's own length from its prompt (its features
may need one prompt-only pass of the D-LLM, reported as ``predictor``); a margin rule fitted on the
``calib`` split turns the estimate into a canvas.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy
from ptdlib.predictor import FeatureSet, LengthPredictor, PredictorConfig, calibrate, check_disjoint
from ptdlib.predictor.calibration import MARGIN_METHODS, check_priced_recovery, margin_parameters
from ptdlib.predictor.conformal import check_alpha
from ptdlib.sampling.sampler import SamplerConfig


class PredictedCanvas(CanvasPolicy):
    """AdaRLP length prediction plus a margin calibrated on ``calib`` (never on the evaluated split).

    ``early_stop``: also stop a query after the block in which EOS is committed, so a canvas chosen too long
    costs only the passes up to its answer's end (prediction + EOS-led growth within the predicted canvas).

    ``margin``: ``percentile`` (Predict-then-Diffuse: a percentile of the positive residuals),
    ``conformal`` / ``conformal_log`` (split conformal, P(length ≥ canvas) ≤ alpha), ``cost_optimal``
    (least expected FLOPs with re-runs), ``aci`` (adaptive conformal inference, Gibbs & Candès 2021).

    With ``aci`` the policy is online: after each served batch, :meth:`observe` moves the working level
    ``α_t`` by ``gamma (α - err_t)``, where ``err_t`` is whether the query's first attempt was truncated
    (feedback arrives a batch late, as it would in a server that batches requests).
    """

    name = "predicted"

    def __init__(
        self,
        margin: str = "conformal",
        alpha: float = 0.05,
        percentile: float = 90.0,
        regressor: str = "ridge_log",
        features: str = "text",
        early_stop: bool = False,
        gamma: float = 0.005,
    ):
        MARGIN_METHODS.check(margin)
        self.margin, self.alpha, self.percentile = margin, float(alpha), float(percentile)
        self.regressor, self.features, self.early_stop = regressor, features, bool(early_stop)
        self.gamma = float(gamma)
        self._served: dict = {}  # qid -> prediction, until observe() reports the query's outcome (aci)
        groups = tuple(features.split("+"))
        self.predictor = LengthPredictor(PredictorConfig(regressor=regressor, features=FeatureSet(groups=groups)))
        self.rule = None
        self._takes = set(margin_parameters(margin))  # which of the settings below the margin's fit reads
        if "alpha" in self._takes:
            check_alpha(alpha)
        if "gamma" in self._takes and not 0 < self.gamma < 1:
            raise ValueError(f"gamma (the ACI step size) must be in (0, 1), got {gamma}")
        if "percentile" in self._takes and not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")

    def _margin_params(
        self, limits: CanvasLimits, prompt_lengths, recovery: str, sampler: SamplerConfig | None
    ) -> dict:
        """The policy's settings that the margin's fit function takes (:func:`margin_parameters`).

        An early stop is priced as the sampler this policy runs with (:meth:`sampler_config` of the run's
        ``sampler``) stops: after its own block holding EOS. Without a sampler, the policy's ``early_stop`` at
        blocks of ``limits.round_to``.
        """
        if sampler is None:
            early_stop, block = self.early_stop, limits.round_to
        else:
            runs_with = self.sampler_config(sampler)
            early_stop, block = runs_with.stops_after_eos_block, runs_with.block_length
        settings = {
            "percentile": self.percentile,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "max_canvas": limits.max_canvas,
            "round_to": limits.round_to,
            "prompt_lengths": prompt_lengths,
            "recovery": recovery,
            "early_stop": early_stop,
            "block": block,
        }
        return {k: v for k, v in settings.items() if k in self._takes}

    @property
    def online(self) -> bool:
        """True with the ``aci`` margin."""
        return self.margin == "aci"

    def fit(
        self,
        lm,
        train,
        train_lengths,
        calib=None,
        calib_lengths=None,
        limits: CanvasLimits = CanvasLimits(),
        recovery: str = "max",
        sampler: SamplerConfig | None = None,
    ) -> PredictedCanvas:
        """Fit the predictor on ``train`` and the margin on ``calib`` (their passes are training cost, not counted).

        Args:
            lm: The model (prompt features).
            train: Training queries.
            train_lengths: Their own lengths in tokens.
            calib: Calibration queries (required).
            calib_lengths: Their own lengths (required).
            limits: The run's canvas limits (some margins price them).
            recovery: How the run recovers a truncation; the ``cost_optimal`` margin prices it (and
                ``early_stop``) into its choice.
            sampler: The run's base sampler settings; the ``cost_optimal`` margin prices an early stop at the
                block length of the sampler this policy runs with (None: at ``limits.round_to``).

        Returns:
            The policy itself.

        Raises:
            ValueError: Without a calibration split.
        """
        if calib is None or calib_lengths is None:
            raise ValueError("the predicted policy needs a calibration split (calib queries and their own lengths)")
        self.predictor.fit_prompts(train, train_lengths, lm)
        pred = self.predictor.predict_prompts(calib, lm)
        prompt_lengths = np.array([len(lm.encode_prompt(q.prompt)) for q in calib])
        self.rule = calibrate(
            self.margin,
            pred,
            calib_lengths,
            calib_queries=calib,
            **self._margin_params(limits, prompt_lengths, recovery, sampler),
        )
        self._calib = list(calib)
        return self

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """Prediction + calibrated margin per query, in whole blocks, capped (see :meth:`CanvasPolicy.choose`).

        Raises:
            ValueError: If the policy is not fitted, or ``queries`` overlap the calibration split.
        """
        if self.rule is None:
            raise ValueError("predicted policy is untrained: call fit() with train and calib splits first")
        check_disjoint(self._calib, queries)  # never report on the split the margin was calibrated on
        pred = self.predictor.predict_prompts(queries, lm, callbacks)
        if self.online:
            self._served.update((q.qid, float(p)) for q, p in zip(queries, pred))
        return np.asarray(self.rule.canvas(pred, limits.max_canvas, limits.round_to), dtype=int)

    def observe(self, queries, lengths, canvases, truncated) -> None:
        """Update the ``aci`` level from each served query's outcome (other margins ignore feedback).

        Raises:
            ValueError: For a query this policy never served.
        """
        if not self.online:
            return
        for q, length, canvas, missed in zip(queries, lengths, canvases, truncated, strict=True):
            if q.qid not in self._served:
                raise ValueError(f"query {q.qid!r} was never served by this policy: choose() its canvas first")
            self.rule.update(self._served.pop(q.qid), float(length), canvas=int(canvas), missed=bool(missed))

    def check_recovery(self, recovery: str) -> None:
        if "recovery" in self._takes:  # a margin that prices re-runs (cost_optimal) must be able to price this one
            check_priced_recovery(recovery)

    def sampler_config(self, base: SamplerConfig) -> SamplerConfig:
        return dataclasses.replace(base, stop_after_eos_block=True) if self.early_stop else base

    def params(self) -> dict:
        p = {"margin": self.margin, "regressor": self.regressor, "features": self.features}
        if self.early_stop:
            p["early_stop"] = True
        p.update((k, getattr(self, k)) for k in ("percentile", "alpha", "gamma") if k in self._takes)
        return p
