"""The ``rho_eos`` policy: ρ-EOS, bidirectional variable length from the implicit EOS density.

Yang, Jiang & Shao, "ρ-EOS: Training-free Bidirectional Variable-Length Control for Masked Diffusion LLMs",
arXiv:2601.22527.

Single stage: start from a short all-mask canvas; after every denoising step, from that step's logits, the
*implicit EOS density* ρ is the share of the positions that were masked before the step whose argmax is an end
token. ρ below ``rho_low`` means the canvas is too short: ``K`` masks are inserted before the first committed
end token (appended when there is none); ρ above ``rho_high`` means it is too long: the last ``K`` positions
are cut; in between, nothing changes. ``K = expand · m``, the multiplier ``m`` growing with the distance to
the violated threshold (:func:`step_multiplier`, the reference's ``exp`` scheduler: 1, 2, 4, 8 per 0.1 of
density). Length changes stop after ``adjust_steps`` steps of a query and at the maximum canvas.

One guard the reference lacks: a shrink never cuts a committed token other than an end token, nor the position
after the last such token (room for its EOS). The reference cuts ``K`` tail positions whatever they hold; decoding
one token per step, the masks left behind the answer mostly predict EOS (ρ near 1), and unguarded cuts then ate
into answers: 18 of 48 test queries ended without EOS in a first trial (blocks of 8), each re-run at the
maximum canvas.

**Scaling to the embedded model.** The public code's settings for LLaDA-8B: ρ_low 0.4, ρ_high 0.6, the ``exp``
scheduler with density intervals of 0.1 and a multiplier capped at 8, base factor 8, blocks of 32, initial
length 64 (swept 64 to 1,024), maximum 2,048, length changes for the first 64 steps. Lengths are scaled
by the block (32 → 8): ``expand`` 2 (so ``K`` ≤ 16), ``initial`` 16, ``adjust_steps`` 16; the maximum is the
project's canvas (128); densities are unitless and kept. As for :mod:`~ptdlib.canvas.daedal`, the study
decodes one token per step (S = L) by default; ``threshold=0.9`` restores the reference's high-confidence rule.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy
from ptdlib.canvas.daedal import DaedalCanvas, _check_count, _check_probability
from ptdlib.sampling.edits import InsertMasks, Resize, StepView

#: ρ-EOS's density interval: the multiplier doubles for every further 0.1 beyond the threshold
DENSITY_INTERVAL = 0.1
#: ... up to this cap (the reference's ``max_mult``)
MAX_MULTIPLIER = 8

KEEP, SHRINK, GROW = "keep", "shrink", "grow"


def step_multiplier(gap: float) -> int:
    """The ``exp`` scheduler: ``2 ** (ceil(gap / 0.1) - 1)`` for a density ``gap`` beyond a threshold, in [1, 8]."""
    seg = math.ceil((gap + 1e-12) / DENSITY_INTERVAL)
    return int(min(max(2 ** (seg - 1), 1), MAX_MULTIPLIER))


def decide(density: float, rho_low: float, rho_high: float, expand: int) -> tuple[str, int]:
    """The length decision for an implicit EOS density: grow below ``rho_low``, shrink above ``rho_high``.

    Args:
        density: The implicit EOS density (:func:`eos_density`).
        rho_low: Grow below this density.
        rho_high: Shrink above this density.
        expand: Base step in tokens, multiplied by :func:`step_multiplier` of the distance to the threshold.

    Returns:
        ``(action, K)``: ``("grow", K)``, ``("shrink", K)`` or ``("keep", 0)``, ``K`` in tokens.
    """
    if density < rho_low:
        return GROW, expand * step_multiplier(rho_low - density)
    if density > rho_high:
        return SHRINK, expand * step_multiplier(density - rho_high)
    return KEEP, 0


def eos_density(before: torch.Tensor, pred: torch.Tensor, length: int, mask_id: int, end_ids) -> float:
    """Share of the canvas positions masked in ``before`` whose prediction ``pred`` is an end token.

    Args:
        before: One row's canvas tokens before the step, shape ``(W,)``.
        pred: The row's predicted tokens, shape ``(W,)``.
        length: The row's canvas length (positions past it are ignored).
        mask_id: The mask token id.
        end_ids: Token ids that end a response.

    Returns:
        The density in [0, 1]; 0 if no position is masked.
    """
    masked = before[:length] == mask_id
    n = int(masked.sum())
    if n == 0:
        return 0.0
    is_end = torch.isin(pred[:length], torch.tensor(list(end_ids), device=pred.device))
    return float((masked & is_end).sum()) / n


class RhoEosEditor:
    """ρ-EOS's length control as a :class:`~ptdlib.sampling.edits.CanvasEditor`."""

    def __init__(self, policy: RhoEosCanvas, max_canvas: int):
        self.p, self.max_canvas = policy, max_canvas
        self.steps = defaultdict(int)  # query id -> steps seen
        self.log = []  # (query id, step, density, action, K) of every decision, for plots and tests

    @staticmethod
    def _floor(view: StepView, r: int) -> int:
        """The shortest canvas a shrink may leave.

        That is past the last committed non-end token, plus one position for its end token (at least 1). The
        reference's cut may drop committed answer tokens; see the module docstring.
        """
        tokens = view.after[r, : view.lengths[r]]
        ends = torch.tensor(list(view.end_ids), device=tokens.device)
        content = ((tokens != view.mask_id) & ~torch.isin(tokens, ends)).nonzero()
        return int(content.max()) + 2 if len(content) else 1

    def edit(self, view: StepView):
        """Grow (insert masks before the first committed end token) or shrink (cut the tail) each row.

        Only during a query's first ``adjust_steps`` steps; growth is capped at the maximum canvas and a shrink
        never cuts committed content (:meth:`_floor`). Every decision is appended to ``log``.
        """
        p = self.p
        pred = view.logits.argmax(-1)
        edits = []
        for r, q in enumerate(view.query_ids):
            self.steps[q] += 1
            if self.steps[q] > p.adjust_steps:
                continue
            n = view.lengths[r]
            rho = eos_density(view.before[r], pred[r], n, view.mask_id, view.end_ids)
            action, k = decide(rho, p.rho_low, p.rho_high, p.expand)
            if action == GROW:
                k = min(k, self.max_canvas - n)
                if k < 1:
                    action = KEEP
                else:
                    ended = torch.isin(view.after[r, :n], torch.tensor(list(view.end_ids), device=pred.device))
                    at = int(ended.float().argmax()) if ended.any() else n  # before the first committed end token
                    edits.append(InsertMasks(q, at, k))
            elif action == SHRINK:
                k = min(k, n - self._floor(view, r))
                if k < 1:
                    action = KEEP
                else:
                    edits.append(Resize(q, n - k))
            self.log.append((q, view.step, rho, action, k if action != KEEP else 0))
        return edits


