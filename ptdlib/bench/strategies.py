"""``ptd bench strategies``: every canvas strategy on the synthetic ``test`` split, costed honestly.

Runs one experiment grid through the resumable runner (so an interrupted bench resumes) and prints, per
strategy: mean FLOPs relative to ``oracle`` and to ``fixed(128)`` (probe, predictor and re-run passes
included), truncation before recovery, re-run rate, final truncation, score (exact match or validity),
and wall seconds per query. Then the conformal check (realised truncation vs α + 1/(n+1)), the
predictor's cost as a share of the FLOPs it saves, and the goal check: the best deployable strategy's
FLOPs vs oracle at ≤ 1 % final truncation beyond the baseline's.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ptdlib import REPO_ROOT
from ptdlib.cli.contract import ArgumentParser
from ptdlib.cost.plans import CACHE_MODES
from ptdlib.models.spec import add_model_arguments, spec_from_args

#: The bench's grids (``--config`` defaults to it): named lists of run-config strategies, one per ``--arms`` value.
DEFAULT_CONFIG = REPO_ROOT / "configs" / "bench-strategies.yaml"


def load_grids(path: str | Path = DEFAULT_CONFIG) -> dict[str, list[dict]]:
    """Read the bench's grids from a YAML file (``configs/bench-strategies.yaml``).

    The file holds one key, ``grids``, mapping a grid's name (an ``--arms`` value) to a run config's
    ``strategies:`` list. Every grid is checked as a run config's strategies are (policy names, parameters
    and their ranges, at the default limits: canvases of whole blocks of 32 up to 128) and must hold
    ``fixed`` with ``L: 128`` (the baseline) and ``oracle`` (the references of the FLOPs ratios).

    Args:
        path: The YAML file.

    Returns:
        Grid name -> its arms (``{"name": ..., "params": {...}}`` mappings, in the file's order).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not valid YAML, is not shaped as above, or a grid holds an arm a run config
            refuses or lacks a reference arm; the message names the file and the grid.
    """
    from ptdlib.experiment.config import RunConfig

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bench config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"bench config {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or set(data) != {"grids"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"bench config {path} must hold one key, grids (name -> strategies), got {keys}")
    grids = data["grids"]
    if not isinstance(grids, dict) or not grids:
        raise ValueError(f"bench config {path}: grids must map at least one name to a list of strategies")
    for name, arms in grids.items():
        where = f"bench config {path}, grid {name!r}"
        if not isinstance(arms, list) or not arms:
            raise ValueError(f"{where} must be a non-empty list of strategies ({{name, params}}), got {arms!r}")
        if not any(a.get("name") == "oracle" for a in arms if isinstance(a, dict)):
            raise ValueError(f"{where} has no oracle arm, the reference of flops_vs_oracle")
        try:  # the run config's own checks; its default baseline is fixed at L=128
            RunConfig.from_dict({"splits": {"test": 1}, "strategies": arms})
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return grids


def select_arms(grid: list[dict], policies) -> list[dict]:
    """The arms of ``grid`` whose policy is in ``policies`` (all when None), with fixed and oracle always kept."""
    if policies is None:
        return grid
    from ptdlib.canvas import POLICIES

    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown canvas policies {unknown}; choose from {', '.join(POLICIES)}")
    keep = set(policies) | {"fixed", "oracle"}
    return [arm for arm in grid if arm["name"] in keep]


def label(row) -> str:
    params = json.loads(row["params"])
    inner = ",".join(f"{k}={v}" for k, v in params.items() if k != "regressor")
    return f"{row['strategy']}({inner})"


def summarise(rows: pd.DataFrame, max_canvas: int = 128) -> pd.DataFrame:
    """One line per strategy arm: FLOPs ratios, truncation, re-runs, score and wall time."""
    rows = rows.assign(arm=rows.apply(label, axis=1))
    per = rows.groupby("arm", sort=False).agg(
        n=("qid", "size"),
        flops=("flops_total", "mean"),
        flops_predictor=("flops_predictor", "mean"),
        flops_probe=("flops_probe", "mean"),
        truncation=("truncated", "mean"),
        rerun_rate=("reruns", "mean"),
        final_truncation=("truncated_final", "mean"),
        score=("score", "mean"),
        wall_s=("wall_s", "mean"),
        passes=("forward_passes", "mean"),
        mean_canvas=("chosen_canvas", "mean"),
    )
    oracle = per.loc[[a for a in per.index if a.startswith("oracle")][0], "flops"]
    fixed = per.loc[f"fixed(L={max_canvas})", "flops"]
    per.insert(1, "flops_vs_oracle", per["flops"] / oracle)
    per.insert(2, "flops_vs_fixed", per["flops"] / fixed)
    return per


def main(argv: list[str]) -> int:
    p = ArgumentParser(
        prog="ptd bench strategies", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(p)
    # Defaults match configs/report.yaml, so the bench and the report share their cached labelling runs.
    p.add_argument("--n-test", type=int, default=256, help="test queries")
    p.add_argument("--n-train", type=int, default=256, help="train queries the predictor and heuristic learn from")
    p.add_argument(
        "--n-calib",
        type=int,
        default=128,
        help="calib queries the margins are calibrated on (alpha=0.01 needs at least 99)",
    )
    p.add_argument("--out", default="runs/bench-strategies", help="run directory (resumable)")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="compare arms model/policy/cache over these model directories (ptdlib.bench.arms)",
    )
    p.add_argument(
        "--caches",
        nargs="+",
        default=None,
        choices=CACHE_MODES,
        help="KV-cache modes of the arm comparison (the uncached run is always included)",
    )
    p.add_argument(
        "--grid",
        default="full",
        choices=("full", "core"),
        help="arm comparison: all policies, or all but the predictor (no train/calib labelling)",
    )
    p.add_argument(
        "--round-to",
        type=int,
        default=32,
        help="canvas rounding and sampler block (32: the report's setting; 8: fine enough to rank estimators)",
    )
    p.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="YAML file of the grids (default: configs/bench-strategies.yaml)"
    )
    p.add_argument(
        "--arms",
        default="all",
        help="grid of --config to run; the default file has all (every strategy) and fine (the "
        "shorter rounding-8 study of the new arms)",
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        metavar="POLICY",
        help="run only the arms of these policies (fixed and oracle always run, as references)",
    )
    args = p.parse_args(argv)
    if args.round_to < 1 or 128 % args.round_to:
        p.error(f"--round-to must divide the maximum canvas 128, got {args.round_to}")
    for name in ("n_test", "n_train", "n_calib"):
        if getattr(args, name) < 2:
            p.error(f"--{name.replace('_', '-')} must be at least 2, got {getattr(args, name)}")
    if args.models or args.caches:
        return _compare_arms(args)
    grids = load_grids(args.config)
    if args.arms not in grids:
        p.error(f"--arms {args.arms!r} is not a grid of {args.config}; choose from {', '.join(grids)}")

    from ptdlib.experiment.config import RunConfig
    from ptdlib.experiment.results import load_results
    from ptdlib.experiment.runner import run

    cfg = RunConfig.from_dict(
        {
            "model": asdict(spec_from_args(args)),
            "splits": {"test": args.n_test},
            "train": args.n_train,
            "calib": args.n_calib,
            "strategies": select_arms(grids[args.arms], args.strategies),
            "output": args.out,
            "sampler": {"block_length": args.round_to},
            "limits": {"max_canvas": 128, "round_to": args.round_to},
        }
    )
    stats = run(cfg, device=args.device)
    rows = load_results(args.out)
    per = summarise(rows, cfg.limits.max_canvas)
    show = per[
        [
            "n",
            "flops_vs_oracle",
            "flops_vs_fixed",
            "truncation",
            "rerun_rate",
            "final_truncation",
            "score",
            "wall_s",
            "passes",
            "mean_canvas",
        ]
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(show.round(3).to_string())

    base_final = per.loc["fixed(L=128)", "final_truncation"]
    deployable = per[[not a.startswith("oracle") and not a.startswith("fixed") for a in per.index]]
    ok = deployable[deployable["final_truncation"] <= base_final + 0.01]
    best = ok["flops_vs_oracle"].idxmin() if len(ok) else None

    conformal = {}
    for arm, r in per.iterrows():
        calibrated = "margin=conformal" in arm or arm.startswith("smartcrop_conformal(")
        if calibrated and "early_stop" not in arm:  # conformal without early stop
            alpha = float(arm.split("alpha=")[1].rstrip(")").split(",")[0])
            bound = alpha + 1 / (args.n_calib + 1)
            se = np.sqrt(bound * (1 - bound) / r["n"])
            conformal[arm] = {
                "alpha": alpha,
                "realised": round(float(r["truncation"]), 4),
                "bound": round(bound, 4),
                "within_bound_plus_2se": bool(r["truncation"] <= bound + 2 * se),
            }
    fixed_flops = per.loc["fixed(L=128)", "flops"]
    # The predictor's passes as a share of the FLOPs the strategy saves against fixed(128) (None: no saving).
    pred_cost = {
        arm: (round(float(r["flops_predictor"] / (fixed_flops - r["flops"])), 6) if r["flops"] < fixed_flops else None)
        for arm, r in per.iterrows()
        if r["flops_predictor"] > 0
    }
    result = {
        "n_test": args.n_test,
        "rows_written": stats.rows_written,
        "seconds": round(stats.seconds, 1),
        "strategies": {arm: {k: round(float(v), 4) for k, v in r.items()} for arm, r in show.iterrows()},
        "best_deployable": best,
        "best_deployable_flops_vs_oracle": round(float(ok.loc[best, "flops_vs_oracle"]), 4) if best else None,
        "goal_within_1.10x_oracle": bool(best and ok.loc[best, "flops_vs_oracle"] <= 1.10),
        "conformal": conformal,
        "predictor_flops_share_of_saving": pred_cost,
    }
    print(f"\nbest deployable (final truncation <= baseline + 1 %): {best}")
    print(json.dumps(result))
    return 0


def _compare_arms(args) -> int:
    """``--models`` / ``--caches``: the arms model/policy/cache of :mod:`ptdlib.bench.arms`."""
    from ptdlib.bench.arms import run_arms, summarise_arms

    rows, seconds = run_arms(
        args.models or ["embedded"],
        args.caches or ["none"],
        args.out,
        n_test=args.n_test,
        n_train=args.n_train,
        n_calib=args.n_calib,
        grid=args.grid,
    )
    table = summarise_arms(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.drop(columns=["test", "p_value"]).round(3).to_string())
    result = {
        "n_test": args.n_test,
        "seconds": round(seconds, 1),
        "arms": {
            arm: {
                k: (None if pd.isna(v) else round(float(v), 4)) if isinstance(v, (int, float, np.number)) else v
                for k, v in r.items()
            }
            for arm, r in table.iterrows()
        },
    }
    print(json.dumps(result))
    return 0
