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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "report.yaml"
NOTEBOOK_DIR = REPO / "notebooks"
DEFAULT_OUT = REPO / "report"
SMOKE_OUT = REPO / "report" / "smoke"
DEFAULT_RESULTS = REPO / "runs" / "report"
PAGE = "REPORT.md"
KERNEL = "python3"  # the venv's kernel (installed by `make` with --sys-prefix --name python3)
FIGURES_ENV = "PTD_FIGURES_DIR"  # ptdlib.plotting's figures-folder variable
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


def select_notebooks(spec: str | None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Notebooks to run: all ``NN_*.ipynb`` in ``folder``, or those whose number prefix is in ``spec``
    (``"01,04"``; ``"none"`` for none)."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if spec is None:
        return found
    if spec.strip().lower() == "none":
        return []
    wanted = [s.strip().zfill(2) for s in spec.split(",") if s.strip()]
    have = {p.name[:2]: p for p in found}
    unknown = [w for w in wanted if w not in have]
    if unknown or not wanted:
        raise ValueError(f"--notebooks: no notebook numbered {', '.join(unknown) or repr(spec)}; "
                         f"have {', '.join(sorted(have)) or 'none'}")
    return [have[w] for w in wanted]


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


# ---------------------------------------------------------------- worker processes
def _pool(workers: int):
    """A pool of fresh interpreters (spawn: no state, no torch threads inherited from this process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


_WORKER_MODEL: dict = {}  # a worker process's loaded model, by model spec


def _worker_model(cfg):
    import torch

    from ptdlib.runner import load_model

    torch.set_num_threads(1)  # one process per core: the embedded model gains nothing from more threads
    key = json.dumps(dataclasses.asdict(cfg.model), sort_keys=True)
    if key not in _WORKER_MODEL:
        _WORKER_MODEL[key] = load_model(cfg.model)
    return _WORKER_MODEL[key]


def _label_job(cfg_dict: dict, split: str, n: int, start: int, stop: int) -> int:
    """Worker: label queries ``start:stop`` of ``split`` (of ``n``) into the shared label cache."""
    from ptdlib.labels import label_queries
    from ptdlib.runconfig import RunConfig
    from ptdlib.tasks import make_split

    cfg = RunConfig.from_dict(cfg_dict)
    queries = make_split(split, n, seed=cfg.data_seed)[start:stop]
    label_queries(_worker_model(cfg), queries, canvas=cfg.limits.max_canvas, sampler=cfg.sampler,
                  seed=cfg.label_seed, batch_size=cfg.batch_size)
    return len(queries)


def _shard_job(cfg_dict: dict, output: str, i: int, n: int) -> str:
    """Worker: run shard ``i`` of ``n`` of the grid."""
    from ptdlib.runconfig import RunConfig
    from ptdlib.runner import run

    cfg = RunConfig.from_dict(cfg_dict)
    return run(cfg, output=output, shard=(i, n), lm=_worker_model(cfg), progress=False).line()


def label_jobs(cfg, workers: int) -> list[tuple[str, int, int, int]]:
    """(split, n, start, stop) pieces of every query the grid labels, about ``workers`` per split."""
    fitted = any(c.name in ("heuristic", "predicted") for c in cfg.cells)
    sizes = {**({"train": cfg.train, "calib": cfg.calib} if fitted else {}), **cfg.splits}
    jobs = []
    for split, n in sizes.items():
        step = -(-n // workers)
        jobs += [(split, n, a, min(a + step, n)) for a in range(0, n, step)]
    return jobs


def run_grid(cfg, results: Path, workers: int, log: Log) -> None:
    """The grid into ``results``: labels first, then ``2 * workers`` shards on ``workers`` processes."""
    from concurrent.futures import FIRST_COMPLETED, as_completed, wait

    from ptdlib.results import finished_chunks, missing_chunks, open_run
    from ptdlib.runconfig import plan_chunks
    from ptdlib.runner import run

    if workers == 1:
        log("      " + run(cfg, output=results, lm=_worker_model(cfg), progress=True).line())
        return
    from ptdlib.labels import model_fingerprint

    lm = _worker_model(cfg)
    open_run(results, cfg, lm.model_id, model_fingerprint(lm))  # fails now if results holds another run
    total = len(plan_chunks(cfg))
    if not missing_chunks(results):
        log(f"      all {total} chunks present: nothing to run")
        return
    cfg_dict = json.loads(json.dumps(dataclasses.asdict(cfg)))
    with _pool(workers) as pool:
        jobs = label_jobs(cfg, workers)
        log(f"      labels: own lengths at the maximum canvas, {len(jobs)} pieces on {workers} processes (cached)")
        futures = {pool.submit(_label_job, cfg_dict, *job): job for job in jobs}
        for k, future in enumerate(as_completed(futures), 1):
            split, _, start, stop = futures[future]
            future.result()
            log(f"      labels: {k}/{len(jobs)} pieces done ({split} {start}-{stop})")
        shards = 2 * workers
        log(f"      strategies: {shards} shards on {workers} processes")
        pending = {pool.submit(_shard_job, cfg_dict, str(results), i, shards) for i in range(shards)}
        while pending:
            done, pending = wait(pending, timeout=30, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # re-raises a worker's error here
            log(f"      {len(finished_chunks(results))}/{total} chunks done")


# ---------------------------------------------------------------- notebooks
def notebook_title(path: Path) -> str:
    """The first Markdown heading of a notebook (its file name if it has none)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)")


