"""Synthetic task families: word-level prompts with checkable answers of varied length.

Each family is a small object that draws a ``(prompt, answer)`` pair from a random generator at a
given *scale* (``"base"`` for training-like arguments, ``"long"`` for arguments beyond training, used by
the length-shift split) and scores a response. Three groups, by how the response length depends on the
prompt:

* ``follows``: the length is an easy function of the prompt (count from a to b, repeat a word n times ...);
* ``hard``: the length is a hard function of the prompt (Collatz sequence, divisors, primes below n,
  binary digits): a length predictor has to learn number theory or fail;
* ``random``: the length is partly random given the prompt (name at least n animals), like chat.

Numbers are single tokens from ``0`` to ``MAX_NUMBER``, so every family keeps its values in that range.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

MAX_NUMBER = 199  # largest number token; every family keeps its values at or below it

# Word lists. Short, distinct, and disjoint from the task keywords so that scoring is unambiguous.
ITEMS = (
    "cat dog sun moon tree rock fish bird star lamp door cup book key ship rain snow fire leaf road ring bell coin hat"
).split()
REPEAT_WORDS = "apple pear plum kiwi lime fig date grape melon lemon".split()
SPELL_WORDS = (
    "banana orange purple yellow garden window candle rocket planet silver "
    "river forest island castle dragon wizard pencil basket bridge mirror "
    "music tiger zebra violet copper"
).split()
ANIMALS = (
    "ant bee bear boar crab crow deer duck eagle eel elk fox frog goat hare "
    "hawk horse lion lynx mole moose mouse mule newt owl panda pig pony puma "
    "rat seal shark sheep slug snail swan toad trout wolf wren yak"
).split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
KEYWORDS = (
    "count from to repeat times reverse sort spell max sum copy collatz "
    "divisors primes below binary name at least animals :"
).split()


def _collatz(n: int) -> list[int]:
    seq = [n]
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        seq.append(n)
    return seq


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


# Collatz starts whose whole trajectory stays within the number vocabulary.
COLLATZ_STARTS = [n for n in range(2, MAX_NUMBER + 1) if max(_collatz(n)) <= MAX_NUMBER]


def _words(xs) -> str:
    return " ".join(str(x) for x in xs)


@dataclass(frozen=True)
class TaskFamily:
    """One family of synthetic queries.

    ``draw(rng, scale)`` returns ``(prompt, answer)``; ``score(prompt, answer, response)`` returns a score
    in [0, 1]. ``open_space`` is False for families whose prompt space is too small to split (spell: a
    fixed word list, so its test words are also trained on: it measures fitting, not generalisation; animals:
    eight prompts, whose answers are random).
    ``has_long`` tells whether the family has a ``"long"`` scale for the length-shift split.
    """

    name: str
    group: str  # "follows" | "hard" | "random"
    draw_fn: Callable[[random.Random, str], tuple[str, str]]
    score_fn: Callable[[str, str, str], float] | None = None  # None: exact match
    metric: str = "exact_match"
    open_space: bool = True
    has_long: bool = True

    def draw(self, rng: random.Random, scale: str = "base") -> tuple[str, str]:
        """Draw one query.

        Args:
            rng: The generator to draw from.
            scale: ``"base"``, or ``"long"`` for the length-shift split.

        Returns:
            ``(prompt, answer)``.

        Raises:
            ValueError: For another scale, or ``"long"`` on a family without it.
        """
        if scale not in ("base", "long"):
            raise ValueError(f"scale must be 'base' or 'long', got {scale!r}")
        if scale == "long" and not self.has_long:
            raise ValueError(f"task family {self.name!r} has no 'long' scale")
        return self.draw_fn(rng, scale)

    def score(self, prompt: str, answer: str, response: str) -> float:
        """Score a response in [0, 1]: the family's scorer, else exact match of the whitespace-split words."""
        if self.score_fn is None:
            return float(response.split() == answer.split())
        return float(self.score_fn(prompt, answer, response))


# ---------------------------------------------------------------- follows
def _count(rng, scale):
    length = rng.randint(2, 60) if scale == "base" else rng.randint(61, 110)
    a = rng.randint(0, MAX_NUMBER + 1 - length)
    b = a + length - 1
    return f"count from {a} to {b}", _words(range(a, b + 1))


