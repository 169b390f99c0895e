"""``ptd bench flops``: fvcore vs FlopCounterMode vs the analytic model, LLaDA-8B per-forward FLOPs, cache speed.

Prints a table and, as its last line, one JSON object with: the three counts at several lengths on the
embedded model and their largest relative disagreement; the same for LLaDA-8B at 256-2,048 tokens
(counted on the meta device, no weights); the share of work the counts leave out (estimate); and the time
to count a new shape vs a cached one.
"""

from __future__ import annotations

import json
import time

import torch

from ptdlib.cli.contract import ArgumentParser
from ptdlib.flops import FlopCounter, count_with_torch, cross_check
from ptdlib.shapes import analytic_flops, preset, shape_from_config, uncounted_flops_estimate


def _embedded_network():
    """The shipped embedded model if it is there, else a random one of the shipped shape (FLOPs ignore weights)."""
    from ptdlib.models.embedded import DEFAULT_MODEL_DIR, build_model
    from ptdlib.models.embedded_lm import embedded_lm, load_embedded
    from ptdlib.models.tokenizer import build_tokenizer

    if (DEFAULT_MODEL_DIR / "config.json").exists():
        return load_embedded(), "shipped weights"
    tok = build_tokenizer()
    torch.manual_seed(0)
    return embedded_lm(build_model(tok).eval(), tok), "shipped shape, random weights (model still training)"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="ptd bench flops", description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 128, 192],
                    help="embedded-model sequence lengths to cross-check")
    ap.add_argument("--llada-lengths", type=int, nargs="+", default=[256, 512, 1024, 2048],
                    help="LLaDA-8B sequence lengths")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    lm, source = _embedded_network()
    shape = shape_from_config(lm.network.config, name=lm.model_id)
    rows = cross_check(lm.network, shape, args.lengths, token_id=lm.mask_id)
    print(f"embedded model {shape.name} ({source}): d={shape.d_model}, {shape.n_layers} layers; "
          "FLOPs per forward, batch 1 (2 per multiply-add)")
    print(f"{'tokens':>7} {'fvcore':>14} {'FlopCounterMode':>16} {'analytic':>14} {'max rel diff':>13} "
          f"{'uncounted':>10}")
    for r in rows:
        r["uncounted_frac"] = uncounted_flops_estimate(shape, r["seq_len"]) / r["analytic"]
        print(f"{r['seq_len']:>7} {r['fvcore']:>14,} {r['torch']:>16,} {r['analytic']:>14,} "
              f"{r['max_rel_diff']:>13.2e} {r['uncounted_frac']:>10.2%}")

    llada = preset("llada-8b")
    counter, first_s = _timed(lambda: FlopCounter.for_shape(llada))
    llada_rows = []
    for t in args.llada_lengths:
        fv, new_s = _timed(lambda: counter.forward_flops(t))
        _, cached_s = _timed(lambda: counter.forward_flops(t))
        tc = sum(count_with_torch(counter.network, t).values()) if counter.method == "fvcore" else None
        an = analytic_flops(llada, t)["total"]
        counts = [c for c in (fv, tc, an) if c is not None]
        llada_rows.append({"seq_len": t, "fvcore_meta": fv, "torch_meta": tc, "analytic": an,
                           "max_rel_diff": (max(counts) - min(counts)) / max(counts),
                           "attention_frac": analytic_flops(llada, t)["attn/scores"] / an,
                           "uncounted_frac": uncounted_flops_estimate(llada, t) / an,
                           "count_new_s": new_s, "count_cached_s": cached_s})
    print(f"\nLLaDA-8B ({llada.n_params / 1e9:.2f}B parameters), counted on the meta device ({counter.method}); "
          f"building the stand-in took {first_s:.2f} s")
    print(f"{'tokens':>7} {'TFLOP/forward':>14} {'max rel diff':>13} {'attention':>10} {'new shape s':>12} "
          f"{'cached s':>10}")
    for r in llada_rows:
        print(f"{r['seq_len']:>7} {r['analytic'] / 1e12:>14.2f} {r['max_rel_diff']:>13.2e} {r['attention_frac']:>10.1%} "
              f"{r['count_new_s']:>12.3f} {r['count_cached_s']:>10.2e}")

    emb_counter = FlopCounter(lm)
    _, emb_new_s = _timed(lambda: emb_counter.forward_flops(100))
    _, emb_cached_s = _timed(lambda: emb_counter.forward_flops(100, batch=32))
    print(f"\nembedded model: new shape {emb_new_s * 1e3:.1f} ms, cached {emb_cached_s * 1e6:.1f} us")

    summary = {
        "bench": "flops",
        "convention": "2 FLOPs per multiply-add",
        "embedded": {"model": shape.name, "weights": source, "rows": rows,
                     "max_rel_diff": max(r["max_rel_diff"] for r in rows)},
        "llada_8b": {"method": counter.method, "rows": llada_rows,
                     "flops_per_forward": {str(r["seq_len"]): r["analytic"] for r in llada_rows},
                     "max_rel_diff": max(r["max_rel_diff"] for r in llada_rows)},
        "max_rel_diff": max(r["max_rel_diff"] for r in rows + llada_rows),
        "count_time_s": {"embedded_new": emb_new_s, "embedded_cached": emb_cached_s,
                         "llada_8b_new_mean": sum(r["count_new_s"] for r in llada_rows) / len(llada_rows),
                         "llada_8b_cached_mean": sum(r["count_cached_s"] for r in llada_rows) / len(llada_rows)},
    }
    print(json.dumps(summary))
    return 0
