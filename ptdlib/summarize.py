"""``ptd summarize DIR [DIR...]``: merge a run's shard directories, check completeness, print the summary.

1. The directories must hold the same run (same config and model fingerprint in their ``run.json``).
2. Every chunk the config plans must be present in one of them; missing chunks are listed and the command
   fails (``--allow-missing`` summarises the queries that every arm of a split has so far).
3. The merged tidy table is written as ``results.csv`` (in the first directory unless ``--output``).
4. The SmartCrop-style summary (:func:`ptdlib.summary.summary_table`: per split and strategy the processed
   length, score, FLOPs saved % with its interval and the quality difference with stars after a Holm or
   Benjamini–Hochberg correction) is printed as Markdown, and written as LaTeX with ``--latex PATH``.

An arm of the summary is a (strategy, params) pair; when the grid runs one such pair with several truncation
recoveries, the recovery is added to its params so that the arms stay apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ptdlib.results import load_results, merged_run, missing_chunks
from ptdlib.summary import Baseline, summary_table, to_latex, to_markdown

_SHOWN_MISSING = 10  # missing chunk ids listed before "..."


def separate_recoveries(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``recovery`` to the params of (strategy, params) pairs that were run with several recoveries."""
    rows = rows.copy()
    several = rows.groupby(["strategy", "params"])["recovery"].transform("nunique") > 1
    rows.loc[several, "params"] = [json.dumps({**json.loads(p), "recovery": r}, sort_keys=True)
                                   for p, r in zip(rows.loc[several, "params"], rows.loc[several, "recovery"])]
    return rows


def common_queries(rows: pd.DataFrame) -> pd.DataFrame:
    """Only the (split, qid, seed) measurements that every arm of their split holds (for partial runs)."""
    keep = []
    for _, g in rows.groupby("split", sort=False):
        sets = [set(zip(a["qid"], a["seed"])) for _, a in g.groupby(["strategy", "params"])]
        common = set.intersection(*sets)
        keep.append(g[[k in common for k in zip(g["qid"], g["seed"])]])
    return pd.concat(keep) if keep else rows.iloc[:0]


def report_missing(missing: list, total: int) -> str:
    rows = sum(c.size for c in missing)
    ids = [c.id for c in missing[:_SHOWN_MISSING]] + (["..."] if len(missing) > _SHOWN_MISSING else [])
    return (f"{len(missing)} of {total} chunks missing ({rows} rows): run the missing shards (ptd run CONFIG "
            f"--shard i/n) or copy their chunks/ files in\n  " + "\n  ".join(ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptd summarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run directories (shards of one run)")
    parser.add_argument("--correction", default="holm", choices=("holm", "fdr_bh"),
                        help="multiple-comparison correction of the stars (default: holm)")
    parser.add_argument("--quality-delta", default="points", choices=("points", "relative"),
                        help="quality difference in percentage points or percent of the baseline")
    parser.add_argument("--margin", type=float, help="non-inferiority margin in score units (e.g. 0.02)")
    parser.add_argument("--baseline", help='baseline arm as STRATEGY or STRATEGY:{"param": value} '
                                           "(default: the config's baseline, fixed at the maximum canvas)")
    parser.add_argument("--output", help="merged table (default: DIR/results.csv of the first DIR)")
    parser.add_argument("--latex", help="also write the summary as a LaTeX tabular to this path")
    parser.add_argument("--allow-missing", action="store_true",
                        help="summarise a partial run (queries every arm has) instead of failing")
    args = parser.parse_args(argv)
    try:
        cfg, run = merged_run(args.dirs)
        missing = missing_chunks(*args.dirs)
        if missing:
            print(f"ptd summarize: {report_missing(missing, run['chunks'])}", file=sys.stderr)
            if not args.allow_missing:
                return 1
        rows = load_results(*args.dirs)
        if rows.empty:
            print("ptd summarize: error: no result rows yet", file=sys.stderr)
            return 1
        out = Path(args.output or Path(args.dirs[0]) / "results.csv")
        rows.to_csv(out, index=False)
        if args.baseline:
            name, _, params = args.baseline.partition(":")
            baseline = Baseline(name, params or "{}")
        else:
            baseline = Baseline(*cfg.baseline_arm)
        arms = separate_recoveries(rows)
        if missing:
            arms = common_queries(arms)
        table = summary_table(arms, baseline, correction=args.correction, quality_delta=args.quality_delta,
                              margin=args.margin)
    except (ValueError, FileNotFoundError) as e:
        print(f"ptd summarize: error: {e}", file=sys.stderr)
        return 2
    model = run["model"]
    print(f"run: {model['id']} (weights {model['fingerprint']}), {len(rows)} rows, "
          f"git {run['git']['revision'][:10]}; merged table -> {out}\n")
    print(to_markdown(table))
    if args.latex:
        Path(args.latex).write_text(to_latex(table))
        print(f"LaTeX table -> {args.latex}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
