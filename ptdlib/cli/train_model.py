"""``ptd train-model``: train or resume the embedded model (CPU or GPU) and save it with its card."""

from __future__ import annotations

import json

from ptdlib.cli.contract import ArgumentParser, command, finite_float, json_object, non_negative_int
from ptdlib.models.embedded import DATA_DIR, DEFAULT_MODEL_NAME


@command("ptd train-model")
def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="ptd train-model", description=__doc__)
    p.add_argument(
        "--out",
        default=str(DATA_DIR / "models" / DEFAULT_MODEL_NAME),
        help="model directory to write (default: the shipped model's)",
    )
    p.add_argument("--steps", type=int, default=30000, help="optimizer steps of the schedule")
    p.add_argument(
        "--time-limit",
        type=finite_float,
        default=0.0,
        help="seconds after which training stops and saves; the LR schedule follows the clock",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=finite_float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=non_negative_int, default=2, help="torch CPU threads (0: torch's default)")
    p.add_argument("--eval-every", type=int, default=1000, help="steps between held-out evaluations")
    p.add_argument("--eval-queries", type=int, default=256, help="test queries for the held-out metrics")
    p.add_argument(
        "--model", type=json_object, default={}, help="JSON of PtdLladaConfig overrides, e.g. '{\"n_layers\": 6}'"
    )
    p.add_argument("--work-dir", default=None, help="where the resumable checkpoint lives (default: OUT.ckpt)")
    p.add_argument(
        "--init-from",
        default="",
        help="start from this saved model's weights (continue training "
        "a shipped model with a fresh schedule), e.g. data/models/ptd-tiny",
    )
    p.add_argument(
        "--family-weights",
        type=json_object,
        default={},
        help="JSON of training-mix weights per family (unnamed families: 1), e.g. '{\"count\": 3}'",
    )
    p.add_argument(
        "--recipe",
        default="llada-sft",
        choices=("llada-sft", "dllm-var"),
        help="training recipe: LLaDA's SFT, or dLLM-Var's (end tokens always masked, samples packed)",
    )
    p.add_argument(
        "--pack-frac",
        type=float,
        default=0.75,
        help="dllm-var: share of steps whose rows pack several samples (the rest: one sample each)",
    )
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between resumable checkpoints")
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=0,
        help="steps between model snapshots kept in the work dir (step-NNNNNN), to choose on calib",
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.pack_frac <= 1.0:
        p.error(f"--pack-frac must be in [0, 1], got {args.pack_frac}")
    for name in ("steps", "batch_size", "eval_queries", "checkpoint_every"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")

    from ptdlib.models.metrics import heldout_metrics
    from ptdlib.models.training import TrainConfig, train
    from ptdlib.tasks import make_split

    test = make_split("test", args.eval_queries, seed=0)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        eval_every=args.eval_every,
        time_limit_s=args.time_limit,
        model=args.model,
        init_from=args.init_from,
        family_weights=args.family_weights,
        recipe=args.recipe,
        pack_frac=args.pack_frac,
        checkpoint_every=args.checkpoint_every,
        snapshot_every=args.snapshot_every,
    )
    card = train(cfg, args.out, work_dir=args.work_dir, evaluate=lambda m, t: heldout_metrics(m, t, test))
    print(json.dumps({k: card[k] for k in ("steps_done", "train_seconds", "heldout") if k in card}))
    return 0
