"""``ptd cost``: the deployment cost of a strategy against the fixed canvas (:mod:`ptdlib.cost.pricing`)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ptdlib.cli.contract import ArgumentParser, command, finite_float, positive_int
from ptdlib.cost.hardware import ASSUMED_MFU, hardware
from ptdlib.cost.plans import CACHE_MODES
from ptdlib.cost.pricing import CostEstimate, estimate
from ptdlib.cost.shapes import model_shape
from ptdlib.cost.workload import (
    STRATEGIES,
    StrategyParams,
    StrategyPlans,
    plan_strategy,
    plans_from_results,
    read_results,
    strategy_rows,
    synthetic_workload,
)


def parser() -> ArgumentParser:
    ap = ArgumentParser(
        prog="ptd cost",
        description=__doc__.split("\n")[0],
        epilog="MFU and prices are assumptions unless you pass your own (see ptdlib.cost.hardware).",
    )
    d = StrategyParams()
    ap.add_argument(
        "--model",
        default="llada-8b",
        help="model preset (embedded, llada-8b, dream-7b) or a checkpoint's config.json or directory "
        "(sizes only: no weights are read)",
    )
    ap.add_argument("--hardware", default="h100", help="hardware preset: h100, h200, a100, l40s")
    ap.add_argument(
        "--strategy",
        default="predicted",
        help=f"synthetic: {', '.join(STRATEGIES)}; with --results: the rows' strategy value",
    )
    ap.add_argument(
        "--results",
        help="result table (csv/parquet/jsonl) with prompt_len and forward_lens, canvases or final_canvas per query",
    )
    ap.add_argument("--prompt-mean", type=finite_float, default=200.0, help="synthetic workload: mean prompt tokens")
    ap.add_argument("--response-mean", type=finite_float, default=120.0, help="synthetic workload: mean answer tokens")
    ap.add_argument("--spread", type=finite_float, default=0.6, help="synthetic workload: coefficient of variation")
    ap.add_argument("--queries", type=positive_int, default=2000, help="synthetic workload: number of queries")
    ap.add_argument(
        "--canvas",
        type=int,
        default=None,
        help=f"fixed baseline (and maximum) canvas (default: with --results, the table's largest "
        f"final_canvas, i.e. the run's maximum; otherwise {d.canvas})",
    )
    ap.add_argument("--block", type=int, default=d.block, help="canvases are rounded up to this multiple")
    ap.add_argument("--margin", type=finite_float, default=d.margin, help="safety margin of predicted/smartcrop")
    ap.add_argument(
        "--length-error",
        type=finite_float,
        default=d.length_error,
        help="log-normal sigma of the simulated length estimate",
    )
    ap.add_argument(
        "--steps-per-token", type=finite_float, default=d.steps_per_token, help="denoising steps per canvas token"
    )
    ap.add_argument(
        "--cache",
        default=d.cache,
        choices=CACHE_MODES,
        help="synthetic plans: the strategy's Fast-dLLM KV cache, refreshed per block",
    )
    ap.add_argument(
        "--baseline-cache",
        default="none",
        choices=CACHE_MODES,
        help="synthetic plans: the fixed-canvas baseline's KV cache (default none: a cache's saving "
        "shows in the comparison)",
    )
    ap.add_argument("--batch", type=positive_int, default=8, help="rows per forward pass (same-length buckets)")
    ap.add_argument("--mfu", type=finite_float, help="achieved fraction of peak (default: the preset's assumed 0.40)")
    ap.add_argument("--price", type=finite_float, help="USD per GPU-hour (default: the preset's illustrative price)")
    ap.add_argument("--boot", type=positive_int, default=2000, help="bootstrap resamples for the saving's interval")
    ap.add_argument("--seed", type=int, default=d.seed, help="seeds the synthetic workload and bootstrap")
    ap.add_argument("--json", action="store_true", help="print the estimate as one JSON object instead")
    return ap


def baseline_canvas(canvas: int | None, table=None, source: str = "the table") -> int:
    """The fixed baseline's canvas.

    Args:
        canvas: ``--canvas``, if given.
        table: The result table, if the costs come from a run.
        source: Names the table in the message.

    Returns:
        ``canvas``, else the table's largest ``final_canvas`` (the run's maximum canvas, over every strategy's
        rows), else the synthetic default.

    Raises:
        ValueError: If ``canvas`` < 1, or the table has no ``final_canvas`` column.
    """
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
    """The cost estimate that parsed ``ptd cost`` arguments ask for (from a result table or a synthetic workload).

    Raises:
        ValueError: For an unknown model, hardware or strategy, a bad table, or synthetic prompts that with the
            canvas exceed the model's positions.
    """
    shape, hw = model_shape(args.model), hardware(args.hardware)
    table = read_results(args.results) if args.results else None
    args.canvas = baseline_canvas(args.canvas, table, args.results)  # the notes under the table quote it
    params = StrategyParams(
        canvas=args.canvas,
        block=args.block,
        margin=args.margin,
        length_error=args.length_error,
        steps_per_token=args.steps_per_token,
        seed=args.seed,
        cache=args.cache,
    )
    if args.results:
        prompts, ours, responses = plans_from_results(
            strategy_rows(table, args.strategy, args.results), args.steps_per_token, name=args.strategy
        )
        base = plan_strategy("fixed", prompts, responses if responses is not None else np.zeros_like(prompts), params)
        if responses is None:
            base = StrategyPlans(base.name, base.plans, base.reruns, None)
    else:
        if args.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {args.strategy!r}; choose from {', '.join(STRATEGIES)}")
        prompts, responses = synthetic_workload(
            args.prompt_mean,
            args.response_mean,
            args.queries,
            args.spread,
            max_response=args.canvas - 1,
            seed=args.seed,
        )
        if prompts.max() + args.canvas > shape.max_positions:
            raise ValueError(
                f"the synthetic prompts reach {prompts.max()} tokens, which with a canvas of {args.canvas} "
                f"exceeds {shape.name}'s {shape.max_positions} positions; lower --prompt-mean, "
                "--spread or --canvas"
            )
        ours = plan_strategy(args.strategy, prompts, responses, params)
        base = plan_strategy("fixed", prompts, responses, dataclasses.replace(params, cache=args.baseline_cache))
    return estimate(
        shape, hw, ours, base, batch=args.batch, mfu=args.mfu, price=args.price, n_boot=args.boot, seed=args.seed
    )


@command("ptd cost")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    result = run(args)
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
        notes.append(
            f"queries and canvases from {args.results} (strategy {args.strategy!r}); baseline: every "
            f"query on a fixed canvas of {args.canvas}"
        )
    else:
        notes.append(
            f"synthetic workload: {args.queries} queries, log-normal prompt (mean {args.prompt_mean:g}) and "
            f"answer (mean {args.response_mean:g}) lengths, coefficient of variation {args.spread:g}"
        )
    if args.results or (args.cache == "none" and args.baseline_cache == "none"):
        passes = "each a full forward pass over prompt + canvas"
    else:

        def described(name: str, cache: str) -> str:
            return f"{name} without a KV cache" if cache == "none" else f"{name} with the {cache} KV cache"

        passes = (
            f"{described(args.strategy, args.cache)}, {described('the fixed baseline', args.baseline_cache)} "
            "(--cache, --baseline-cache); a cached block is a full refresh pass, then cached passes"
        )
    notes.append(
        f"steps = {args.steps_per_token:g} x canvas, {passes}; batches of {args.batch} same-length rows; bf16 weights"
    )
    if args.mfu is None:
        notes.append(
            f"MFU {ASSUMED_MFU:.2f} is an assumption, not a measurement (run "
            "ptdlib.cost.hardware.measure_mfu on a GPU and pass --mfu)"
        )
    if args.price is None:
        notes.append("the hourly price is an illustrative on-demand figure; pass --price with yours")
    return notes
