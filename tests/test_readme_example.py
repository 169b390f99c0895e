"""The README's Python example runs and prints what the README says it prints, so the README cannot go stale."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: the heading the example sits under; the first ```python block after it is the example, the ```text block after
#: that its documented output
HEADING = "### The same from Python"


def readme_blocks(language: str) -> list[str]:
    """The fenced ``language`` blocks of the README section under :data:`HEADING`, in order."""
    text = README.read_text()
    assert HEADING in text, f"README.md lost the heading {HEADING!r} of the Python example"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_example_and_its_documented_output_are_found():
    code, output = readme_blocks("python"), readme_blocks("text")
    assert len(code) == 1 and "evaluate_strategy" in code[0]
    assert len(output) == 1 and len(output[0].splitlines()) == 2


@pytest.mark.slow
def test_readme_python_example_prints_the_documented_output():
    (code,), (documented,) = readme_blocks("python"), readme_blocks("text")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert printed.getvalue().splitlines() == documented.splitlines()
