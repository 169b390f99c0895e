"""Scoring length estimates against the model's own lengths: MAE, Spearman ρ, under-prediction rate.

An *estimate* of a query's response length is good for choosing a canvas when it is close (MAE), ranks
queries right (Spearman ρ) and rarely falls short: a canvas cut at an estimate ``e`` holds the answer and
its EOS only if ``own length <= e``, so the *under-prediction rate* P(own length > e) is the fraction of
queries that would be truncated with no safety margin (Predict-then-Diffuse's motivation for one).
Labels are the model's own lengths at the maximum canvas (docs/design.md §7). The metrics themselves are
:func:`ptdlib.predictor.training.length_metrics`; this module tabulates them per estimator and task group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ptdlib.predictor.training import length_metrics
from ptdlib.tasks import get_family

#: Label of the row that pools every task group.
ALL_GROUPS = "all"
METRIC_COLUMNS = ("n", "mae", "median_ae", "spearman", "under_rate", "bias", "mean_length")


def task_groups(queries: Sequence) -> np.ndarray:
    """The task group (``follows``, ``hard`` or ``random``; see :mod:`ptdlib.tasks.families`) of each query."""
    return np.array([get_family(q.family).group for q in queries])


def metrics_table(
    estimates: Mapping[str, np.ndarray], lengths, groups=None, *, meta: Mapping[str, Mapping] | None = None
) -> pd.DataFrame:
    """One row per (estimator, group): the :data:`METRIC_COLUMNS` of its estimates against ``lengths``.

    ``estimates``: estimator name -> one estimate per query; ``groups``: one label per query (rows for each
    group and for :data:`ALL_GROUPS`; None: the pooled row only); ``meta``: estimator name -> extra columns
    (e.g. ``{"rule": "product", "tau": 0.9}``).
    """
    y = np.asarray(lengths, dtype=float).reshape(-1)
    if not estimates:
        raise ValueError("no estimates to score")
    if groups is not None and len(groups) != len(y):
        raise ValueError(f"got {len(groups)} group labels for {len(y)} lengths")
    groups = None if groups is None else np.asarray(groups)
    subsets = [(ALL_GROUPS, np.ones(len(y), dtype=bool))]
    if groups is not None:
        subsets += [(g, groups == g) for g in sorted(set(groups.tolist()))]
    rows = []
    for name, est in estimates.items():
        est = np.asarray(est, dtype=float).reshape(-1)
        if len(est) != len(y):
            raise ValueError(f"estimator {name!r} gave {len(est)} estimates for {len(y)} queries")
        for group, keep in subsets:
            rows.append(
                {
                    "estimator": name,
                    **dict((meta or {}).get(name, {})),
                    "group": group,
                    **length_metrics(est[keep], y[keep]),
                }
            )
    return pd.DataFrame(rows)
