"""The canvas policies that need no trained predictor: fixed, oracle, heuristic, SmartCrop, EOS-led growth.

(The AdaRLP ``predicted`` policy lives in :mod:`ptdlib.canvas.predicted`.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy, round_canvas
from ptdlib.models.batching import left_pad, with_canvas
from ptdlib.sampling.events import counted_logits
from ptdlib.sampling.sampler import WINDOWS, SamplerConfig


def _check_positive(name: str, value) -> None:
    if value is None or value <= 0:
        raise ValueError(f"{name} must be a positive number of tokens, got {value}")


class FixedCanvas(CanvasPolicy):
    """One canvas ``L`` for every query: LLaDA's reference setting and the baseline."""

    name = "fixed"

    def __init__(self, L: int = 128):
        _check_positive("L", L)
        self.L = int(L)

    def check_config(self, limits: CanvasLimits, sampler: SamplerConfig) -> None:
        """Check that ``L`` is a whole number of blocks within ``max_canvas`` and the sampler's steps fit it.

        A fixed arm is reported by the canvas it really runs, so ``L`` is never rounded silently.

        Raises:
            ValueError: If ``L`` exceeds ``max_canvas``, is not a multiple of ``round_to`` (the message suggests
                the neighbours), or does not fit the sampler's block structure.
        """
        self._check_limits(limits)
        self.sampler_config(sampler).plan(self.L)

    def _check_limits(self, limits: CanvasLimits) -> None:
        if self.L > limits.max_canvas:
            raise ValueError(f"fixed canvas L={self.L} exceeds limits.max_canvas {limits.max_canvas}")
        if self.L % limits.round_to:
            raise ValueError(
                f"fixed canvas L={self.L} is not a multiple of limits.round_to {limits.round_to} "
                f"(canvases are whole blocks): use {round_canvas([self.L], limits)[0]} or "
                f"{max(limits.round_to, self.L // limits.round_to * limits.round_to)}"
            )

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """``L`` for every query (see :meth:`CanvasPolicy.choose`); ValueError if ``L`` does not fit ``limits``."""
        self._check_limits(limits)
        return round_canvas([self.L] * len(queries), limits)

    def params(self) -> dict:
        return {"L": self.L}


class OracleCanvas(CanvasPolicy):
    """The model's own length (from the labelling run at the maximum canvas) plus its EOS, in whole blocks.

    What a perfect length estimate would pay: the reference of every "FLOPs / oracle" ratio, not a strict lower
    bound (docs/design.md §7); not deployable.
    """

    name = "oracle"
    oracle = True

    def __init__(self):
        self.own: dict = {}

    def with_labels(self, labels: dict) -> OracleCanvas:
        """Give the oracle the own lengths of the queries it will be asked about (qid -> length)."""
        self.own = dict(labels)
        return self

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """Own length + 1 (its EOS) per query, in whole blocks; ValueError naming queries without a label."""
        missing = [q.qid for q in queries if q.qid not in self.own]
        if missing:
            raise ValueError(f"oracle has no own-length label for {len(missing)} queries, e.g. {missing[:3]}")
        return round_canvas([self.own[q.qid] + 1 for q in queries], limits)


class HeuristicCanvas(CanvasPolicy):
    """A linear function of the prompt length fitted on ``train`` plus an additive margin (in tokens).

    The heuristic baseline of Predict-then-Diffuse: length ≈ a + b · (prompt tokens).
    """

    name = "heuristic"

    def __init__(self, margin: float = 16.0):
        if margin < 0:
            raise ValueError(f"margin must be >= 0 tokens, got {margin}")
        self.margin = float(margin)
        self.coef: tuple[float, float] | None = None

    def fit(
        self, lm, train, train_lengths, calib=None, calib_lengths=None, limits=None, recovery: str = "max", sampler=None
    ) -> HeuristicCanvas:
        """Fit ``length ≈ a + b · (prompt tokens)`` by least squares on ``train``.

        Raises:
            ValueError: With fewer than 2 queries or not one label per query.
        """
        x = np.array([len(lm.encode_prompt(q.prompt)) for q in train], dtype=float)
        y = np.asarray(train_lengths, dtype=float)
        if len(x) < 2 or len(x) != len(y):
            raise ValueError(f"heuristic needs >= 2 queries with one label each, got {len(x)} and {len(y)}")
        slope, intercept = np.polyfit(x, y, 1)
        self.coef = (float(intercept), float(slope))
        return self

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """``a + b · (prompt tokens) + margin + 1`` per query, in whole blocks; ValueError if not fitted."""
        if self.coef is None:
            raise ValueError("heuristic policy is not fitted: call fit() on training queries first")
        x = np.array([len(lm.encode_prompt(q.prompt)) for q in queries], dtype=float)
        return round_canvas(self.coef[0] + self.coef[1] * x + self.margin + 1, limits)

    def params(self) -> dict:
        return {"margin": self.margin}


