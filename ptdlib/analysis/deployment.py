"""What each canvas strategy would cost to serve a large D-LLM, for a user's traffic profile.

The cost model is :mod:`ptdlib.cost.pricing` (forward passes -> FLOPs -> roofline seconds -> GPU-hours -> money)
with the hardware presets of :mod:`ptdlib.cost.hardware`; the per-query forward-pass *plans* come from
:mod:`ptdlib.cost.workload`. This module adds what a deployment question needs on top:

* a traffic profile (:class:`TrafficProfile`): queries per day, log-normal prompt and answer lengths, and a
  mix of short and long answers (:func:`draw_workload`);
* the five strategies side by side (:func:`strategy_plans`): ``fixed`` (LLaDA's one canvas), ``oracle``
  (the answer's own length: the cost lower bound), ``predicted`` (AdaRLP: a prompt pass, an estimate with a
  margin, re-runs on the maximum canvas when short), ``smartcrop`` (a probe pass, then a crop) and
  ``growth`` (EOS-led block growth, dLLM-Var / LLaDA2-style: :func:`growth_plans`);
* carrying measured behaviour over from a run of the embedded model (:func:`choose_behaviour`,
  :func:`measured_arms`, :func:`carried_plans`): how much canvas a strategy chose relative to the oracle's,
  and how often its first canvas was truncated, instead of the synthetic log-normal estimate error;
* tables and sweeps (:func:`cost_table`, :func:`cost_sweep`, :func:`mix_sweep`) calling
  :func:`ptdlib.cost.pricing.estimate` for every cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from ptdlib.cost.hardware import hardware
from ptdlib.cost.plans import query_plans, round_to_block
from ptdlib.cost.pricing import estimate
from ptdlib.cost.shapes import ModelShape
from ptdlib.cost.workload import (
    StrategyParams,
    StrategyPlans,
    add_choice_passes,
    plan_strategy,
    strategy_run,
    synthetic_workload,
)

#: Strategies compared, in table order (``fixed`` is the baseline every saving is relative to).
DEPLOY_STRATEGIES = ("fixed", "oracle", "predicted", "smartcrop", "growth")
#: Strategies whose canvas choice can be carried over from a measured run.
CARRIED = ("predicted", "smartcrop")
HOURS_PER_DAY = 24


#: Token counts as canvases: whole blocks, at least one, at most the maximum (the rule of
#: :func:`ptdlib.canvas.round_canvas`, from the torch-free plans module).
whole_blocks = round_to_block


@dataclass(frozen=True)
class TrafficProfile:
    """The queries a deployment serves: volume and length distributions (log-normal, see ``synthetic_workload``)."""

    queries_per_day: float = 1_000_000  # daily query volume (for GPU counts and daily cost)
    prompt_mean: float = 200.0  # mean prompt tokens (chat template included)
    response_mean: float = 120.0  # mean answer tokens of ordinary queries
    long_response_mean: float = 380.0  # mean answer tokens of long-answer queries (reports, code)
    long_fraction: float = 0.15  # share of long-answer queries: the response-length mix
    spread: float = 0.6  # coefficient of variation of every length distribution
    n_sim: int = 2000  # simulated queries the cost is averaged over
    seed: int = 0  # seeds the simulated lengths and the carried-over draws

    def __post_init__(self):
        for name in ("queries_per_day", "prompt_mean", "response_mean", "long_response_mean", "spread"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.long_fraction <= 1:
            raise ValueError(f"long_fraction must be in [0, 1], got {self.long_fraction}")
        if not isinstance(self.n_sim, int) or self.n_sim < 1:
            raise ValueError(f"n_sim must be an integer >= 1, got {self.n_sim!r}")


def draw_workload(profile: TrafficProfile, max_response: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt lengths, own answer lengths) of ``profile.n_sim`` queries; answers capped at ``max_response``.

    Each query's answer comes from the long distribution with probability ``long_fraction``.
    """
    n, seed = profile.n_sim, profile.seed
    prompts, short = synthetic_workload(
        profile.prompt_mean, profile.response_mean, n, profile.spread, max_response=max_response, seed=seed
    )
    _, long = synthetic_workload(
        profile.prompt_mean, profile.long_response_mean, n, profile.spread, max_response=max_response, seed=seed + 1
    )
    is_long = np.random.default_rng(seed + 2).random(n) < profile.long_fraction
    return prompts, np.where(is_long, long, short)


