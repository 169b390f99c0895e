"""Long-form question answering against a reference answer, scored with ROUGE (Lin, 2004) F1.

Scores come from Google's ``rouge-score`` package (the reimplementation of ROUGE-1.5.5 that the SmartCrop
paper's LongFormQA figure, ROUGE-1, and most long-form QA work report): ROUGE-1 and ROUGE-L F-measure with
its default tokenizer and the Porter stemmer. A record may give several references (a JSON list in the
reference field); a response then gets its best score over them, per metric.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from ptdlib.tasks.benchmarks.base import Benchmark, Record

#: rouge-score metric name -> our metric name
ROUGE_TYPES = {"rouge1": "rouge1_f", "rougeL": "rougeL_f"}


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def references_of(reference: str, where: str = "reference") -> list[str]:
    """The reference answers of a record: a JSON list of strings, or the text itself.

    Args:
        reference: The record's reference.
        where: Names the record in the message.

    Returns:
        The reference answers.

    Raises:
        ValueError: If a reference starting with ``[`` is not a JSON list of non-empty strings.
    """
    text = reference.strip()
    if text.startswith("["):
        try:
            refs = json.loads(text)
        except json.JSONDecodeError:
            refs = None
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise ValueError(
                f"{where}: a reference that starts with '[' must be a JSON list of non-empty strings, got {text[:60]!r}"
            )
        return refs
    return [reference]


class ReferenceQA(Benchmark):
    """ROUGE-1 and ROUGE-L F1 against the reference answer(s) (see module docstring)."""

    name = "qa"
    default_fields = {"id": "id", "prompt": "question", "reference": "answer"}
    metrics = tuple(ROUGE_TYPES.values())

    def check_record(self, record: Record) -> None:
        super().check_record(record)
        references_of(record.reference, f"{record.where}: record {record.id!r}")

    def score(
        self, records: Sequence[Record], responses: Sequence[str], *, allow_code_execution: bool = False
    ) -> list[dict]:
        """ROUGE-1 and ROUGE-L F1 per response, each the best over the record's references."""
        scorer = _scorer()
        out = []
        for r, response in zip(records, responses, strict=True):
            per_ref = [scorer.score(ref, response) for ref in references_of(r.reference, r.where)]
            out.append({name: max(s[key].fmeasure for s in per_ref) for key, name in ROUGE_TYPES.items()})
        return out
