"""The ``ptd`` command: one subcommand per job, each implemented in the module that owns the concept.

Every subcommand's module exposes ``main(argv) -> int`` with its own ``argparse`` parser, so
``ptd <command> --help`` documents it and this file stays a table of contents. Modules are imported only
when their command runs (torch and transformers are slow to import).
"""

from __future__ import annotations

import importlib
import sys

#: command -> (module implementing it, one-line description)
COMMANDS = {
    "train-model": ("ptdlib.models.train_cli", "train (or resume) the embedded diffusion LM"),
    "train-predictor": ("ptdlib.predictor.cli", "train the AdaRLP length predictor and save it with its metrics"),
    "bench": (None, "benchmarks that print a JSON object as their last line: " ),
    "cost": ("ptdlib.cost", "deployment cost table for a preset model, hardware and strategy"),
    "run": ("ptdlib.runner", "run an experiment grid from a config file (resumable, shardable)"),
    "summarize": ("ptdlib.summarize", "merge result shards and print the summary table"),
    "report": ("ptdlib.report", "the main job: experiment grid, notebooks, figures and REPORT.md"),
    "make-data": ("ptdlib.tasks.cli", "write the committed sample of every split to data/tasks/"),
}

#: ``ptd bench <name>`` -> module with ``main(argv)``
BENCHES = {
    "model": "ptdlib.bench.model",
    "sampler": "ptdlib.bench.sampler",
    "flops": "ptdlib.bench.flops",
    "strategies": "ptdlib.bench.strategies",
}


def _usage() -> str:
    lines = ["usage: ptd <command> [options]   (ptd <command> --help for its options)", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        if name == "bench":
            text += ", ".join(BENCHES)
        lines.append(f"  {name:<16} {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        if not rest or rest[0] not in BENCHES:
            got = repr(rest[0]) if rest else "nothing"
            print(f"ptd bench: unknown benchmark {got}; choose from {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        module, rest = BENCHES[rest[0]], rest[1:]
    elif cmd in COMMANDS:
        module = COMMANDS[cmd][0]
    else:
        print(f"ptd: unknown command {cmd!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
