"""The deployment cost model: forward passes -> FLOPs -> GPU seconds -> GPU-hours and money.

The command line is ``ptd cost`` (:mod:`ptdlib.cli.cost`).

**Forward passes.** A query's *plan* (:mod:`ptdlib.cost.workload`) is a Counter {sequence length: number of
forward passes}: a D-LLM run on a canvas of ``L`` tokens with ``S`` steps (LLaDA: ``S = L``) is ``S``
passes over prompt + canvas; probes, predictor passes and re-runs are entries like any other.

**Seconds.** Queries are assumed served in batches of ``batch`` rows of the same length (length
bucketing). One such forward pass takes the larger of its compute time and the time to read the weights
once (a roofline, Williams et al., 2009)::

    t(T, batch) = max(batch * F(T) / (peak * mfu), weight_bytes / bandwidth)

with ``F(T)`` the FLOPs of one row (:mod:`ptdlib.cost.flops`; 2 per multiply-add) and bf16 weights (2 bytes
per parameter). A query's latency is the sum of ``t`` over its plan (its batch-mates wait with it);
its GPU time is latency / batch. GPU-hours per million queries = 10^6 * mean GPU seconds / 3600;
cost = GPU-hours * price. MFU and price come from :mod:`ptdlib.cost.hardware` (MFU assumed, see there).

**Saving** is 1 - cost(strategy) / cost(fixed-canvas baseline) on the same queries, with a paired
percentile-bootstrap confidence interval over queries (Efron & Tibshirani, 1993).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ptdlib.cost.hardware import Hardware, check_mfu, check_price
from ptdlib.cost.shapes import AnalyticCounter, FlopSource, ModelShape
from ptdlib.cost.workload import StrategyPlans

#: Bytes per weight read by one forward pass (bf16 inference).
BYTES_PER_PARAM = 2


@dataclass(frozen=True)
class ArmCost:
    """What one strategy costs on a workload (means over queries unless named otherwise)."""

    strategy: str
    flops_per_query: float
    forward_passes_per_query: float
    gpu_seconds_per_query: float
    latency_p50_s: float
    latency_p95_s: float
    gpu_hours_per_million: float
    cost_per_million: float  # USD
    rerun_rate: float  # fraction of queries with more than one D-LLM run
    truncation_rate: float  # fraction of answers cut in their final run (nan if unknown)


def price_plans(
    plans, shape: ModelShape, hw: Hardware, batch: int = 1, mfu: float | None = None, counter: FlopSource | None = None
) -> dict[str, np.ndarray]:
    """Price plans: FLOPs, forward passes, latency and GPU time per query (see module docstring).

    Args:
        plans: One plan per query: ``{T or (T, T_q): number of forward passes}`` (``(T, T_q)``: a KV-cached pass
            of ``T_q`` tokens against ``T`` keys).
        shape: The model's shape (positions, parameters for the weight-read time).
        hw: The accelerator.
        batch: Rows per forward pass.
        mfu: Model FLOP utilisation (default ``hw.mfu``).
        counter: Prices one row of a pass (default: the analytic model of ``shape``).

    Returns:
        Float arrays of shape ``(n_queries,)``: ``flops``, ``passes``, ``latency_s`` and ``gpu_s``
        (= latency / batch), in seconds.

    Raises:
        ValueError: For ``batch`` < 1, an ``mfu`` outside (0, 1], or a pass longer than the model's positions.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    mfu = hw.mfu if mfu is None else mfu
    check_mfu(mfu)
    counter = counter or AnalyticCounter(shape)
    memory_s = BYTES_PER_PARAM * shape.n_params / hw.mem_bandwidth
    step_s, flops = {}, {}
    for t in {
        t for plan in plans for t in plan
    }:  # T (a full pass) or (T, T_q) (a KV-cached pass; ptdlib.cost.workload)
        keys, queries = t if isinstance(t, tuple) else (t, None)
        if keys > shape.max_positions:
            raise ValueError(
                f"a forward pass over {keys} tokens exceeds {shape.name}'s {shape.max_positions} positions"
            )
        if keys <= 0:
            flops[t] = 0
        else:
            flops[t] = (
                counter.forward_flops(keys) if queries is None else counter.forward_flops(keys, query_len=queries)
            )
        step_s[t] = max(batch * flops[t] / (hw.peak_flops * mfu), memory_s)
    out = {k: np.zeros(len(plans)) for k in ("flops", "passes", "latency_s")}
    for i, plan in enumerate(plans):
        out["flops"][i] = sum(n * flops[t] for t, n in plan.items())
        out["passes"][i] = sum(plan.values())
        out["latency_s"][i] = sum(n * step_s[t] for t, n in plan.items())
    out["gpu_s"] = out["latency_s"] / batch
    return out


