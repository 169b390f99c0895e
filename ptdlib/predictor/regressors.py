"""The AdaRLP length predictor: prompt features -> a point estimate of the D-LLM's own response length.

Predict-then-Diffuse (AdaRLP) trains a light regressor on (prompt, own length) pairs, where the label is
the length the D-LLM itself produces on the maximum canvas (``ptdlib.experiment.labels.own_lengths``), not a
reference answer's length. Three scikit-learn regressors (``PredictorConfig.regressor``):

* ``ridge_log`` -- ridge regression on ``log(1 + length)`` over standardised features; by default its penalty
  is chosen by efficient leave-one-out cross-validation (scikit-learn's ``RidgeCV``) over ``RIDGE_ALPHAS``;
* ``gbm_quantile`` -- histogram gradient boosting with the pinball (quantile) loss on ``log(1 + length)``
  (quantiles are equivariant under the monotone log, so this is the length's ``quantile``-quantile);
* ``gbm_log`` -- the same boosting with squared error on ``log(1 + length)``.

The regressors are registered by name in :data:`REGRESSORS` (:func:`register_regressor` adds one).
Predictions are lengths >= 0 (floats). A margin rule (``ptdlib.predictor.calibration``) turns them into
canvases. Cost: the prompt forward pass is counted by the FLOP ledger; the regressor's own cost is
:meth:`LengthPredictor.model_flops` and :func:`predictor_cost_report` relates both to the FLOPs saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from ptdlib.predictor.features import TEXT_STATS, FeatureExtractor, FeatureSet
from ptdlib.registry import Registry

#: Regressors a :class:`PredictorConfig` can name: name -> :class:`Regressor` (see :func:`register_regressor`).
REGRESSORS = Registry("regressor")
#: Penalties ``ridge_log`` chooses among by leave-one-out cross-validation when ``ridge_alpha`` is None.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 29))
#: A saved predictor is three files, none of which can carry code: the scikit-learn estimator in skops'
#: format (a schema of plain values and arrays, loaded without pickle), the rest as JSON.
MODEL_FILE = "predictor.skops"
STATE_FILE = "predictor.json"
METRICS_FILE = "metrics.json"
_FORMAT = 2  # version of the saved layout (1 was a joblib pickle, no longer read)
#: Types outside skops' default trusted set that a fitted regressor of :data:`REGRESSORS` holds; a file
#: naming any other type is refused rather than loaded.
TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


@dataclass(frozen=True)
class PredictorConfig:
    """How the predictor is built (survives ``PredictorConfig.from_dict(cfg.to_dict())``)."""

    regressor: str = "ridge_log"  # cheapest (2 FLOPs per feature) and smooth in the prompt's numbers
    features: FeatureSet = field(default_factory=FeatureSet)  # text statistics (see FeatureSet for why)
    ridge_alpha: float | None = None  # L2 penalty of ridge on standardised features; None: leave-one-out CV
    quantile: float = 0.5  # gbm_quantile's target quantile (median: the margin rule adds the safety)
    max_iter: int = 200  # boosting iterations (trees) of the gbm regressors
    max_depth: int = 6  # depth cap of each tree: bounds comparisons per tree at prediction time
    learning_rate: float = 0.1  # boosting shrinkage
    seed: int = 0  # seeds the boosting's validation split and ties
    n_threads: int = 1  # OpenMP/BLAS threads for fit and predict: a light model gains nothing from more, and
    #                     on a shared CPU extra OpenMP threads spin against other processes (50x slower here)

    def __post_init__(self):
        if isinstance(self.features, dict):
            object.__setattr__(self, "features", FeatureSet.from_dict(self.features))
        REGRESSORS.check(self.regressor)
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if self.ridge_alpha is not None and not self.ridge_alpha >= 0:
            raise ValueError(f"ridge_alpha must be >= 0 or None (chosen by cross-validation), got {self.ridge_alpha}")
        if not isinstance(self.n_threads, int) or self.n_threads < 1:
            raise ValueError(f"n_threads must be an integer >= 1, got {self.n_threads!r}")
        if self.max_iter < 1 or self.max_depth < 1:
            raise ValueError(f"max_iter and max_depth must be >= 1, got {self.max_iter}, {self.max_depth}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")

    def to_dict(self) -> dict:
        return {**asdict(self), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> PredictorConfig:
        return cls(**d)


def check_lengths(lengths, name: str = "lengths") -> np.ndarray:
    """``lengths`` as a float array; ValueError for negatives, non-finite values or an empty array."""
    arr = np.asarray(lengths, dtype=float).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:3].tolist()}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 tokens, got {arr[arr < 0][:3].tolist()}")
    return arr


# ---------------------------------------------------------------- the regressors
@dataclass(frozen=True)
class Regressor:
    """A named regressor: how to build it from a config and what one prediction costs."""

    build: Callable  # (PredictorConfig) -> an unfitted scikit-learn estimator, fitted on log(1 + length)
    flops: Callable  # (fitted estimator, PredictorConfig, n_features) -> {"model_flops": float, ...extras}


def register_regressor(name: str, *, flops: Callable):
    """A decorator that registers a build function as regressor ``name`` in :data:`REGRESSORS`.

    The decorated function, ``build(config: PredictorConfig) -> estimator``, returns an unfitted
    scikit-learn regressor (it is fitted on ``log(1 + length)``); it is returned unchanged. Its fitted
    estimator must be saveable by skops (add any type outside skops' trusted set to :data:`TRUSTED_TYPES`).

    Args:
        name: The name ``PredictorConfig(regressor=name)`` and ``ptd train-predictor --regressor`` use.
        flops: ``flops(estimator, config, n_features) -> dict``: the analytic per-query cost of one
            prediction, ``{"model_flops": float}`` plus any extra counts (see :meth:`LengthPredictor.model_flops`).

    Returns:
        The decorator.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def add(build: Callable) -> Callable:
        REGRESSORS.register(name)(Regressor(build, flops))
        return build

    return add


def _linear_flops(model, config: PredictorConfig, n_features: int) -> dict:
    """A dot product, one multiply-add per feature (the standardisation folds into the weights), + 1 for expm1."""
    return {"model_flops": 2.0 * n_features + 1.0}


def _tree_flops(model, config: PredictorConfig, n_features: int) -> dict:
    """One comparison per level on each tree's path (at most its depth) and one addition per tree."""
    trees = getattr(model, "_predictors", None)  # private attribute: fall back to the config bound
    if trees is not None:
        depths = [t.get_max_depth() for it in trees for t in it]
    else:
        depths = [config.max_depth] * int(model.n_iter_)
    return {"model_flops": float(sum(depths) + len(depths)), "n_trees": len(depths)}


@register_regressor("ridge_log", flops=_linear_flops)
def _ridge_log(cfg: PredictorConfig):
    """Ridge on standardised features; penalty by leave-one-out CV over :data:`RIDGE_ALPHAS` unless fixed."""
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ridge = RidgeCV(alphas=RIDGE_ALPHAS) if cfg.ridge_alpha is None else Ridge(alpha=cfg.ridge_alpha)
    return make_pipeline(StandardScaler(), ridge)


def _boosting(cfg: PredictorConfig, **loss):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        **loss,
        max_iter=cfg.max_iter,
        max_depth=cfg.max_depth,
        learning_rate=cfg.learning_rate,
        random_state=cfg.seed,
    )


