"""``ptd bench sampler``: quality at LLaDA's reference settings and the sampler's speed and overhead.

1. Quality: score per task family (exact match; validity for ``animals``) on the ``test`` split at the reference
   settings (canvas L = 128, steps = 128, block_length = 32, low_confidence, T = 0) with the shipped model.
2. Speed: seconds per forward pass and per denoising step at batch 1 and batch 32 (canvas 128); the sampler's
   non-forward overhead (wall time not spent inside the network) as a fraction of forward time at batch 32;
   the wall-time ratio of the same 32 queries at canvas 32 vs 128, next to the ratio of sequence lengths
   (prompt + canvas, per pass) and of steps x sequence length (whole run; FLOPs grow at least this fast).

Timings are the fastest of ``--repeats`` runs (the machine may be shared). The last line is one JSON object.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import torch
from torch import nn

from ptdlib.cli.contract import ArgumentParser
from ptdlib.models.spec import add_model_arguments, load_lm, spec_from_args

#: the reference settings of issue 3 §5
REFERENCE_CANVAS = 128
REFERENCE_BLOCK = 32
SHORT_CANVAS = 32  # the short canvas of the wall-time ratio


class TimedNetwork(nn.Module):
    """Wraps a network and accumulates the seconds spent inside its forward passes."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def forward(self, *args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def timed_run(lm, prompts, canvas: int, cfg, repeats: int, desc: str) -> dict:
    """Fastest of ``repeats`` runs of ``sample``: wall and forward seconds, passes, steps, mean sequence length."""
    from dataclasses import replace

    from ptdlib.sampling.events import TraceRecorder
    from ptdlib.sampling.sampler import sample

    best = None
    for _ in range(repeats):
        timer = TimedNetwork(lm.network)
        timed = replace(lm, network=timer)
        rec = TraceRecorder()
        t0 = time.perf_counter()
        outs = sample(timed, prompts, canvas, cfg, batch_size=len(prompts), callbacks=[rec], progress=True)
        wall = time.perf_counter() - t0
        seq = [e.seq_len for e in rec.forwards]
        run = dict(
            wall_s=wall,
            forward_s=timer.seconds,
            passes=timer.calls,
            steps=max(o.steps_run for o in outs),
            batch=len(prompts),
            canvas=canvas,
            mean_seq_len=sum(seq) / len(seq),
        )
        if best is None or wall < best["wall_s"]:
            best = run
    best["s_per_forward"] = best["forward_s"] / best["passes"]
    best["s_per_step"] = best["wall_s"] / best["steps"]
    best["overhead_fraction"] = (best["wall_s"] - best["forward_s"]) / best["forward_s"]
    print(
        f"{desc:<28} wall {best['wall_s']:7.2f} s  forward {best['forward_s']:7.2f} s  "
        f"{best['s_per_forward'] * 1e3:7.2f} ms/pass  {best['s_per_step'] * 1e3:7.2f} ms/step  "
        f"overhead {100 * best['overhead_fraction']:5.1f} %  seq_len {best['mean_seq_len']:.1f}",
        flush=True,
    )
    return best


