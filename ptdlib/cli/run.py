"""``ptd run CONFIG``: run an experiment grid into a resumable, shardable run directory (:mod:`ptdlib.experiment.runner`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ptdlib.cli.contract import ArgumentParser, command


def parser() -> ArgumentParser:
    from ptdlib.experiment import runner

    p = ArgumentParser(
        prog="ptd run",
        description=runner.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: ptd run configs/example.yaml --shard 0/4   (see docs/runner.md)",
    )
    p.add_argument("config", help="run configuration (.yaml, .yml or .toml)")
    p.add_argument("--shard", default="0/1", help="run shard i of n (i/n; default 0/1: everything)")
    p.add_argument("--output", help="run directory (default: the config's output)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="print the grid and this shard's work; run nothing")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the chunks on Ray workers (one per GPU, else per CPU): no ADDRESS starts a local "
        "instance, 'auto' joins this machine's cluster (needs pip install 'ptdlib[ray]')",
    )
    p.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="let sources that opted in (allow_code_execution: true, e.g. HumanEval) run generated code, "
        "in a separate time-limited process",
    )
    return p


@command("ptd run")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import torch

    from ptdlib.experiment.config import load_config, parse_shard
    from ptdlib.experiment.runner import describe, run

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive number of CPU threads, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.no_progress:  # transformers' weight-loading bars too: stderr keeps only what went wrong
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    cfg = load_config(args.config)
    shard = parse_shard(args.shard)
    if args.dry_run:
        print(describe(cfg, Path(args.output or cfg.output), shard))
        return 0
    stats = run(
        cfg,
        output=args.output,
        shard=shard,
        device=args.device,
        progress=not args.no_progress,
        allow_code_execution=args.allow_code_execution,
        ray=args.ray,
    )
    print(stats.line())
    return 1 if stats.failed else 0  # chunks that kept failing were listed above; a re-run retries only them
