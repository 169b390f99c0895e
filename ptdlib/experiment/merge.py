"""``ptd summarize DIR [DIR...]``: merge a run's shard directories, check completeness, print the summary.

1. The directories must hold the same run (same config and model fingerprint in their ``run.json``).
2. Every chunk the config plans must be present in one of them; missing chunks are listed and the command
   fails (``--allow-missing`` summarises the queries that every arm of a split has so far).
3. The merged tidy table is written as ``results.csv`` (in the first directory unless ``--output``).
4. The SmartCrop-style summary (:func:`ptdlib.stats.summary.summary_table`: per split and strategy the processed
   length, score, FLOPs saved % with its interval and the quality difference with stars after a Holm or
   Benjamini–Hochberg correction) is printed as Markdown, and written as LaTeX with ``--latex PATH``. A run
   over several file sources gets one block per source (:func:`split_by_source`).

An arm of the summary is a (strategy, params) pair; when the grid runs one such pair with several truncation
recoveries, the recovery is added to its params so that the arms stay apart. The command itself is
:mod:`ptdlib.cli.summarize`; this module holds the steps it shares with the report.
"""

from __future__ import annotations

import json

import pandas as pd

_SHOWN_MISSING = 10  # missing chunk ids listed before "..."


def separate_recoveries(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``recovery`` to the params of (strategy, params) pairs that were run with several recoveries."""
    rows = rows.copy()
    several = rows.groupby(["strategy", "params"])["recovery"].transform("nunique") > 1
    rows.loc[several, "params"] = [
        json.dumps({**json.loads(p), "recovery": r}, sort_keys=True)
        for p, r in zip(rows.loc[several, "params"], rows.loc[several, "recovery"])
    ]
    return rows


def split_by_source(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of a run over several file sources (benchmarks) with ``split`` set to ``split/source``.

    The summary then gives every source its own block: scores of different benchmarks (accuracy, pass@1, ROUGE)
    never mix. Rows of a single source are returned unchanged.
    """
    if "source" not in rows or rows["source"].nunique() < 2:
        return rows
    rows = rows.copy()
    rows["split"] = rows["split"] + "/" + rows["source"]
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
    """A message naming the missing chunks (the first ten) and how to fill them in.

    Args:
        missing: The missing :class:`~ptdlib.experiment.config.Chunk` list.
        total: The run's number of chunks.

    Returns:
        A multi-line text.
    """
    rows = sum(c.size for c in missing)
    ids = [c.id for c in missing[:_SHOWN_MISSING]] + (["..."] if len(missing) > _SHOWN_MISSING else [])
    return (
        f"{len(missing)} of {total} chunks missing ({rows} rows): run the missing shards (ptd run CONFIG "
        f"--shard i/n) or copy their chunks/ files in\n  " + "\n  ".join(ids)
    )
