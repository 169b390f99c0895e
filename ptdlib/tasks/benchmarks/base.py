"""What a benchmark adapter knows: its record fields, its prompt format, its reference check and its scorer.

A :class:`Benchmark` turns one record of a benchmark file into the user message the model answers (the
model's own chat template is applied later, by :meth:`DiffusionLM.encode_prompt`), checks a record's
reference before anything is sampled, and scores responses. Scores are per query: a dict of metric ->
value whose first entry (:attr:`Benchmark.primary`) is the row's ``score``; :meth:`Benchmark.aggregate`
turns a list of them into the benchmark's reported figures (a mean by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Record:
    """One query of a benchmark file, after the field mapping: what the adapter formats and scores.

    ``meta`` holds the benchmark's extra per-query fields (IFEval's instruction list, HumanEval's tests);
    ``where`` says where the record came from (``file:line``) for error messages.
    """

    id: str
    prompt: str  # the question as stored in the file, before the benchmark's instruction
    reference: str | None  # the reference answer (None for benchmarks scored without one, like IFEval)
    meta: Mapping  # benchmark-specific fields, JSON-serialisable
    where: str


class Benchmark:
    """Base class of the benchmark adapters (see module docstring); one small subclass per benchmark."""

    name: ClassVar[str]
    #: field of the file -> role, used when a source gives no ``fields`` mapping
    default_fields: ClassVar[dict] = {"id": "id", "prompt": "prompt", "reference": "reference"}
    #: record fields the scorer needs besides id, prompt and reference (kept in ``Record.meta``)
    meta_fields: ClassVar[tuple[str, ...]] = ()
    #: whether a reference answer is required
    needs_reference: ClassVar[bool] = True
    #: metric names, primary first
    metrics: ClassVar[tuple[str, ...]]
    #: whether scoring runs generated code (then only after an explicit opt-in, in a separate process)
    executes_code: ClassVar[bool] = False

    @property
    def primary(self) -> str:
        """The primary metric: the first of :attr:`metrics`, the row's ``score``."""
        return self.metrics[0]

    def check_record(self, record: Record) -> None:
        """Check that ``record`` can be scored (e.g. its reference parses), before anything is sampled.

        Raises:
            ValueError: Naming ``record.where``, if it cannot (the base class: an empty required reference).
        """
        if self.needs_reference and not (record.reference or "").strip():
            raise ValueError(f"{record.where}: record {record.id!r} has an empty reference; {self.name} needs one")

    def format_prompt(self, record: Record, shots: Sequence[Record] = ()) -> str:
        """The user message for ``record`` (``shots``: solved examples placed before it, few-shot)."""
        return record.prompt

    def score(
        self, records: Sequence[Record], responses: Sequence[str], *, allow_code_execution: bool = False
    ) -> list[dict]:
        """Score responses.

        Args:
            records: The queries' records.
            responses: One response text per record.
            allow_code_execution: The caller's opt-in, for benchmarks that run code.

        Returns:
            One ``{metric: value}`` per response, metrics in :attr:`metrics` order (primary first).
        """
        raise NotImplementedError

    def aggregate(self, scores: Sequence[dict]) -> dict:
        """The benchmark's figures over ``scores`` (per-query dicts of :meth:`score`): means by default.

        Raises:
            ValueError: If ``scores`` is empty.
        """
        if not scores:
            raise ValueError(f"no {self.name} scores to aggregate")
        return {m: float(sum(s[m] for s in scores) / len(scores)) for m in self.metrics}
