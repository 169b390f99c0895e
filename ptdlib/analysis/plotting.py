"""One figure style and one save function for every report figure (docs/design.md §12).

``use_style()`` sets the seaborn theme once; ``save(fig, "margin_tradeoff")`` writes
``figures/margin_tradeoff.png`` and ``.pdf``. The folder is the repository's ``figures/`` unless the
``figures_dir`` argument or the ``PTD_FIGURES_DIR`` environment variable (used by smoke runs to write into
a temporary folder) says otherwise.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import matplotlib

# Headless Linux (CI, papermill, servers): draw with Agg and never try to open a window. Jupyter sets
# MPLBACKEND to its inline backend, and an explicit MPLBACKEND always wins.
_HEADLESS = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
if _HEADLESS and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import seaborn as sns  # noqa: E402

from ptdlib import REPO_ROOT

FIGURES_ENV = "PTD_FIGURES_DIR"
REPO_FIGURES = REPO_ROOT / "figures"  # the checkout's figures/ (editable install)
FORMATS = ("png", "pdf")  # raster for the README and notebooks, vector for papers
DPI = 200  # sharp on high-density screens while keeping PNGs small
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def use_style() -> None:
    """Set the project's one figure style (seaborn ``whitegrid``, paper context, colour-blind palette).

    Call it once at the top of a notebook or script; calling it again re-applies the same theme.
    """
    sns.set_theme(
        context="paper", style="whitegrid", palette="colorblind", rc={"figure.dpi": 100, "savefig.bbox": "tight"}
    )


def resolve_figures_dir(figures_dir: str | os.PathLike | None = None) -> Path:
    """The folder figures go to: the argument, else ``$PTD_FIGURES_DIR``, else the repository's ``figures/``."""
    if figures_dir is not None:
        return Path(figures_dir)
    env = os.environ.get(FIGURES_ENV)
    return Path(env) if env else REPO_FIGURES


def save(fig: plt.Figure, name: str, figures_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write ``fig`` as ``<dir>/<name>.png`` and ``<dir>/<name>.pdf``; return the two paths.

    ``name`` is a bare file stem (letters, digits, ``_``, ``-``, ``.``; no folder and no extension of a saved
    format), so every figure lands in the one figures folder.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower().endswith(tuple("." + f for f in FORMATS)):
        raise ValueError(
            f"figure name must be a bare stem such as 'margin_tradeoff' (letters, digits, '_', '-', "
            f"'.'; no path separators or extension), got {name!r}"
        )
    out = resolve_figures_dir(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in FORMATS]
    for path in paths:
        # No creation date in the PDF: regenerating an unchanged figure gives an identical file.
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=metadata)
    return paths
