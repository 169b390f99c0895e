"""Type checks at the boundary, driven by the annotations of the dataclass or function a value is built into.

Configuration files arrive as YAML/TOML scalars and notebook parameters as papermill-injected values; a
frozen dataclass does not check its fields' types, so ``temperature: hot`` would reach arithmetic deep in
the sampler and ``suppress_eos: "false"`` (a non-empty string) would act as *true*. :func:`check_types`
checks each value against its field's (or parameter's) annotation once, where the object is built, and
raises one ``ValueError`` naming the key, the value and what is allowed — the role of scikit-learn's
declared ``_parameter_constraints`` (``sklearn.utils._param_validation``), read here from the annotations
themselves so that a field added to a dataclass is checked without being listed anywhere.

Only types are checked (ranges and choices stay with the class, e.g. ``tau must be in (0, 1]``):

* ``bool``: ``True`` or ``False`` only (no ``"false"``, no ``0``/``1``);
* ``int``: an integer, not a bool; ``float``: an int or float, not a bool, never a string;
* ``str``: a string; ``X | None`` / ``Optional[X]``: ``None`` or an ``X``; ``Literal[...]``: one of them;
* ``dict``/``Mapping``: a mapping; ``tuple``/``list``/``Sequence``: a list or tuple (items checked when
  parameterised, e.g. ``tuple[int, ...]``); a dataclass or other class: an instance (or, for a dataclass,
  a mapping it will be built from); ``Any`` and annotations not understood: not checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

_NONE = type(None)


def field_types(target) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields, or of a function's (or class constructor's) parameters.

    Args:
        target: A dataclass, a class (its ``__init__``) or a function.

    Returns:
        ``{name: annotation}``; unannotated names (and all of them, when an annotation does not resolve) map to
        ``Any``.
    """
    return dict(_field_types(target))


@cache
def _field_types(target) -> tuple:
    fn = target.__init__ if isinstance(target, type) and not dataclasses.is_dataclass(target) else target
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: check nothing rather than guess
        hints = {}
    if dataclasses.is_dataclass(target):
        names = [f.name for f in dataclasses.fields(target)]
    else:
        names = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    return tuple((n, hints.get(n, Any)) for n in names)


def check_types(target, values: Mapping, where: str = "") -> None:
    """Check every ``values[name]`` against ``target``'s annotation of ``name``.

    Unknown names are skipped: the caller reports those.

    Args:
        target: A dataclass, a class or a function (see :func:`field_types`).
        values: The values to check, by name.
        where: Prefixes the key in the message (``"sampler"`` -> ``sampler.steps``).

    Raises:
        ValueError: For the first value that does not fit, e.g. ``sampler.temperature must be a number, got
            'hot' (a string)``.
    """
    hints = field_types(target)
    for name, value in values.items():
        if name in hints:
            check_value(f"{where}.{name}" if where else name, value, hints[name])


def check_value(key: str, value, annotation) -> None:
    """Check that ``value`` fits ``annotation`` (see the module docstring).

    Args:
        key: The setting's name, for the message.
        value: The value.
        annotation: A resolved type annotation.

    Raises:
        ValueError: If it does not fit (the message names the key, the expected kind and the value).
    """
    problem = _mismatch(value, annotation)
    if problem is not None:
        raise ValueError(f"{key} must be {problem}, got {value!r}{_kind(value)}")


def _kind(value) -> str:
    if isinstance(value, str):
        return (
            " (a quoted string)"
            if value.strip().lower() in ("true", "false", "yes", "no", "on", "off")
            else " (a string)"
        )
    return "" if value is None or isinstance(value, (bool, numbers.Number)) else f" (a {type(value).__name__})"


def _describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin in (types.UnionType, typing.Union):
        parts = [_describe(a) for a in args if a is not _NONE]
        return " or ".join(parts) + (" or null" if _NONE in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    base = origin or annotation
    if isinstance(base, type) and issubclass(base, Mapping) or base is dict:
        return "a mapping"
    if base in (tuple, list) or (isinstance(base, type) and issubclass(base, Sequence) and base is not str):
        return "a list" + (f" of {_describe(args[0])} values" if args and args[0] is not Ellipsis else "")
    return f"a {getattr(base, '__name__', base)}"


def _mismatch(value, annotation) -> str | None:
    """None if ``value`` fits ``annotation``, else the description of what fits."""
    if annotation is Any or annotation is object:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        if any(_mismatch(value, a) is None for a in args):
            return None
        return _describe(annotation)
    if origin is typing.Literal:
        return None if value in args else _describe(annotation)
    if annotation is bool:
        return None if isinstance(value, bool) else _describe(bool)
    if annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else _describe(int)
    if annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if ok else _describe(float)
    if annotation is str:
        return None if isinstance(value, str) else _describe(str)
    if annotation is _NONE:
        return None if value is None else "null"
    base = origin or annotation
    if not isinstance(base, type):
        return None  # TypeVar, Callable[...], forward references: not checked
    if base is dict or issubclass(base, Mapping):
        return None if isinstance(value, Mapping) else _describe(annotation)
    if base in (tuple, list) or (issubclass(base, Sequence) and base is not str):
        if not isinstance(value, (tuple, list)):
            return _describe(annotation)
        items = [a for a in args if a is not Ellipsis]
        if len(items) == 1 or (items and Ellipsis in args):
            bad = [v for v in value if _mismatch(v, items[0]) is not None]
            return _describe(annotation) if bad else None
        return None
    if dataclasses.is_dataclass(base) and isinstance(value, Mapping):
        return None  # built from the mapping, and checked there
    if base in (Callable, type):
        return None
    return None if isinstance(value, base) else _describe(annotation)
