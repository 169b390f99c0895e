"""The AdaRLP length predictor: features, regressors, persistence, cost, and the train-predictor path.

Labels here are synthetic (the reference answer length, or made-up arrays); the sampler is never used.
"""

import json
import sys
import types

import numpy as np
import pytest
import torch

from ptdlib.cli.train_predictor import main
from ptdlib.predictor import (
    FeatureExtractor,
    FeatureSet,
    LengthPredictor,
    PredictorConfig,
    predictor_cost_report,
    prompt_representation,
)
from ptdlib.predictor.features import TEXT_STATS, text_statistics
from ptdlib.predictor.regressors import RIDGE_ALPHAS
from ptdlib.predictor.training import fit_and_evaluate, length_metrics, load_calibration, save_run
from ptdlib.tasks import make_split

TEXT_ONLY = PredictorConfig(features=FeatureSet(groups=("text",)))


class Recorder:
    def __init__(self):
        self.events = []

    def on_forward(self, event):
        self.events.append(event)


def _stat(prompt, name):
    return text_statistics(prompt)[TEXT_STATS.index(name)]


@pytest.fixture(scope="module")
def splits():
    return make_split("train", 300), make_split("calib", 80)


# ---------------------------------------------------------------- features
def test_text_statistics_read_numbers_lists_spans_and_repeats():
    assert _stat("count from 5 to 17", "from_to_span") == 12
    assert _stat("repeat fig 7 times", "times_n") == 7
    p = "sort : 3 9 1"
    assert [
        _stat(p, k)
        for k in ("n_words", "n_numbers", "num_max", "num_min", "num_sum", "num_range", "num_last", "n_list_items")
    ] == [5, 3, 9, 1, 13, 8, 1, 3]
    assert _stat("reverse: cat dog", "n_list_items") == 2  # colon attached to the word
    assert _stat("spell banana", "n_numbers") == 0 and _stat("spell banana", "num_max") == 0


def test_keyword_bag_learns_vocabulary_and_pools_unseen_words():
    ex = FeatureExtractor(FeatureSet(groups=("text",), min_keyword_count=1)).fit(["count from 1 to 3", "sort : 4 2"])
    assert ex.keywords == ["count", "sort"]
    X = ex.transform(["sort : 1", "collatz 7"])
    bag = X[:, len(TEXT_STATS) :]
    assert ex.feature_names[len(TEXT_STATS) :] == ["kw=count", "kw=sort", "kw=<other>"]
    assert bag.tolist() == [[0, 1, 0], [0, 0, 1]]


def test_feature_set_round_trips_and_rejects_unknown_groups():
    fs = FeatureSet(groups=("hidden",), n_keywords=2)
    assert FeatureSet.from_dict(json.loads(json.dumps(fs.to_dict()))) == fs
    cfg = PredictorConfig(regressor="gbm_quantile", quantile=0.8, features=fs)
    assert PredictorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(
        ValueError,
        match=r"feature groups must be a non-empty subset of \('text', 'hidden'.*\), got \('text', 'logits'\)",
    ):
        FeatureSet(groups=("text", "logits"))
    with pytest.raises(ValueError, match="unknown regressor 'lasso'; choose from ridge_log"):
        PredictorConfig(regressor="lasso")


def test_hidden_features_are_one_counted_predictor_pass_per_batch(tiny_lm):
    rec = Recorder()
    prompts = ["count from 1 to 9", "spell banana", "sort : 5 3 8 1"]
    H = prompt_representation(tiny_lm, prompts, [rec], query_ids=["a", "b", "c"], batch_size=2)
    d = tiny_lm.network.config.d_model
    assert H.shape == (3, 2 * d)
    assert [e.kind for e in rec.events] == ["predictor", "predictor"]
    assert sorted(q for e in rec.events for q in e.query_ids) == ["a", "b", "c"]
    widths = {len(tiny_lm.encode_prompt(p)) for p in prompts}
    assert all(e.seq_len in widths for e in rec.events)  # each pass is as wide as its longest prompt


def test_hidden_features_do_not_depend_on_padding(tiny_lm):
    prompts = ["spell banana", "reverse : cat dog sun moon tree rock fish"]
    together = prompt_representation(tiny_lm, prompts, batch_size=2)
    alone = prompt_representation(tiny_lm, prompts[:1], batch_size=1)
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)


def test_hidden_features_need_the_same_model(tiny_lm, tokenizer):
    ex = FeatureExtractor(FeatureSet(groups=("hidden",)))
    ex.fit_transform(["spell banana"], tiny_lm)
    with pytest.raises(ValueError, match="needs the D-LLM"):
        ex.transform(["spell banana"])
    other = types.SimpleNamespace(**{k: getattr(tiny_lm, k) for k in ("pad_id", "encode_prompt")}, model_id="other")
    with pytest.raises(ValueError, match="come from model 'tiny-test', got model 'other'"):
        ex.transform(["spell banana"], other)


# ---------------------------------------------------------------- regressors
@pytest.mark.parametrize("regressor", ["ridge_log", "gbm_quantile", "gbm_log"])
def test_text_features_predict_lengths_that_follow_the_prompt(regressor):
    train = [q for q in make_split("train", 1200) if q.family in ("count", "repeat", "reverse")]
    calib = [q for q in make_split("calib", 300) if q.family in ("count", "repeat", "reverse")]
    cfg = PredictorConfig(regressor=regressor, features=FeatureSet(groups=("text",)))
    pred = LengthPredictor(cfg).fit_prompts(train, [q.answer_length for q in train]).predict_prompts(calib)
    m = length_metrics(pred, [q.answer_length for q in calib])
    assert m["spearman"] > 0.95 and m["mae"] < 4.0, m