def _repeat(rng, scale):
    n = rng.randint(1, 90) if scale == "base" else rng.randint(91, 120)
    w = rng.choice(REPEAT_WORDS)
    return f"repeat {w} {n} times", _words([w] * n)


def _reverse(rng, scale):
    k = rng.randint(2, 20) if scale == "base" else rng.randint(21, 36)
    xs = [rng.choice(ITEMS) for _ in range(k)]
    return f"reverse : {_words(xs)}", _words(reversed(xs))


def _copy(rng, scale):
    k = rng.randint(2, 20) if scale == "base" else rng.randint(21, 36)
    xs = [rng.choice(ITEMS) for _ in range(k)]
    return f"copy : {_words(xs)}", _words(xs)


def _sort(rng, scale):
    k = rng.randint(2, 10) if scale == "base" else rng.randint(11, 18)
    xs = [rng.randint(0, 99) for _ in range(k)]
    return f"sort : {_words(xs)}", _words(sorted(xs))


def _spell(rng, scale):
    w = rng.choice(SPELL_WORDS)
    return f"spell {w}", _words(w)


def _max(rng, scale):
    k = rng.randint(2, 10) if scale == "base" else rng.randint(11, 24)
    xs = [rng.randint(0, MAX_NUMBER) for _ in range(k)]
    return f"max : {_words(xs)}", str(max(xs))


def _sum(rng, scale):
    k = rng.randint(2, 6) if scale == "base" else rng.randint(7, 12)
    xs = [rng.randint(0, 15) for _ in range(k)]
    return f"sum : {_words(xs)}", str(sum(xs))


# ---------------------------------------------------------------- hard
def _collatz_task(rng, scale):
    n = rng.choice(COLLATZ_STARTS)
    return f"collatz {n}", _words(_collatz(n))


def _divisors(rng, scale):
    n = rng.randint(2, MAX_NUMBER)
    return f"divisors {n}", _words(d for d in range(1, n + 1) if n % d == 0)


def _primes(rng, scale):
    n = rng.randint(3, MAX_NUMBER)
    return f"primes below {n}", _words(p for p in range(2, n) if _is_prime(p))


def _binary(rng, scale):
    n = rng.randint(1, MAX_NUMBER)
    return f"binary {n}", _words(format(n, "b"))


# ---------------------------------------------------------------- random
def _animals(rng, scale):
    n = rng.randint(1, 8)
    k = rng.randint(n, n + 10)
    return f"name at least {n} animals", _words(rng.sample(ANIMALS, k))


def _score_animals(prompt: str, answer: str, response: str) -> float:
    """Validity: every word a distinct animal and at least n of them (the reference is one valid answer)."""
    n = int(prompt.split()[3])
    words = response.split()
    ok = len(words) >= n and len(set(words)) == len(words) and all(w in ANIMALS for w in words)
    return float(ok)


FAMILIES: dict[str, TaskFamily] = {
    f.name: f
    for f in [
        TaskFamily("count", "follows", _count),
        TaskFamily("repeat", "follows", _repeat),
        TaskFamily("reverse", "follows", _reverse),
        TaskFamily("sort", "follows", _sort),
        TaskFamily("spell", "follows", _spell, open_space=False, has_long=False),
        TaskFamily("max", "follows", _max),
        TaskFamily("sum", "follows", _sum),
        TaskFamily("copy", "follows", _copy),
        TaskFamily("collatz", "hard", _collatz_task, has_long=False),
        TaskFamily("divisors", "hard", _divisors, has_long=False),
        TaskFamily("primes", "hard", _primes, has_long=False),
        TaskFamily("binary", "hard", _binary, has_long=False),
        TaskFamily("animals", "random", _animals, _score_animals, metric="validity", open_space=False, has_long=False),
    ]
}

#: The family that no training split contains; the ``heldout_family`` split is made of it alone.
HELDOUT_FAMILY = "copy"


def get_family(name: str) -> TaskFamily:
    """The synthetic task family called ``name``.

    Raises:
        ValueError: For an unknown name (the message lists the choices).
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; choose from {', '.join(FAMILIES)}") from None


def vocabulary_words() -> list[str]:
    """Every word any family can emit, in a fixed order (the tokenizer's non-special vocabulary)."""
    words = [str(i) for i in range(MAX_NUMBER + 1)] + KEYWORDS + ITEMS + REPEAT_WORDS
    words += SPELL_WORDS + ANIMALS + LETTERS
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)
