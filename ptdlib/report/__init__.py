"""``ptd report`` (``make report``): the main job — experiment grid, notebooks, figures and the report page.

Steps, each logged with its elapsed time:

1. **grid** — ``configs/report.yaml`` through :func:`ptdlib.experiment.runner.run` into the results folder (resumable:
   a re-run reuses every finished chunk of rows). With ``--workers N`` (default: the cores, at most 4) the
   own-length labels are computed in N processes first, then the grid runs as ``2N`` shards (``ptd run
   --shard``) on the N processes, one torch thread each: the embedded model is too small for threads to help,
   and on a shared machine extra threads make it several times slower;
2. **tables** — from the result rows of that run only: the SmartCrop-style summary
   (:func:`ptdlib.stats.summary.summary_table`, Holm-corrected) and the per-strategy overview
   (:func:`ptdlib.analysis.overview.strategy_overview`: FLOPs relative to the fixed maximum canvas and
   to the oracle, truncation, re-runs, score), as CSV and Markdown;
3. **notebooks** — every ``notebooks/NN_*.ipynb`` executed headless with papermill, N at a time (parameters
   ``smoke``, ``model`` (the run's model spec), ``figures_dir``, ``results_dir`` where the notebook declares them); executed
   copies go to ``<out>/notebooks/``; each notebook saves into its own staging folder, whose figures are then
   moved to the figures folder (so that the page knows which notebook drew which figure);
4. **page** — ``<out>/REPORT.md`` with the run's provenance, both tables and each notebook's figures.

Where things go: by default the page is ``report/REPORT.md``, executed notebooks ``report/notebooks/``
(git-ignored), tables ``report/tables/``, figures the repository's ``figures/`` and results ``runs/report``.
With ``--out DIR`` everything goes under ``DIR`` (``DIR/REPORT.md``, ``DIR/figures``, ``DIR/notebooks``,
``DIR/tables``, ``DIR/runs``). ``--smoke`` shrinks every size (used by the tests).

Modules: the command is :mod:`ptdlib.cli.report`; this one holds the configuration and the tables; :mod:`~ptdlib.report.workers` the
grid on worker processes, :mod:`~ptdlib.report.execute` the notebooks, :mod:`~ptdlib.report.page` the page.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from ptdlib import REPO_ROOT

# Re-exported for ptdlib.cli.report
from ptdlib.report.execute import run_notebooks as run_notebooks
from ptdlib.report.execute import select_notebooks as select_notebooks
from ptdlib.report.page import render_page as render_page
from ptdlib.report.workers import run_grid as run_grid

REPO = REPO_ROOT
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
        """Seconds since the log was created."""
        return time.perf_counter() - self.t0


# ---------------------------------------------------------------- configuration
def report_config(path: Path, *, smoke: bool, model, results: Path):
    """The run configuration of the report: the file's, with the model, sizes and output replaced.

    Args:
        path: The run config file.
        smoke: Shrink splits, train, calib and batch to the smoke sizes.
        model: A :class:`~ptdlib.models.spec.ModelSpec` or a model directory replacing the file's model (its
            path made absolute); None keeps the file's.
        results: The run directory the config writes to.

    Returns:
        The :class:`~ptdlib.experiment.config.RunConfig`, validated again.
    """
    from ptdlib.experiment.config import load_config

    cfg = load_config(path)
    changes = {"output": str(results)}
    if isinstance(model, (str, Path)):
        changes["model"] = dataclasses.replace(cfg.model, path=str(Path(model).resolve()))
    elif model is not None:
        path = model.path if model.path == "embedded" else str(Path(model.path).resolve())
        changes["model"] = dataclasses.replace(model, path=path)
    if smoke:
        changes.update(
            splits={s: min(n, SMOKE_QUERIES) for s, n in cfg.splits.items()},
            train=min(cfg.train, SMOKE_TRAIN),
            calib=min(cfg.calib, SMOKE_CALIB),
            batch_size=min(cfg.batch_size, SMOKE_BATCH),
            chunk_size=None,
        )
    return dataclasses.replace(cfg, **changes)  # a new instance: validated again, grid expanded again


# ---------------------------------------------------------------- tables
def build_tables(results: Path, *, resamples: int) -> dict:
    """Summary and overview of the run in ``results``: DataFrames, Markdown, and the run record.

    Args:
        results: The run directory.
        resamples: Bootstrap resamples of the summary's intervals.

    Returns:
        ``{"rows", "run", "config", "summary", "overview", "summary_md", "overview_md"}``.

    Raises:
        ValueError: If chunks of the grid are missing.
    """
    from ptdlib.analysis.overview import overview_markdown, strategy_overview
    from ptdlib.experiment.config import RunConfig
    from ptdlib.experiment.merge import separate_recoveries
    from ptdlib.experiment.results import load_results
    from ptdlib.stats.summary import Baseline, summary_table, to_markdown

    rows = load_results(results)
    run = rows.attrs["run"]
    if rows.attrs["missing_chunks"]:
        raise ValueError(
            f"{results}: {len(rows.attrs['missing_chunks'])} chunks of the grid are missing; run the "
            f"grid first (without --skip-grid)"
        )
    cfg = RunConfig.from_dict(run["config"])
    summary = summary_table(
        separate_recoveries(rows), Baseline(*cfg.baseline_arm), correction="holm", n_resamples=resamples
    )
    overview = strategy_overview(rows, cfg.limits.max_canvas)
    return {
        "rows": rows,
        "run": run,
        "config": cfg,
        "summary": summary,
        "overview": overview,
        "summary_md": to_markdown(summary),
        "overview_md": overview_markdown(overview),
    }


def write_tables(tables: dict, folder: Path) -> list[Path]:
    """Write ``summary`` and ``overview`` as CSV and Markdown into ``folder`` (created if missing).

    Args:
        tables: The result of :func:`build_tables`.
        folder: The output folder.

    Returns:
        The four files written.
    """
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
