"""Forward-pass plans: the one model of what a chosen canvas costs, re-runs included.

A query's **plan** is a :class:`collections.Counter` ``{sequence length: forward passes}``; a KV-cached pass
(:mod:`ptdlib.sampling.kvcache`) has the key ``(T, T_q)``: ``T_q`` tokens computed against ``T`` keys. Every view
of cost reads its plans from here: the cost-optimal margin (:func:`ptdlib.predictor.calibration.expected_cost`),
the margin sweeps and the predictor's pay-off (:mod:`ptdlib.analysis.margins`,
:mod:`ptdlib.analysis.predictor_eval`), the what-if workloads (:mod:`ptdlib.cost.workload`,
:mod:`ptdlib.analysis.deployment`); the sampler and the recovery code take their batching and re-run rules from
here too, so the model and the real passes cannot drift apart (``tests/test_plans.py`` checks the plans against
the passes the sampler reports). The conventions (``docs/design.md`` §6 and §11):

* **Canvas and blocks.** A canvas of ``L`` tokens is decoded in blocks of ``block`` tokens, left to right
  (Nie et al., 2025, "Large Language Diffusion Models"). Chosen lengths are rounded up to whole blocks
  (:func:`round_to_block`). A block of ``b`` tokens takes ``ceil(steps_per_token · b)`` denoising steps
  (:func:`block_steps`; LLaDA's reference ``S = L`` is ``steps_per_token = 1``), each one forward pass over the
  prompt and the canvas (two with classifier-free guidance).
* **Attempts and recovery.** An answer of ``ℓ`` tokens needs ``ℓ + 1`` canvas positions (its EOS); a canvas
  ``c ≤ ℓ`` truncates it. A truncated attempt on a canvas below the maximum is re-run (:data:`RECOVERIES`,
  :func:`next_canvas`): ``max`` at the maximum canvas (Predict-then-Diffuse), ``double`` at twice the canvas,
  ``extend`` at twice the canvas decoding only the new positions, ``none`` not at all (:func:`attempts`).
* **Early stop** (the sampler's ``stop_after_eos_block``, always on a growing window): an attempt that holds the
  answer stops after the block holding its EOS, position ``ℓ`` (:func:`eos_stop`). It is priced wherever the
  answer's length is known; a plan that needs it without the length is refused.
* **Batching.** The sampler groups the queries of one call by canvas, longest prompt first, ``batch_size`` rows
  per pass, each row padded to the batch's longest prompt (:func:`sampler_batches`, :func:`batched_plans`).

This module imports numpy only (no torch), so cost notebooks and the CLI's cost model load it cheaply.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

#: Ways to recover a truncated answer (:mod:`ptdlib.canvas.recovery` runs them; module docstring).
RECOVERIES = ("max", "double", "extend", "none")
#: Recoveries that spend forward passes on a truncation (``none`` keeps the cut answer: it costs score instead).
RERUN_RECOVERIES = tuple(r for r in RECOVERIES if r != "none")
#: Recoveries whose re-runs start from fresh canvases, so that the sampler's batching of a re-run follows from the
#: canvases alone (``extend`` continues partly decoded canvases, whose rows leave passes block by block).
FRESH_RECOVERIES = tuple(r for r in RECOVERIES if r != "extend")
#: KV-cache modes: none, or Fast-dLLM's prefix / dual cache refreshed per block (:mod:`ptdlib.sampling.kvcache`).
CACHE_MODES = ("none", "prefix", "dual")
#: Sequence windows of the sampler: the whole canvas, or prompt + decoded blocks + the current one (dLLM-Var).
WINDOWS = ("full", "growing")


# ---------------------------------------------------------------- checks
def check_recovery(name: str, allowed: Sequence[str] = RECOVERIES) -> str:
    """Return ``name`` if it is one of ``allowed`` recoveries.

    Args:
        name: a recovery name.
        allowed: the recoveries accepted here (a subset of :data:`RECOVERIES`).

    Returns:
        ``name``.

    Raises:
        ValueError: ``name`` is not in ``allowed``, naming the choices.
    """
    if name not in allowed:
        raise ValueError(f"unknown truncation recovery {name!r}; choose from {', '.join(allowed)}")
    return name


def check_cache_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`CACHE_MODES`; ValueError naming the choices otherwise."""
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r}; choose from {', '.join(CACHE_MODES)}")
    return mode