def growth_plans(prompts, responses, p: StrategyParams) -> StrategyPlans:
    """EOS-led growth up to the maximum canvas: blocks are decoded left to right until one holds the EOS.

    The answer's EOS sits at position ``response``, so ``ceil((response + 1) / block)`` blocks are decoded
    (all of them when it does not fit). With ``p.growth_window="growing"`` (dLLM-Var, Yang et al., 2025) a
    pass over block ``b`` sees prompt + blocks ``0 … b``; with ``"full"`` every pass sees prompt + the whole
    canvas (the sampler's ``stop_after_eos_block`` on a fixed canvas). ``p.cache`` adds Fast-dLLM's per-block
    cache. The passes are those of :func:`ptdlib.cost.plans.query_plans` with early stop
    (:func:`ptdlib.cost.plans.eos_stop`). Truncated only where the fixed canvas is.
    """
    prompts, responses = np.asarray(prompts, dtype=int), np.asarray(responses, dtype=int)
    runs = query_plans(
        prompts,
        np.full(len(prompts), p.canvas),
        responses,
        max_canvas=p.canvas,
        run=partial(strategy_run(p), window=p.growth_window),
        recovery="none",
        early_stop=True,
        block=p.block,
    )
    return StrategyPlans("growth", runs.plans, np.zeros(len(runs.plans), dtype=bool), runs.truncated_final)


@dataclass(frozen=True)
class MeasuredArm:
    """How one strategy of a measured run chose canvases, relative to the oracle's, query by query."""

    strategy: str
    params: str  # the parameters (JSON) of the measured grid cell
    canvas_ratio: np.ndarray  # chosen canvas / oracle canvas (own length + EOS in whole blocks) per query
    truncated: np.ndarray  # bool per query: the first canvas held no EOS (a re-run followed)
    recovery: str | None = None  # the cell's truncation recovery (None: the table does not say; taken as max)

    @property
    def n(self) -> int:
        return len(self.canvas_ratio)


def measured_arms(
    rows: pd.DataFrame, strategies: Sequence[str] = CARRIED, *, split: str | None = "test", round_to: int = 32
) -> dict[str, MeasuredArm]:
    """Per strategy in ``rows`` (a result table, ``ptdlib.canvas.ROW_COLUMNS``), its measured canvas choices.

    When a strategy was run with several parameter settings (or recoveries), the one with the least mean ``flops_total``
    (re-runs and probe or predictor passes included) is kept. That choice is made in hindsight on the rows
    given (by default the test split) and looks at FLOPs only, not quality or truncation: it makes the
    estimate optimistic by the selection. Pass rows of one cell (or of a split set aside for choosing) for
    an estimate free of it. The oracle
    canvas uses the run's maximum canvas (its largest final canvas) and ``round_to``. Strategies absent
    from ``rows`` are left out of the result.
    """
    need = {"strategy", "params", "own_length", "chosen_canvas", "final_canvas", "truncated", "flops_total"}
    missing = need - set(rows.columns)
    if missing:
        raise ValueError(f"result table lacks the columns {sorted(missing)}")
    if split is not None and "split" in rows.columns:
        rows = rows[rows["split"] == split]
    rows = rows.dropna(subset=["own_length"])
    if rows.empty:
        return {}
    max_canvas = int(rows["final_canvas"].max())
    out = {}
    for name in strategies:
        arm = rows[rows["strategy"] == name]
        if arm.empty:
            continue
        keys = [k for k in ("params", "recovery") if k in arm.columns]  # one cell of the grid
        best = arm.groupby(keys)["flops_total"].mean().idxmin()
        cell = dict(zip(keys, best if isinstance(best, tuple) else (best,)))
        for key, value in cell.items():
            arm = arm[arm[key] == value]
        oracle = whole_blocks(arm["own_length"].to_numpy() + 1, round_to, max_canvas)
        out[name] = MeasuredArm(
            name,
            str(cell["params"]),
            arm["chosen_canvas"].to_numpy() / oracle,
            arm["truncated"].to_numpy(dtype=bool),
            cell.get("recovery"),
        )
    return out


