"""GSM8K: grade-school maths, scored by the final number.

Cobbe et al., 2021, "Training Verifiers to Solve Math Word Problems".

Extraction follows the standard practice of the GSM8K release and lm-evaluation-harness's ``gsm8k`` task:
the number after the last ``####`` (the format of the reference solutions), else the last number in the
response. Numbers are normalised before comparing: thousands commas, currency signs and a trailing full stop
are dropped and the value is compared as a decimal, so ``$1,000.00``, ``1000.`` and ``1000`` agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from ptdlib.tasks.benchmarks.base import Benchmark, Record

#: a number as written in GSM8K answers: optional sign and currency sign, digits with thousands commas, decimals
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+")
_MARK = "####"
#: the zero-shot instruction (the SmartCrop paper evaluates zero-shot); it asks for the reference format
INSTRUCTION = "Solve the following math problem step by step. End your answer with '#### <number>'."


def normalise_number(text: str) -> Decimal | None:
    """``text`` as a decimal after dropping commas, ``$``, spaces and a trailing full stop; None if not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def extract_answer(text: str) -> Decimal | None:
    """The final numeric answer of a response or solution.

    Args:
        text: A response or a reference solution.

    Returns:
        The number after the last ``####``, else the last number anywhere; None if there is none.
    """
    if _MARK in text:
        after = text.rsplit(_MARK, 1)[1]
        found = _NUMBER.search(after)
        if found:
            return normalise_number(found.group())
    numbers = _NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def reference_answer(reference: str, where: str = "reference") -> Decimal:
    """The number a reference states: after ``####`` (GSM8K's format), or the whole reference if it is a number.

    Args:
        reference: The reference answer.
        where: Names the record in the message.

    Returns:
        The number as a Decimal.

    Raises:
        ValueError: Naming ``where``, when there is no such number.
    """
    if _MARK in reference:
        value = normalise_number(reference.rsplit(_MARK, 1)[1])
    else:
        value = normalise_number(reference)
    if value is None:
        shown = reference if len(reference) < 60 else "..." + reference[-57:]
        raise ValueError(
            f"{where}: cannot parse a number from the reference {shown!r}; a GSM8K reference ends in "
            f"'#### <number>' or is a number"
        )
    return value


class GSM8K(Benchmark):
    """Accuracy of the final number (see module docstring)."""

    name = "gsm8k"
    default_fields = {"id": None, "prompt": "question", "reference": "answer"}  # no id field: the line number
    metrics = ("accuracy",)

    def check_record(self, record: Record) -> None:
        super().check_record(record)
        reference_answer(record.reference, f"{record.where}: record {record.id!r}")

    def format_prompt(self, record: Record, shots: Sequence[Record] = ()) -> str:
        examples = "".join(f"Question: {s.prompt}\nAnswer: {s.reference}\n\n" for s in shots)
        if examples:
            return f"{INSTRUCTION}\n\n{examples}Question: {record.prompt}\nAnswer:"
        return f"{INSTRUCTION}\n\n{record.prompt}"

    def score(
        self, records: Sequence[Record], responses: Sequence[str], *, allow_code_execution: bool = False
    ) -> list[dict]:
        """``{"accuracy": 1.0 or 0.0}`` per response: its final number equals the reference's."""
        out = []
        for r, response in zip(records, responses, strict=True):
            got = extract_answer(response)
            out.append({"accuracy": float(got is not None and got == reference_answer(r.reference, r.where))})
        return out
