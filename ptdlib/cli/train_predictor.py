"""``ptd train-predictor``: fit the AdaRLP length predictor on the model's own lengths and save it.

Steps: load the embedded D-LLM; draw the ``train`` and ``calib`` splits of the synthetic suite; label each
query with the length the model itself produces on the maximum canvas (``ptdlib.experiment.labels.own_lengths``);
fit; report held-out MAE, Spearman correlation and under-prediction rate on ``calib``; save the predictor,
``metrics.json`` and the calib predictions (``calib.npz``). The work is :mod:`ptdlib.predictor.training`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ptdlib.cli.contract import ArgumentParser, command
from ptdlib.predictor.features import FeatureSet
from ptdlib.predictor.regressors import REGRESSORS, PredictorConfig
from ptdlib.predictor.training import fit_and_evaluate, save_run


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="ptd train-predictor", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped embedded model)")
    p.add_argument("--n-train", type=int, default=2000, help="training queries (default 2000)")
    p.add_argument("--n-calib", type=int, default=500, help="calibration / held-out queries (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the labelling run")
    p.add_argument("--canvas", type=int, default=128, help="maximum canvas of the labelling run (default 128)")
    p.add_argument("--regressor", default="ridge_log", choices=REGRESSORS, help="regressor (default ridge_log)")
    p.add_argument(
        "--features", default="text", help="feature groups, comma-separated: text, hidden or text,hidden (default text)"
    )
    p.add_argument("--quantile", type=float, default=0.5, help="gbm_quantile's target quantile (default 0.5)")
    p.add_argument("--out", default=None, help="output directory (default data/predictors/<model name>/)")
    return p


@command("ptd train-predictor")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ptdlib.experiment.labels import own_lengths  # needs the sampler; imported only when labelling
    from ptdlib.models.embedded import DATA_DIR, load_embedded
    from ptdlib.tasks import make_split

    groups = tuple(g.strip() for g in args.features.split(",") if g.strip())
    config = PredictorConfig(
        regressor=args.regressor, quantile=args.quantile, seed=args.seed, features=FeatureSet(groups=groups)
    )
    lm = load_embedded(args.model)
    train, calib = make_split("train", args.n_train, args.seed), make_split("calib", args.n_calib, args.seed)
    t0 = time.perf_counter()
    y_train = own_lengths(lm, train, canvas=args.canvas, seed=args.seed)
    y_calib = own_lengths(lm, calib, canvas=args.canvas, seed=args.seed)
    label_s = time.perf_counter() - t0
    predictor, metrics, calib_pred = fit_and_evaluate(lm, train, y_train, calib, y_calib, config)
    metrics.update(
        label_seconds=label_s, label_canvas=args.canvas, seed=args.seed, n_train=args.n_train, n_calib=args.n_calib
    )
    out = Path(args.out) if args.out else DATA_DIR / "predictors" / lm.model_id
    save_run(predictor, metrics, out, calib, calib_pred, y_calib)
    c = metrics["calib"]
    print(f"predictor {args.regressor} [{args.features}] on {lm.model_id}: {metrics['n_features']} features")
    print(f"{'split':<6} {'n':>5} {'MAE':>7} {'Spearman':>9} {'under':>7}")
    for split in ("train", "calib"):
        m = metrics[split]
        print(f"{split:<6} {m['n']:>5} {m['mae']:>7.2f} {m['spearman']:>9.3f} {m['under_rate']:>7.3f}")
    print(f"saved to {out}")
    print(
        json.dumps(
            {
                "out": str(out),
                "calib_mae": c["mae"],
                "calib_spearman": c["spearman"],
                "calib_under_rate": c["under_rate"],
            }
        )
    )
    return 0