class RhoEosCanvas(CanvasPolicy):
    """ρ-EOS (see module docstring): grow or shrink the canvas by the implicit EOS density while decoding."""

    name = "rho_eos"

    def __init__(
        self,
        initial: int = 16,
        rho_low: float = 0.4,
        rho_high: float = 0.6,
        expand: int = 2,
        adjust_steps: int = 16,
        threshold: float | None = None,
    ):
        self.initial = _check_count("initial", initial)
        self.rho_low = _check_probability("rho_low", rho_low)
        self.rho_high = _check_probability("rho_high", rho_high)
        if self.rho_low > self.rho_high:
            raise ValueError(f"rho_low {rho_low} must be at most rho_high {rho_high}")
        self.expand = _check_count("expand", expand)
        self.adjust_steps = _check_count("adjust_steps", adjust_steps, lowest=0)
        if threshold is not None and not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] or None (one token per step), got {threshold}")
        self.threshold = threshold

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """``initial`` tokens (capped at the maximum canvas) for every query."""
        return np.full(len(queries), min(self.initial, limits.max_canvas), dtype=int)

    def editor(self, limits: CanvasLimits) -> RhoEosEditor:
        return RhoEosEditor(self, limits.max_canvas)

    check_recovery = DaedalCanvas.check_recovery
    check_config = DaedalCanvas.check_config
    sampler_config = DaedalCanvas.sampler_config

    def params(self) -> dict:
        p = {"initial": self.initial, "rho_low": self.rho_low, "rho_high": self.rho_high, "expand": self.expand}
        return {**p, "threshold": self.threshold} if self.threshold is not None else p
