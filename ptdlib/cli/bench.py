"""``ptd bench <name>``: the benchmarks of :mod:`ptdlib.bench`; each prints a JSON object as its last line."""

from __future__ import annotations

import importlib
import sys

from ptdlib.cli.contract import EXIT_BAD_INPUT, command, split_debug

#: ``ptd bench <name>`` -> module with ``main(argv)``
BENCHES = {
    "model": "ptdlib.bench.model",
    "sampler": "ptdlib.bench.sampler",
    "flops": "ptdlib.bench.flops",
    "strategies": "ptdlib.bench.strategies",
    "features": "ptdlib.bench.features",
}


def main(argv: list[str] | None = None) -> int:
    args, debug = split_debug(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(f"usage: ptd bench {{{','.join(BENCHES)}}} [options]   (ptd bench <name> --help for its options)")
        print("Each benchmark prints its figures and, as its last line, one JSON object.")
        return 0
    if not args or args[0] not in BENCHES:
        got = repr(args[0]) if args else "nothing"
        print(f"ptd bench: error: unknown benchmark {got}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    name, rest = args[0], args[1:]
    bench = command(f"ptd bench {name}")(importlib.import_module(BENCHES[name]).main)
    return bench(["--debug"] * debug + rest)
