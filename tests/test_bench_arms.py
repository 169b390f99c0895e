"""Arms model/policy/cache of ``ptd bench strategies --models/--caches``: names, ratios and the paired test."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ptdlib.bench.arms import policy_name, summarise_arms
from ptdlib.experiment.labels import _cache_path
from ptdlib.sampling.sampler import SamplerConfig


@pytest.mark.parametrize(
    "strategy,params,name",
    [
        ("growth", {"block": 32, "window": "growing"}, "growth-window"),
        ("growth", {"block": 32, "window": "full"}, "growth-full"),
        ("fixed", {"L": 128}, "fixed-128"),
        ("smartcrop", {"tau": 0.9, "rule": "running_max", "pad": 0}, "smartcrop-0.9"),
        ("predicted", {"margin": "conformal", "alpha": 0.1}, "predicted-conformal-0.1"),
        ("oracle", {}, "oracle"),
    ],
)
def test_policy_names_say_which_variant_ran(strategy, params, name):
    assert policy_name(strategy, params) == name


def _rows(model, cache, strategy, params, flops, scores, family="count"):
    return pd.DataFrame(
        {
            "qid": [f"q{i}" for i in range(len(scores))],
            "family": family,
            "strategy": strategy,
            "params": json.dumps(params),
            "flops_total": flops,
            "truncated": False,
            "truncated_final": False,
            "score": scores,
            "wall_s": 0.1,
            "forward_passes": 4,
            "model": model,
            "cache": cache,
        }
    )


def test_arm_ratios_use_the_models_uncached_oracle_and_the_paired_test_uses_its_uncached_fixed_canvas():
    ones, n = [1.0] * 20, 20
    rows = pd.concat(
        [
            _rows("m", "nocache", "fixed", {"L": 128}, 1000.0, ones),
            _rows("m", "nocache", "oracle", {}, 100.0, ones),
            _rows("m", "dual", "fixed", {"L": 128}, 250.0, [0.0] * 10 + [1.0] * 10),  # 10 answers lost
            _rows("m", "dual", "growth", {"block": 32, "window": "growing"}, 80.0, ones),
        ],
        ignore_index=True,
    )
    table = summarise_arms(rows)
    assert list(table.index) == ["m/fixed-128/nocache", "m/oracle/nocache", "m/fixed-128/dual", "m/growth-window/dual"]
    assert table.loc["m/fixed-128/dual", "flops_vs_oracle"] == pytest.approx(2.5)
    assert table.loc["m/growth-window/dual", "flops_vs_oracle"] == pytest.approx(0.8)
    assert table.loc["m/fixed-128/dual", "flops_vs_fixed"] == pytest.approx(0.25)
    lost = table.loc["m/fixed-128/dual"]
    assert lost["delta_vs_fixed"] == pytest.approx(-0.5) and lost["test"] == "mcnemar_exact"
    assert lost["p_value"] == pytest.approx(2 * 0.5**10)  # 10 discordant pairs, all one way
    assert table.loc["m/fixed-128/nocache", "test"] == "reference" and np.isnan(
        table.loc["m/fixed-128/nocache", "p_holm"]
    )
    assert len(table) == 4 and (table["n"] == n).all()


def test_animals_validity_and_follows_exact_match_are_reported_per_arm():
    rows = pd.concat(
        [
            _rows("m", "nocache", "fixed", {"L": 128}, 10.0, [1.0, 0.0], family="count"),
            _rows("m", "nocache", "oracle", {}, 5.0, [1.0, 1.0], family="count"),
        ],
        ignore_index=True,
    )
    animals = _rows("m", "nocache", "fixed", {"L": 128}, 10.0, [1.0, 1.0, 0.0], family="animals")
    animals["qid"] = ["a0", "a1", "a2"]
    oracle_animals = _rows("m", "nocache", "oracle", {}, 5.0, [0.0, 0.0, 0.0], family="animals")
    oracle_animals["qid"] = ["a0", "a1", "a2"]
    table = summarise_arms(pd.concat([rows, animals, oracle_animals], ignore_index=True))
    assert table.loc["m/fixed-128/nocache", "animals_validity"] == pytest.approx(2 / 3)
    assert table.loc["m/fixed-128/nocache", "follows_exact_match"] == pytest.approx(0.5)
    assert table.loc["m/oracle/nocache", "animals_validity"] == 0.0


def test_labels_are_shared_by_every_window_and_cache_mode(tiny_lm):
    base = SamplerConfig()
    paths = {
        _cache_path(tiny_lm, 128, replace(base, window=w, cache=c), 0)
        for w in ("full", "growing")
        for c in ("none", "prefix", "dual")
    }
    assert len(paths) == 1
    assert _cache_path(tiny_lm, 128, replace(base, block_length=16), 0) not in paths
