"""One query through several canvas strategies: where each canvas position was committed, and what it cost.

The tour of the problem (docs/design.md §1): the same prompt denoised on a fixed canvas, on a canvas chosen by
a length predictor, and on a canvas cropped by a SmartCrop probe. :func:`trace_strategies` runs each
strategy through :func:`ptdlib.canvas.evaluate_strategy` (so probe, predictor and re-run passes are
counted by the same :class:`~ptdlib.cost.flops.FlopLedger` as in every experiment) with a
:class:`~ptdlib.sampling.events.TraceRecorder` attached, and keeps the commit step and token of every position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptdlib.canvas import CanvasLimits, CanvasPolicy, evaluate_strategy
from ptdlib.sampling.events import FORWARD_KINDS, TraceRecorder
from ptdlib.sampling.sampler import SamplerConfig
from ptdlib.tasks import get_family, iter_split

#: Queries of a split searched for one of the asked family before giving up.
_MAX_SEARCH = 10_000


@dataclass
class TourRun:
    """One strategy's run on the tour query."""

    label: str  # the caller's name for the strategy
    row: dict  # the result row (columns ptdlib.canvas.ROW_COLUMNS)
    commit_steps: np.ndarray  # per position of the final canvas: the step it was committed at (-1: never)
    tokens: list  # per position of the final canvas: the committed token id (None: never committed)
    n_steps: int  # denoising steps of the final run (one forward pass each without guidance)


def pick_query(split: str, family: str, index: int = 0, seed: int = 0):
    """The ``index``-th query of ``family`` in ``split`` (the same one every time for the same arguments)."""
    get_family(family)  # names the allowed families when unknown
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index!r}")
    seen = 0
    for i, q in enumerate(iter_split(split, seed)):
        if i >= _MAX_SEARCH:
            break
        if q.family == family:
            if seen == index:
                return q
            seen += 1
    raise ValueError(f"split {split!r} has fewer than {index + 1} {family!r} queries among its first {_MAX_SEARCH}")


def committed_tokens(recorder: TraceRecorder, query_id, canvas_length: int) -> list:
    """Per canvas position, the last token committed there (None where nothing was; a re-run overwrites)."""
    out = [None] * canvas_length
    for _, _, positions, tokens in recorder.commits[query_id]:
        for p, t in zip(positions, tokens):
            if p < canvas_length:
                out[p] = t
    return out


def trace_strategies(
    lm,
    query,
    policies: Mapping[str, CanvasPolicy],
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
    recovery: str = "max",
    seed: int = 0,
) -> list[TourRun]:
    """Run ``query`` with each policy (label -> fitted policy); one :class:`TourRun` each, in order.

    A truncated run is recovered with ``recovery`` as in every experiment; the trace shows the final run
    (with ``max`` or ``double`` recovery the re-run covers every position, so its steps replace the first
    run's).
    """
    if not policies:
        raise ValueError("no strategies to trace: give at least one label -> policy")
    runs = []
    for label, policy in policies.items():
        recorder = TraceRecorder()
        (row,) = evaluate_strategy(
            lm,
            [query],
            policy,
            counter,
            recovery=recovery,
            sampler=sampler,
            limits=limits,
            seed=seed,
            batch_size=1,
            callbacks=[recorder],
        )
        L = row["final_canvas"]
        steps = np.array(recorder.commit_steps(query.qid, L))
        runs.append(TourRun(label, row, steps, committed_tokens(recorder, query.qid, L), int(steps.max()) + 1))
    return runs


def commit_step_matrix(runs: list[TourRun], width: int) -> np.ndarray:
    """(n_runs, width) commit step per position; NaN beyond a run's canvas or where nothing was committed."""
    out = np.full((len(runs), width), np.nan)
    for i, run in enumerate(runs):
        n = min(width, len(run.commit_steps))
        steps = run.commit_steps[:n].astype(float)
        steps[steps < 0] = np.nan
        out[i, :n] = steps
    return out


def fill_matrix(commit_steps) -> np.ndarray:
    """(n_steps, canvas) booleans: position ``i`` holds a committed token after step ``s``."""
    steps = np.asarray(commit_steps)
    if steps.ndim != 1 or steps.size == 0:
        raise ValueError(f"commit_steps must be a non-empty 1-D array, got shape {steps.shape}")
    n_steps = int(steps.max()) + 1
    return (steps[None, :] >= 0) & (steps[None, :] <= np.arange(max(n_steps, 1))[:, None])


def token_strings(lm, tokens: list) -> list[str]:
    """The tokenizer's name of each committed token ("·" where nothing was committed, e.g. after an early stop)."""
    return ["·" if t is None else lm.tokenizer.convert_ids_to_tokens(int(t)) for t in tokens]


def flops_frame(runs: list[TourRun], reference: str | None = None) -> pd.DataFrame:
    """One row per run: canvases, passes, FLOPs by kind and in total, and the total relative to ``reference``.

    ``reference`` is a run label (default: the first run).
    """
    if not runs:
        raise ValueError("no runs to tabulate")
    rows = []
    for run in runs:
        r = run.row
        rows.append(
            {
                "strategy": run.label,
                "chosen_canvas": r["chosen_canvas"],
                "final_canvas": r["final_canvas"],
                "truncated": r["truncated"],
                "reruns": r["reruns"],
                "forward_passes": r["forward_passes"],
                **{f"flops_{k}": r[f"flops_{k}"] for k in FORWARD_KINDS},
                "flops_total": r["flops_total"],
                "length": r["length"],
                "response": r["response"],
            }
        )
    frame = pd.DataFrame(rows)
    ref = reference or runs[0].label
    if ref not in set(frame["strategy"]):
        raise ValueError(f"reference {ref!r} is not one of the runs: {', '.join(frame['strategy'])}")
    frame["relative_flops"] = frame["flops_total"] / float(frame.loc[frame["strategy"] == ref, "flops_total"].iloc[0])
    return frame