def carried_plans(arm: MeasuredArm, prompts, responses, p: StrategyParams, seed: int = 0) -> StrategyPlans:
    """Plans of ``arm``'s strategy on a new workload, drawing each query's behaviour from the measured queries.

    Query ``j`` draws a measured query ``i``: its canvas is the oracle canvas of its own answer times
    ``canvas_ratio[i]`` (whole blocks, at most the maximum), and its first attempt is truncated when
    ``truncated[i]``; so the measured over-allocation and truncation rate carry over. The own length decides
    where it can (an own length is the answer at the maximum canvas): on the maximum canvas, and for an answer
    too long for it (cut on every canvas). A truncated
    attempt is recovered as the arm was (``arm.recovery``; ``max`` when the table does not say) through
    :func:`ptdlib.cost.plans.attempts`, later attempts by the labels. The pass spent choosing the canvas is
    charged by :func:`ptdlib.cost.workload.add_choice_passes`, as for :func:`ptdlib.cost.workload.plan_strategy`.

    Args:
        arm: The measured arm (``predicted`` or ``smartcrop``).
        prompts: Prompt tokens per query of the workload, shape (n,).
        responses: Own answer lengths per query (tokens), shape (n,).
        p: The workload's strategy parameters (``p.canvas``: the maximum canvas, ``p.block``: the rounding).
        seed: Seeds the draw of measured queries.

    Returns:
        The plans, which queries were re-run and which end truncated.

    Raises:
        ValueError: For a strategy that cannot be carried over, an arm without queries or an unknown recovery.
    """
    if arm.strategy not in CARRIED:
        raise ValueError(f"cannot carry over strategy {arm.strategy!r}; choose from {', '.join(CARRIED)}")
    if arm.n == 0:
        raise ValueError(f"no measured queries for {arm.strategy!r}")
    prompts, responses = np.asarray(prompts, dtype=int), np.asarray(responses, dtype=int)
    draw = np.random.default_rng(seed).integers(0, arm.n, size=len(prompts))
    oracle = round_to_block(responses + 1, p.block, p.canvas)
    canvases = round_to_block(oracle * arm.canvas_ratio[draw], p.block, p.canvas)
    # an answer the maximum canvas cannot hold is cut on every canvas; the maximum canvas holds every other one
    first_cut = (responses >= p.canvas) | (arm.truncated[draw] & (canvases < p.canvas))
    runs = query_plans(
        prompts,
        canvases,
        responses,
        max_canvas=p.canvas,
        run=strategy_run(p),
        recovery=arm.recovery or "max",
        truncated=first_cut,
    )
    add_choice_passes(arm.strategy, prompts, runs.plans, p)
    return StrategyPlans(arm.strategy, runs.plans, runs.reruns > 0, runs.truncated_final)


def strategy_plans(
    prompts,
    responses,
    p: StrategyParams,
    measured: Mapping[str, MeasuredArm] | None = None,
    strategies: Sequence[str] = DEPLOY_STRATEGIES,
) -> tuple[dict[str, StrategyPlans], dict[str, str]]:
    """(name -> plans, name -> source) for ``strategies`` on one workload.

    ``source`` says where a strategy's canvases come from: ``rule`` (fixed, oracle, growth follow from the
    answer length), ``measured <params>`` (carried over from ``measured``) or ``synthetic`` (the log-normal
    estimate error and margin of ``p``).
    """
    unknown = [s for s in strategies if s not in DEPLOY_STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(DEPLOY_STRATEGIES)}")
    if "fixed" not in strategies:
        raise ValueError("strategies must include 'fixed': every saving is relative to it")
    plans, sources = {}, {}
    for name in strategies:
        if name == "growth":
            plans[name], sources[name] = growth_plans(prompts, responses, p), "rule"
        elif measured and name in measured:
            arm = measured[name]
            recovery = "" if arm.recovery in (None, "max") else f" / {arm.recovery}"
            plans[name] = carried_plans(arm, prompts, responses, p, p.seed)
            sources[name] = f"measured {arm.params}{recovery}"
        else:
            plans[name] = plan_strategy(name, prompts, responses, p)
            sources[name] = "rule" if name in ("fixed", "oracle") else "synthetic"
    return plans, sources


