"""``ptd bench flops``: fvcore vs FlopCounterMode vs the analytic model; 8B/7B per-forward FLOPs; cache speed.

Prints a table and, as its last line, one JSON object with: the three counts at several lengths on the
embedded model and their largest relative disagreement; the same for LLaDA-8B at 256-2,048 tokens and
Dream-7B (grouped key/value heads) at 256 and 2,048 (counted on the meta device, no weights); the share of
work the counts leave out (estimate); and the time to count a new shape vs a cached one.
"""

from __future__ import annotations

import json
import time

import torch

from ptdlib.cli.contract import ArgumentParser
from ptdlib.cost.flops import FlopCounter, count_with_torch, cross_check
from ptdlib.cost.shapes import analytic_flops, preset, shape_from_config, uncounted_flops_estimate


def _embedded_network():
    """The shipped embedded model if it is there, else a random one of the shipped shape (FLOPs ignore weights)."""
    from ptdlib.models.embedded import DEFAULT_MODEL_DIR, build_model, embedded_lm, load_embedded
    from ptdlib.models.tokenizer import build_tokenizer

    if (DEFAULT_MODEL_DIR / "config.json").exists():
        return load_embedded(), "shipped weights"
    tok = build_tokenizer()
    torch.manual_seed(0)
    return embedded_lm(build_model(tok).eval(), tok), "shipped shape, random weights (model still training)"


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _meta_rows(shape, lengths) -> tuple:
    """Count ``shape`` on its meta-device stand-in (no weights) at ``lengths``.

    Returns:
        (counter, seconds to build it, rows): each row the counts of the counter (fvcore unless it fell back),
        FlopCounterMode and the analytic model.
    """
    counter, build_s = _timed(lambda: FlopCounter.for_shape(shape))
    rows = []
    for t in lengths:
        fv, new_s = _timed(counter.forward_flops, t)
        _, cached_s = _timed(counter.forward_flops, t)
        tc = sum(count_with_torch(counter.network, t).values()) if counter.method == "fvcore" else None
        an = analytic_flops(shape, t)["total"]
        counts = [c for c in (fv, tc, an) if c is not None]
        rows.append(
            {
                "seq_len": t,
                "fvcore_meta": fv,
                "torch_meta": tc,
                "analytic": an,
                "max_rel_diff": (max(counts) - min(counts)) / max(counts),
                "attention_frac": analytic_flops(shape, t)["attn/scores"] / an,
                "uncounted_frac": uncounted_flops_estimate(shape, t) / an,
                "count_new_s": new_s,
                "count_cached_s": cached_s,
            }
        )
    return counter, build_s, rows


def _print_meta(title, shape, counter, build_s, rows) -> None:
    print(
        f"\n{title} ({shape.n_params / 1e9:.2f}B parameters), counted on the meta device ({counter.method}); "
        f"building the stand-in took {build_s:.2f} s"
    )
    print(
        f"{'tokens':>7} {'TFLOP/forward':>14} {'max rel diff':>13} {'attention':>10} {'new shape s':>12} "
        f"{'cached s':>10}"
    )
    for r in rows:
        print(
            f"{r['seq_len']:>7} {r['analytic'] / 1e12:>14.2f} {r['max_rel_diff']:>13.2e} "
            f"{r['attention_frac']:>10.1%} {r['count_new_s']:>12.3f} {r['count_cached_s']:>10.2e}"
        )


def _meta_summary(counter, rows) -> dict:
    return {
        "method": counter.method,
        "rows": rows,
        "flops_per_forward": {str(r["seq_len"]): r["analytic"] for r in rows},
        "max_rel_diff": max(r["max_rel_diff"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="ptd bench flops", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[16, 64, 128, 192],
        help="embedded-model sequence lengths to cross-check",
    )
    ap.add_argument(
        "--llada-lengths", type=int, nargs="+", default=[256, 512, 1024, 2048], help="LLaDA-8B sequence lengths"
    )
    ap.add_argument("--dream-lengths", type=int, nargs="+", default=[256, 2048], help="Dream-7B sequence lengths")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    lm, source = _embedded_network()
    shape = shape_from_config(lm.network.config, name=lm.model_id)
    rows = cross_check(lm.network, shape, args.lengths, token_id=lm.mask_id)
    print(
        f"embedded model {shape.name} ({source}): d={shape.d_model}, {shape.n_layers} layers; "
        "FLOPs per forward, batch 1 (2 per multiply-add)"
    )
    print(
        f"{'tokens':>7} {'fvcore':>14} {'FlopCounterMode':>16} {'analytic':>14} {'max rel diff':>13} {'uncounted':>10}"
    )
    for r in rows:
        r["uncounted_frac"] = uncounted_flops_estimate(shape, r["seq_len"]) / r["analytic"]
        print(
            f"{r['seq_len']:>7} {r['fvcore']:>14,} {r['torch']:>16,} {r['analytic']:>14,} "
            f"{r['max_rel_diff']:>13.2e} {r['uncounted_frac']:>10.2%}"
        )

    llada, dream = preset("llada-8b"), preset("dream-7b")
    counter, first_s, llada_rows = _meta_rows(llada, args.llada_lengths)
    _print_meta("LLaDA-8B", llada, counter, first_s, llada_rows)
    dream_counter, dream_s, dream_rows = _meta_rows(dream, args.dream_lengths)
    _print_meta("Dream-7B", dream, dream_counter, dream_s, dream_rows)

    emb_counter = FlopCounter(lm)
    _, emb_new_s = _timed(lambda: emb_counter.forward_flops(100))
    _, emb_cached_s = _timed(lambda: emb_counter.forward_flops(100, batch=32))
    print(f"\nembedded model: new shape {emb_new_s * 1e3:.1f} ms, cached {emb_cached_s * 1e6:.1f} us")

    summary = {
        "bench": "flops",
        "convention": "2 FLOPs per multiply-add",
        "embedded": {
            "model": shape.name,
            "weights": source,
            "rows": rows,
            "max_rel_diff": max(r["max_rel_diff"] for r in rows),
        },
        "llada_8b": _meta_summary(counter, llada_rows),
        "dream_7b": _meta_summary(dream_counter, dream_rows),
        "max_rel_diff": max(r["max_rel_diff"] for r in rows + llada_rows + dream_rows),
        "count_time_s": {
            "embedded_new": emb_new_s,
            "embedded_cached": emb_cached_s,
            "llada_8b_new_mean": sum(r["count_new_s"] for r in llada_rows) / len(llada_rows),
            "llada_8b_cached_mean": sum(r["count_cached_s"] for r in llada_rows) / len(llada_rows),
        },
    }
    print(json.dumps(summary))
    return 0
