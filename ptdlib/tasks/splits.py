"""Named, seeded splits of the synthetic suite.

* ``train``, ``calib``, ``test``: every family but the held-out one, base scale, equal proportions. A
  prompt belongs to exactly one of the three (by a hash of its text), so test prompts are never trained
  on. Families whose prompt space is closed (``spell``) are shared by the three and measure fitting.
* ``shift_length``: the families that have a ``long`` scale, with arguments beyond training.
* ``shift_mix``: test-bucket prompts with other proportions (long-answer and hard families dominate).
* ``heldout_family``: only the family that no training split contains.

``make_split(name, n, seed)`` is deterministic: the same arguments give the same queries.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ptdlib.tasks.families import FAMILIES, HELDOUT_FAMILY, get_family

SPLITS = ("train", "calib", "test", "shift_length", "shift_mix", "heldout_family")

# Hash buckets out of ten: 0-7 train, 8 calib, 9 test (an 80/10/10 partition of the prompt space).
_BUCKETS = {"train": range(0, 8), "calib": range(8, 9), "test": range(9, 10)}

_MAX_REDRAWS = 10_000  # a family whose prompt space misses a bucket entirely fails loudly, not forever

#: Family weights of the mix-shifted split (unnamed families get weight 1).
MIX_SHIFT_WEIGHTS = {"count": 4, "repeat": 4, "collatz": 3, "primes": 3, "animals": 3, "max": 0.25, "sum": 0.25}


@dataclass(frozen=True)
class Query:
    """One query: ``answer`` is a reference answer (for ``random`` families, one valid answer).

    Queries of a file source (:mod:`ptdlib.tasks.sources`) carry the source's name, the benchmark as their
    family and the record their benchmark scores in ``meta`` (JSON); the synthetic suite leaves both default.
    """

    qid: str
    split: str
    family: str  # a synthetic task family, or the benchmark of a file source (gsm8k, humaneval, ifeval, qa)
    prompt: str
    answer: str
    source: str = "synthetic"  # where the query comes from: the synthetic suite or a named file source
    meta: str = ""  # JSON of the benchmark record behind a file-source query (ptdlib.tasks.sources.query_record)

    @property
    def answer_length(self) -> int:
        """Whitespace-separated words of the reference answer."""
        return len(self.answer.split())


def prompt_bucket(family: str, prompt: str) -> int:
    """Stable bucket 0-9 of a prompt; decides its split among train/calib/test."""
    digest = hashlib.sha1(f"{family}|{prompt}".encode()).hexdigest()
    return int(digest, 16) % 10


def _split_spec(split: str) -> tuple[dict[str, float], str, range | None]:
    """(family weights, scale, allowed hash buckets or None) of a split."""
    trained = [f for f in FAMILIES if f != HELDOUT_FAMILY]
    if split in _BUCKETS:
        return {f: 1.0 for f in trained}, "base", _BUCKETS[split]
    if split == "shift_length":
        return {f: 1.0 for f in trained if FAMILIES[f].has_long}, "long", None
    if split == "shift_mix":
        return {f: MIX_SHIFT_WEIGHTS.get(f, 1.0) for f in trained}, "base", _BUCKETS["test"]
    if split == "heldout_family":
        return {HELDOUT_FAMILY: 1.0}, "base", None
    raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def iter_split(split: str, seed: int = 0, family_weights: dict[str, float] | None = None) -> Iterator[Query]:
    """An endless, deterministic stream of queries of ``split`` (the training loop draws from it).

    Args:
        split: A split name (:data:`SPLITS`).
        seed: Seed of the stream (qids are ``split-seed-index``).
        family_weights: Re-weights the split's own families (unnamed ones keep weight 1); it changes the
            proportions, never which prompts belong to the split.

    Yields:
        :class:`Query` objects, without end.

    Raises:
        ValueError: For an unknown split, or weights naming families the split lacks, negative or all zero
            (raised when the stream is first advanced).
        RuntimeError: If a family finds no prompt in the split's buckets within its redraw limit.
    """
    weights, scale, buckets = _split_spec(split)
    if family_weights:
        unknown = sorted(set(family_weights) - set(weights))
        if unknown:
            raise ValueError(
                f"family weights name {unknown}, which split {split!r} does not contain; "
                f"its families: {', '.join(weights)}"
            )
        bad = {f: w for f, w in family_weights.items() if not w >= 0}
        if bad or not any(family_weights.get(f, 1.0) > 0 for f in weights):
            raise ValueError(f"family weights must be >= 0 and not all zero, got {family_weights}")
        weights = {f: float(family_weights.get(f, 1.0)) * w for f, w in weights.items()}
    names, w = list(weights), list(weights.values())
    rng = random.Random(f"ptdlib|{split}|{seed}")
    i = 0
    while True:
        fam = get_family(rng.choices(names, w)[0])
        # Redraw within the family until the prompt falls in this split's buckets, so that the split
        # keeps its family proportions however small a family's share of the bucket is.
        for _ in range(_MAX_REDRAWS):
            prompt, answer = fam.draw(rng, scale)
            if buckets is None or not fam.open_space or prompt_bucket(fam.name, prompt) in buckets:
                break
        else:
            raise RuntimeError(f"family {fam.name!r} found no prompt for split {split!r} in {_MAX_REDRAWS} draws")
        yield Query(f"{split}-{seed}-{i:06d}", split, fam.name, prompt, answer)
        i += 1


def make_split(split: str, n: int, seed: int = 0) -> list[Query]:
    """The first ``n`` queries of ``split`` for ``seed`` (see :func:`iter_split`).

    Raises:
        ValueError: If ``n`` is not positive, or for an unknown split.
    """
    if n <= 0:
        raise ValueError(f"n must be a positive number of queries, got {n}")
    it = iter_split(split, seed)
    return [next(it) for _ in range(n)]


def save_queries(queries: list[Query], path: str | Path) -> None:
    """Write queries as JSON lines (one object per query)."""
    with open(path, "w") as f:
        for q in queries:
            f.write(json.dumps(asdict(q)) + "\n")


def load_queries(path: str | Path) -> list[Query]:
    """Read queries written by :func:`save_queries`.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: For a line that is not a query record (naming file and line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"query file {path} does not exist")
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Query(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a query record ({e})") from None
    return out