@dataclass(frozen=True)
class Behaviour:
    """Where the canvases of ``predicted`` and ``smartcrop`` come from: a measured run, or the synthetic profile."""

    measured: dict[str, MeasuredArm]  # strategy -> its arm measured in a run (measured_arms); empty: synthetic
    note: str  # the result table read, or why none was

    def describe(self, p: StrategyParams) -> str:
        """What a notebook prints about the choice: the source, and per measured arm its canvas ratio and truncation.

        Args:
            p: The strategy parameters of the synthetic profile (its estimate error and margin are named when
                the behaviour is synthetic).

        Returns:
            One line, plus one line per measured arm.
        """
        names = "/".join(CARRIED)
        if not self.measured:
            return (
                f"{names} behaviour SYNTHETIC ({self.note}): estimate error sigma {p.length_error}, "
                f"margin {p.margin:.0%}"
            )
        lines = [f"{names} behaviour MEASURED on the embedded model: {self.note}"]
        lines += [
            f"  {arm.strategy} {arm.params}: {arm.n} queries, canvas/oracle mean {arm.canvas_ratio.mean():.2f}, "
            f"first canvas truncated {arm.truncated.mean():.1%}"
            for arm in self.measured.values()
        ]
        return "\n".join(lines)


def choose_behaviour(results_dir: str | None, *, carry_over: bool = True) -> Behaviour:
    """Measured behaviour when a finished run is given and carrying it over is asked for; synthetic otherwise.

    The measured arms are those of :func:`measured_arms` on the run's test rows (the run's own rounding), later
    drawn query by query onto the deployment workload by :func:`carried_plans` (through :func:`strategy_plans`).

    Args:
        results_dir: A run directory (relative: see :func:`ptdlib.analysis.finished_run.find_run`), or None.
        carry_over: False keeps the synthetic profile even when the run exists.

    Returns:
        The measured arms (empty: the synthetic profile is used) and a note saying which run was read, or why
        none was: no run asked for, ``carry_over`` false, no run at ``results_dir``, or no predicted or
        smartcrop rows on its test split.
    """
    if results_dir is None:
        return Behaviour({}, "no result table was asked for (results_dir is None)")
    if not carry_over:
        return Behaviour({}, "carry_over is False")
    from ptdlib.analysis.finished_run import find_run  # a run is read only when one is asked for
    from ptdlib.experiment.results import load_results

    folder = find_run(results_dir)
    if folder is None:
        return Behaviour({}, f"no result table at {results_dir}")
    rows = load_results(folder)
    measured = measured_arms(rows, round_to=rows.attrs["run"]["config"]["limits"]["round_to"])
    missing = len(rows.attrs["missing_chunks"])
    unfinished = f"; the run is unfinished, {missing} chunks missing" if missing else ""
    if not measured:
        return Behaviour(
            {}, f"the result table {folder} has no predicted or smartcrop rows on the test split{unfinished}"
        )
    return Behaviour(
        measured, f"result table {folder} ({len(rows)} rows of model {rows['model_id'].iloc[0]}{unfinished})"
    )


