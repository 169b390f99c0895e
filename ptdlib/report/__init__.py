"""``ptd report`` (``make report``): the main job — experiment grid, notebooks, figures and the report page.

Steps, each logged with its elapsed time:

1. **grid** — ``configs/report.yaml`` through :func:`ptdlib.runner.run` into the results folder (resumable:
   a re-run reuses every finished chunk of rows). With ``--workers N`` (default: the cores, at most 4) the
   own-length labels are computed in N processes first, then the grid runs as ``2N`` shards (``ptd run
   --shard``) on the N processes, one torch thread each: the embedded model is too small for threads to help,
   and on a shared machine extra threads make it several times slower;
2. **tables** — from the result rows of that run only: the SmartCrop-style summary
   (:func:`ptdlib.summary.summary_table`, Holm-corrected) and the per-strategy overview
   (:func:`ptdlib.analysis.significance.strategy_overview`: FLOPs relative to the fixed maximum canvas and
   to the oracle, truncation, re-runs, score), as CSV and Markdown;
3. **notebooks** — every ``notebooks/NN_*.ipynb`` executed headless with papermill, N at a time (parameters
   ``smoke``, ``model_path``, ``figures_dir``, ``results_dir`` where the notebook declares them); executed
   copies go to ``<out>/notebooks/``; each notebook saves into its own staging folder, whose figures are then
   moved to the figures folder (so that the page knows which notebook drew which figure);
4. **page** — ``<out>/REPORT.md`` with the run's provenance, both tables and each notebook's figures.

Where things go: by default the page is ``report/REPORT.md``, executed notebooks ``report/notebooks/``
(git-ignored), tables ``report/tables/``, figures the repository's ``figures/`` and results ``runs/report``.
With ``--out DIR`` everything goes under ``DIR`` (``DIR/REPORT.md``, ``DIR/figures``, ``DIR/notebooks``,
``DIR/tables``, ``DIR/runs``). ``--smoke`` shrinks every size (used by the tests).

Modules: this one holds the command, the configuration and the tables; :mod:`~ptdlib.report.workers` the
grid on worker processes, :mod:`~ptdlib.report.notebooks` the notebooks, :mod:`~ptdlib.report.page` the page.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from ptdlib.report.notebooks import run_notebooks, select_notebooks
from ptdlib.report.page import render_page
from ptdlib.report.workers import run_grid

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "report.yaml"
DEFAULT_OUT = REPO / "report"
SMOKE_OUT = REPO / "report" / "smoke"
DEFAULT_RESULTS = REPO / "runs" / "report"
PAGE = "REPORT.md"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
DEFAULT_WORKERS = min(4, CORES)  # processes for the grid and the notebooks (one thread each)

#: Query counts of a smoke run: enough for every strategy and test to run, seconds on the embedded model.
SMOKE_QUERIES, SMOKE_TRAIN, SMOKE_CALIB, SMOKE_BATCH = 8, 32, 16, 8
#: Bootstrap resamples of the summary's intervals (a smoke run does not need tight Monte-Carlo error).
RESAMPLES, SMOKE_RESAMPLES = 9999, 999


class Log:
    """The step log: ``[report 12.3 s] message``, flushed so that a pipe shows progress as it happens."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[report {time.perf_counter() - self.t0:7.1f} s] {message}", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# ---------------------------------------------------------------- configuration
def report_config(path: Path, *, smoke: bool, model: str | None, results: Path):
    """The run configuration of the report: the file's, with the model, sizes and output replaced."""
    from ptdlib.runconfig import load_config

    cfg = load_config(path)
    changes = {"output": str(results)}
    if model is not None:
        changes["model"] = dataclasses.replace(cfg.model, path=str(Path(model).resolve()))
    if smoke:
        changes.update(splits={s: min(n, SMOKE_QUERIES) for s, n in cfg.splits.items()},
                       train=min(cfg.train, SMOKE_TRAIN), calib=min(cfg.calib, SMOKE_CALIB),
                       batch_size=min(cfg.batch_size, SMOKE_BATCH), chunk_size=None)
    return dataclasses.replace(cfg, **changes)  # a new instance: validated again, grid expanded again