# ---------------------------------------------------------------- canvases, stops and re-runs
def round_to_block(lengths, block: int, max_canvas: int | None = None) -> np.ndarray:
    """Round token counts up to whole blocks: at least one block, at most ``max_canvas``.

    Args:
        lengths: token counts, any shape (tokens).
        block: the block length (tokens).
        max_canvas: the cap (tokens), or None for none.

    Returns:
        An int64 array of the shape of ``lengths`` (tokens).
    """
    x = np.ceil(np.maximum(np.asarray(lengths, dtype=float), 1) / block) * block
    if max_canvas is not None:
        x = np.minimum(x, max_canvas)
    return x.astype(np.int64)


def eos_stop(canvases, lengths, block: int) -> np.ndarray:
    """Canvas positions decoded with early stop: up to the end of the block holding the EOS, else all.

    An answer of ``ℓ`` tokens has its EOS at position ``ℓ``; if it fits (``ℓ < canvas``) the attempt stops after
    block ``floor(ℓ / block)``, otherwise the whole canvas is decoded.

    Args:
        canvases: canvas lengths (tokens).
        lengths: the answers' lengths (tokens), broadcast against ``canvases``.
        block: the sampler's block length (tokens).

    Returns:
        Positions decoded per query (tokens), of the dtype of ``canvases`` combined with int64.
    """
    c, y = np.asarray(canvases), np.asarray(lengths)
    return np.where(y < c, np.minimum(c, round_to_block(np.floor(y) + 1, block)), c)


def next_canvas(canvases, recovery: str, max_canvas: int) -> np.ndarray:
    """The canvas a truncated attempt is re-run on: the maximum (``max``), else twice the canvas, capped.

    Args:
        canvases: the truncated attempts' canvases (tokens).
        recovery: one of :data:`RERUN_RECOVERIES`.
        max_canvas: the largest canvas (tokens).

    Returns:
        The re-run canvases (tokens), of the dtype of ``canvases``.
    """
    c = np.asarray(canvases)
    check_recovery(recovery, RERUN_RECOVERIES)
    return np.full_like(c, max_canvas) if recovery == "max" else np.minimum(2 * c, max_canvas)


@dataclass(frozen=True)
class Attempt:
    """One round of attempts over a set of queries (arrays with one entry per query)."""

    rows: np.ndarray  # bool: the query runs this attempt (the first round: every query)
    canvas: np.ndarray  # the attempt's canvas (tokens); a query not running it keeps its last canvas
    start: np.ndarray  # first canvas position decoded (tokens): 0, or the old canvas for ``extend``
    end: np.ndarray  # canvas positions decoded up to (tokens): the canvas, or the early stop
    truncated: np.ndarray  # bool: the attempt holds no EOS (the answer does not fit its canvas)


def attempts(
    canvases,
    lengths,
    *,
    max_canvas: int,
    recovery: str = "max",
    early_stop: bool = False,
    block: int | None = None,
    truncated=None,
) -> list[Attempt]:
    """The attempts of queries given their first canvases: the first, then the re-runs their truncations cause.

    A query is truncated when its length is at least its canvas (the label model), or as ``truncated`` says for
    the first attempt when it was measured. A truncated attempt below ``max_canvas`` is re-run on
    :func:`next_canvas` (``extend`` decodes only the new positions); a query truncated at the maximum is not.

    Args:
        canvases: the first canvases, one per query (tokens).
        lengths: the answers' own lengths, one per query (tokens).
        max_canvas: the largest canvas (tokens).
        recovery: one of :data:`RECOVERIES`.
        early_stop: attempts stop after the block holding the EOS (:func:`eos_stop`).
        block: the sampler's block length (tokens); required with ``early_stop``.
        truncated: measured truncation flags of the first attempt, or None for the label model.

    Returns:
        One :class:`Attempt` per round, the first round first.

    Raises:
        ValueError: an unknown recovery, or ``early_stop`` without a positive ``block``.
    """
    check_recovery(recovery)
    if early_stop and (block is None or block <= 0):
        raise ValueError(f"early_stop needs the sampler's block length (a positive block), got {block!r}")
    c, y = np.asarray(canvases), np.asarray(lengths)

    def end(canvas, cut):  # a truncated attempt holds no EOS: it decodes its whole canvas
        return np.where(cut, canvas, eos_stop(canvas, y, block)) if early_stop else canvas

    cut = y >= c if truncated is None else np.asarray(truncated, dtype=bool)
    out = [Attempt(np.ones(c.shape, dtype=bool), c, np.zeros_like(c), end(c, cut), cut)]
    missed = cut & (c < max_canvas)
    while recovery != "none" and np.any(missed):
        new = np.where(missed, next_canvas(c, recovery, max_canvas), c)
        cut = y >= new
        out.append(Attempt(missed, new, c if recovery == "extend" else np.zeros_like(c), end(new, cut), cut))
        missed, c = missed & cut & (new < max_canvas), new
    return out