@torch.no_grad()
def eos_probabilities(lm, queries, canvas: int, callbacks=(), batch_size: int = 32) -> np.ndarray:
    """P(EOS or EOT) at every canvas position, from one probe pass over prompt + all-mask canvas.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM` (its ``end_ids`` are summed).
        queries: ``n`` queries (``qid``, ``prompt``).
        canvas: Canvas length in tokens.
        callbacks: Each batch's pass is reported to them as a ``probe``.
        batch_size: Queries per pass.

    Returns:
        Float32 array of shape ``(n, canvas)``.

    Raises:
        ValueError: If prompt + canvas exceed the model's positions.
    """
    out = []
    for i in range(0, len(queries), batch_size):
        qs = queries[i : i + batch_size]
        ids, attn = left_pad([lm.encode_prompt(q.prompt) for q in qs], lm.pad_id)
        ids, attn = with_canvas(ids, attn, torch.full((len(qs), canvas), lm.mask_id, dtype=torch.long))
        lm.check_length(ids.shape[1])
        logits = counted_logits(lm, ids.to(lm.device), attn.to(lm.device), "probe", [q.qid for q in qs], callbacks)
        p = logits[:, -canvas:].float().softmax(-1)[..., list(lm.end_ids)].sum(-1)
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, canvas))


def ended_by(p_eos: np.ndarray, rule: str) -> np.ndarray:
    """P(the answer has ended by position i) from per-position EOS probabilities.

    ``product``: 1 − ∏_{j≤i}(1 − p_j), treating positions as independent (SmartCrop, "Diffusion LMs are
    natively length-aware"); ``running_max``: max_{j≤i} p_j, reading p_i as P(length ≤ i) made monotone.

    Args:
        p_eos: Per-position EOS probabilities, shape ``(n, L)``.
        rule: ``product`` or ``running_max``.

    Returns:
        Array of shape ``(n, L)``, non-decreasing along each row.

    Raises:
        ValueError: For an unknown rule.
    """
    if rule == "product":
        return 1.0 - np.cumprod(1.0 - np.clip(p_eos, 0.0, 1.0), axis=1)
    if rule == "running_max":
        return np.maximum.accumulate(p_eos, axis=1)
    raise ValueError(f"unknown SmartCrop rule {rule!r}; choose from product, running_max")


class SmartCrop(CanvasPolicy):
    """Crop the canvas where the model's own EOS probabilities say the answer has ended.

    One probe pass over prompt + an all-mask canvas at the maximum length gives p_i = P(EOS at i); the crop
    is the first i where P(ended by i) (see :func:`ended_by`) passes ``tau``, plus ``pad`` tokens; if it
    never passes, the maximum canvas. The probe pass is counted as kind ``probe``. ``early_stop`` also stops a
    query after the block in which EOS is committed (see :class:`GrowthCanvas`).
    """

    name = "smartcrop"

    def __init__(self, tau: float = 0.9, rule: str = "product", pad: int = 0, early_stop: bool = False):
        if not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0 tokens, got {pad}")
        ended_by(np.zeros((1, 1)), rule)  # validates the rule name
        self.tau, self.rule, self.pad, self.early_stop = float(tau), rule, int(pad), bool(early_stop)

    def sampler_config(self, base: SamplerConfig) -> SamplerConfig:
        return dataclasses.replace(base, stop_after_eos_block=True) if self.early_stop else base

    def estimate(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """Estimated response length per query (the crop before padding and rounding).

        Args:
            lm: The model.
            queries: The queries.
            limits: Block length and maximum canvas (the probe's canvas).
            callbacks: The probe pass is reported to them.

        Returns:
            Int array of shape ``(n_queries,)``: the first position where P(ended) reaches ``tau``, else
            ``limits.max_canvas``.
        """
        ended = ended_by(eos_probabilities(lm, queries, limits.max_canvas, callbacks), self.rule)
        crossed = ended >= self.tau
        return np.where(crossed.any(axis=1), crossed.argmax(axis=1), limits.max_canvas)

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        return round_canvas(self.estimate(lm, queries, limits, callbacks) + 1 + self.pad, limits)

    def params(self) -> dict:
        p = {"tau": self.tau, "rule": self.rule, "pad": self.pad}
        return {**p, "early_stop": True} if self.early_stop else p


class GrowthCanvas(CanvasPolicy):
    """EOS-led growth (dLLM-Var; LLaDA2-style pipelines): stop after the block in which EOS is committed.

    Decode block by block and stop after the block in which EOS is committed; the maximum canvas is the maximum
    length.

    ``window="growing"`` (default) is how dLLM-Var runs (Yang et al., 2025): each pass sees the prompt, the
    blocks decoded so far and the current block of masks, nothing after it (the sampler's growing window).
    ``window="full"`` keeps the whole maximum canvas in every pass and only skips the passes after the EOS
    block: what a model trained on fixed canvases can do (the canvas end stays visible).
    """

    name = "growth"

    def __init__(self, block: int = 32, window: str = "growing"):
        _check_positive("block", block)
        if window not in WINDOWS:
            raise ValueError(f"growth window must be one of {', '.join(WINDOWS)}, got {window!r}")
        self.block, self.window = int(block), window

    def sampler_config(self, base: SamplerConfig) -> SamplerConfig:
        return dataclasses.replace(base, block_length=self.block, stop_after_eos_block=True, window=self.window)

    def choose(self, lm, queries: Sequence, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """The maximum canvas for every query; ValueError if ``block`` does not divide it."""
        if limits.max_canvas % self.block:
            raise ValueError(f"growth block {self.block} must divide the maximum canvas {limits.max_canvas}")
        return np.full(len(queries), limits.max_canvas, dtype=int)

    def params(self) -> dict:
        return {"block": self.block, "window": self.window}