# ---------------------------------------------------------------- tables
def build_tables(results: Path, *, resamples: int) -> dict:
    """Summary and overview of the run in ``results``: DataFrames, Markdown, and the run record."""
    from ptdlib.analysis.significance import overview_markdown, strategy_overview
    from ptdlib.results import load_results
    from ptdlib.runconfig import RunConfig
    from ptdlib.summarize import separate_recoveries
    from ptdlib.summary import Baseline, summary_table, to_markdown

    rows = load_results(results)
    run = rows.attrs["run"]
    if rows.attrs["missing_chunks"]:
        raise ValueError(f"{results}: {len(rows.attrs['missing_chunks'])} chunks of the grid are missing; run the "
                         f"grid first (without --skip-grid)")
    cfg = RunConfig.from_dict(run["config"])
    summary = summary_table(separate_recoveries(rows), Baseline(*cfg.baseline_arm), correction="holm",
                            n_resamples=resamples)
    overview = strategy_overview(rows, cfg.limits.max_canvas)
    return {"rows": rows, "run": run, "config": cfg, "summary": summary, "overview": overview,
            "summary_md": to_markdown(summary), "overview_md": overview_markdown(overview)}


def write_tables(tables: dict, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"summary.csv": tables["summary"], "overview.csv": tables["overview"]}
    out = []
    for name, frame in paths.items():
        frame.to_csv(folder / name, index=False)
        out.append(folder / name)
    for name in ("summary_md", "overview_md"):
        path = folder / f"{name[:-3]}.md"
        path.write_text(tables[name])
        out.append(path)
    return out


# ---------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptd report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Default outputs: report/REPORT.md, report/notebooks/, report/tables/, "
                                       "figures/, runs/report/.")
    p.add_argument("--smoke", action="store_true", help="tiny sizes everywhere (seconds; for tests)")
    p.add_argument("--out", help="put the page, figures, tables, executed notebooks and results under this folder")
    p.add_argument("--results", help="results folder of the grid (default runs/report, or OUT/runs with --out)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="grid configuration (default configs/report.yaml)")
    p.add_argument("--model", help="model directory (default: the shipped embedded model, data/models/ptd-tiny)")
    p.add_argument("--skip-grid", action="store_true", help="do not run the grid; report on the results present")
    p.add_argument("--notebooks", help="notebook numbers to run, e.g. 01,04 (default all; 'none' for none)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"processes for the grid and the notebooks, one torch thread each (default {DEFAULT_WORKERS}: "
                        f"the CPU cores, at most 4; 1 runs the grid in this process)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = Log()
    if args.out:
        out = Path(args.out).resolve()
        figures, results = out / "figures", Path(args.results or out / "runs").resolve()
    else:
        out = SMOKE_OUT if args.smoke else DEFAULT_OUT
        from ptdlib.plotting import resolve_figures_dir

        figures = out / "figures" if args.smoke else resolve_figures_dir()
        results = Path(args.results).resolve() if args.results else (
            REPO / "runs" / "report-smoke" if args.smoke else DEFAULT_RESULTS)
    try:
        cfg = report_config(Path(args.config), smoke=args.smoke, model=args.model, results=results)
        notebooks = select_notebooks(args.notebooks)
    except (ValueError, FileNotFoundError) as e:
        print(f"ptd report: error: {e}", file=sys.stderr)
        return 2
    log(f"report -> {out / PAGE}; results {results}; figures {figures}; {len(cfg.cells)} strategies x "
        f"{', '.join(f'{s} {n}' for s, n in cfg.splits.items())}; notebooks: "
        f"{', '.join(p.name[:2] for p in notebooks) or 'none'}")
    steps = {}

    if args.workers < 1:
        print(f"ptd report: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.skip_grid:
        log("[1/4] grid: skipped (--skip-grid)")
    else:
        log(f"[1/4] grid: {args.config} on {cfg.model.path} with {args.workers} process(es); finished chunks are "
            f"reused")
        t0 = time.perf_counter()
        try:
            run_grid(cfg, results, args.workers, log)
        except (ValueError, FileNotFoundError) as e:
            print(f"ptd report: error: {e}\n(use another --out/--results folder, or `make clean-results`)",
                  file=sys.stderr)
            return 2
        steps["grid"] = time.perf_counter() - t0

    log("[2/4] tables: summary (Holm) and strategy overview from the result rows")
    t0 = time.perf_counter()
    try:
        tables = build_tables(results, resamples=SMOKE_RESAMPLES if args.smoke else RESAMPLES)
    except (ValueError, FileNotFoundError) as e:
        print(f"ptd report: error: {e}", file=sys.stderr)
        return 2
    written = write_tables(tables, out / "tables")
    steps["tables"] = time.perf_counter() - t0
    log(f"      {len(tables['rows'])} rows -> {', '.join(p.name for p in written)} in {out / 'tables'}")

    log(f"[3/4] notebooks: {len(notebooks)} with papermill on {min(args.workers, len(notebooks))} process(es) -> "
        f"{out / 'notebooks'}")
    t0 = time.perf_counter()
    params = {"smoke": bool(args.smoke), "model_path": None if cfg.model.path == "embedded" else cfg.model.path,
              "results_dir": str(results)}
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


if __name__ == "__main__":
    sys.exit(main())
