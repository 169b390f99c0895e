"""Helpers every notebook shares: checking papermill parameters, and where figures and results go.

A notebook's first code cell after its ``parameters`` cell calls :func:`check_params`, so that a parameter
of the wrong type or out of range stops the notebook right there with one clear message, instead of a
traceback deep in a computation.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ptdlib.validation import check_value


class ParameterError(ValueError):
    """A notebook parameter has the wrong type or value."""


@dataclass(frozen=True)
class Param:
    """What a parameter must be: a type, and optionally a closed range or a set of choices."""

    kind: type | tuple[type, ...]  # int, float (ints accepted), bool, str, list, or a tuple of them
    low: float | None = None  # smallest allowed value (inclusive)
    high: float | None = None  # largest allowed value (inclusive)
    choices: Sequence[Any] | None = None  # allowed values
    optional: bool = False  # None is allowed


def check_param(name: str, value, spec: Param):
    """Return ``value`` if it satisfies ``spec``; raise :class:`ParameterError` naming it otherwise."""
    if value is None and spec.optional:
        return value
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    try:  # the same type rules as a run config's fields (ptdlib.validation): "false" is not a bool
        check_value(f"parameter {name!r}", value, typing.Union[kinds + ((type(None),) if spec.optional else ())])
    except ValueError as e:
        raise ParameterError(str(e)) from None
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(f"parameter {name!r} must be one of {list(spec.choices)}, got {value!r}")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        lo = "-inf" if spec.low is None else spec.low
        hi = "inf" if spec.high is None else spec.high
        raise ParameterError(f"parameter {name!r} must be in [{lo}, {hi}], got {value!r}")
    return value


def check_params(**specs: tuple) -> None:
    """``check_params(n=(n, Param(int, 1)), tau=(tau, Param(float, 0, 1)))``: check each (value, spec)."""
    for name, (value, spec) in specs.items():
        check_param(name, value, spec)


#: The checkout's root (an editable install): where relative result folders of the notebooks are looked up.
REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` itself if absolute, else relative to the repository root rather than the working directory
    (JupyterLab and papermill run a notebook from ``notebooks/``, while ``results_dir="runs/report"`` means
    the repository's ``runs/report``)."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p
