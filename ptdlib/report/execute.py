"""The report's notebooks: which to run, what parameters they declare, and executing them with papermill.

Each notebook runs in its own worker process and saves its figures into its own staging folder; the
figures are then moved to the figures folder, so that the page knows which notebook drew which figure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ptdlib import REPO_ROOT
from ptdlib.report.workers import _pool

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"  # the venv's kernel (installed by `make` with --sys-prefix --name python3)
FIGURES_ENV = "PTD_FIGURES_DIR"  # ptdlib.analysis.plotting's figures-folder variable


def select_notebooks(spec: str | None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks to run.

    Args:
        spec: Number prefixes, e.g. ``"01,04"``; ``"none"`` for none; None for all.
        folder: The notebook folder.

    Returns:
        The ``NN_*.ipynb`` paths of ``folder`` that ``spec`` selects, in its order (None: all, sorted).

    Raises:
        ValueError: If ``spec`` names a number no notebook has, or none at all.
    """
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if spec is None:
        return found
    if spec.strip().lower() == "none":
        return []
    wanted = [s.strip().zfill(2) for s in spec.split(",") if s.strip()]
    have = {p.name[:2]: p for p in found}
    unknown = [w for w in wanted if w not in have]
    if unknown or not wanted:
        raise ValueError(
            f"--notebooks: no notebook numbered {', '.join(unknown) or repr(spec)}; "
            f"have {', '.join(sorted(have)) or 'none'}"
        )
    return [have[w] for w in wanted]


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
        papermill.execute_notebook(
            str(path),
            str(Path(out_dir) / path.name),
            parameters=given,
            kernel_name=KERNEL,
            progress_bar=False,
            cwd=str(path.parent),
        )
    except Exception as e:  # papermill raises PapermillExecutionError and kernel errors of several types
        text = str(e).strip()
        error = f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"
    files = sorted(staging_dir.glob("*"), key=lambda p: p.stat().st_mtime_ns) if staging_dir.is_dir() else []
    return {
        "name": path.name,
        "title": notebook_title(path),
        "seconds": time.perf_counter() - t0,
        "files": [str(f) for f in files],
        "error": error,
    }


def run_notebooks(
    notebooks: list[Path], out: Path, figures: Path, params: dict, workers: int, log: Callable[[str], None]
) -> list[dict]:
    """Execute ``notebooks`` with papermill on ``workers`` processes; move each one's figures into ``figures``.

    Each notebook gets only the parameters it declares, plus its own figures folder; a failing notebook is
    reported, not raised.

    Args:
        notebooks: The notebooks.
        out: The report folder (executed copies go to ``out/notebooks``).
        figures: The folder the figures are moved into.
        params: Parameters offered to every notebook.
        workers: Processes (at most one per notebook).
        log: Called with one progress line per finished notebook.

    Returns:
        One dict per notebook, in order: ``name``, ``title``, ``seconds``, ``error`` (None if it ran),
        ``figures`` (the PNG files) and ``executed`` (the executed copy).
    """
    from concurrent.futures import as_completed

    figures.mkdir(parents=True, exist_ok=True)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    staging = out / "notebooks" / ".figures"
    shutil.rmtree(staging, ignore_errors=True)
    results = {}
    with _pool(max(1, min(workers, len(notebooks)))) as pool:
        futures = {
            pool.submit(_notebook_job, str(p), str(out / "notebooks"), str(staging / p.stem), params): p
            for p in notebooks
        }
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
