"""Query sets: the built-in synthetic suite, its named splits, and scorers."""

from ptdlib.tasks.families import FAMILIES, HELDOUT_FAMILY, TaskFamily, get_family
from ptdlib.tasks.splits import SPLITS, Query, iter_split, load_queries, make_split, save_queries


def score(query: Query, response: str) -> float:
    """Score ``response`` to ``query`` with its family's scorer (exact match or validity), in [0, 1]."""
    return get_family(query.family).score(query.prompt, query.answer, response)


__all__ = [
    "FAMILIES", "HELDOUT_FAMILY", "SPLITS", "Query", "TaskFamily", "get_family", "iter_split",
    "load_queries", "make_split", "save_queries", "score",
]
