"""Run one canvas strategy over a set of queries and return one result row per query.

The flow of docs/design.md §2: the policy chooses the canvases (its probe or predictor passes reported), the
sampler denoises them, truncated results are recovered (re-runs reported as ``rerun``), the scorer scores
the responses, and a :class:`~ptdlib.cost.flops.FlopLedger` prices every forward pass the query took part in.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy
from ptdlib.canvas.recovery import check_recovery, recover
from ptdlib.cost.flops import FlopLedger
from ptdlib.sampling.events import FORWARD_KINDS
from ptdlib.sampling.sampler import SamplerConfig, sample
from ptdlib.tasks import score_responses

#: Columns of a result row, in order (the runner adds run-level provenance).
ROW_COLUMNS = [
    "split",
    "family",
    "qid",
    "seed",
    "strategy",
    "params",
    "recovery",
    "model_id",
    "prompt_len",
    "own_length",
    "chosen_canvas",
    "final_canvas",
    "truncated",
    "truncated_final",
    "reruns",
    "forward_passes",
    *[f"flops_{k}" for k in FORWARD_KINDS],
    "flops_total",
    "flop_counter",
    "forward_lens",
    "wall_s",
    "length",
    "response",
    "score",
    "metric",
    "source",
    "scores",
]


class WallClock:
    """Callback splitting wall time among queries.

    The time since the previous forward pass ended is shared evenly by the rows of the pass that just ended
    (so sampler overhead is charged too).

    Put it first among the callbacks and its :attr:`restart` marker last: the time the other callbacks take
    (e.g. fvcore tracing a new shape for the FLOP ledger) is then charged to nobody.
    """

    def __init__(self):
        self.seconds = defaultdict(float)
        self.restart = _Restart(self)
        self.mark()

    def mark(self) -> None:
        """Start the next share of time now."""
        self._last = time.perf_counter()

    def on_forward(self, event) -> None:
        """Charge the time since the last mark to the pass's rows (``seconds``: query id -> seconds)."""
        share = (time.perf_counter() - self._last) / max(1, len(event.query_ids))
        for q in event.query_ids:
            self.seconds[q] += share


class _Restart:
    def __init__(self, clock: WallClock):
        self.clock = clock

    def on_forward(self, event) -> None:
        self.clock.mark()


