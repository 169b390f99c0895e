"""``ptd make-data``: write a small sample of every split to ``data/tasks/<split>.jsonl``.

The committed sample lets a reader see the queries without running anything; every split is regenerated
identically from its seed by :func:`ptdlib.tasks.make_split`.
"""

from __future__ import annotations

from pathlib import Path

from ptdlib import DATA_DIR
from ptdlib.cli.contract import ArgumentParser, command
from ptdlib.tasks.splits import SPLITS, make_split, save_queries

DEFAULT_DIR = DATA_DIR / "tasks"


@command("ptd make-data")
def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="ptd make-data", description=__doc__)
    p.add_argument("--n", type=int, default=50, help="queries per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_DIR))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        save_queries(make_split(split, args.n, args.seed), out / f"{split}.jsonl")
        print(f"wrote {out / f'{split}.jsonl'}")
    return 0