def declared_parameters(path: Path) -> list[str]:
    """Names assigned at the top level of the notebook's cell tagged ``parameters``.

    Read directly rather than with ``papermill.inspect_notebook``, which skips a line holding a second ``=``
    (e.g. in its comment).
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        return []
    return [m.group(1) for line in cells[0].source.splitlines() if (m := _ASSIGNMENT.match(line))]


def _notebook_job(path: str, out_dir: str, staging: str, params: dict) -> dict:
    """Worker: execute one notebook with papermill, its figures going to its own ``staging`` folder.

    Only the parameters the notebook declares are passed.
    """
    import papermill

    path, staging_dir = Path(path), Path(staging)
    os.environ[FIGURES_ENV] = staging  # for code that saves without the figures_dir parameter
    given = {k: v for k, v in {**params, "figures_dir": staging}.items() if k in declared_parameters(path)}
    t0 = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(str(path), str(Path(out_dir) / path.name), parameters=given, kernel_name=KERNEL,
                                   progress_bar=False, cwd=str(path.parent))
    except Exception as e:  # papermill raises PapermillExecutionError and kernel errors of several types
        text = str(e).strip()
        error = f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"
    files = sorted(staging_dir.glob("*"), key=lambda p: p.stat().st_mtime_ns) if staging_dir.is_dir() else []
    return {"name": path.name, "title": notebook_title(path), "seconds": time.perf_counter() - t0,
            "files": [str(f) for f in files], "error": error}


def run_notebooks(notebooks: list[Path], out: Path, figures: Path, params: dict, workers: int, log: Log) -> list[dict]:
    """Execute ``notebooks`` on ``workers`` processes; move each one's figures into ``figures``."""
    from concurrent.futures import as_completed

    figures.mkdir(parents=True, exist_ok=True)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    staging = out / "notebooks" / ".figures"
    shutil.rmtree(staging, ignore_errors=True)
    results = {}
    with _pool(max(1, min(workers, len(notebooks)))) as pool:
        futures = {pool.submit(_notebook_job, str(p), str(out / "notebooks"), str(staging / p.stem), params): p
                   for p in notebooks}
        for k, future in enumerate(as_completed(futures), 1):
            res = future.result()
            moved = []
            for f in map(Path, res.pop("files")):
                shutil.move(f, figures / f.name)  # replaces an older copy; works across file systems
                moved.append(figures / f.name)
            res.update(figures=[f for f in moved if f.suffix == ".png"], executed=out / "notebooks" / res["name"])
            results[res["name"]] = res
            status = f"FAILED ({res['error']})" if res["error"] else f"{len(res['figures'])} figures"
            log(f"      ({k}/{len(notebooks)}) {res['name']}: {status}, {res['seconds']:.0f} s")
    shutil.rmtree(staging, ignore_errors=True)
    return [results[p.name] for p in notebooks]


