"""Workloads for the cost model: per-query forward-pass plans from length distributions or result tables.

A query's **plan** is a Counter {sequence length: number of forward passes}. A D-LLM run on a canvas of
``L`` tokens with ``S`` denoising steps is ``S`` full forward passes over prompt + canvas (``P + L``
tokens); LLaDA's reference settings use ``S = L`` (Nie et al., 2025, "Large Language Diffusion Models"),
here ``S = ceil(steps_per_token * L)``. Probes, predictor passes and re-runs are entries like any other,
so a plan counts everything a strategy pays for.

**KV caches** (Fast-dLLM's prefix and dual caches, :mod:`ptdlib.sampling.kvcache`; ``StrategyParams.cache``). A plan
key is then either ``T`` (a full pass over ``T`` tokens) or ``(T, T_q)`` (a cached pass computing ``T_q``
tokens against ``T`` keys). Per block of ``block`` tokens, ``ceil(steps_per_token * block)`` steps: the first
refreshes the cache with a full pass, the others are cached passes over the block (``dual``) or the block and
everything after it (``prefix``). Cache reads are not priced (memory traffic, not FLOPs).

Plans come from a result table (:func:`plans_from_results`: what a real run did) or are simulated from
prompt- and answer-length distributions for a few strategies (:func:`plan_strategy`), for what-if
questions at a scale no CPU run reaches. Both are built by :mod:`ptdlib.cost.plans`, the one model of
forward-pass plans (re-runs, early stop and the sampler's batching included).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from functools import partial

import numpy as np

from ptdlib.cost.plans import CACHE_MODES, WINDOWS, block_plan, canvas_plan, query_plans, round_to_block, run_plan

__all__ = [
    "PLAN_CACHE_MODES",
    "STRATEGIES",
    "StrategyParams",
    "StrategyPlans",
    "add_choice_passes",
    "block_plan",
    "canvas_plan",
    "check_lengths",
    "plan_strategy",
    "plans_from_results",
    "read_results",
    "strategy_run",
    "strategy_rows",
    "synthetic_workload",
]


@dataclass(frozen=True)
class StrategyParams:
    """How the synthetic strategies of ``ptd cost`` choose canvases (see :data:`STRATEGIES`)."""

    canvas: int = 512  # the fixed baseline's canvas, also the maximum canvas and the re-run canvas
    block: int = 32  # canvases are rounded up to a multiple of this (LLaDA's semi-autoregressive block)
    margin: float = 0.2  # safety margin: canvas = estimated length * (1 + margin)
    length_error: float = 0.15  # log-normal sigma of the length estimate (0 = exact)
    steps_per_token: float = 1.0  # denoising steps per canvas token (LLaDA's reference: S = L)
    seed: int = 0  # seeds the simulated length-estimate errors
    cache: str = "none"  # KV cache of every D-LLM run: none, prefix or dual (Fast-dLLM; module docstring)
    growth_window: str = "growing"  # growth: dLLM-Var's growing window, or "full" (the whole canvas every pass)

    def __post_init__(self):
        for name in ("canvas", "block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("margin", "length_error"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.steps_per_token <= 0:
            raise ValueError(f"steps_per_token must be > 0, got {self.steps_per_token}")
        if self.cache not in PLAN_CACHE_MODES:
            raise ValueError(f"unknown cache mode {self.cache!r}; choose from {', '.join(PLAN_CACHE_MODES)}")
        if self.growth_window not in WINDOWS:
            raise ValueError(f"growth_window must be {' or '.join(WINDOWS)}, got {self.growth_window!r}")


def check_lengths(name: str, values) -> np.ndarray:
    """``values`` as an int array, or a ValueError naming the first negative length."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty list of lengths")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {arr[arr < 0][0]}")
    return arr.astype(np.int64)


