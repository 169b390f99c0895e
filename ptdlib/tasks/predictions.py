"""Scoring responses from any engine: a JSON-lines file of ``{"id", "response"}`` against a benchmark's records.

``ptd score`` (:mod:`ptdlib.cli.score`) is a thin wrapper around :func:`score_predictions`; it uses the same
adapters and scorers as the runner (:mod:`ptdlib.tasks.benchmarks`). Ids are the benchmark records' ids under
the benchmark's default fields (GSM8K files have no id field: there the id is the record's 0-based position).
"""

from __future__ import annotations

import json
from pathlib import Path

from ptdlib.tasks.benchmarks import get_benchmark
from ptdlib.tasks.sources import SourceSpec, load_records, read_records


def read_predictions(path: str | Path) -> list[tuple[str, str, str]]:
    """The predictions of a file.

    Args:
        path: A JSONL or JSON file of ``{"id": ..., "response": ...}`` records.

    Returns:
        ``(where, id, response)`` per record, ``where`` being ``file:line``.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: For a bad record (naming file and line), a repeated id, or a file without predictions.
    """
    out, seen = [], {}
    for where, rec in read_records(path):
        for key in ("id", "response"):
            if key not in rec:
                raise ValueError(f'{where}: missing field {key!r}; a prediction is {{"id": ..., "response": ...}}')
        if not isinstance(rec["response"], str):
            raise ValueError(f"{where}: response must be a string, got {type(rec['response']).__name__}")
        rid = str(rec["id"])
        if rid in seen:
            raise ValueError(f"{where}: id {rid!r} repeats {seen[rid]}")
        seen[rid] = where
        out.append((where, rid, rec["response"]))
    if not out:
        raise ValueError(f"predictions file {path} holds no predictions")
    return out


def score_predictions(
    task: str, predictions: str | Path, data: str | Path | None = None, *, allow_code_execution: bool = False, **options
) -> dict:
    """Score a predictions file for benchmark ``task`` against the records of ``data``.

    Args:
        task: The benchmark's name.
        predictions: The predictions file (see :func:`read_predictions`).
        data: The benchmark's records (HumanEval: the package's problems by default; required otherwise).
        allow_code_execution: The caller's opt-in, for benchmarks that run code.
        **options: The benchmark adapter's options.

    Returns:
        ``{"task", "n", "metric" (the primary one), "metrics": {name: value}}``.

    Raises:
        ValueError: For an unknown benchmark, a missing ``data``, a prediction whose id no record has, or
            HumanEval without ``allow_code_execution`` (checked before anything is read).
        FileNotFoundError: For a missing file.
    """
    bench = get_benchmark(task, **options)
    if bench.executes_code and not allow_code_execution:
        from ptdlib.tasks.benchmarks.humaneval import REFUSAL

        raise ValueError(REFUSAL.replace("set allow_code_execution: true on the source and pass ", "pass "))
    if data is None and bench.name != "humaneval":
        raise ValueError(f"scoring {task} needs the benchmark's records: pass --data FILE")
    preds = read_predictions(predictions)
    spec = SourceSpec(task, task, path=None if data is None else str(data), fractions={"test": 1})
    records = {r.id: r for r in load_records(spec)["test"]}
    missing = [(where, rid) for where, rid, _ in preds if rid not in records]
    if missing:
        where, rid = missing[0]
        raise ValueError(
            f"{where}: no {task} record has id {rid!r} ({len(missing)} such predictions; record ids "
            f"look like {', '.join(map(repr, list(records)[:3]))})"
        )
    recs = [records[rid] for _, rid, _ in preds]
    scores = bench.score(recs, [resp for _, _, resp in preds], allow_code_execution=allow_code_execution)
    return {"task": task, "n": len(preds), "metric": bench.primary, "metrics": bench.aggregate(scores)}


def table(result: dict) -> str:
    """A readable table of :func:`score_predictions`'s result."""
    width = max(len(m) for m in result["metrics"])
    lines = [f"{result['task']}: {result['n']} predictions", f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{m:<{width}}  {v:.4f}" for m, v in result["metrics"].items()]
    return "\n".join(lines)


def json_line(result: dict) -> str:
    """The one JSON object ``ptd score`` prints last: task, n, the primary metric's name and every metric."""
    return json.dumps({"task": result["task"], "n": result["n"], "metric": result["metric"], **result["metrics"]})