# ---------------------------------------------------------------- the passes of one attempt
def sampler_steps(canvas: int, block: int, steps: int | None = None) -> tuple[int, int]:
    """(number of blocks, steps per block) of the sampler on a fresh canvas (``steps`` split over the blocks).

    Args:
        canvas: the canvas length (tokens), a multiple of ``block``.
        block: the block length (tokens).
        steps: total denoising steps, or None for ``S = L`` (one per canvas token).

    Returns:
        ``(n_blocks, steps_per_block)``.

    Raises:
        ValueError: the canvas is not whole blocks, or the steps do not split evenly or exceed the canvas.
    """
    L = canvas
    if not isinstance(L, numbers.Integral) or L <= 0:
        raise ValueError(f"canvas length must be a positive integer, got {L!r}")
    if L % block:
        raise ValueError(f"block_length {block} must divide the canvas length {L}")
    n_blocks = L // block
    steps = L if steps is None else steps
    if steps > L:
        raise ValueError(f"steps {steps} must be at most the canvas length {L} (at least one token per step)")
    if steps % n_blocks:
        raise ValueError(
            f"steps {steps} must be divisible by the number of blocks {n_blocks} (canvas {L} / block {block})"
        )
    return n_blocks, steps // n_blocks


def block_steps(tokens: int, steps_per_token: float | Fraction = 1) -> int:
    """Denoising steps of ``tokens`` canvas tokens: ``max(1, ceil(steps_per_token · tokens))`` (steps)."""
    return max(1, math.ceil(steps_per_token * tokens))


def block_plan(seq_len: int, block_start: int, block: int, steps: int, cache: str) -> Counter:
    """The passes that decode one block at columns ``block_start …`` of a ``seq_len``-token sequence.

    Args:
        seq_len: tokens of each pass (prompt + visible canvas).
        block_start: the block's first column (tokens).
        block: the block's tokens.
        steps: its denoising steps (passes without a cache).
        cache: one of :data:`CACHE_MODES`. With a cache, the first step refreshes it with a full pass and the
            others compute the block (``dual``) or the block and everything after it (``prefix``).

    Returns:
        The block's plan.
    """
    check_cache_mode(cache)
    if cache == "none":
        return Counter({seq_len: steps})
    queries = block if cache == "dual" else seq_len - block_start
    plan = Counter({seq_len: 1})
    if steps > 1:
        plan[(seq_len, queries)] += steps - 1
    return plan


def run_plan(
    prompt_len: int,
    canvas: int,
    *,
    block: int,
    steps_per_token: float | Fraction = 1,
    start: int = 0,
    end: int | None = None,
    window: str = "full",
    cache: str = "none",
    passes_per_step: int = 1,
) -> Counter:
    """The passes of one attempt decoding canvas positions ``start … end`` block by block.

    Without a cache or an early stop (``end`` None) on the full window a fresh canvas is one entry of
    ``ceil(steps_per_token · canvas)`` passes over ``prompt_len + canvas`` tokens; otherwise each block is
    planned on its own (:func:`block_plan`): on the ``growing`` window a pass over block ``b`` sees the prompt and
    blocks ``0 … b`` only.

    Args:
        prompt_len: the (padded) prompt (tokens).
        canvas: the canvas (tokens); its last block may be partial.
        block: the block length (tokens).
        steps_per_token: denoising steps per canvas token (1: LLaDA's ``S = L``; the sampler's ``steps`` as
            ``Fraction(steps_per_block, block)``).
        start: the first position decoded (tokens, a block boundary): the old canvas when extending.
        end: positions decoded up to (tokens), or None for the whole canvas without an early stop.
        window: one of :data:`WINDOWS`.
        cache: one of :data:`CACHE_MODES`.
        passes_per_step: forward passes per step (2 with classifier-free guidance).

    Returns:
        The attempt's plan.

    Raises:
        ValueError: ``start`` is not a block boundary, or an unknown window or cache mode.
    """
    check_cache_mode(cache)
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; choose from {', '.join(WINDOWS)}")
    if start % block:
        raise ValueError(f"an attempt starts at a block boundary, got position {start} with blocks of {block}")
    if end is None and start == 0 and window == "full" and cache == "none":
        plan = Counter({int(prompt_len + canvas): block_steps(canvas, steps_per_token)})
    else:
        plan = Counter()
        for s in range(int(start), int(canvas if end is None else end), block):
            size = min(block, canvas - s)
            seq = prompt_len + (s + size if window == "growing" else canvas)
            plan += block_plan(int(seq), int(prompt_len + s), int(size), block_steps(size, steps_per_token), cache)
    if passes_per_step != 1:
        plan = Counter({k: n * passes_per_step for k, n in plan.items()})
    return plan


