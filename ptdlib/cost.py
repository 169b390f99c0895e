"""The deployment cost model: forward passes -> FLOPs -> GPU seconds -> GPU-hours and money; ``ptd cost``.

**Forward passes.** A query's *plan* (:mod:`ptdlib.workload`) is a Counter {sequence length: number of
forward passes}: a D-LLM run on a canvas of ``L`` tokens with ``S`` steps (LLaDA: ``S = L``) is ``S``
passes over prompt + canvas; probes, predictor passes and re-runs are entries like any other.

**Seconds.** Queries are assumed served in batches of ``batch`` rows of the same length (length
bucketing). One such forward pass takes the larger of its compute time and the time to read the weights
once (a roofline, Williams et al., 2009)::

    t(T, batch) = max(batch * F(T) / (peak * mfu), weight_bytes / bandwidth)

with ``F(T)`` the FLOPs of one row (:mod:`ptdlib.flops`; 2 per multiply-add) and bf16 weights (2 bytes
per parameter). A query's latency is the sum of ``t`` over its plan (its batch-mates wait with it);
its GPU time is latency / batch. GPU-hours per million queries = 10^6 * mean GPU seconds / 3600;
cost = GPU-hours * price. MFU and price come from :mod:`ptdlib.hardware` (MFU assumed, see there).

**Saving** is 1 - cost(strategy) / cost(fixed-canvas baseline) on the same queries, with a paired
percentile-bootstrap confidence interval over queries (Efron & Tibshirani, 1993).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

import numpy as np

from ptdlib.hardware import ASSUMED_MFU, Hardware, check_mfu, check_price, hardware
from ptdlib.shapes import AnalyticCounter, FlopSource, ModelShape, preset
from ptdlib.workload import (STRATEGIES, StrategyParams, StrategyPlans, plan_strategy, plans_from_results,
                             read_results, strategy_rows, synthetic_workload)

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


def price_plans(plans, shape: ModelShape, hw: Hardware, batch: int = 1, mfu: float | None = None,
                counter: FlopSource | None = None) -> dict[str, np.ndarray]:
    """Per-query arrays ``flops``, ``passes``, ``latency_s`` and ``gpu_s`` (see module docstring)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    mfu = hw.mfu if mfu is None else mfu
    check_mfu(mfu)
    counter = counter or AnalyticCounter(shape)
    memory_s = BYTES_PER_PARAM * shape.n_params / hw.mem_bandwidth
    step_s, flops = {}, {}
    for t in {t for plan in plans for t in plan}:
        if t > shape.max_positions:
            raise ValueError(f"a forward pass over {t} tokens exceeds {shape.name}'s {shape.max_positions} positions")
        flops[t] = counter.forward_flops(t) if t > 0 else 0
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
        strategy=plans.name, flops_per_query=float(priced["flops"].mean()),
        forward_passes_per_query=float(priced["passes"].mean()),
        gpu_seconds_per_query=float(priced["gpu_s"].mean()),
        latency_p50_s=float(np.percentile(priced["latency_s"], 50)),
        latency_p95_s=float(np.percentile(priced["latency_s"], 95)),
        gpu_hours_per_million=gpu_h, cost_per_million=gpu_h * price,
        rerun_rate=float(np.mean(plans.reruns)),
        truncation_rate=float(np.mean(plans.truncated)) if plans.truncated is not None else math.nan,
    )