def quality(lm, n: int, seed: int, batch_size: int) -> dict:
    from ptdlib.sampling.sampler import SamplerConfig, sample
    from ptdlib.tasks import FAMILIES, make_split, score

    queries = make_split("test", n, seed)
    cfg = SamplerConfig(steps=REFERENCE_CANVAS, block_length=REFERENCE_BLOCK)
    t0 = time.perf_counter()
    outs = sample(
        lm,
        [q.prompt for q in queries],
        REFERENCE_CANVAS,
        cfg,
        batch_size=batch_size,
        query_ids=[q.qid for q in queries],
        progress=True,
    )
    wall = time.perf_counter() - t0
    by_family = defaultdict(list)
    for q, o in zip(queries, outs):
        by_family[q.family].append(score(q, o.text))
    per_family = {f: sum(v) / len(v) for f, v in sorted(by_family.items())}
    follows = [s for f, v in by_family.items() if FAMILIES[f].group == "follows" for s in v]
    print(
        f"\nquality on test (n={n}, L={REFERENCE_CANVAS}, steps={REFERENCE_CANVAS}, block={REFERENCE_BLOCK}, "
        f"low_confidence, T=0) in {wall:.0f} s"
    )
    print(f"{'family':<10} {'group':<8} {'metric':<12} {'n':>4} {'score':>6}")
    for f, s in per_family.items():
        fam = FAMILIES[f]
        print(f"{f:<10} {fam.group:<8} {fam.metric:<12} {len(by_family[f]):>4} {s:6.3f}")
    return dict(
        per_family=per_family,
        follows_mean=sum(follows) / max(len(follows), 1),
        mean=sum(sum(v) for v in by_family.values()) / len(outs),
        truncated_rate=sum(o.truncated for o in outs) / len(outs),
        wall_s=wall,
    )


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="ptd bench sampler", description=__doc__.splitlines()[0])
    add_model_arguments(ap)
    ap.add_argument("--n", type=int, default=240, help="test queries for the quality table")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the quality run and the large timing batch")
    ap.add_argument("--repeats", type=int, default=2, help="timing runs; the fastest is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the test split")
    ap.add_argument("--skip-quality", action="store_true", help="timings only")
    args = ap.parse_args(argv)
    if args.n <= 0 or args.batch <= 0 or args.repeats <= 0 or args.threads <= 0:
        ap.error("--n, --batch, --repeats and --threads must be positive")
    torch.set_num_threads(args.threads)

    from ptdlib.sampling.sampler import SamplerConfig
    from ptdlib.tasks import make_split

    spec = spec_from_args(args)
    lm, source = load_lm(spec, args.device), spec.path
    print(f"model {lm.model_id} from {source}; {args.threads} thread(s)")
    cfg = SamplerConfig(steps=None, block_length=REFERENCE_BLOCK)  # steps = canvas length
    prompts = [q.prompt for q in make_split("test", args.batch, args.seed + 1)]
    print("\ntimings (fastest of", args.repeats, "runs)")
    b1 = timed_run(lm, prompts[:1], REFERENCE_CANVAS, cfg, args.repeats, f"batch 1, canvas {REFERENCE_CANVAS}")
    bN = timed_run(lm, prompts, REFERENCE_CANVAS, cfg, args.repeats, f"batch {args.batch}, canvas {REFERENCE_CANVAS}")
    short = timed_run(lm, prompts, SHORT_CANVAS, cfg, args.repeats, f"batch {args.batch}, canvas {SHORT_CANVAS}")
    ratio = dict(
        wall_ratio=short["wall_s"] / bN["wall_s"],
        per_forward_ratio=short["s_per_forward"] / bN["s_per_forward"],
        seq_len_ratio=short["mean_seq_len"] / bN["mean_seq_len"],
        steps_x_seq_len_ratio=(short["steps"] * short["mean_seq_len"]) / (bN["steps"] * bN["mean_seq_len"]),
    )
    print(
        f"canvas {SHORT_CANVAS} vs {REFERENCE_CANVAS}: wall {ratio['wall_ratio']:.3f} "
        f"(steps x seq_len {ratio['steps_x_seq_len_ratio']:.3f}); per pass {ratio['per_forward_ratio']:.3f} "
        f"(seq_len {ratio['seq_len_ratio']:.3f})"
    )
    q = None if args.skip_quality else quality(lm, args.n, args.seed, args.batch)

    def keep(run):
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in run.items()}

    result = dict(
        bench="sampler",
        model=lm.model_id,
        source=source,
        threads=args.threads,
        settings=dict(
            canvas=REFERENCE_CANVAS,
            steps=REFERENCE_CANVAS,
            block_length=REFERENCE_BLOCK,
            remasking="low_confidence",
            temperature=0.0,
        ),
        quality=None
        if q is None
        else dict(
            n=args.n,
            score_per_family={k: round(v, 4) for k, v in q["per_family"].items()},
            follows_mean=round(q["follows_mean"], 4),
            mean=round(q["mean"], 4),
            truncated_rate=round(q["truncated_rate"], 4),
            wall_s=round(q["wall_s"], 1),
        ),
        seconds_per_forward={
            "batch_1": round(b1["s_per_forward"], 5),
            f"batch_{args.batch}": round(bN["s_per_forward"], 5),
        },
        seconds_per_step={"batch_1": round(b1["s_per_step"], 5), f"batch_{args.batch}": round(bN["s_per_step"], 5)},
        overhead_fraction={
            "batch_1": round(b1["overhead_fraction"], 4),
            f"batch_{args.batch}": round(bN["overhead_fraction"], 4),
        },
        canvas_ratio={k: round(v, 4) for k, v in ratio.items()},
        runs={
            "batch_1": keep(b1),
            f"batch_{args.batch}": keep(bN),
            f"batch_{args.batch}_canvas_{SHORT_CANVAS}": keep(short),
        },
    )
    print(json.dumps(result))
    return 0