def canvas_plan(
    prompt_len: int, canvas: int, steps_per_token: float = 1.0, *, cache: str = "none", block: int = 32
) -> Counter:
    """The passes of one fresh D-LLM run on ``canvas`` tokens after ``prompt_len`` (:func:`run_plan`).

    Args:
        prompt_len: prompt tokens.
        canvas: canvas tokens.
        steps_per_token: denoising steps per canvas token (``S = ceil(steps_per_token · canvas)``).
        cache: one of :data:`CACHE_MODES` (per block: a refresh pass, then cached passes).
        block: the block length (tokens) a cache is refreshed by.

    Returns:
        The run's plan.
    """
    return run_plan(prompt_len, canvas, block=block, steps_per_token=steps_per_token, cache=cache)


def sampler_plan(
    prompt_len: int, canvas: int, sampler, *, start: int = 0, end: int | None = None, length: int | None = None
) -> Counter:
    """The passes :func:`ptdlib.sampling.sampler.sample` makes on one attempt of one batch.

    Args:
        prompt_len: the batch's longest prompt (tokens): every row is padded to it.
        canvas: the canvas (tokens), whole blocks.
        sampler: a :class:`~ptdlib.sampling.sampler.SamplerConfig` (read by attribute, no torch needed).
        start: the first position decoded (tokens): the old canvas when extending.
        end: positions decoded up to when the sampler stops after the EOS block (:func:`eos_stop`), or None.
        length: the answer's length (tokens), to compute ``end`` from when it is not given.

    Returns:
        The attempt's plan.

    Raises:
        ValueError: a threshold rule (its passes depend on the logits), an early stop with neither ``end`` nor
            ``length``, or a canvas the sampler refuses (:func:`sampler_steps`).
    """
    if sampler.threshold is not None:
        raise ValueError(
            f"the number of passes is not known in advance with a threshold rule (threshold="
            f"{sampler.threshold}); use threshold None"
        )
    if sampler.stops_after_eos_block and end is None:
        if length is None:
            raise ValueError(
                "the sampler stops after the block holding EOS (stop_after_eos_block or a growing "
                "window): its passes need the answer's length"
            )
        end = int(eos_stop(canvas, length, sampler.block_length))
    _, per_block = sampler_steps(int(canvas), sampler.block_length, sampler.steps)
    return run_plan(
        prompt_len,
        canvas,
        block=sampler.block_length,
        steps_per_token=Fraction(per_block, sampler.block_length),
        start=start,
        end=end if sampler.stops_after_eos_block else None,
        window=sampler.window,
        cache=sampler.cache,
        passes_per_step=2 if sampler.cfg_scale > 0 else 1,
    )


# ---------------------------------------------------------------- all attempts of many queries
@dataclass(frozen=True)
class QueryPlans:
    """The plans of queries over all their attempts, and what the attempts did (one entry per query)."""

    plans: list  # Counter {sequence length: forward passes} per query, re-runs included
    reruns: np.ndarray  # int: re-runs per query
    final_canvas: np.ndarray  # the last attempt's canvas (tokens)
    truncated_final: np.ndarray  # bool: the last attempt holds no EOS


