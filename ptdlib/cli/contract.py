"""The error contract every ``ptd`` command keeps.

* **Bad input** — a value, file or configuration the user can fix — ends the command with exit code 2 and
  one line on stderr, ``ptd <cmd>: error: <what is wrong, naming the value and what is allowed>``. Library
  code signals it by raising :class:`ValueError` (with subclasses such as ``json.JSONDecodeError``) or a
  path error (:class:`FileNotFoundError`, :class:`IsADirectoryError`, :class:`NotADirectoryError`,
  :class:`PermissionError`, :class:`FileExistsError`); argument-parsing errors take the same path.
* **A bug or an environment failure** (anything else) ends with exit code 1 and one line naming the
  exception's type; ``--debug`` (any position, or ``PTD_DEBUG=1``) prints the full traceback first in both
  cases.
* ``Ctrl-C`` ends with exit code 130.

Every subcommand's ``main(argv)`` is wrapped by :func:`command`, so the contract holds whether the command
runs through ``ptd`` or its ``main`` is called directly (tests, notebooks).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence

#: exit codes of the contract
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: exceptions that mean "the user's input is wrong" (exit 2); everything else is a failure (exit 1)
BAD_INPUT = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)

DEBUG_FLAG = "--debug"
DEBUG_ENV = "PTD_DEBUG"


class UsageError(ValueError):
    """A command-line argument was refused (raised by :class:`ArgumentParser` instead of exiting)."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors raise :class:`UsageError` instead of exiting.

    The error is one line and exits 2 via the contract, instead of the usage block and ``sys.exit``. ``--help``
    still prints and exits 0.
    """

    def error(self, message: str):  # noqa: D401  (argparse's hook)
        raise UsageError(f"{message} (see {self.prog} --help)")


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite number (``nan`` and ``inf`` are refused, naming the text).

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not a finite number.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1.

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not such an integer.
    """
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0.

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not such an integer.
    """
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def json_object(text: str) -> dict:
    """An argparse ``type``: a JSON object such as ``'{"n_layers": 6}'``.

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not valid JSON or not an object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at column {e.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def one_line(message: object) -> str:
    """``message`` on one line: its lines joined with ``"; "`` (blank lines dropped)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _message(err: BaseException) -> str:
    if (
        isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError))
        and err.filename is not None
        and err.strerror
    ):  # OSError's str() is "[Errno 2] ..."
        return f"{err.strerror}: {err.filename}"
    if isinstance(err, KeyError):  # str(KeyError) quotes its argument
        return str(err.args[0]) if err.args else type(err).__name__
    return str(err) or type(err).__name__


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Take ``--debug`` out of the arguments.

    Args:
        argv: The command-line arguments.

    Returns:
        ``(argv without --debug before any "--", debug)``; ``debug`` is True if the flag was there or
        ``PTD_DEBUG`` is set (and not ``0``).
    """
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end]
    argv = [a for i, a in enumerate(argv) if not (i < end and a == DEBUG_FLAG)]
    return argv, debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def handle(prog: str, err: BaseException, debug: bool) -> int:
    """Report ``err`` by the contract on stderr.

    Args:
        prog: The command's name, starting the message.
        err: The exception.
        debug: Print the traceback too.

    Returns:
        The exit code: 2 for bad input (one line ``prog: error: ...``), 130 for an interrupt, 1 for any other
        failure.
    """
    if isinstance(err, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if debug:
        traceback.print_exception(err)
    if isinstance(err, BAD_INPUT):
        print(f"{prog}: error: {one_line(_message(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    hint = "" if debug else f" (run with {DEBUG_FLAG} for the traceback)"
    print(f"{prog}: failed: {type(err).__name__}: {one_line(_message(err))}{hint}", file=sys.stderr)
    return EXIT_FAILED


def command(prog: str) -> Callable:
    """Decorate a subcommand's ``main(argv) -> int`` so that it keeps the contract (see the module docstring).

    Args:
        prog: The command's name for messages, e.g. ``"ptd run"``.

    Returns:
        A decorator; the decorated ``main(argv=None)`` reads ``sys.argv`` when ``argv`` is None, handles
        ``--debug``, and turns every exception but ``SystemExit`` into an exit code (:func:`handle`).
    """

    def wrap(fn: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(fn)
        def main(argv: Sequence[str] | None = None) -> int:
            args, debug = split_debug(sys.argv[1:] if argv is None else argv)
            try:
                return int(fn(args) or 0)
            except SystemExit:
                raise
            except BaseException as err:  # noqa: BLE001  (the contract's single handler)
                return handle(prog, err, debug)

        return main

    return wrap
