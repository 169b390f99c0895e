"""The ``daedal`` policy: DAEDAL's training-free variable-length denoising.

Li et al., "Beyond Fixed: Variable-Length Denoising for Diffusion Large Language Models", ICLR 2026.

Two stages, both driven by the model's own EOS confidence:

1. **Initial length adjustment** (in :meth:`DaedalCanvas.choose`): start from a short all-mask canvas and, while
   the EOS confidence at the canvas end is below ``eos_threshold``, extend it by ``grow`` masks and probe again.
   Each probe is one forward pass over prompt + canvas, reported as kind ``probe``. The final canvas gets
   ``eos_pad`` committed EOS tokens after its masks (the reference's ``eos_check_tokens / 2``).
2. **Iterative mask insertion** (a :class:`~ptdlib.sampling.edits.CanvasEditor`): after each denoising step, if the
   canvas-end EOS confidence is below ``insert_eos_threshold``, the masked position of the current block with
   the lowest confidence, if under ``low_confidence`` and not committed this step, is replaced by ``expand``
   masks. The longer passes that follow are priced at their real shape by the FLOP ledger.

*EOS confidence at the canvas end* (the reference's ``_calculate_eos_confidence``): scanning back from the
canvas end, the positions whose argmax is an end token, up to ``check`` of them; the sum of their end-token
probabilities divided by ``check``.

**Scaling to the embedded model.** The published settings for LLaDA-8B (public code of the authors and of
ρ-EOS, which re-runs DAEDAL as its baseline) are: blocks of 32, initial length 64, maximum 2,048, expansion
factor 8 (stage-1 growth and stage-2 insertion alike), ``eos_check_tokens`` 32 (16 EOS appended), EOS
thresholds 0.5 (stage 1) and 0.9 (stage 2), low-confidence threshold 0.1, high-confidence threshold 0.9.
Here lengths are scaled by the block: blocks of 8 (a quarter of 32) give ``initial`` 16, ``expand`` 2,
``check`` 8, ``eos_pad`` 4; the maximum is the project's canvas (128, the model's training canvas);
probabilities are unitless and kept. The reference decodes with the high-confidence rule (commit every
masked position above 0.9, at least one); this study's default is LLaDA's one token per step (S = L) so that
FLOPs against the oracle measure the length choice alone; ``threshold=0.9`` restores the paper's rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy
from ptdlib.canvas.recovery import check_recovery
from ptdlib.models.batching import left_pad, with_canvas
from ptdlib.sampling.edits import InsertMasks, StepView
from ptdlib.sampling.events import counted_logits
from ptdlib.sampling.sampler import SamplerConfig

#: Recoveries an editing policy can run with: its canvases are not whole blocks, so only a re-run at the
#: maximum canvas (or none) keeps the re-run's canvas valid.
EDITING_RECOVERIES = ("max", "none")


def end_confidence(probs: torch.Tensor, lengths, end_ids, check: int) -> torch.Tensor:
    """DAEDAL's EOS confidence at the canvas end.

    Per row, scanning back from position ``lengths[r] - 1``: the last ``check`` positions whose argmax is an end
    token; the sum of their end-token probabilities over ``check`` (fewer such positions lower the score).

    Args:
        probs: Probabilities over canvas positions, shape ``(rows, W, V)``.
        lengths: Canvas length of each row (positions at or past it are ignored).
        end_ids: Token ids that end a response.
        check: Number of end positions scored.

    Returns:
        Tensor of shape ``(rows,)``, in [0, 1].
    """
    p_end = probs[..., list(end_ids)].sum(-1)  # (rows, W)
    is_end = torch.isin(probs.argmax(-1), torch.tensor(list(end_ids), device=probs.device))
    inside = (
        torch.arange(probs.shape[1], device=probs.device)[None, :] < torch.as_tensor(lengths).to(probs.device)[:, None]
    )
    is_end &= inside
    from_end = is_end.flip(1).cumsum(1).flip(1)  # how many end-argmax positions at or after each position
    take = is_end & (from_end <= check)
    return (p_end * take).sum(1) / check


def _check_count(name: str, value, lowest: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        raise ValueError(f"{name} must be an integer >= {lowest} tokens, got {value!r}")
    return int(value)


def _check_probability(name: str, value) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


class DaedalEditor:
    """DAEDAL's stage 2: replace the least confident mask of the current block by ``expand`` masks."""

    def __init__(self, policy: DaedalCanvas, max_canvas: int):
        self.p, self.max_canvas = policy, max_canvas

    def edit(self, view: StepView):
        """One :class:`~ptdlib.sampling.edits.InsertMasks` per row that does not yet see its end.

        A row whose end confidence is below ``insert_eos_threshold`` and that has room below the maximum canvas
        has its least confident still-masked position of the current block (below ``low_confidence``) replaced
        by up to ``expand`` masks.
        """
        p = self.p
        probs = view.logits.float().softmax(-1)
        conf = probs.max(-1).values  # (rows, W): the candidate's probability (greedy)
        end_conf = end_confidence(probs, view.lengths, view.end_ids, p.check)
        edits = []
        for r, q in enumerate(view.query_ids):
            n = view.lengths[r]
            room = min(p.expand - 1, self.max_canvas - n)
            if end_conf[r] >= p.insert_eos_threshold or room < 1:
                continue
            still = (view.before[r] == view.mask_id) & (view.after[r] == view.mask_id)
            still[: view.block_start] = False
            still[view.block_end :] = False
            low = still & (conf[r] < p.low_confidence)
            if low.any():
                pos = int(torch.where(low, conf[r], torch.inf).argmin())
                edits.append(InsertMasks(q, pos, room))  # the mask at pos becomes 1 + room masks
        return edits


