"""The predictor's generic text features (TF-IDF n-grams + numeric statistics): learnt from data, saved as data."""

import numpy as np
import pytest

from ptdlib.predictor import FeatureSet, LengthPredictor, PredictorConfig
from ptdlib.predictor.generic import GENERIC_STATS, GenericTextFeatures, generic_statistics
from ptdlib.tasks import make_split


def _generic_predictor():
    return LengthPredictor(PredictorConfig(features=FeatureSet(groups=("generic",))))


def test_generic_features_learn_answer_length_from_prompts_far_better_than_the_mean():
    train, test = make_split("train", 500), make_split("test", 200)
    y_train = np.array([q.answer_length for q in train])
    y_test = np.array([q.answer_length for q in test])
    pred = _generic_predictor().fit_prompts(train, y_train).predict_prompts(test)
    mae = np.abs(pred - y_test).mean()
    baseline = np.abs(np.median(y_train) - y_test).mean()
    assert mae < 0.6 * baseline


def test_saved_generic_predictor_predicts_the_same_without_refitting(tmp_path):
    train = make_split("train", 120)
    predictor = _generic_predictor().fit_prompts(train, [q.answer_length for q in train])
    prompts = ["Natalia sold 48 clips in April and half as many in May. How many in all?", "count from 3 to 9"]
    loaded = LengthPredictor.load(predictor.save(tmp_path / "p"))
    assert np.allclose(loaded.predict_prompts(prompts), predictor.predict_prompts(prompts))


def test_generic_statistics_count_what_any_prompt_has():
    stats = dict(zip(GENERIC_STATS, generic_statistics("Pay $1,200 in 3 parts.\n- first\n- second\ndef f(x):")))
    assert stats["n_lines"] == 4 and stats["n_numbers"] == 2 and stats["n_list_lines"] == 2
    assert stats["n_code_lines"] == 1 and stats["log1p_num_max"] == pytest.approx(np.log1p(1200))


def test_unfitted_generic_features_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="not fitted"):
        GenericTextFeatures().transform(["x"])
    with pytest.raises(ValueError, match="max_word_features must be a positive integer, got 0"):
        GenericTextFeatures(max_word_features=0)