def synthetic_workload(
    prompt_mean: float,
    response_mean: float,
    n: int = 2000,
    spread: float = 0.5,
    max_response: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(prompt lengths, response lengths) drawn log-normally with these means and coefficient of variation.

    Responses are the model's own lengths and are capped at ``max_response`` (a canvas leaves room for EOS).
    """
    for name, mean in (("prompt_mean", prompt_mean), ("response_mean", response_mean)):
        if not math.isfinite(mean) or mean < 0:
            raise ValueError(f"{name} must be >= 0 and finite, got {mean}")
    if not math.isfinite(spread) or spread < 0 or n < 1:
        raise ValueError(f"need spread >= 0 and n >= 1, got spread={spread}, n={n}")
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log1p(spread**2))  # log-normal sigma giving this coefficient of variation

    def draw(mean):
        if mean == 0:
            return np.zeros(n, dtype=np.int64)
        return np.maximum(1, np.rint(mean * np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2))).astype(np.int64)

    prompts, responses = draw(prompt_mean), draw(response_mean)
    if max_response is not None:
        responses = np.minimum(responses, max_response)
    return prompts, responses


#: Cache modes of a plan (:data:`ptdlib.cost.plans.CACHE_MODES`, which the sampler's KV cache uses too).
PLAN_CACHE_MODES = CACHE_MODES


def _estimated_canvas(responses: np.ndarray, p: StrategyParams) -> np.ndarray:
    rng = np.random.default_rng(p.seed)
    estimate = responses * np.exp(p.length_error * rng.standard_normal(responses.size))
    return round_to_block(np.ceil(estimate * (1 + p.margin)), p.block, p.canvas)


#: Strategies ``ptd cost`` can simulate from length distributions (documented in :func:`plan_strategy`).
STRATEGIES = ("fixed", "oracle", "predicted", "smartcrop")


@dataclass(frozen=True)
class StrategyPlans:
    """A strategy's forward passes on a workload: one plan per query, and which queries were re-run / cut."""

    name: str  # strategy name, for tables
    plans: list  # one Counter {sequence length: forward passes} per query
    reruns: np.ndarray  # bool per query: paid for a second D-LLM run
    truncated: np.ndarray | None = None  # bool per query: answer cut in its final run (None: unknown)


def plan_strategy(name: str, prompts: np.ndarray, responses: np.ndarray, p: StrategyParams) -> StrategyPlans:
    """The plans of strategy ``name`` for each query.

    * ``fixed``: every query on ``p.canvas``; truncated where the answer needs more than the canvas.
    * ``oracle``: the answer's own length + 1 (for EOS) rounded up to ``p.block``: the cost lower bound.
    * ``predicted`` (AdaRLP-style): one forward pass over the prompt for the predictor (it reads the
      D-LLM's prompt representation; a conservative charge), canvas = estimate * (1 + margin); a truncated
      answer (canvas <= its length) is re-run on ``p.canvas``, both runs paid.
    * ``smartcrop``: one probe pass over prompt + ``p.canvas`` all-mask tokens, then as ``predicted``.

    ``truncated`` marks answers cut in their final run (only ``fixed`` has them when responses fit the
    maximum canvas).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    prompts, responses = check_lengths("prompt lengths", prompts), check_lengths("response lengths", responses)
    if name == "fixed":
        canvases = np.full(responses.size, p.canvas)
    elif name == "oracle":
        canvases = round_to_block(responses + 1, p.block, p.canvas)
    else:
        canvases = _estimated_canvas(responses, p)
    if prompts.size != responses.size:
        raise ValueError(f"{prompts.size} prompt lengths but {responses.size} response lengths")
    runs = query_plans(
        prompts,
        canvases,
        responses,
        max_canvas=p.canvas,
        run=strategy_run(p),
        recovery="max" if name in ("predicted", "smartcrop") else "none",
    )
    add_choice_passes(name, prompts, runs.plans, p)
    return StrategyPlans(name, runs.plans, runs.reruns > 0, runs.truncated_final)


def add_choice_passes(name: str, prompts, plans: list, p: StrategyParams) -> None:
    """Add to each query's plan, in place, the pass strategy ``name`` spends choosing its canvas.

    * ``predicted``: one pass over the prompt (the predictor reads the D-LLM's prompt states; a conservative
      charge), none for a prompt of no tokens: there are no states to read (a run refuses such a prompt,
      :func:`ptdlib.tasks.sources.check_prompts`, and the predictor's pass cannot run on it alone).
    * ``smartcrop``: one probe pass over the prompt and ``p.canvas`` all-mask tokens.
    * other strategies: nothing.

    Args:
        name: The strategy.
        prompts: Prompt tokens per query, shape (n,).
        plans: One plan per query (Counters ``{sequence length: forward passes}``), changed in place.
        p: The strategy parameters (``p.canvas``: the probe's canvas, tokens).
    """
    for prompt, plan in zip(np.asarray(prompts).tolist(), plans):
        if name == "predicted" and prompt > 0:
            plan[prompt] += 1
        elif name == "smartcrop":
            plan[prompt + p.canvas] += 1


def strategy_run(p: StrategyParams):
    """One D-LLM attempt under ``p`` (steps per token, cache, block): :func:`ptdlib.cost.plans.run_plan`, bound."""
    return partial(run_plan, block=p.block, steps_per_token=p.steps_per_token, cache=p.cache)


def _cell_list(cell) -> list[int]:
    """A list-valued table cell: a list/array (parquet, jsonl) or its JSON text (csv)."""
    if isinstance(cell, str):
        cell = json.loads(cell)
    if np.isscalar(cell):
        cell = [cell]
    return [int(x) for x in cell]


def plans_from_results(
    frame, steps_per_token: float = 1.0, name: str = "table"
) -> tuple[np.ndarray, StrategyPlans, np.ndarray | None]:
    """(prompt lengths, plans, response lengths or None) from a result table, one row per query.

    Needs ``prompt_len`` and, in order of preference: ``forward_lens`` (the sequence length of every
    forward pass the query took part in, probes and re-runs included: what
    :meth:`ptdlib.cost.flops.FlopLedger.forward_lengths` records), ``canvases`` (the canvases it ran on, in
    order) or ``final_canvas``. Optional: ``response_len`` or ``own_length`` (the model's own length, for
    the baseline's truncation), ``reruns`` (re-runs per query), ``truncated_final`` or ``truncated`` (cut in
    its final run). A ``flops_total`` column counts FLOPs on the model that produced the
    table; plans are re-priced for the model asked for instead.
    """
    if "prompt_len" not in frame.columns:
        raise ValueError(f"result table needs a prompt_len column; it has {', '.join(map(str, frame.columns))}")
    prompts = check_lengths("prompt_len", frame["prompt_len"].to_numpy())
    if "forward_lens" in frame.columns:
        plans = [Counter(_cell_list(c)) for c in frame["forward_lens"]]
        reruns = np.zeros(len(plans), dtype=bool)
    else:
        column = next((c for c in ("canvases", "final_canvas") if c in frame.columns), None)
        if column is None:
            raise ValueError("result table needs one of the columns forward_lens, canvases, final_canvas")
        runs = [_cell_list(c) for c in frame[column]]
        for canvases in runs:
            check_lengths(column, canvases)
        plans = [sum((canvas_plan(p, c, steps_per_token) for c in cs), Counter()) for p, cs in zip(prompts, runs)]
        reruns = np.array([len(cs) > 1 for cs in runs])
    if "reruns" in frame.columns:  # ptdlib result rows: re-runs per query
        reruns = frame["reruns"].to_numpy() > 0
    # cut in its final run: ptdlib rows say so in truncated_final (truncated is the first attempt's)
    cut = next((c for c in ("truncated_final", "truncated") if c in frame.columns), None)
    truncated = frame[cut].to_numpy(dtype=bool) if cut else None
    responses = None
    length = next((c for c in ("response_len", "own_length") if c in frame.columns), None)
    if length is not None and frame[length].notna().all():
        responses = check_lengths(length, frame[length].to_numpy())
    return prompts, StrategyPlans(name, plans, reruns, truncated), responses


def read_results(path: str, strategy: str | None = None):
    """A result table (csv, parquet or jsonl), keeping the rows of ``strategy`` if it has a strategy column."""
    import pandas as pd

    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True)}
    suffix = next((s for s in readers if str(path).endswith(s)), None)
    if suffix is None:
        raise ValueError(f"cannot read {path}: expected one of {', '.join(readers)}")
    return strategy_rows(readers[suffix](path), strategy, path)


def strategy_rows(frame, strategy: str | None, source: str = "the table"):
    """The rows of ``strategy`` if the table has a strategy column (all rows for ``None``)."""
    if strategy is not None and "strategy" in frame.columns:
        kept = frame[frame["strategy"] == strategy]
        if kept.empty:
            raise ValueError(
                f"no rows of strategy {strategy!r} in {source}; it has "
                f"{', '.join(sorted(map(str, frame['strategy'].unique())))}"
            )
        frame = kept
    return frame.reset_index(drop=True)
