"""The report's grid on worker processes: own-length labels in pieces first, then the grid as shards.

Each worker is a fresh interpreter (spawn) with one torch thread and the model loaded once; the embedded
model is too small for threads to help, and on a shared machine extra threads make it several times slower.
Shards are ``ptd run --shard`` units, so a killed report resumes from the chunks already written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path


def _pool(workers: int):
    """A pool of fresh interpreters (spawn: no state, no torch threads inherited from this process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


_WORKER_MODEL: dict = {}  # a worker process's loaded model, by model spec


def _worker_model(cfg):
    import torch

    from ptdlib.models.spec import load_lm

    torch.set_num_threads(1)  # one process per core: the embedded model gains nothing from more threads
    key = json.dumps(dataclasses.asdict(cfg.model), sort_keys=True)
    if key not in _WORKER_MODEL:
        _WORKER_MODEL[key] = load_lm(cfg.model)
    return _WORKER_MODEL[key]


def _label_job(cfg_dict: dict, split: str, n: int, start: int, stop: int) -> int:
    """Worker: label queries ``start:stop`` of ``split`` (of ``n``) into the shared label cache."""
    from ptdlib.experiment.config import RunConfig
    from ptdlib.experiment.labels import label_queries
    from ptdlib.tasks import make_split

    cfg = RunConfig.from_dict(cfg_dict)
    queries = make_split(split, n, seed=cfg.data_seed)[start:stop]
    label_queries(
        _worker_model(cfg),
        queries,
        canvas=cfg.limits.max_canvas,
        sampler=cfg.sampler,
        seed=cfg.label_seed,
        batch_size=cfg.batch_size,
    )
    return len(queries)


def _shard_job(cfg_dict: dict, output: str, i: int, n: int) -> str:
    """Worker: run shard ``i`` of ``n`` of the grid."""
    from ptdlib.experiment.config import RunConfig
    from ptdlib.experiment.runner import run

    cfg = RunConfig.from_dict(cfg_dict)
    return run(cfg, output=output, shard=(i, n), lm=_worker_model(cfg), progress=False).line()


def label_jobs(cfg, workers: int) -> list[tuple[str, int, int, int]]:
    """Pieces of every query the grid labels, about ``workers`` per split.

    Args:
        cfg: The run config (train and calib are labelled when a heuristic or predicted cell fits on them).
        workers: Processes the pieces are spread over.

    Returns:
        ``(split, n, start, stop)`` tuples.
    """
    fitted = any(c.name in ("heuristic", "predicted") for c in cfg.cells)
    sizes = {**({"train": cfg.train, "calib": cfg.calib} if fitted else {}), **cfg.splits}
    jobs = []
    for split, n in sizes.items():
        step = -(-n // workers)
        jobs += [(split, n, a, min(a + step, n)) for a in range(0, n, step)]
    return jobs


def run_grid(cfg, results: Path, workers: int, log: Callable[[str], None]) -> None:
    """Run the grid into ``results``: labels first, then ``2 * workers`` shards on ``workers`` processes.

    Args:
        cfg: The run config.
        results: The run directory.
        workers: Processes (1: the run in this process).
        log: Called with progress lines.

    Raises:
        ValueError: If ``results`` holds another run; a worker's error is re-raised here.
    """
    from concurrent.futures import FIRST_COMPLETED, as_completed, wait

    from ptdlib.experiment.config import plan_chunks
    from ptdlib.experiment.results import finished_chunks, missing_chunks, open_run
    from ptdlib.experiment.runner import run

    if workers == 1:
        log("      " + run(cfg, output=results, lm=_worker_model(cfg), progress=True).line())
        return
    from ptdlib.experiment.labels import model_fingerprint

    lm = _worker_model(cfg)
    open_run(results, cfg, lm.model_id, model_fingerprint(lm))  # fails now if results holds another run
    total = len(plan_chunks(cfg))
    if not missing_chunks(results):
        log(f"      all {total} chunks present: nothing to run")
        return
    cfg_dict = json.loads(json.dumps(dataclasses.asdict(cfg)))
    with _pool(workers) as pool:
        jobs = label_jobs(cfg, workers)
        log(f"      labels: own lengths at the maximum canvas, {len(jobs)} pieces on {workers} processes (cached)")
        futures = {pool.submit(_label_job, cfg_dict, *job): job for job in jobs}
        for k, future in enumerate(as_completed(futures), 1):
            split, _, start, stop = futures[future]
            future.result()
            log(f"      labels: {k}/{len(jobs)} pieces done ({split} {start}-{stop})")
        shards = 2 * workers
        log(f"      strategies: {shards} shards on {workers} processes")
        pending = {pool.submit(_shard_job, cfg_dict, str(results), i, shards) for i in range(shards)}
        while pending:
            done, pending = wait(pending, timeout=30, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # re-raises a worker's error here
            log(f"      {len(finished_chunks(results))}/{total} chunks done")
