"""Query sets: the built-in synthetic suite, its named splits, file sources and benchmarks, and scorers."""

from ptdlib.tasks.families import FAMILIES, HELDOUT_FAMILY, TaskFamily, get_family
from ptdlib.tasks.splits import SPLITS, Query, iter_split, load_queries, make_split, save_queries

#: ``Query.source`` of the built-in synthetic suite
SYNTHETIC = "synthetic"


def score(query: Query, response: str) -> float:
    """Score ``response`` to a synthetic ``query`` with its family's scorer (exact match or validity).

    File-source queries are scored in batches by :func:`score_responses` (HumanEval runs code in a worker).

    Args:
        query: The query.
        response: The model's response text.

    Returns:
        The score in [0, 1] (a benchmark query: its primary metric).
    """
    if query.source != SYNTHETIC:
        return score_responses([query], [response])[0]["score"]
    return get_family(query.family).score(query.prompt, query.answer, response)


def metric_of(query: Query) -> str:
    """The name of the metric a query's row ``score`` is (a family's metric, or its benchmark's primary one)."""
    if query.source == SYNTHETIC:
        return get_family(query.family).metric
    from ptdlib.tasks.benchmarks import get_benchmark

    return get_benchmark(query.family).primary


def score_responses(queries, responses, *, allow_code_execution: bool = False) -> list[dict]:
    """Score responses: synthetic queries by their family, benchmark queries one batch per benchmark.

    Args:
        queries: The queries.
        responses: One response text per query.
        allow_code_execution: The caller's opt-in to benchmarks that run code (HumanEval).

    Returns:
        One ``{"score", "metric", "scores"}`` per response: the row's score (a benchmark's primary metric), its
        name, and every metric of the query's benchmark (``{metric: score}`` for a synthetic family).

    Raises:
        ValueError: If the numbers of queries and responses differ.
        CodeExecutionRefused: For HumanEval queries without the opt-in
            (:class:`~ptdlib.tasks.benchmarks.CodeExecutionRefused`, a ValueError).
    """
    if len(queries) != len(responses):
        raise ValueError(f"got {len(responses)} responses for {len(queries)} queries")
    out: list[dict | None] = [None] * len(queries)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        if q.source == SYNTHETIC:
            fam = get_family(q.family)
            value = fam.score(q.prompt, q.answer, responses[i])
            out[i] = {"score": value, "metric": fam.metric, "scores": {fam.metric: value}}
        else:
            groups.setdefault(q.family, []).append(i)
    if groups:
        from ptdlib.tasks.benchmarks import get_benchmark
        from ptdlib.tasks.sources import query_record

        for name, idx in groups.items():
            bench = get_benchmark(name)
            scores = bench.score(
                [query_record(queries[i]) for i in idx],
                [responses[i] for i in idx],
                allow_code_execution=allow_code_execution,
            )
            for i, s in zip(idx, scores):
                out[i] = {"score": float(s[bench.primary]), "metric": bench.primary, "scores": s}
    return out


__all__ = [
    "FAMILIES",
    "HELDOUT_FAMILY",
    "SPLITS",
    "SYNTHETIC",
    "Query",
    "TaskFamily",
    "get_family",
    "iter_split",
    "load_queries",
    "make_split",
    "metric_of",
    "save_queries",
    "score",
    "score_responses",
]