class DaedalCanvas(CanvasPolicy):
    """DAEDAL (see module docstring): probe-and-extend a short initial canvas, then insert masks.

    Masks are inserted where the model is unsure while it does not yet see the answer's end.
    """

    name = "daedal"

    def __init__(
        self,
        initial: int = 16,
        grow: int | None = None,
        expand: int = 2,
        check: int = 8,
        eos_pad: int = 4,
        eos_threshold: float = 0.5,
        insert_eos_threshold: float = 0.9,
        low_confidence: float = 0.1,
        threshold: float | None = None,
    ):
        self.initial = _check_count("initial", initial)
        self.expand = _check_count("expand", expand, lowest=2)  # 1 would replace a mask by itself
        self.grow = self.expand if grow is None else _check_count("grow", grow)
        self.check = _check_count("check", check)
        self.eos_pad = _check_count("eos_pad", eos_pad, lowest=0)
        self.eos_threshold = _check_probability("eos_threshold", eos_threshold)
        self.insert_eos_threshold = _check_probability("insert_eos_threshold", insert_eos_threshold)
        self.low_confidence = _check_probability("low_confidence", low_confidence)
        if threshold is not None and not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] or None (one token per step), got {threshold}")
        self.threshold = threshold

    @torch.no_grad()
    def initial_lengths(self, lm, queries, limits: CanvasLimits, callbacks=(), batch_size: int = 32) -> np.ndarray:
        """Stage 1: the number of masks per query after probing and extending (before the EOS pad).

        Starting from ``initial`` masks, a query's canvas grows by ``grow`` until its end confidence reaches
        ``eos_threshold`` or the maximum canvas; every probe pass is reported as a ``probe``.

        Args:
            lm: The model.
            queries: The queries.
            limits: Block length and maximum canvas.
            callbacks: The probe passes are reported to them.
            batch_size: Queries per pass.

        Returns:
            Int array of shape ``(n_queries,)``.
        """
        out = np.zeros(len(queries), dtype=int)
        for i in range(0, len(queries), batch_size):
            qs = list(range(i, min(i + batch_size, len(queries))))
            L = min(self.initial, limits.max_canvas)
            prompts = [lm.encode_prompt(queries[j].prompt) for j in qs]
            while qs:
                ids, attn = left_pad(prompts, lm.pad_id)
                ids, attn = with_canvas(ids, attn, torch.full((len(qs), L), lm.mask_id, dtype=torch.long))
                lm.check_length(ids.shape[1])
                logits = counted_logits(
                    lm, ids.to(lm.device), attn.to(lm.device), "probe", [queries[j].qid for j in qs], callbacks
                )
                conf = end_confidence(logits[:, -L:].float().softmax(-1), [L] * len(qs), lm.end_ids, self.check)
                done = (conf >= self.eos_threshold).cpu().numpy() | (L >= limits.max_canvas)
                for j in np.asarray(qs)[done]:
                    out[j] = L
                prompts = [p for p, d in zip(prompts, done) if not d]
                qs = [j for j, d in zip(qs, done) if not d]
                L = min(L + self.grow, limits.max_canvas)
        return out

    def choose(self, lm, queries, limits: CanvasLimits, callbacks=()) -> np.ndarray:
        """Stage 1's masks plus the EOS pad, capped at the maximum canvas (not rounded to blocks)."""
        self._masks = self.initial_lengths(lm, queries, limits, callbacks)
        return np.minimum(self._masks + self.eos_pad, limits.max_canvas)

    def initial_canvases(self, lm, canvases) -> list[list[int]]:
        """The masks of the last :meth:`choose`, then committed EOS up to each canvas.

        The EOS run is the EOS pad, which the maximum canvas may have cut.

        Raises:
            ValueError: If not called after :meth:`choose` on the same queries.
        """
        masks = getattr(self, "_masks", None)
        if masks is None or len(masks) != len(canvases):
            raise ValueError(f"{self.name}: initial_canvases() must follow choose() on the same queries")
        return [[lm.mask_id] * int(m) + [lm.eos_id] * (int(c) - int(m)) for m, c in zip(masks, canvases)]

    def editor(self, limits: CanvasLimits) -> DaedalEditor:
        return DaedalEditor(self, limits.max_canvas)

    def check_recovery(self, recovery: str) -> None:
        """Only :data:`EDITING_RECOVERIES`: the canvases are off the block grid (ValueError otherwise)."""
        check_recovery(recovery)
        if recovery not in EDITING_RECOVERIES:
            raise ValueError(
                f"{self.name} edits canvases off the block grid; recover with "
                f"{' or '.join(EDITING_RECOVERIES)}, not {recovery!r}"
            )

    def check_config(self, limits: CanvasLimits, sampler: SamplerConfig) -> None:
        self.sampler_config(sampler)  # refuses a fixed number of steps before anything runs

    def sampler_config(self, base: SamplerConfig) -> SamplerConfig:
        """``base`` with the policy's threshold, if any.

        Raises:
            ValueError: Without a threshold, if ``base`` has a fixed number of steps (one token per step needed).
        """
        if self.threshold is not None:
            return dataclasses.replace(base, threshold=self.threshold)
        if base.steps is not None:
            raise ValueError(
                f"{self.name} decodes one token per step (steps=None) or with a threshold; the "
                f"sampler has steps={base.steps}"
            )
        return base

    def params(self) -> dict:
        p = {"initial": self.initial, "grow": self.grow, "expand": self.expand}
        return {**p, "threshold": self.threshold} if self.threshold is not None else p
