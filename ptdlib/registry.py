"""Named choices filled by a decorator: margins, regressors, paired tests.

A :class:`Registry` is a dict from a name (what a config, a notebook parameter or a CLI flag says) to an
entry (a builder function or a class). Entries join it with the :meth:`Registry.register` decorator where
they are defined, so adding a choice is one decorated definition, and the dict's order (the order of
registration) is the order error messages and ``choices=`` lists show. Looking a name up with
:meth:`Registry.lookup` fails with one ``ValueError`` naming the bad value and listing the allowed ones, in
the format of the canvas policies' registry (:func:`ptdlib.canvas.get_policy_class`)::

    unknown margin method 'conformall'; choose from percentile, conformal, conformal_log, cost_optimal, aci

A module that registers entries must be imported before its names can be looked up; each registry's home
module imports the modules that fill it, so importing the home module is enough.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict):
    """Name -> entry, in registration order, for one kind of choice (e.g. ``"margin method"``)."""

    def __init__(self, kind: str):
        """Create an empty registry.

        Args:
            kind: What the names name, as error messages say it (``"regressor"``, ``"margin method"``).
        """
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds the decorated function or class under ``name`` and returns it unchanged.

        Args:
            name: The name configs and callers will use; it must be a non-empty string not yet registered.

        Returns:
            The decorator.

        Raises:
            ValueError: If ``name`` is empty or already registered (a second definition would silently
                replace the first).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")

        def add(entry: T) -> T:
            self[name] = entry
            return entry

        return add

    def check(self, name: str) -> str:
        """``name`` if it is registered.

        Raises:
            ValueError: ``unknown <kind> <name>; choose from <registered names>``.
        """
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}")
        return name

    def lookup(self, name: str):
        """The entry registered under ``name``.

        Raises:
            ValueError: ``unknown <kind> <name>; choose from <registered names>``.
        """
        return self[self.check(name)]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"