def evaluate_strategy(
    lm,
    queries,
    policy: CanvasPolicy,
    counter,
    *,
    recovery: str = "max",
    sampler: SamplerConfig = SamplerConfig(),
    limits: CanvasLimits = CanvasLimits(),
    seed: int = 0,
    batch_size: int = 32,
    own_lengths: dict | None = None,
    callbacks=(),
    progress: bool = False,
    allow_code_execution: bool = False,
) -> list[dict]:
    """Run ``policy`` on ``queries``: choose canvases, sample, recover truncations, score, price every pass.

    ``forward_lens`` lists the padded sequence length of every pass the query took part in, so
    :mod:`ptdlib.cost.workload` can re-price the same plan on another model.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM`.
        queries: The queries (``qid``, ``prompt``, ``split``, ``family``, ``source``).
        policy: The canvas policy (fitted if it needs it).
        counter: Prices a forward pass (``forward_flops(seq_len)``); its ``method``, the counter that priced the
            rows after any fallback, fills ``flop_counter``.
        recovery: How a truncated result is recovered (:mod:`~ptdlib.canvas.recovery`).
        sampler: Base sampler settings (the policy may adjust them).
        limits: Block length and maximum canvas.
        seed: Sampling seed.
        batch_size: Queries per forward pass (and per served batch of an online policy).
        own_lengths: qid -> the model's own length, filling the ``own_length`` column when given.
        callbacks: More callbacks for every forward pass.
        progress: Show a progress bar.
        allow_code_execution: Let benchmarks that run code (HumanEval) score by running it.

    Returns:
        One dict per query, in order, with the columns :data:`ROW_COLUMNS` (FLOPs per forward kind, wall
        seconds, lengths, response, score).

    Raises:
        ValueError: If ``queries`` is empty or ``recovery`` unknown; the policy and sampler raise ValueError for
            settings they cannot run.
    """
    check_recovery(recovery)
    if not queries:
        raise ValueError("no queries to evaluate")
    ledger, clock = FlopLedger(counter), WallClock()
    cbs = [clock, ledger, *callbacks, clock.restart]
    cfg = policy.sampler_config(sampler)
    qids = [q.qid for q in queries]
    prompts = [q.prompt for q in queries]

    # An online policy is served batch by batch and told each batch's outcome before the next one.
    chunk = batch_size if policy.online else len(queries)
    chosen, final, reruns, outputs, truncated = [], [], [], [], []
    for start in range(0, len(queries), chunk):
        part = slice(start, start + chunk)
        clock.mark()
        c = np.asarray(policy.choose(lm, queries[part], limits, cbs), dtype=int)
        clock.mark()
        # an editing policy (DAEDAL, rho-EOS) may start from committed tokens and change canvases as it goes
        outs = sample(
            lm,
            prompts[part],
            c.tolist(),
            cfg,
            seed=seed,
            callbacks=cbs,
            query_ids=qids[part],
            batch_size=batch_size,
            progress=progress,
            init_canvas=policy.initial_canvases(lm, c.tolist()),
            editor=policy.editor(limits),
        )
        first_truncated = [o.truncated for o in outs]

        def resample(indices, canvases, init, offset=start):
            clock.mark()
            return sample(
                lm,
                [prompts[offset + i] for i in indices],
                canvases,
                cfg,
                seed=seed,
                callbacks=cbs,
                kind="rerun",
                query_ids=[qids[offset + i] for i in indices],
                batch_size=batch_size,
                init_canvas=init,
            )

        outs, f, r = recover(recovery, outs, c, limits.max_canvas, lm.mask_id, resample)
        policy.observe(queries[part], [o.length for o in outs], c, first_truncated)
        truncated += first_truncated
        chosen += c.tolist()
        final += [o.canvas_length for o in outs]  # the canvas each final answer had (edits included)
        reruns += r.tolist()
        outputs += outs
    flops = ledger.per_query()
    params = json.dumps(policy.params(), sort_keys=True)
    # one batch per benchmark (HumanEval runs its programs in one worker process, after the caller's opt-in)
    scored = score_responses(queries, [o.text for o in outputs], allow_code_execution=allow_code_execution)
    rows = []
    for i, (q, o) in enumerate(zip(queries, outputs)):
        f = {k: int(flops.get(q.qid, {}).get(k, 0)) for k in FORWARD_KINDS}
        rows.append(
            {
                "split": q.split,
                "family": q.family,
                "qid": q.qid,
                "seed": seed,
                "strategy": policy.name,
                "params": params,
                "recovery": recovery,
                "model_id": lm.model_id,
                "prompt_len": len(lm.encode_prompt(q.prompt)),
                "own_length": (own_lengths or {}).get(q.qid, np.nan),
                "chosen_canvas": int(chosen[i]),
                "final_canvas": int(final[i]),
                "truncated": bool(truncated[i]),
                "truncated_final": bool(o.truncated),
                "reruns": int(reruns[i]),
                "forward_passes": len(ledger.forward_lengths(q.qid)),
                **{f"flops_{k}": v for k, v in f.items()},
                "flops_total": sum(f.values()),
                "flop_counter": ledger.method,  # fvcore, flop_counter_mode or analytic (ptdlib.cost.flops.COUNTER_METHODS)
                "forward_lens": json.dumps(ledger.forward_lengths(q.qid)),  # JSON list: every pass's length
                "wall_s": clock.seconds[q.qid],
                "length": o.length,
                "response": o.text,
                "score": scored[i]["score"],
                "metric": scored[i]["metric"],
                "source": q.source,  # "synthetic" or the file source's name
                "scores": json.dumps(scored[i]["scores"], sort_keys=True),  # every metric of the query's benchmark
            }
        )
    return rows
