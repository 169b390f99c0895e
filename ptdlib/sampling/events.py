"""Forward-pass and step events: how the sampler, probes and predictors report what they computed.

Every forward pass of a D-LLM, whoever runs it (the sampler's denoising loop, a SmartCrop probe, a
predictor's prompt pass, a re-run after truncation), is reported to callbacks as a :class:`ForwardEvent`.
FLOP accounting (``ptdlib.cost.flops.FlopLedger``) and tracing are callbacks; no counting lives inside a loop.

A callback is any object with an ``on_forward(event)`` method and, optionally, ``on_step(event)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

#: The kinds of forward pass the ledger tells apart.
FORWARD_KINDS = ("denoise", "probe", "predictor", "rerun")


@dataclass(frozen=True)
class ForwardEvent:
    """One forward pass over a (batch_size, seq_len) tensor; ``query_ids`` name its rows in order."""

    kind: str  # one of FORWARD_KINDS
    query_ids: tuple[Hashable, ...]  # caller's id of each row of the batch
    seq_len: int  # padded sequence length actually computed (prompt + canvas); the keys of a cached pass
    step: int | None = None  # denoising step index within the call, if any
    query_len: int | None = None  # a cached pass (ptdlib.sampling.kvcache): tokens computed, attending to seq_len keys

    @property
    def cached(self) -> bool:
        """Whether only ``query_len`` of the ``seq_len`` tokens were computed (a KV-cached pass)."""
        return self.query_len is not None

    @property
    def batch_size(self) -> int:
        """Rows in the pass (with guidance, each query counts twice)."""
        return len(self.query_ids)


@dataclass(frozen=True)
class StepEvent:
    """What one denoising step committed: for each query, canvas positions and the tokens put there."""

    step: int
    block: int
    query_ids: tuple[Hashable, ...]
    positions: tuple[tuple[int, ...], ...]  # canvas positions committed this step, per query
    tokens: tuple[tuple[int, ...], ...]  # the committed token ids, aligned with positions


@runtime_checkable
class Callback(Protocol):
    """What a callback offers: ``on_forward(event)`` and, optionally, ``on_step(event)``."""

    def on_forward(self, event: ForwardEvent) -> None: ...


def emit_forward(callbacks: Iterable, event: ForwardEvent) -> None:
    """Report one forward pass to every callback's ``on_forward``.

    Raises:
        ValueError: If ``event.kind`` is not one of :data:`FORWARD_KINDS`.
    """
    if event.kind not in FORWARD_KINDS:
        raise ValueError(f"unknown forward kind {event.kind!r}; choose from {', '.join(FORWARD_KINDS)}")
    for cb in callbacks or ():
        cb.on_forward(event)


def emit_step(callbacks: Iterable, event: StepEvent) -> None:
    """Report one step's commits to every callback that has ``on_step``."""
    for cb in callbacks or ():
        if hasattr(cb, "on_step"):
            cb.on_step(event)


def counted_logits(
    lm, ids: torch.Tensor, attention_mask: torch.Tensor, kind: str, query_ids, callbacks, step: int | None = None
) -> torch.Tensor:
    """``lm.logits(ids, attention_mask)``, reported to ``callbacks`` as one forward pass of ``kind``.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM`.
        ids: Token ids, shape ``(B, T)``.
        attention_mask: Shape ``(B, T)``.
        kind: One of :data:`FORWARD_KINDS`.
        query_ids: The caller's id of each row.
        callbacks: Objects with ``on_forward``.
        step: Denoising step index, if any.

    Returns:
        Logits of shape ``(B, T, V)``.

    Raises:
        ValueError: If ``kind`` is unknown (raised after the pass).
    """
    logits = lm.logits(ids, attention_mask)
    emit_forward(callbacks, ForwardEvent(kind, tuple(query_ids), int(ids.shape[1]), step))
    return logits


class TraceRecorder:
    """Callback recording every forward pass and every step's commits (for plots of the canvas filling)."""

    def __init__(self):
        self.forwards = []  # ForwardEvent, in order
        self.commits = defaultdict(list)  # query id -> [(step, block, positions, tokens)]

    def on_forward(self, event) -> None:
        """Record a :class:`~ptdlib.sampling.events.ForwardEvent`."""
        self.forwards.append(event)

    def on_step(self, event: StepEvent) -> None:
        """Record a step's commits per query."""
        for qid, pos, tok in zip(event.query_ids, event.positions, event.tokens):
            self.commits[qid].append((event.step, event.block, pos, tok))

    def commit_steps(self, query_id, canvas_length: int) -> list[int]:
        """Per canvas position, the step at which it was committed.

        Args:
            query_id: The query.
            canvas_length: Its canvas length.

        Returns:
            ``canvas_length`` step indices; -1 for a position never committed (e.g. given by ``init_canvas``).
        """
        out = [-1] * canvas_length
        for step, _, positions, _ in self.commits[query_id]:
            for p in positions:
                out[p] = step
        return out
