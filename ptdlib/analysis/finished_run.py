"""A finished run as the result notebooks (04-07) read it: its result rows, its configuration, and its model.

:func:`find_run` resolves a notebook's ``results_dir`` parameter (a relative folder is looked up from the working
directory, then from the repository root: JupyterLab and papermill run notebooks from ``notebooks/``, while
``runs/report`` is where ``ptd report`` writes); :func:`load_finished_run` reads what the notebooks' first cells
used to read one by one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ptdlib import REPO_ROOT
from ptdlib.experiment.config import RunConfig
from ptdlib.experiment.results import RUN_FILE, load_results


@dataclass(frozen=True)
class FinishedRun:
    """What a result notebook needs of a run: rows, configuration and, when asked for, the model."""

    rows: pd.DataFrame  # the result rows (ptdlib.experiment.results.load_results); run.json in attrs["run"]
    config: RunConfig  # the run's configuration, parsed from run.json
    lm: Any = None  # the run's model (a ptdlib.models LanguageModel), or None when not loaded
    counter: Any = None  # a ptdlib.cost.flops.FlopCounter of lm, or None when no model was loaded

    @property
    def record(self) -> dict:
        """The run record (``run.json``: config, model id and weights fingerprint, versions, ...)."""
        return self.rows.attrs["run"]

    @property
    def batching(self) -> dict:
        """How the run batched its forward passes.

        Returns:
            Keyword arguments of the margin and shift replays (:func:`ptdlib.analysis.margins.sweep_margins`):
            ``limits``, ``sampler``, ``batch_size``, ``chunk_size``.
        """
        cfg = self.config
        return {"limits": cfg.limits, "sampler": cfg.sampler, "batch_size": cfg.batch_size, "chunk_size": cfg.chunk}


def find_run(results_dir: str | os.PathLike) -> Path | None:
    """The run directory a notebook's ``results_dir`` names, or None when it holds no run.

    Args:
        results_dir: An absolute folder, or one relative to the working directory or (when the working
            directory has no such folder) to the repository root.

    Returns:
        The folder, if it holds a ``run.json``; None otherwise.
    """
    path = Path(results_dir)
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    return path if (path / RUN_FILE).exists() else None


def load_finished_run(
    results_dir: str | os.PathLike, model: dict | None = None, *, device: str = "auto", split: str | None = None
) -> FinishedRun:
    """Read a finished run's rows and configuration and, when ``model`` is given, load its model.

    Args:
        results_dir: The run directory (see :func:`find_run`).
        model: A model spec, as a run config's ``model:`` section (``{}``: the shipped embedded model), loaded
            with :func:`ptdlib.models.spec.load_lm` together with a FLOP counter; None: no model.
        device: The torch device of the model (``auto``, ``cpu``, ``cuda``, ...).
        split: A split the caller analyses; when given, the run must have evaluated it.

    Returns:
        The run's rows, configuration and (when asked for) model and FLOP counter.

    Raises:
        FileNotFoundError: ``results_dir`` holds no run.
        ValueError: The run did not evaluate ``split``.
    """
    path = find_run(results_dir)
    if path is None:
        raise FileNotFoundError(
            f"no run in {str(results_dir)!r} (looked for {Path(results_dir) / RUN_FILE} in the "
            f"working directory and the repository root): run `ptd report` (or `ptd run "
            f"CONFIG`) first, or set results_dir"
        )
    rows = load_results(path)
    cfg = RunConfig.from_dict(rows.attrs["run"]["config"])
    if split is not None and split not in cfg.splits:
        raise ValueError(f"split {split!r} was not evaluated by the run; it has {list(cfg.splits)}")
    if model is None:
        return FinishedRun(rows, cfg)
    from ptdlib.cost.flops import FlopCounter  # torch: only for the notebooks that replay the model
    from ptdlib.models.spec import load_lm

    lm = load_lm(model, device=device)
    return FinishedRun(rows, cfg, lm, FlopCounter(lm))
