"""``ptd summarize DIR [DIR...]``: merge a run's shard directories and print the summary (:mod:`ptdlib.experiment.merge`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ptdlib.cli.contract import ArgumentParser, command


def parser() -> ArgumentParser:
    from ptdlib.experiment import merge as summarize
    from ptdlib.stats.paired import CORRECTIONS
    from ptdlib.stats.summary import QUALITY_DELTAS

    p = ArgumentParser(prog="ptd summarize", description=summarize.__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", help="run directories (shards of one run)")
    p.add_argument(
        "--correction",
        default="holm",
        choices=tuple(CORRECTIONS),
        help="multiple-comparison correction of the stars (default: holm)",
    )
    p.add_argument(
        "--quality-delta",
        default="points",
        choices=tuple(QUALITY_DELTAS),
        help="quality difference in percentage points or percent of the baseline",
    )
    p.add_argument("--margin", type=float, help="non-inferiority margin in score units (e.g. 0.02)")
    p.add_argument(
        "--baseline",
        help='baseline arm as STRATEGY or STRATEGY:{"param": value} '
        "(default: the config's baseline, fixed at the maximum canvas)",
    )
    p.add_argument("--output", help="merged table (default: DIR/results.csv of the first DIR)")
    p.add_argument("--latex", help="also write the summary as a LaTeX tabular to this path")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="summarise a partial run (queries every arm has) instead of failing",
    )
    return p


@command("ptd summarize")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ptdlib.experiment.merge import common_queries, report_missing, separate_recoveries, split_by_source
    from ptdlib.experiment.results import load_results, merged_run, missing_chunks
    from ptdlib.stats.summary import Baseline, summary_table, to_latex, to_markdown

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
    if args.baseline:
        name, _, params = args.baseline.partition(":")
        baseline = Baseline(name, params or "{}")
    else:
        baseline = Baseline(*cfg.baseline_arm)
    arms = split_by_source(separate_recoveries(rows))
    if missing:
        arms = common_queries(arms)
    table = summary_table(
        arms, baseline, correction=args.correction, quality_delta=args.quality_delta, margin=args.margin
    )
    out = Path(args.output or Path(args.dirs[0]) / "results.csv")
    rows.to_csv(out, index=False)
    model = run["model"]
    print(
        f"run: {model['id']} (weights {model['fingerprint']}), {len(rows)} rows, "
        f"git {run['git']['revision'][:10]}; merged table -> {out}\n"
    )
    print(to_markdown(table))
    if args.latex:
        Path(args.latex).write_text(to_latex(table))
        print(f"LaTeX table -> {args.latex}")
    return 0
