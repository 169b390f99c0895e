"""``ptd run CONFIG``: run an experiment grid into a resumable, shardable run directory.

A run (configured by :mod:`ptdlib.experiment.config`) evaluates every cell — strategy x parameters x recovery — on
every evaluated split and sampling seed, and writes one result row per (query, strategy, parameters, seed)
with the columns of :data:`ptdlib.canvas.ROW_COLUMNS` (docs/design.md §9). The work is cut into chunks; each
finished chunk is stored atomically (:mod:`ptdlib.experiment.results`), so

* re-running the same config skips the chunks already there, and a process killed at any moment loses at
  most the chunk in flight (one batch by default) and never leaves a duplicate or half-written row;
* ``--shard i/n`` runs the chunks whose stable hash falls in shard ``i`` of ``n``; shards are independent
  processes (other GPUs, other machines) and ``ptd summarize DIR...`` merges their directories;
* ``--ray [ADDRESS]`` hands the chunks to Ray workers (:mod:`ptdlib.experiment.ray_runner`), one per GPU or CPU, each
  running :func:`run_chunk` like the serial loop: the same files, so Ray, serial and sharded runs resume each other;
* re-running a *different* config (or another model's weights) into the same directory is an error.

Own-length labels (the model's length at the maximum canvas, docs/design.md §7) come from one cached labelling
run per split (:mod:`ptdlib.experiment.labels`); every row carries its query's label. Policies that learn (heuristic,
predicted) are fitted once per (strategy, parameters) on ``train`` and calibrated on ``calib`` only, then
reused across splits, seeds and recoveries.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ptdlib.canvas import CanvasPolicy, get_policy_class, make_policy
from ptdlib.experiment.config import Cell, RunConfig, plan_chunks, shard_of
from ptdlib.experiment.work import SharedWork, run_chunk
from ptdlib.models.spec import load_lm


# ---------------------------------------------------------------- labels and fitted policies
class Workbench:
    """The queries, own-length labels and fitted policies of one run, each computed once and reused."""

    def __init__(self, lm, cfg: RunConfig, progress: bool = False):
        self.lm, self.cfg, self.progress = lm, cfg, progress
        self._queries: dict[str, list] = {}
        self._fitted: dict[tuple[str, str, str], CanvasPolicy] = {}  # (name, params, recovery) -> policy
        self._fit_labels: dict | None = None  # own lengths of the train and calib queries
        self._sources: dict = {}  # file source name -> its loaded queries by split

    def queries(self, split: str) -> list:
        """The queries of ``split`` (generated, or read from the run's file sources), loaded once.

        Raises:
            ValueError: If ``split`` is not part of the run.
        """
        from ptdlib.tasks import make_split

        if split not in self._queries:
            sizes = {**self.cfg.splits, "train": self.cfg.train, "calib": self.cfg.calib}
            if split not in sizes:
                raise ValueError(f"split {split!r} is not part of this run; it has {', '.join(sizes)}")
            n = sizes[split]
            if self.cfg.sources:  # file sources: n queries of the split from each (ptdlib.tasks.sources)
                from ptdlib.tasks.sources import source_queries

                self._queries[split] = source_queries(self.cfg.sources, split, n, self._sources)
            else:
                self._queries[split] = make_split(split, n, seed=self.cfg.data_seed)
        return self._queries[split]

    def check_sources(self) -> None:
        """Load every query of the run and check its prompt against the model.

        A prompt must be non-empty, encodable and leave room for the maximum canvas, so that a bad query stops the
        run before anything is sampled or written.

        Raises:
            ValueError: For the first bad query.
        """
        from ptdlib.tasks.sources import check_prompts

        for split in (*self.cfg.splits, "train", "calib"):
            check_prompts(self.lm, self.queries(split), self.cfg.limits.max_canvas)

    def own_lengths(self, queries) -> dict:
        """The model's own length of each query at the maximum canvas (the cached labelling run).

        Returns:
            ``{qid: length in tokens}``.
        """
        from ptdlib.experiment.labels import label_queries

        labels = label_queries(
            self.lm,
            queries,
            canvas=self.cfg.limits.max_canvas,
            sampler=self.cfg.sampler,
            seed=self.cfg.label_seed,
            batch_size=self.cfg.batch_size,
            progress=self.progress,
        )
        return {qid: int(rec["length"]) for qid, rec in labels.items()}

    def needs_fit(self, cell: Cell) -> bool:
        """Whether the cell's policy learns from data (and has not been fitted yet)."""
        cls = get_policy_class(cell.name)
        return cls.fit is not CanvasPolicy.fit and (cell.name, cell.params, cell.recovery) not in self._fitted

    def policy(self, cell: Cell) -> CanvasPolicy:
        """The cell's policy, fitted on train and calibrated on calib the first time it is needed.

        A fitted policy is kept per (name, parameters, recovery): a margin may price the recovery.
        """
        key = (cell.name, cell.params, cell.recovery)
        if key not in self._fitted:
            policy = make_policy(cell.name, **cell.kwargs)
            if self.needs_fit(cell):
                train, calib = self.queries("train"), self.queries("calib")
                if self._fit_labels is None:
                    self._fit_labels = self.own_lengths(train + calib)
                own = self._fit_labels
                policy.fit(
                    self.lm,
                    train,
                    [own[q.qid] for q in train],
                    calib,
                    [own[q.qid] for q in calib],
                    self.cfg.limits,
                    cell.recovery,
                    sampler=self.cfg.sampler,
                )
            self._fitted[key] = policy
        return self._fitted[key]


# ---------------------------------------------------------------- the run
@dataclass(frozen=True)
class RunStats:
    """What one ``ptd run`` invocation did."""

    output: str
    rows_written: int
    rows_skipped: int  # already present from an earlier (interrupted) run
    rows_other_shards: int  # planned rows that belong to other shards
    chunks_written: int
    seconds: float
    failed: tuple = ()  # (chunk id, error) of chunks that kept failing (``--ray``: after their retries)

    def line(self) -> str:
        text = (
            f"ptd run: {self.rows_written} rows written ({self.chunks_written} chunks), {self.rows_skipped} "
            f"rows skipped (already present)"
        )
        if self.rows_other_shards:
            text += f", {self.rows_other_shards} rows left to other shards"
        if self.failed:
            text += f", {len(self.failed)} chunks FAILED ({', '.join(cid for cid, _ in self.failed)}; re-run to retry)"
        return text + f"; {self.seconds:.1f} s -> {self.output}"


def run_chunks(
    lm,
    cfg: RunConfig,
    out: Path,
    chunks: list,
    work: SharedWork,
    *,
    progress: bool = True,
    allow_code_execution: bool = False,
) -> int:
    """Run ``chunks`` one after another in this process (one progress bar).

    Args:
        lm: The model.
        cfg: The run config.
        out: The run directory.
        chunks: The chunks to run.
        work: The run's shared inputs.
        progress: Show a progress bar.
        allow_code_execution: The caller's opt-in to benchmarks that run code.

    Returns:
        The number of rows written.
    """
    from tqdm.auto import tqdm

    from ptdlib.cost.flops import FlopCounter

    counter = FlopCounter(lm)
    written = 0
    bar = tqdm(chunks, unit="chunk", disable=not progress, dynamic_ncols=True)
    for chunk in bar:
        bar.set_description(f"{chunk.split} {chunk.cell.label} seed {chunk.seed} q{chunk.start}-{chunk.stop}")
        written += run_chunk(lm, counter, cfg, out, chunk, work, allow_code_execution=allow_code_execution)
    bar.close()
    return written


def run(
    cfg: RunConfig,
    *,
    output: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    device: str = "auto",
    lm=None,
    progress: bool = True,
    allow_code_execution: bool = False,
    ray: str | None = None,
) -> RunStats:
    """Execute a run config, or one shard of it (see module docstring).

    Chunks already written in ``output`` are skipped, so an interrupted run resumes. Own-length labels and fitted
    policies are computed here, once, whichever executor runs the chunks.

    Args:
        cfg: The run config.
        output: The run directory (default ``cfg.output``).
        shard: ``(i, n)``: run the chunks of shard ``i`` of ``n``.
        device: Torch device of the model (``auto``: cuda if present).
        lm: A loaded model, overriding ``cfg.model`` (for callers that hold it already).
        progress: Print progress to stderr and show progress bars.
        allow_code_execution: The caller's half of the opt-in that HumanEval sources need (the source's own
            flag is the other half).
        ray: Run the chunks on a Ray cluster (:mod:`ptdlib.experiment.ray_runner`): ``"local"`` starts a local
            instance, ``"auto"`` or ``"host:port"`` joins a running one; None: run them in this process.

    Returns:
        The :class:`RunStats` of this invocation (chunks that kept failing under Ray are listed in ``failed``).

    Raises:
        ValueError: For a bad shard, a bad query, code-running sources without both opt-ins, or an output
            directory that holds another run.
    """
    from ptdlib.experiment.labels import cache_dir as label_cache_dir
    from ptdlib.experiment.labels import model_fingerprint
    from ptdlib.experiment.results import finished_chunks, open_run

    t0 = time.perf_counter()
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    out = Path(output or cfg.output)
    if cfg.sources:
        from ptdlib.tasks.sources import check_code_execution

        check_code_execution(cfg.sources, allow_code_execution)
    lm = lm if lm is not None else load_lm(cfg.model, device)
    bench = Workbench(lm, cfg, progress=progress)
    bench.check_sources()
    open_run(out, cfg, lm.model_id, model_fingerprint(lm))

    chunks = plan_chunks(cfg)
    mine = [c for c in chunks if shard_of(c.id, n) == i]
    done = finished_chunks(out)
    todo = [c for c in mine if c.id not in done]
    skipped = sum(c.size for c in mine if c.id in done)
    others = sum(c.size for c in chunks) - sum(c.size for c in mine)

    def say(text: str) -> None:
        if progress:
            print(f"ptd run: {text}", file=sys.stderr, flush=True)

    own: dict = {}
    for split in cfg.splits:  # one labelling run per evaluated split, over the queries this process needs
        wanted = sorted({k for c in todo if c.split == split for k in range(c.start, c.stop)})
        if wanted:
            say(f"own-length labels of {len(wanted)} {split} queries (cached in {label_cache_dir()})")
            own.update(bench.own_lengths([bench.queries(split)[k] for k in wanted]))
    for cell in {c.cell.key: c.cell for c in todo}.values():  # fit before the chunk loop, once per (strategy, params)
        if bench.needs_fit(cell):
            say(f"fitting {cell.label} on {cfg.train} train / {cfg.calib} calib queries")
        bench.policy(cell)

    work = SharedWork(
        queries={s: bench.queries(s) for s in {c.split for c in todo}},
        own=own,
        policies={c.cell.key: bench.policy(c.cell) for c in todo},
    )
    failed: tuple = ()
    if ray is None:
        written = run_chunks(lm, cfg, out, todo, work, progress=progress, allow_code_execution=allow_code_execution)
    elif todo:
        from ptdlib.experiment.ray_runner import run_on_ray

        del bench, lm  # the workers load their own copy; a model this call loaded is freed before they start
        if torch.cuda.is_available():
            import gc

            gc.collect()
            torch.cuda.empty_cache()
        written, failed = run_on_ray(
            cfg,
            out,
            todo,
            work,
            address=ray,
            device=device,
            progress=progress,
            allow_code_execution=allow_code_execution,
        )
    else:
        written = 0
    return RunStats(str(out), written, skipped, others, len(todo) - len(failed), time.perf_counter() - t0, failed)


def describe(cfg: RunConfig, out: Path, shard: tuple[int, int]) -> str:
    """The grid's cells and the chunks and rows of ``shard`` (done and to do), without loading the model.

    Args:
        cfg: The run config.
        out: The run directory.
        shard: ``(i, n)``.

    Returns:
        A multi-line text.
    """
    from ptdlib.experiment.results import finished_chunks

    chunks = plan_chunks(cfg)
    mine = [c for c in chunks if shard_of(c.id, shard[1]) == shard[0]]
    done = finished_chunks(out)
    todo = [c for c in mine if c.id not in done]
    lines = [
        f"{len(cfg.cells)} cells x splits {dict(cfg.splits)} x seeds {list(cfg.seeds)}: {len(chunks)} chunks of "
        f"up to {cfg.chunk} queries, {sum(c.size for c in chunks)} rows"
    ]
    lines += [f"  {c.label}" for c in cfg.cells]
    lines.append(
        f"shard {shard[0]}/{shard[1]}: {len(mine)} chunks, {len(mine) - len(todo)} already in {out}, "
        f"{len(todo)} to run ({sum(c.size for c in todo)} rows)"
    )
    return "\n".join(lines)