# ---------------------------------------------------------------- the page
def key_findings(tables: dict, level: float = 0.05) -> list[str]:
    """A few sentences computed from the tables: the oracle's floor and the largest saving without a loss."""
    from ptdlib.analysis.significance import short_arm_labels
    from ptdlib.canvas import get_policy_class

    ov, summary, cfg = tables["overview"], tables["summary"], tables["config"]
    lines = []
    for split in summary["split"].unique():
        o = ov[(ov["split"] == split) & (ov["strategy"] == "oracle")]
        if len(o):
            lines.append(f"* {split}: the oracle canvas (own length + EOS, not deployable) costs "
                         f"{o['flops_vs_fixed'].iloc[0]:.2f} of the fixed {cfg.limits.max_canvas}-token canvas's "
                         f"FLOPs.")
        t = summary[summary["split"] == split].reset_index(drop=True)
        t = t.assign(arm=short_arm_labels(t))
        ok = t[t["quality_delta"].notna() & ~t["strategy"].map(lambda n: get_policy_class(n).oracle)
               & ((t["p_adjusted"] >= level) | (t["quality_delta"] >= 0))]
        if ok.empty:
            lines.append(f"* {split}: every deployable strategy loses quality significantly (Holm, {level:g}).")
            continue
        best = ok.loc[ok["flops_saved_pct"].idxmax()]
        lines.append(f"* {split}: the largest saving without a significant quality loss (Holm, {level:g}) is "
                     f"**{best['arm']}**: {best['flops_saved_pct']:.1f} % of the FLOPs saved "
                     f"[{best['flops_saved_low']:.1f}, {best['flops_saved_high']:.1f}], quality Δ "
                     f"{best['quality_delta']:.1f} [{best['quality_delta_low']:.1f}, {best['quality_delta_high']:.1f}] "
                     f"{'pp' if summary.attrs.get('quality_delta') == 'points' else '%'}. No significant loss is not "
                     f"equivalence: notebook 06 tests non-inferiority against a margin.")
    return lines


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def render_page(tables: dict, notebooks: list[dict], *, page_dir: Path, results: Path, steps: dict,
                smoke: bool) -> str:
    """The report page in Markdown; every number comes from ``tables`` (the run's result rows)."""
    run, cfg, rows = tables["run"], tables["config"], tables["rows"]
    git = run.get("git", {})
    splits = ", ".join(f"{s} ({n} queries)" for s, n in cfg.splits.items())
    lines = [
        "# ptdlib report" + (" (smoke run: tiny sizes, numbers meaningless)" if smoke else ""),
        "",
        "Generated by `ptd report` from the result tables of the run below; every number on this page is computed "
        "from those rows.",
        "",
        f"* model: `{run['model']['id']}` (weights fingerprint `{run['model']['fingerprint']}`)",
        f"* git revision: `{git.get('revision', 'unknown')}`"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"* run created: {run.get('created', '?')}; results: `{_rel(results, page_dir)}` ({len(rows)} rows)",
        f"* evaluated splits: {splits}; predictor and heuristic fitted on {cfg.train} train queries, margins "
        f"calibrated on {cfg.calib} calib queries",
        f"* sampler: blocks of {cfg.sampler.block_length}, steps = "
        f"{'canvas length' if cfg.sampler.steps is None else cfg.sampler.steps}, temperature "
        f"{cfg.sampler.temperature}; canvases: multiples of {cfg.limits.round_to} up to {cfg.limits.max_canvas}; "
        f"truncation recovery: {cfg.recovery}",
        "* time: " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()),
        "",
        "## Key numbers",
        "",
        *key_findings(tables),
        "",
        "## Strategies at a glance",
        "",
        f"FLOPs are totals over the same queries (probe, predictor and re-run passes included) divided by those of "
        f"the fixed {cfg.limits.max_canvas}-token canvas and of the oracle canvas. *Truncated* is the share of "
        "first attempts whose canvas held no EOS; *re-run* the share decoded again.",
        "",
        tables["overview_md"],
        "## Quality and FLOPs against the baseline",
        "",
        "Layout of the SmartCrop paper: average processed length (prompt + canvas), score, FLOPs saved with a "
        "paired BCa bootstrap interval, and the quality difference with an exact McNemar test and its exact "
        "conditional interval (binary scores) or a sign-flip test and a BCa interval, Holm-corrected over the table.",
        "",
        tables["summary_md"],
    ]
    if notebooks:
        lines += ["## Notebooks", ""]
    for nb in notebooks:
        executed = _rel(nb["executed"], page_dir)
        lines += [f"### {nb['title']}", "",
                  f"`{nb['name']}` — executed copy: [{executed}]({executed}) ({nb['seconds']:.0f} s)", ""]
        if nb["error"]:
            lines += [f"**This notebook failed:** `{nb['error']}`", ""]
        for fig in nb["figures"]:
            lines += [f"![{fig.stem}]({_rel(fig, page_dir)})", ""]
    return "\n".join(lines).rstrip() + "\n"


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
