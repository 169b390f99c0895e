"""Where the tests find the real benchmark files: ``../shared/benchmarks`` beside the repository
(``PTD_BENCHMARKS_DIR`` overrides). They are read in place, never copied into the project."""

import os
from pathlib import Path

import pytest

BENCH_DIR = Path(
    os.environ.get("PTD_BENCHMARKS_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks")
)


def bench_file(name: str) -> Path:
    """The path of a real benchmark file; fails the test with a clear message if it is missing."""
    path = BENCH_DIR / name
    if not path.exists():
        pytest.fail(
            f"real benchmark file {path} is missing: these tests read ../shared/benchmarks/ (see its README) "
            f"or the folder PTD_BENCHMARKS_DIR names"
        )
    return path