def _arm(plans: StrategyPlans, priced: dict, price: float) -> ArmCost:
    gpu_h = 1e6 * priced["gpu_s"].mean() / 3600
    return ArmCost(
        strategy=plans.name,
        flops_per_query=float(priced["flops"].mean()),
        forward_passes_per_query=float(priced["passes"].mean()),
        gpu_seconds_per_query=float(priced["gpu_s"].mean()),
        latency_p50_s=float(np.percentile(priced["latency_s"], 50)),
        latency_p95_s=float(np.percentile(priced["latency_s"], 95)),
        gpu_hours_per_million=gpu_h,
        cost_per_million=gpu_h * price,
        rerun_rate=float(np.mean(plans.reruns)),
        truncation_rate=float(np.mean(plans.truncated)) if plans.truncated is not None else math.nan,
    )


def bootstrap_saving(
    strategy: np.ndarray, baseline: np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """The saving 1 - mean(strategy)/mean(baseline) and its paired percentile-bootstrap interval over queries.

    Args:
        strategy: Per-query cost of the strategy, shape ``(n,)``.
        baseline: Per-query cost of the baseline on the same queries, shape ``(n,)``.
        n_boot: Bootstrap resamples.
        confidence: Level of the interval, in (0, 1).
        seed: Seed of the resampling.

    Returns:
        ``(saving, low, high)``.

    Raises:
        ValueError: If ``confidence`` is outside (0, 1) or ``n_boot`` is not a positive integer.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot (--boot) must be a positive number of bootstrap resamples, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    n, savings = len(strategy), []
    for start in range(0, n_boot, 256):  # chunks bound memory at 256 x n indices
        idx = rng.integers(0, n, size=(min(256, n_boot - start), n))
        savings.append(1 - strategy[idx].sum(1) / baseline[idx].sum(1))
    savings = np.concatenate(savings)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(savings, [alpha, 1 - alpha])
    return float(1 - strategy.sum() / baseline.sum()), float(lo), float(hi)


@dataclass(frozen=True)
class CostEstimate:
    """A strategy's and the fixed baseline's cost on one workload, and the saving with its interval."""

    model: str
    hardware: str
    mfu: float
    price_per_hour: float
    batch: int
    n_queries: int
    strategy: ArmCost
    baseline: ArmCost
    saving: float  # 1 - GPU time of the strategy / GPU time of the baseline
    saving_ci: tuple[float, float]
    flop_saving: float  # 1 - FLOPs of the strategy / FLOPs of the baseline
    flop_saving_ci: tuple[float, float]
    confidence: float

    def to_dict(self) -> dict:
        """The estimate as nested dicts (JSON-serialisable)."""
        return asdict(self)

    def table(self) -> str:
        """A plain-text table of both arms and the savings with their intervals."""
        head = (
            f"{'strategy':<10} {'FLOP/q':>9} {'passes/q':>9} {'GPU-s/q':>9} {'p50 s':>9} {'p95 s':>9} "
            f"{'GPU-h/1M':>9} {'$/1M':>9} {'re-run':>7} {'cut':>6}"
        )
        lines = [
            f"model {self.model} on {self.hardware}: MFU {self.mfu:.2f}, ${self.price_per_hour:.2f}/GPU-h, "
            f"batch {self.batch}, {self.n_queries} queries",
            head,
            "-" * len(head),
        ]
        for arm in (self.strategy, self.baseline):
            lines.append(
                f"{arm.strategy:<10} {_si(arm.flops_per_query):>9} {arm.forward_passes_per_query:>9.1f} "
                f"{arm.gpu_seconds_per_query:>9.3g} {arm.latency_p50_s:>9.3g} {arm.latency_p95_s:>9.3g} "
                f"{_num(arm.gpu_hours_per_million):>9} {_num(arm.cost_per_million):>9} {arm.rerun_rate:>7.1%} "
                f"{arm.truncation_rate:>6.1%}"
            )
        pct = int(round(100 * self.confidence))
        lines.append(
            f"saving vs fixed: {self.saving:.1%} of GPU time ({pct}% CI {self.saving_ci[0]:.1%} to "
            f"{self.saving_ci[1]:.1%}); FLOPs {self.flop_saving:.1%} ({self.flop_saving_ci[0]:.1%} to "
            f"{self.flop_saving_ci[1]:.1%})"
        )
        return "\n".join(lines)


def _num(x: float) -> str:
    """Large amounts with thousands separators, small ones with 3 significant digits."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _si(x: float) -> str:
    """``x`` with an SI prefix: 5.58e15 -> '5.58P'."""
    for power, prefix in ((15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(x) >= 10**power:
            return f"{x / 10**power:.3g}{prefix}"
    return f"{x:.3g}"


def estimate(
    shape: ModelShape,
    hw: Hardware,
    ours: StrategyPlans,
    baseline: StrategyPlans,
    *,
    batch: int = 1,
    mfu: float | None = None,
    price: float | None = None,
    counter: FlopSource | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CostEstimate:
    """Cost of a strategy's plans and of the fixed-canvas baseline's plans on the same queries.

    Args:
        shape: The model's shape.
        hw: The accelerator.
        ours: The strategy's plans (from :func:`~ptdlib.cost.workload.plan_strategy` or
            :func:`~ptdlib.cost.workload.plans_from_results`).
        baseline: The fixed-canvas baseline's plans on the same queries.
        batch: Rows per forward pass.
        mfu: Model FLOP utilisation (default ``hw``'s).
        price: USD per GPU-hour (default ``hw``'s).
        counter: Prices one row of a pass (default: the analytic model of ``shape``, equal to fvcore's count,
            see tests/test_flops.py, and instant for thousands of distinct lengths).
        n_boot: Bootstrap resamples of the savings' intervals.
        confidence: Level of the intervals.
        seed: Seed of the resampling.

    Returns:
        The :class:`CostEstimate`.

    Raises:
        ValueError: If the arms do not have the same non-empty queries, or for a bad ``mfu``, ``price``,
            ``batch``, ``n_boot`` or ``confidence``.
    """
    if len(ours.plans) != len(baseline.plans) or not ours.plans:
        raise ValueError(
            f"need the same non-empty queries in both arms: {len(ours.plans)} plans vs "
            f"{len(baseline.plans)} baseline plans"
        )
    mfu = hw.mfu if mfu is None else mfu
    price = hw.price_per_hour if price is None else price
    check_mfu(mfu)
    check_price(price)
    a = price_plans(ours.plans, shape, hw, batch, mfu, counter)
    b = price_plans(baseline.plans, shape, hw, batch, mfu, counter)
    saving = bootstrap_saving(a["gpu_s"], b["gpu_s"], n_boot, confidence, seed)
    flop_saving = bootstrap_saving(a["flops"], b["flops"], n_boot, confidence, seed)
    return CostEstimate(
        model=shape.name,
        hardware=hw.name,
        mfu=mfu,
        price_per_hour=price,
        batch=batch,
        n_queries=len(ours.plans),
        strategy=_arm(ours, a, price),
        baseline=_arm(baseline, b, price),
        saving=saving[0],
        saving_ci=saving[1:],
        flop_saving=flop_saving[0],
        flop_saving_ci=flop_saving[1:],
        confidence=confidence,
    )