def test_untrained_predictor_raises_a_clear_error():
    with pytest.raises(ValueError, match="untrained predictor"):
        LengthPredictor().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="untrained predictor"):
        LengthPredictor(TEXT_ONLY).predict_prompts(["spell banana"])
    with pytest.raises(ValueError, match="untrained predictor"):
        LengthPredictor().model_flops()


def test_fit_rejects_negative_lengths_and_predict_rejects_other_widths():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=r"lengths must be >= 0 tokens, got \[-1.0\]"):
        LengthPredictor().fit(X, [-1] + [5] * 19)
    p = LengthPredictor().fit(X, np.arange(20))
    with pytest.raises(ValueError, match="fitted on 3 features, got 4"):
        p.predict(np.zeros((1, 4)))
    assert np.all(p.predict(X) >= 0)


def test_save_load_round_trip_predicts_identically(tmp_path, tiny_lm, splits):
    train, calib = splits
    cfg = PredictorConfig(
        regressor="gbm_quantile", quantile=0.7, max_iter=20, features=FeatureSet(groups=("text", "hidden"))
    )
    p = LengthPredictor(cfg).fit_prompts(train, [q.answer_length for q in train], tiny_lm)
    p.save(tmp_path / "pred", metrics={"calib": {"mae": 1.5}})
    q = LengthPredictor.load(tmp_path / "pred")
    assert q.config == cfg and q.metrics == {"calib": {"mae": 1.5}}
    np.testing.assert_array_equal(q.predict_prompts(calib, tiny_lm), p.predict_prompts(calib, tiny_lm))
    saved = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert saved["config"]["regressor"] == "gbm_quantile" and saved["hidden_model_id"] == "tiny-test"
    with pytest.raises(FileNotFoundError, match="no saved predictor"):
        LengthPredictor.load(tmp_path / "missing")


# ---------------------------------------------------------------- cost
def test_model_flops_are_two_per_feature_for_ridge_and_bounded_by_depth_for_trees():
    X = np.random.default_rng(0).normal(size=(200, 7))
    y = np.exp(X[:, 0]) * 10
    assert LengthPredictor().fit(X, y).model_flops()["model_flops"] == 2 * 7 + 1
    cost = LengthPredictor(PredictorConfig(regressor="gbm_log", max_iter=30, max_depth=3)).fit(X, y).model_flops()
    assert cost["n_trees"] == 30 and 30 < cost["model_flops"] <= 30 * 3 + 30


def test_cost_report_divides_predictor_flops_by_flops_saved():
    r = predictor_cost_report([1, 1, 2], [100, 100, 100], [50, 60, 90])
    assert r == {"n": 3, "predictor_flops": 4.0, "saved_flops": 100.0, "fraction": 0.04}
    assert predictor_cost_report([1], [10], [10])["fraction"] == float("inf")  # nothing saved
    with pytest.raises(ValueError, match="equally long"):
        predictor_cost_report([1], [10, 10], [5, 5])


# ---------------------------------------------------------------- train-predictor
def test_fit_and_evaluate_saves_predictor_metrics_and_calibration(tmp_path, tiny_lm, splits):
    train, calib = splits
    y_train, y_calib = [q.answer_length for q in train], [q.answer_length for q in calib]
    rec = Recorder()
    with_states = PredictorConfig(features=FeatureSet(groups=("text", "hidden")))
    p, metrics, calib_pred = fit_and_evaluate(tiny_lm, train, y_train, calib, y_calib, with_states, [rec])
    assert {"mae", "spearman", "under_rate"} <= set(metrics["calib"]) and metrics["calib"]["n"] == len(calib)
    assert metrics["predictor_positions_per_query"] > 0 and {e.kind for e in rec.events} == {"predictor"}
    save_run(p, metrics, tmp_path, calib, calib_pred, y_calib)
    z = load_calibration(tmp_path)
    assert z["qid"].tolist() == [q.qid for q in calib] and z["length"].tolist() == y_calib
    np.testing.assert_allclose(z["prediction"], calib_pred)
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["calib"]["n"] == len(calib)
    with pytest.raises(ValueError, match="shared query ids"):
        fit_and_evaluate(tiny_lm, train, y_train, train[:5], y_train[:5], TEXT_ONLY)


def test_train_predictor_command_runs_with_stand_in_labels(tmp_path, tiny_lm, monkeypatch, capsys):
    labels = types.ModuleType("ptdlib.experiment.labels")
    labels.own_lengths = lambda lm, queries, canvas=128, seed=0: np.array([q.answer_length for q in queries])
    monkeypatch.setitem(sys.modules, "ptdlib.experiment.labels", labels)
    monkeypatch.setattr("ptdlib.models.embedded.load_embedded", lambda path=None: tiny_lm)
    torch.manual_seed(0)
    rc = main(["--n-train", "120", "--n-calib", "40", "--features", "text", "--out", str(tmp_path)])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["out"] == str(tmp_path) and 0 <= last["calib_under_rate"] <= 1
    assert LengthPredictor.load(tmp_path).config.features.groups == ("text",)


def test_default_ridge_chooses_its_penalty_by_cross_validation():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(60, 4))
    y = np.expm1(2.0 + X[:, 0])  # log1p(y) is linear in the first feature: CV should pick a small penalty
    auto = LengthPredictor().fit(X, y)
    assert auto.model[-1].alpha_ in RIDGE_ALPHAS and auto.model[-1].alpha_ < 1.0
    fixed = LengthPredictor(PredictorConfig(ridge_alpha=1e3)).fit(X, y)
    assert np.abs(auto.predict(X) - y).mean() < np.abs(fixed.predict(X) - y).mean()
    with pytest.raises(ValueError, match="ridge_alpha must be >= 0 or None.*-1"):
        PredictorConfig(ridge_alpha=-1)
