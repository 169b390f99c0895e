"""``ptd report`` (``make report``): the main job — experiment grid, notebooks, figures and the report page.

The steps and where their outputs go are described in :mod:`ptdlib.report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ptdlib import report
from ptdlib.cli.contract import ArgumentParser, command
from ptdlib.models.spec import add_model_arguments, spec_from_args
from ptdlib.report import (
    DEFAULT_CONFIG,
    DEFAULT_OUT,
    DEFAULT_RESULTS,
    DEFAULT_WORKERS,
    PAGE,
    REPO,
    RESAMPLES,
    SMOKE_OUT,
    SMOKE_RESAMPLES,
    Log,
    build_tables,
    render_page,
    report_config,
    run_grid,
    run_notebooks,
    select_notebooks,
    write_tables,
)


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="ptd report",
        description=report.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default outputs: report/REPORT.md, report/notebooks/, report/tables/, figures/, runs/report/.",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes everywhere (seconds; for tests)")
    p.add_argument("--out", help="put the page, figures, tables, executed notebooks and results under this folder")
    p.add_argument("--results", help="results folder of the grid (default runs/report, or OUT/runs with --out)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="grid configuration (default configs/report.yaml)")
    add_model_arguments(p, what="the model of the grid and the notebooks (default: the config's)")
    p.add_argument("--skip-grid", action="store_true", help="do not run the grid; report on the results present")
    p.add_argument("--notebooks", help="notebook numbers to run, e.g. 01,04 (default all; 'none' for none)")
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"processes for the grid and the notebooks, one torch thread each (default {DEFAULT_WORKERS}: "
        f"the CPU cores, at most 4; 1 runs the grid in this process)",
    )
    return p


@command("ptd report")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    log = Log()
    if args.out:
        out = Path(args.out).resolve()
        figures, results = out / "figures", Path(args.results or out / "runs").resolve()
    else:
        out = SMOKE_OUT if args.smoke else DEFAULT_OUT
        from ptdlib.analysis.plotting import resolve_figures_dir

        figures = out / "figures" if args.smoke else resolve_figures_dir()
        results = (
            Path(args.results).resolve()
            if args.results
            else (REPO / "runs" / "report-smoke" if args.smoke else DEFAULT_RESULTS)
        )
    spec = spec_from_args(args) if args.model else None
    cfg = report_config(Path(args.config), smoke=args.smoke, model=spec, results=results)
    notebooks = select_notebooks(args.notebooks)
    log(
        f"report -> {out / PAGE}; results {results}; figures {figures}; {len(cfg.cells)} strategies x "
        f"{', '.join(f'{s} {n}' for s, n in cfg.splits.items())}; notebooks: "
        f"{', '.join(p.name[:2] for p in notebooks) or 'none'}"
    )
    steps = {}

    if args.skip_grid:
        log("[1/4] grid: skipped (--skip-grid)")
    else:
        log(
            f"[1/4] grid: {args.config} on {cfg.model.path} with {args.workers} process(es); finished chunks are reused"
        )
        t0 = time.perf_counter()
        try:
            run_grid(cfg, results, args.workers, log)
        except ValueError as e:
            raise ValueError(f"{e} (use another --out/--results folder, or `make clean-results`)") from e
        steps["grid"] = time.perf_counter() - t0

    log("[2/4] tables: summary (Holm) and strategy overview from the result rows")
    t0 = time.perf_counter()
    tables = build_tables(results, resamples=SMOKE_RESAMPLES if args.smoke else RESAMPLES)
    written = write_tables(tables, out / "tables")
    steps["tables"] = time.perf_counter() - t0
    log(f"      {len(tables['rows'])} rows -> {', '.join(p.name for p in written)} in {out / 'tables'}")

    log(
        f"[3/4] notebooks: {len(notebooks)} with papermill on {min(args.workers, len(notebooks))} process(es) -> "
        f"{out / 'notebooks'}"
    )
    t0 = time.perf_counter()
    params = {
        "smoke": bool(args.smoke),
        "model": dataclasses.asdict(cfg.model),
        "device": args.device,
        "results_dir": str(results),
    }
    done = run_notebooks(notebooks, out, figures, params, args.workers, log) if notebooks else []
    steps["notebooks"] = time.perf_counter() - t0

    log("[4/4] page")
    steps["total"] = log.elapsed
    page = out / PAGE
    page.write_text(render_page(tables, done, page_dir=out, results=results, steps=steps, smoke=args.smoke))
    failed = [nb["name"] for nb in done if nb["error"]]
    log(f"report written: {page}" + (f" ({len(failed)} notebook(s) failed: {', '.join(failed)})" if failed else ""))
    print(page)
    return 1 if failed else 0