def query_plans(
    prompt_lens,
    canvases,
    lengths,
    *,
    max_canvas: int,
    run: Callable[..., Counter],
    recovery: str = "max",
    early_stop: bool = False,
    block: int | None = None,
    truncated=None,
) -> QueryPlans:
    """Plans of queries run one by one (no batching): every attempt :func:`attempts` gives, planned by ``run``.

    Args:
        prompt_lens: prompt tokens per query.
        canvases: first canvases per query (tokens).
        lengths: own answer lengths per query (tokens).
        max_canvas: the largest canvas (tokens).
        run: ``run(prompt_len, canvas, start=..., end=...)`` -> the plan of one attempt (``end`` None unless
            ``early_stop``), e.g. :func:`run_plan` with the block and cache bound.
        recovery: as in :func:`attempts`.
        early_stop: as in :func:`attempts`.
        block: as in :func:`attempts`.
        truncated: as in :func:`attempts`.

    Returns:
        A :class:`QueryPlans`.
    """
    P = np.asarray(prompt_lens)
    rounds = attempts(
        canvases,
        lengths,
        max_canvas=max_canvas,
        recovery=recovery,
        early_stop=early_stop,
        block=block,
        truncated=truncated,
    )
    plans = [Counter() for _ in range(len(P))]
    for a in rounds:
        for i in np.flatnonzero(a.rows):
            plans[i] += run(
                int(P[i]), int(a.canvas[i]), start=int(a.start[i]), end=int(a.end[i]) if early_stop else None
            )
    final, cut = rounds[0].canvas, rounds[0].truncated
    for a in rounds[1:]:
        final, cut = np.where(a.rows, a.canvas, final), np.where(a.rows, a.truncated, cut)
    reruns = sum((a.rows.astype(np.int64) for a in rounds[1:]), np.zeros(len(P), dtype=np.int64))
    return QueryPlans(plans, reruns, final, cut)


# ---------------------------------------------------------------- the sampler's batching
def sampler_batches(prompt_lens: Sequence[int], canvases: Sequence[int], batch_size: int) -> list[list[int]]:
    """How :func:`ptdlib.sampling.sampler.sample` batches one call's queries (positions into the inputs).

    Queries are grouped by canvas (groups in order of first appearance), longest prompt first (a stable sort:
    ties keep the call's order), and each group is cut into batches of ``batch_size``.

    Args:
        prompt_lens: prompt tokens per query.
        canvases: canvas per query (tokens).
        batch_size: rows per forward pass.

    Returns:
        The batches, in the order the sampler runs them.
    """
    groups: dict = {}
    for i in sorted(range(len(prompt_lens)), key=lambda i: -prompt_lens[i]):
        groups.setdefault(canvases[i], []).append(i)
    return [g[j : j + batch_size] for g in groups.values() for j in range(0, len(g), batch_size)]


def batched_plans(
    prompt_lens: Sequence[int], canvases: Sequence[int], run: Callable[[int, int], Counter], batch_size: int
) -> list[Counter]:
    """Per query, the passes of one sampler call over fresh canvases: each row pays its batch's plan.

    Every row of a batch takes part in every pass (fresh canvases, no early stop), padded to the batch's
    longest prompt, so each pays ``run(longest prompt, canvas)``.

    Args:
        prompt_lens: prompt tokens per query.
        canvases: canvas per query (tokens).
        run: ``run(prompt_len, canvas)`` -> one attempt's plan (e.g. :func:`sampler_plan` with the sampler bound).
        batch_size: rows per forward pass.

    Returns:
        One plan per query, in input order.
    """
    plans = [Counter() for _ in range(len(prompt_lens))]
    for batch in sampler_batches(prompt_lens, canvases, batch_size):
        plan = run(max(prompt_lens[i] for i in batch), canvases[batch[0]])
        for i in batch:
            plans[i] = Counter(plan)
    return plans


def plan_flops(plan: Counter, counter) -> int:
    """FLOPs of a plan, each pass priced by ``counter.forward_flops`` (a cached pass with ``query_len``).

    Args:
        plan: ``{T or (T, T_q): passes}``.
        counter: any FLOP source with ``forward_flops(seq_len, query_len=None)``.

    Returns:
        Total FLOPs (2 per multiply-add).
    """
    total = 0
    for key, n in plan.items():
        flops = (
            counter.forward_flops(key[0], query_len=key[1]) if isinstance(key, tuple) else counter.forward_flops(key)
        )
        total += n * flops
    return total
