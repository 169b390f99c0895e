"""The unit of work every executor of a run shares: a chunk's inputs (:class:`SharedWork`) and :func:`run_chunk`.

The serial loop and ``--shard`` runs (:mod:`ptdlib.experiment.runner`) and the Ray workers
(:mod:`ptdlib.experiment.ray_runner`) all evaluate a chunk with :func:`run_chunk`, so every executor writes the
same chunk files and they resume each other. It lives here, below both executors, so that neither imports the
other to reach it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ptdlib.canvas import OracleCanvas, evaluate_strategy
from ptdlib.experiment.config import RunConfig


@dataclass
class SharedWork:
    """What every chunk of a run reads and nothing recomputes: the queries, own-length labels and fitted policies.

    They are computed once by the process that plans the run (and, under ``--ray``, shipped once to every worker
    with ``ray.put``).
    """

    queries: dict  # split -> the split's queries (a chunk takes queries[split][start:stop])
    own: dict  # qid -> own length at the maximum canvas, for every query a chunk of this run evaluates
    policies: dict  # Cell.key -> the cell's (fitted) policy

    def inputs(self, chunk):
        """The inputs of one chunk.

        Args:
            chunk: A :class:`~ptdlib.experiment.config.Chunk`.

        Returns:
            ``(queries, policy, own lengths)``; an online policy is a fresh copy of its calibrated state, and an
            oracle is given the chunk's own lengths.
        """
        queries = self.queries[chunk.split][chunk.start : chunk.stop]
        policy = self.policies[chunk.cell.key]
        if chunk.cell.online:  # each (split, seed) stream starts from the calibrated state, whatever ran before
            policy = copy.deepcopy(policy)
        own = {q.qid: self.own[q.qid] for q in queries}
        if isinstance(policy, OracleCanvas):
            policy.with_labels(own)
        return queries, policy, own


def run_chunk(
    lm, counter, cfg: RunConfig, out: Path, chunk, work: SharedWork, *, allow_code_execution: bool = False
) -> int:
    """Evaluate one chunk and store its rows atomically (:func:`ptdlib.experiment.results.write_chunk`).

    The one unit of work of every executor (the serial loop below, :mod:`ptdlib.experiment.ray_runner`'s workers):
    running a chunk twice rewrites the same file, so a retried chunk never duplicates rows.

    Args:
        lm: The model.
        counter: The FLOP counter of ``lm``.
        cfg: The run config.
        out: The run directory.
        chunk: The chunk to evaluate.
        work: The run's shared inputs.
        allow_code_execution: The caller's opt-in to benchmarks that run code.

    Returns:
        The number of rows written.
    """
    from ptdlib.experiment.results import write_chunk

    queries, policy, own = work.inputs(chunk)
    rows = evaluate_strategy(
        lm,
        queries,
        policy,
        counter,
        recovery=chunk.cell.recovery,
        sampler=cfg.sampler,
        limits=cfg.limits,
        seed=chunk.seed,
        batch_size=cfg.batch_size,
        own_lengths=own,
        allow_code_execution=allow_code_execution,
    )
    write_chunk(out, chunk.id, rows)
    return len(rows)
