"""``ptd bench model``: size, masked-token accuracy and the length signal of a model on the ``test`` split.

Masked-token accuracy is also given per task family (at mask ratios 0.25 and 1.0), which shows where the
model is weak. The length signal is read from one forward pass over prompt + an all-mask canvas: the estimate is the first
canvas position whose P(EOS or EOT) exceeds 0.5; reported as Spearman correlation with the reference answer
length and its MAE, per task group and overall.
"""

from __future__ import annotations

import json
import time

import torch

from ptdlib.cli.contract import ArgumentParser


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="ptd bench model", description=__doc__)
    p.add_argument(
        "--model",
        default=None,
        help="embedded-architecture model directory (default: the shipped model); this bench measures the synthetic suite, so it is for the embedded family only",
    )
    p.add_argument("--n", type=int, default=600, help="test queries")
    p.add_argument("--canvas", type=int, default=128, help="canvas of the accuracy and length-signal passes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.n <= 1:
        p.error(f"--n must be at least 2, got {args.n}")

    from ptdlib.models.embedded import load_pretrained, training_card
    from ptdlib.models.metrics import length_signal, masked_token_accuracy
    from ptdlib.tasks import FAMILIES, make_split

    torch.manual_seed(args.seed)
    model, tok = load_pretrained(args.model)
    queries = make_split("test", args.n, seed=args.seed)
    t0 = time.time()
    result = {
        "model": model.name_or_path,
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_queries": len(queries),
        "mask_accuracy": {},
    }
    print(f"{'mask ratio':>10} {'answer acc':>11} {'canvas acc':>11}")
    for r in (0.25, 0.5, 0.75, 1.0):
        acc = masked_token_accuracy(model, tok, queries, r, args.canvas, seed=args.seed)
        result["mask_accuracy"][str(r)] = {k: round(v, 4) for k, v in acc.items()}
        print(f"{r:>10} {acc['answer']:>11.4f} {acc['canvas']:>11.4f}")
    families = sorted({q.family for q in queries})
    result["mask_accuracy_by_family"] = {}
    print(f"\n{'family':>10} {'group':>8} {'n':>4} {'acc@0.25':>9} {'acc@1.0':>8}  (answer positions)")
    for f in families:
        sub = [q for q in queries if q.family == f]
        accs = {
            str(r): round(masked_token_accuracy(model, tok, sub, r, args.canvas, seed=args.seed)["answer"], 4)
            for r in (0.25, 1.0)
        }
        result["mask_accuracy_by_family"][f] = accs
        print(f"{f:>10} {FAMILIES[f].group:>8} {len(sub):>4} {accs['0.25']:>9.4f} {accs['1.0']:>8.4f}")
    sig = length_signal(model, tok, queries, args.canvas)
    result["length_signal"] = {k: round(v, 4) for k, v in sig.items()}
    groups = sorted({FAMILIES[q.family].group for q in queries})
    result["length_signal_by_group"] = {}
    print(f"\n{'group':>10} {'spearman':>9} {'mae':>7} {'under':>6}")
    for g in groups:
        sub = [q for q in queries if FAMILIES[q.family].group == g]
        s = length_signal(model, tok, sub, args.canvas)
        result["length_signal_by_group"][g] = {k: round(v, 4) for k, v in s.items()}
        print(f"{g:>10} {s['spearman']:>9.3f} {s['mae']:>7.2f} {s['under_rate']:>6.2f}")
    print(f"{'all':>10} {sig['spearman']:>9.3f} {sig['mae']:>7.2f} {sig['under_rate']:>6.2f}")
    card = training_card(args.model)
    result["training"] = {k: card.get(k) for k in ("steps_done", "train_seconds")}
    if "steps_total" in card:  # continued from another model: totals over every phase
        result["training"].update(steps_total=card["steps_total"], train_seconds_total=card["train_seconds_total"])
    result["bench_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))
    return 0