def cost_table(
    plans: Mapping[str, StrategyPlans],
    shape: ModelShape,
    hardware_names: Sequence[str],
    *,
    batch: int = 8,
    mfu: float | None = None,
    prices: Mapping[str, float] | None = None,
    queries_per_day: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (hardware, strategy): :func:`ptdlib.cost.pricing.estimate` against ``plans["fixed"]``.

    ``mfu``: one utilisation for every device (None: each preset's assumed value); ``prices``: hardware ->
    USD per GPU-hour overriding the preset. Daily columns scale the per-query GPU time to
    ``queries_per_day`` (``gpus`` = GPU-hours per day / 24, at full utilisation).
    """
    if "fixed" not in plans:
        raise ValueError("plans must include 'fixed': every saving is relative to it")
    rows = []
    for hw_name in hardware_names:
        hw = hardware(hw_name)
        price = (prices or {}).get(hw_name)
        for name, ours in plans.items():
            est = estimate(shape, hw, ours, plans["fixed"], batch=batch, mfu=mfu, price=price, n_boot=n_boot, seed=seed)
            arm = est.strategy
            gpu_h_day = arm.gpu_hours_per_million * queries_per_day / 1e6
            rows.append(
                {
                    "hardware": hw_name,
                    "strategy": name,
                    "mfu": est.mfu,
                    "price_per_hour": est.price_per_hour,
                    "batch": batch,
                    "flops_per_query": arm.flops_per_query,
                    "passes_per_query": arm.forward_passes_per_query,
                    "latency_p50_s": arm.latency_p50_s,
                    "latency_p95_s": arm.latency_p95_s,
                    "gpu_hours_per_million": arm.gpu_hours_per_million,
                    "cost_per_million": arm.cost_per_million,
                    "saving": est.saving,
                    "saving_low": est.saving_ci[0],
                    "saving_high": est.saving_ci[1],
                    "rerun_rate": arm.rerun_rate,
                    "truncation_rate": arm.truncation_rate,
                    "gpu_hours_per_day": gpu_h_day,
                    "gpus": gpu_h_day / HOURS_PER_DAY,
                    "cost_per_day": gpu_h_day * est.price_per_hour,
                }
            )
    return pd.DataFrame(rows)


def cost_sweep(
    plans: Mapping[str, StrategyPlans],
    shape: ModelShape,
    hardware_names: Sequence[str],
    *,
    mfus: Sequence[float | None] = (None,),
    prices: Sequence[float | None] = (None,),
    batch: int = 8,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`cost_table` over every (MFU, price) pair: sensitivity of GPU-hours and money to both.

    A price of None keeps each preset's price. The table gains ``mfu`` and ``price_per_hour`` as used.
    """
    frames = []
    for m in mfus:
        for price in prices:
            per_hw = None if price is None else {h: price for h in hardware_names}
            frames.append(
                cost_table(plans, shape, hardware_names, batch=batch, mfu=m, prices=per_hw, n_boot=n_boot, seed=seed)
            )
    return pd.concat(frames, ignore_index=True)


def mix_sweep(
    profile: TrafficProfile,
    long_fractions: Sequence[float],
    p: StrategyParams,
    shape: ModelShape,
    hardware_name: str,
    *,
    measured: Mapping[str, MeasuredArm] | None = None,
    strategies: Sequence[str] = DEPLOY_STRATEGIES,
    batch: int = 8,
    mfu: float | None = None,
    price: float | None = None,
    n_boot: int = 200,
) -> pd.DataFrame:
    """:func:`cost_table` on one device as the share of long answers varies (the workload is redrawn)."""
    frames = []
    for f in long_fractions:
        prof = dataclasses.replace(profile, long_fraction=float(f))
        prompts, responses = draw_workload(prof, max_response=p.canvas - 1)
        plans, _ = strategy_plans(prompts, responses, p, measured, strategies)
        frame = cost_table(
            plans,
            shape,
            [hardware_name],
            batch=batch,
            mfu=mfu,
            prices=None if price is None else {hardware_name: price},
            n_boot=n_boot,
            seed=profile.seed,
        )
        frame.insert(0, "long_fraction", float(f))
        frame.insert(1, "mean_response", float(responses.mean()))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