@register_regressor("gbm_quantile", flops=_tree_flops)
def _gbm_quantile(cfg: PredictorConfig):
    """Histogram gradient boosting with the pinball loss at ``cfg.quantile``."""
    return _boosting(cfg, loss="quantile", quantile=cfg.quantile)


@register_regressor("gbm_log", flops=_tree_flops)
def _gbm_log(cfg: PredictorConfig):
    """Histogram gradient boosting with squared error."""
    return _boosting(cfg)


def _prompts_and_ids(items: Sequence, query_ids) -> tuple[list[str], list[Hashable]]:
    """Prompt texts and ids from a list of ``Query``-like objects (``.prompt``, ``.qid``) or strings."""
    prompts = [it if isinstance(it, str) else it.prompt for it in items]
    if query_ids is None:
        query_ids = [i if isinstance(it, str) else getattr(it, "qid", i) for i, it in enumerate(items)]
    return prompts, list(query_ids)


class LengthPredictor:
    """Features -> length. ``fit``/``predict`` work on feature matrices; ``*_prompts`` on prompts or Queries."""

    def __init__(self, config: PredictorConfig = PredictorConfig()):
        self.config = config
        self.extractor = FeatureExtractor(config.features)
        self.model = None  # the fitted scikit-learn estimator
        self.n_features: int | None = None
        self.metrics: dict = {}  # held-out metrics, filled by whoever evaluates the predictor

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def _build(self):
        return REGRESSORS.lookup(self.config.regressor).build(self.config)

    def fit(self, features, lengths) -> LengthPredictor:
        """Fit on a (N, d) feature matrix and N own lengths (tokens, >= 0)."""
        X = self._check_features(features, fitting=True)
        y = check_lengths(lengths)
        if len(y) != len(X):
            raise ValueError(f"got {len(X)} feature rows but {len(y)} lengths")
        model = self._build()
        with threadpool_limits(self.config.n_threads):
            model.fit(X, np.log1p(y))
        self.model, self.n_features = model, X.shape[1]
        return self

    def predict(self, features) -> np.ndarray:
        """Predicted lengths (floats >= 0) for a (N, d) feature matrix."""
        self._check_fitted()
        X = self._check_features(features)
        with threadpool_limits(self.config.n_threads):
            log_len = self.model.predict(X)
        return np.clip(np.expm1(log_len), 0.0, None)

    # ------------------------------------------------------------------ prompts
    def featurize(self, items: Sequence, lm=None, callbacks=(), query_ids=None) -> np.ndarray:
        """Feature matrix of prompts (strings or Queries); the hidden group's pass is reported to callbacks."""
        self._check_fitted()
        prompts, ids = _prompts_and_ids(items, query_ids)
        return self.extractor.transform(prompts, lm, callbacks, ids)

    def fit_prompts(self, items: Sequence, lengths, lm=None, callbacks=(), query_ids=None) -> LengthPredictor:
        """Learn the keyword vocabulary, compute features (one counted pass if hidden) and fit."""
        prompts, ids = _prompts_and_ids(items, query_ids)
        y = check_lengths(lengths)
        if len(y) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(y)} lengths")
        return self.fit(self.extractor.fit_transform(prompts, lm, callbacks, ids), y)

    def predict_prompts(self, items: Sequence, lm=None, callbacks=(), query_ids=None) -> np.ndarray:
        """Predicted lengths of prompts (strings or Queries), counting the predictor pass."""
        return self.predict(self.featurize(items, lm, callbacks, query_ids))

    # ------------------------------------------------------------------ cost
    def model_flops(self) -> dict:
        """Analytic per-query cost of the scikit-learn model, excluding the prompt pass (counted by the ledger).

        * ridge: ``2·d`` FLOPs (a dot product, one multiply-add per feature; the standardisation folds into
          the weights at deployment) plus 1 for ``expm1``;
        * boosted trees: one comparison per level on each tree's path, bounded by the tree's depth, and one
          addition per tree: ``sum(depth) + n_trees``. Comparisons are counted as FLOPs (an upper bound).
        * text statistics: string operations, roughly one per word per statistic; they are
          ``text_ops_per_word`` × the prompt's word count, reported separately (they are not FLOPs).
        """
        self._check_fitted()
        ex = self.extractor
        per_word = len(TEXT_STATS) + len(ex.keywords) + 1 if ex.is_fitted and "text" in ex.feature_set.groups else 0
        cost = REGRESSORS.lookup(self.config.regressor).flops(self.model, self.config, self.n_features)
        extras = {k: v for k, v in cost.items() if k != "model_flops"}  # e.g. n_trees
        return {"model_flops": cost["model_flops"], "text_ops_per_word": float(per_word), **extras}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, metrics: dict | None = None) -> Path:
        """Save the predictor without pickle.

        Writes ``predictor.skops`` (the estimator), ``predictor.json`` (config, feature vocabulary, metrics) and
        ``metrics.json`` (config, features, cost, metrics) into ``directory``.

        Args:
            directory: The folder to write into (created if missing).
            metrics: Metrics to store beside the predictor.

        Returns:
            ``directory`` as a Path.
        """
        import skops.io

        self._check_fitted()
        if metrics is not None:
            self.metrics = dict(metrics)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        skops.io.dump(self.model, out / MODEL_FILE)
        ex = self.extractor
        state = {
            "format": _FORMAT,
            "config": self.config.to_dict(),
            "n_features": self.n_features,
            "extractor": {
                "keywords": ex.keywords,
                "model_id": ex.model_id,
                "hidden_dim": ex.hidden_dim,
                "generic": ex.generic.state() if ex.generic is not None else None,
            },
            "metrics": self.metrics,
        }
        (out / STATE_FILE).write_text(json.dumps(state, indent=2, default=float) + "\n")
        summary = {
            "config": self.config.to_dict(),
            "n_features": self.n_features,
            "hidden_model_id": self.extractor.model_id,
            "cost": self.model_flops(),
            "metrics": self.metrics,
        }
        (out / METRICS_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> LengthPredictor:
        """A predictor saved by :meth:`save`, read without unpickling anything.

        Raises FileNotFoundError if a file is absent; ValueError if a file is unreadable, of another format,
        or names a type outside skops' trusted set and :data:`TRUSTED_TYPES` (such a file is not loaded).
        """
        import skops.io

        folder = Path(directory)
        model_path, state_path = folder / MODEL_FILE, folder / STATE_FILE
        for path in (state_path, model_path):
            if not path.exists():
                legacy = (
                    " (a predictor.joblib pickle is no longer read: train it again)"
                    if (folder / "predictor.joblib").exists()
                    else ""
                )
                raise FileNotFoundError(f"no saved predictor at {path}{legacy}")
        try:
            state = json.loads(state_path.read_text())
            untrusted = skops.io.get_untrusted_types(file=model_path)
        except Exception as e:  # a cut or foreign file: JSON, zip or schema errors
            raise ValueError(f"cannot read predictor {folder}: {type(e).__name__}: {e}") from e
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{state_path} is not a saved LengthPredictor (format {_FORMAT})")
        refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if refused:
            raise ValueError(
                f"{model_path} holds types a length predictor never has: {', '.join(refused)}; it is not loaded"
            )
        try:
            model = skops.io.load(model_path, trusted=list(untrusted))
        except Exception as e:
            raise ValueError(f"cannot read predictor {model_path}: {type(e).__name__}: {e}") from e
        obj = cls(PredictorConfig.from_dict(state["config"]))
        ex = state["extractor"]
        obj.extractor.keywords, obj.extractor.model_id, obj.extractor.hidden_dim = (
            ex["keywords"],
            ex["model_id"],
            ex["hidden_dim"],
        )
        if ex.get("generic") is not None:  # the "generic" group's vocabularies and IDF weights (plain JSON)
            from ptdlib.predictor.generic import GenericTextFeatures

            obj.extractor.generic = GenericTextFeatures.from_state(ex["generic"])
        obj.model, obj.n_features, obj.metrics = model, state["n_features"], state.get("metrics", {})
        return obj

    # ------------------------------------------------------------------ checks
    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError(
                "untrained predictor: call fit(...) or fit_prompts(...) before predicting, or LengthPredictor.load(dir)"
            )

    def _check_features(self, features, fitting: bool = False) -> np.ndarray:
        X = np.asarray(features, dtype=float)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (N, d) matrix, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("features must be finite")
        if not fitting and X.shape[1] != self.n_features:
            raise ValueError(f"predictor was fitted on {self.n_features} features, got {X.shape[1]}")
        return X


def predictor_cost_report(predictor_flops, baseline_flops, strategy_flops) -> dict:
    """The predictor's cost as a fraction of the generation FLOPs it saves (per-query arrays, summed).

    ``predictor_flops``: per query, the predictor's prompt pass (from the ledger, kind ``"predictor"``)
    plus :meth:`LengthPredictor.model_flops`; ``baseline_flops``: per query, generation FLOPs of the
    baseline (e.g. the fixed maximum canvas); ``strategy_flops``: per query, generation FLOPs with the
    predicted canvas, re-runs included, predictor excluded. ``fraction`` is ``inf`` when nothing is saved.
    """
    p, b, s = (np.asarray(x, dtype=float).reshape(-1) for x in (predictor_flops, baseline_flops, strategy_flops))
    if not (len(p) == len(b) == len(s)) or len(p) == 0:
        raise ValueError(f"need equally long non-empty per-query arrays, got {len(p)}, {len(b)}, {len(s)}")
    for name, arr in (("predictor_flops", p), ("baseline_flops", b), ("strategy_flops", s)):
        if np.any(arr < 0) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite and >= 0")
    saved = float(b.sum() - s.sum())
    cost = float(p.sum())
    return {
        "n": len(p),
        "predictor_flops": cost,
        "saved_flops": saved,
        "fraction": cost / saved if saved > 0 else float("inf"),
    }