def bootstrap_saving(strategy: np.ndarray, baseline: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """1 - mean(strategy)/mean(baseline) and its paired percentile-bootstrap interval over queries."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
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
        return asdict(self)

    def table(self) -> str:
        head = (f"{'strategy':<10} {'FLOP/q':>9} {'passes/q':>9} {'GPU-s/q':>9} {'p50 s':>9} {'p95 s':>9} "
                f"{'GPU-h/1M':>9} {'$/1M':>9} {'re-run':>7} {'cut':>6}")
        lines = [f"model {self.model} on {self.hardware}: MFU {self.mfu:.2f}, ${self.price_per_hour:.2f}/GPU-h, "
                 f"batch {self.batch}, {self.n_queries} queries", head, "-" * len(head)]
        for arm in (self.strategy, self.baseline):
            lines.append(
                f"{arm.strategy:<10} {_si(arm.flops_per_query):>9} {arm.forward_passes_per_query:>9.1f} "
                f"{arm.gpu_seconds_per_query:>9.3g} {arm.latency_p50_s:>9.3g} {arm.latency_p95_s:>9.3g} "
                f"{_num(arm.gpu_hours_per_million):>9} {_num(arm.cost_per_million):>9} {arm.rerun_rate:>7.1%} "
                f"{arm.truncation_rate:>6.1%}")
        pct = int(round(100 * self.confidence))
        lines.append(f"saving vs fixed: {self.saving:.1%} of GPU time ({pct}% CI {self.saving_ci[0]:.1%} to "
                     f"{self.saving_ci[1]:.1%}); FLOPs {self.flop_saving:.1%} ({self.flop_saving_ci[0]:.1%} to "
                     f"{self.flop_saving_ci[1]:.1%})")
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


def estimate(shape: ModelShape, hw: Hardware, ours: StrategyPlans, baseline: StrategyPlans, *, batch: int = 1,
             mfu: float | None = None, price: float | None = None, counter: FlopSource | None = None,
             n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> CostEstimate:
    """Cost of a strategy's plans and of the fixed-canvas baseline's plans on the same queries.

    ``ours`` / ``baseline``: from :func:`plan_strategy` or :func:`plans_from_results`. ``mfu`` and
    ``price`` default to ``hw``'s; ``counter`` to the analytic model of ``shape`` (equal to fvcore's count,
    see tests/test_flops.py, and instant for thousands of distinct lengths).
    """
    if len(ours.plans) != len(baseline.plans) or not ours.plans:
        raise ValueError(f"need the same non-empty queries in both arms: {len(ours.plans)} plans vs "
                         f"{len(baseline.plans)} baseline plans")
    mfu = hw.mfu if mfu is None else mfu
    price = hw.price_per_hour if price is None else price
    check_mfu(mfu)
    check_price(price)
    a = price_plans(ours.plans, shape, hw, batch, mfu, counter)
    b = price_plans(baseline.plans, shape, hw, batch, mfu, counter)
    saving = bootstrap_saving(a["gpu_s"], b["gpu_s"], n_boot, confidence, seed)
    flop_saving = bootstrap_saving(a["flops"], b["flops"], n_boot, confidence, seed)
    return CostEstimate(
        model=shape.name, hardware=hw.name, mfu=mfu, price_per_hour=price, batch=batch, n_queries=len(ours.plans),
        strategy=_arm(ours, a, price), baseline=_arm(baseline, b, price),
        saving=saving[0], saving_ci=saving[1:], flop_saving=flop_saving[0], flop_saving_ci=flop_saving[1:],
        confidence=confidence,
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ptd cost", description=__doc__.split("\n")[0],
                                 epilog="MFU and prices are assumptions unless you pass your own "
                                        "(see ptdlib.hardware).")
    d = StrategyParams()
    ap.add_argument("--model", default="llada-8b", help="model preset: embedded, llada-8b, dream-7b")
    ap.add_argument("--hardware", default="h100", help="hardware preset: h100, h200, a100, l40s")
    ap.add_argument("--strategy", default="predicted",
                    help=f"synthetic: {', '.join(STRATEGIES)}; with --results: the rows' strategy value")
    ap.add_argument("--results", help="result table (csv/parquet/jsonl) with prompt_len and forward_lens, "
                                      "canvases or final_canvas per query")
    ap.add_argument("--prompt-mean", type=float, default=200.0, help="synthetic workload: mean prompt tokens")
    ap.add_argument("--response-mean", type=float, default=120.0, help="synthetic workload: mean answer tokens")
    ap.add_argument("--spread", type=float, default=0.6, help="synthetic workload: coefficient of variation")
    ap.add_argument("--queries", type=int, default=2000, help="synthetic workload: number of queries")
    ap.add_argument("--canvas", type=int, default=None,
                    help=f"fixed baseline (and maximum) canvas (default: with --results, the table's largest "
                         f"final_canvas, i.e. the run's maximum; otherwise {d.canvas})")
    ap.add_argument("--block", type=int, default=d.block, help="canvases are rounded up to this multiple")
    ap.add_argument("--margin", type=float, default=d.margin, help="safety margin of predicted/smartcrop")
    ap.add_argument("--length-error", type=float, default=d.length_error,
                    help="log-normal sigma of the simulated length estimate")
    ap.add_argument("--steps-per-token", type=float, default=d.steps_per_token, help="denoising steps per canvas token")
    ap.add_argument("--batch", type=int, default=8, help="rows per forward pass (same-length buckets)")
    ap.add_argument("--mfu", type=float, help="achieved fraction of peak (default: the preset's assumed 0.40)")
    ap.add_argument("--price", type=float, help="USD per GPU-hour (default: the preset's illustrative price)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for the saving's interval")
    ap.add_argument("--seed", type=int, default=d.seed, help="seeds the synthetic workload and bootstrap")
    ap.add_argument("--json", action="store_true", help="print the estimate as one JSON object instead")
    return ap


def baseline_canvas(canvas: int | None, table=None, source: str = "the table") -> int:
    """The fixed baseline's canvas: ``canvas`` (``--canvas``), else the result table's largest
    ``final_canvas`` (the run's maximum canvas, over every strategy's rows), else the synthetic default."""
    if canvas is not None:
        if canvas < 1:
            raise ValueError(f"--canvas must be a positive number of tokens, got {canvas}")
        return canvas
    if table is None:
        return StrategyParams().canvas
    if "final_canvas" in table.columns:
        return int(table["final_canvas"].max())
    raise ValueError(f"{source} has no final_canvas column to read the run's maximum canvas from; pass --canvas")


def run(args) -> CostEstimate:
    shape, hw = preset(args.model), hardware(args.hardware)
    table = read_results(args.results) if args.results else None
    args.canvas = baseline_canvas(args.canvas, table, args.results)  # the notes under the table quote it
    params = StrategyParams(canvas=args.canvas, block=args.block, margin=args.margin, length_error=args.length_error,
                            steps_per_token=args.steps_per_token, seed=args.seed)
    if args.results:
        prompts, ours, responses = plans_from_results(strategy_rows(table, args.strategy, args.results),
                                                      args.steps_per_token, name=args.strategy)
        base = plan_strategy("fixed", prompts, responses if responses is not None else np.zeros_like(prompts), params)
        if responses is None:
            base = StrategyPlans(base.name, base.plans, base.reruns, None)
    else:
        if args.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {args.strategy!r}; choose from {', '.join(STRATEGIES)}")
        prompts, responses = synthetic_workload(args.prompt_mean, args.response_mean, args.queries, args.spread,
                                                max_response=args.canvas - 1, seed=args.seed)
        if prompts.max() + args.canvas > shape.max_positions:
            raise ValueError(f"the synthetic prompts reach {prompts.max()} tokens, which with a canvas of {args.canvas} "
                             f"exceeds {shape.name}'s {shape.max_positions} positions; lower --prompt-mean, "
                             "--spread or --canvas")
        ours = plan_strategy(args.strategy, prompts, responses, params)
        base = plan_strategy("fixed", prompts, responses, params)
    return estimate(shape, hw, ours, base, batch=args.batch, mfu=args.mfu, price=args.price, n_boot=args.boot,
                    seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"ptd cost: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(result.table())
    for note in _notes(args):
        print(f"note: {note}")
    return 0


def _notes(args) -> list[str]:
    """The assumptions behind a ``ptd cost`` table, printed under it."""
    notes = []
    if args.results:
        notes.append(f"queries and canvases from {args.results} (strategy {args.strategy!r}); baseline: every "
                     f"query on a fixed canvas of {args.canvas}")
    else:
        notes.append(f"synthetic workload: {args.queries} queries, log-normal prompt (mean {args.prompt_mean:g}) and "
                     f"answer (mean {args.response_mean:g}) lengths, coefficient of variation {args.spread:g}")
    notes.append(f"steps = {args.steps_per_token:g} x canvas, each a full forward pass over prompt + canvas; "
                 f"batches of {args.batch} same-length rows; bf16 weights")
    if args.mfu is None:
        notes.append(f"MFU {ASSUMED_MFU:.2f} is an assumption, not a measurement (run "
                     "ptdlib.hardware.measure_mfu on a GPU and pass --mfu)")
    if args.price is None:
        notes.append("the hourly price is an illustrative on-demand figure; pass --price with yours")
    return notes
