"""``ptd bench features``: the AdaRLP predictor's MAE with generic vs hand-written text features.

The ``generic`` feature group (TF-IDF word and character n-grams plus numeric statistics, learned from data:
:mod:`ptdlib.predictor.generic`) is what the predictor uses on real prompts; ``text`` (patterns written for
the synthetic families) is kept as the named ablation. Both are fitted with the same regressor on the model's
own lengths of ``train`` queries and scored on ``test`` (MAE in tokens, Spearman, under-prediction rate).
"""

from __future__ import annotations

import json
import time

from ptdlib.cli.contract import ArgumentParser

#: feature sets compared (``+`` joins groups, as in the predicted policy's ``features`` parameter)
FEATURE_SETS = ("text", "generic", "text+generic")


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="ptd bench features", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="model directory (default: the embedded model)")
    p.add_argument("--train", type=int, default=600, help="train queries the predictor is fitted on")
    p.add_argument("--test", type=int, default=256, help="test queries it is scored on")
    p.add_argument("--canvas", type=int, default=128, help="the maximum canvas of the own-length labels")
    p.add_argument("--regressor", default="ridge_log", help="ridge_log, gbm_quantile or gbm_log")
    args = p.parse_args(argv)
    for name in ("train", "test"):
        if getattr(args, name) < 2:
            p.error(f"--{name} must be at least 2, got {getattr(args, name)}")

    from ptdlib.experiment.config import ModelSpec
    from ptdlib.experiment.labels import own_lengths
    from ptdlib.models.spec import load_lm
    from ptdlib.predictor import FeatureSet, LengthPredictor, PredictorConfig
    from ptdlib.predictor.training import length_metrics
    from ptdlib.tasks import make_split

    lm = load_lm(ModelSpec(path=args.model), "cpu")
    train, test = make_split("train", args.train), make_split("test", args.test)
    t0 = time.time()
    y_train = own_lengths(lm, train, canvas=args.canvas)
    y_test = own_lengths(lm, test, canvas=args.canvas)
    result = {
        "model": lm.model_id,
        "train": len(train),
        "test": len(test),
        "regressor": args.regressor,
        "label_seconds": round(time.time() - t0, 1),
        "features": {},
    }
    print(f"{'features':<14} {'n_features':>10} {'MAE':>7} {'Spearman':>9} {'under':>6}")
    for groups in FEATURE_SETS:
        cfg = PredictorConfig(regressor=args.regressor, features=FeatureSet(groups=tuple(groups.split("+"))))
        predictor = LengthPredictor(cfg).fit_prompts(train, y_train)
        m = length_metrics(predictor.predict_prompts(test), y_test)
        result["features"][groups] = {
            "n_features": predictor.n_features,
            "mae": round(m["mae"], 3),
            "spearman": round(m["spearman"], 4),
            "under_rate": round(m["under_rate"], 4),
        }
        print(f"{groups:<14} {predictor.n_features:>10} {m['mae']:>7.2f} {m['spearman']:>9.3f} {m['under_rate']:>6.3f}")
    print(json.dumps(result))
    return 0
