"""The ``ptd`` command: one subcommand per job, each a module of this package.

Every subcommand module exposes ``main(argv) -> int`` with its own parser, so ``ptd <command> --help``
documents it and this file stays a table of contents. Every ``main`` keeps one error contract
(:mod:`ptdlib.cli.contract`): bad input exits 2 with one line ``ptd <cmd>: error: ...``; ``--debug`` shows the
traceback. Modules are imported only when their command runs (torch and transformers are slow to import).
"""

from __future__ import annotations

import importlib
import sys

from ptdlib.cli.contract import EXIT_BAD_INPUT, split_debug

#: command -> (module implementing it, one-line description)
COMMANDS = {
    "train-model": ("ptdlib.cli.train_model", "train (or resume) the embedded diffusion LM"),
    "train-predictor": ("ptdlib.cli.train_predictor", "train the AdaRLP length predictor and save it with its metrics"),
    "bench": ("ptdlib.cli.bench", "benchmarks that print a JSON object as their last line: "),
    "cost": ("ptdlib.cli.cost", "deployment cost table for a preset model, hardware and strategy"),
    "run": ("ptdlib.cli.run", "run an experiment grid from a config file (resumable, shardable)"),
    "summarize": ("ptdlib.cli.summarize", "merge result shards and print the summary table"),
    "report": ("ptdlib.cli.report", "the main job: experiment grid, notebooks, figures and REPORT.md"),
    "make-data": ("ptdlib.cli.make_data", "write the committed sample of every split to data/tasks/"),
    "score": ("ptdlib.cli.score", "score a JSONL of {id, response} with a benchmark's scorer (gsm8k, humaneval, ...)"),
}


def _usage() -> str:
    from ptdlib.cli.bench import BENCHES

    lines = ["usage: ptd [--debug] <command> [options]   (ptd <command> --help for its options)", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        if name == "bench":
            text += ", ".join(BENCHES)
        lines.append(f"  {name:<16} {text}")
    lines += ["", "Bad input exits 2 with one line 'ptd <command>: error: ...'; --debug prints the traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"ptd: error: unknown command {cmd!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(importlib.import_module(COMMANDS[cmd][0]).main(["--debug"] * debug + rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
