"""Result rows -> pairing with the baseline -> the summary table, on small hand-built result tables."""

import json

import numpy as np
import pandas as pd
import pytest

from ptdlib.stats import summary
from ptdlib.stats.summary import Baseline

FAST = dict(n_resamples=199, seed=0)


def _rows(arms: dict, n: int = 60, seeds=(0,), split: str = "test", rng_seed: int = 0) -> pd.DataFrame:
    """Result rows for ``arms``: name -> (params, canvas, score function of (query index, baseline score))."""
    rng = np.random.default_rng(rng_seed)
    base_scores = (rng.random(n) < 0.6).astype(float)
    out = []
    for strategy, (params, canvas, score_fn) in arms.items():
        for q in range(n):
            for seed in seeds:
                flops = float((10 + canvas) * canvas)
                out.append(
                    dict(
                        split=split,
                        family="count",
                        qid=f"q{q}",
                        seed=seed,
                        strategy=strategy,
                        params=json.dumps(params),
                        model_id="fake",
                        prompt_len=10,
                        own_length=20,
                        chosen_canvas=canvas,
                        final_canvas=canvas,
                        truncated=False,
                        reruns=0,
                        forward_passes=canvas,
                        flops_denoise=flops,
                        flops_probe=0.0,
                        flops_predictor=0.0,
                        flops_rerun=0.0,
                        flops_total=flops,
                        wall_s=0.01,
                        response="",
                        score=score_fn(q, base_scores[q]),
                        metric="exact_match",
                    )
                )
    return pd.DataFrame(out)


ARMS = {
    "fixed": ({"L": 128}, 128, lambda q, s: s),
    "oracle": ({}, 32, lambda q, s: s),  # same scores: no difference
    "smartcrop": ({"tau": 0.9}, 64, lambda q, s: 0.0),  # loses every right answer: a clear loss
}


def test_summary_table_has_paper_columns_and_the_baseline_first():
    table = summary.summary_table(_rows(ARMS), correction="holm", **FAST)
    for col in (
        "split",
        "strategy",
        "params",
        "n",
        "avg_len",
        "metric",
        "score",
        "flops_saved_pct",
        "flops_saved_low",
        "flops_saved_high",
        "quality_delta",
        "quality_delta_low",
        "quality_delta_high",
        "test",
        "p_value",
        "p_adjusted",
        "stars",
    ):
        assert col in table.columns
    assert list(table["strategy"]) == ["fixed", "oracle", "smartcrop"]
    base = table.iloc[0]
    assert np.isnan(base["p_value"]) and base["stars"] == "" and base["avg_len"] == 138
    oracle = table.iloc[1]
    assert oracle["flops_saved_pct"] == pytest.approx(100 * (1 - 42 * 32 / (138 * 128)))
    assert oracle["quality_delta"] == 0 and oracle["p_value"] == 1.0 and oracle["test"] == "mcnemar_exact"


def test_stars_follow_corrected_p_values():
    table = summary.summary_table(_rows(ARMS), correction="holm", **FAST).set_index("strategy")
    crop = table.loc["smartcrop"]
    assert crop["p_adjusted"] < 0.001 and crop["stars"] == "***"
    assert crop["quality_delta"] == pytest.approx(-100 * table.loc["fixed", "score"])  # percentage points
    assert table.loc["oracle", "stars"] == ""
    # Holm over two tests: the smaller p-value is doubled.
    assert crop["p_adjusted"] == pytest.approx(min(1.0, 2 * crop["p_value"]))


def test_relative_quality_delta_is_percent_of_the_baseline():
    rows = _rows({"fixed": ARMS["fixed"], "half": ({}, 64, lambda q, s: s * (q % 2))}, n=40)
    table = summary.summary_table(rows, correction="fdr_bh", quality_delta="relative", **FAST)
    base_mean, arm_mean = table["score"]
    assert table.loc[1, "quality_delta"] == pytest.approx(100 * (arm_mean / base_mean - 1))


def test_binary_scores_get_mcnemar_and_newcombes_paired_interval():
    flips = {
        "fixed": ARMS["fixed"],
        "few": ({}, 64, lambda q, s: 1 - s if q % 9 == 0 else s),
        "many": ({}, 32, lambda q, s: 0.0 if q % 2 else s),
    }
    table = summary.summary_table(_rows(flips, n=90), correction="holm", **FAST).set_index("strategy")
    assert table.loc["few", "test"] == table.loc["many", "test"] == "mcnemar_exact"
    assert table.loc["few", "quality_ci"] == table.loc["many", "quality_ci"] == "newcombe_score"
    assert table.loc["few", "quality_delta_low"] < 0 < table.loc["few", "quality_delta_high"]  # flips both ways
    assert table.loc["many", "quality_delta_high"] < 0 and table.loc["many", "p_value"] < 0.05  # a clear loss


def test_continuous_scores_use_the_sign_flip_test():
    rows = _rows({"fixed": ARMS["fixed"], "soft": ({}, 64, lambda q, s: 0.5 * s + 0.25)})
    table = summary.summary_table(rows, correction="holm", **FAST)
    assert table.loc[1, "test"] == "sign_flip" and table.loc[1, "quality_ci"] == "bca"
    table = summary.summary_table(rows, correction="holm", continuous_test="wilcoxon", **FAST)
    assert table.loc[1, "test"] == "wilcoxon"


def test_seeds_of_one_query_are_averaged_so_n_counts_queries():
    table = summary.summary_table(_rows(ARMS, n=30, seeds=(0, 1, 2)), correction="holm", **FAST)
    assert set(table["n"]) == {30}


def test_baseline_params_match_regardless_of_key_order_and_spacing():
    rows = _rows({"fixed": ({"L": 128, "steps": 128}, 128, lambda q, s: s), "oracle": ARMS["oracle"]}, n=20)
    rows.loc[rows["strategy"] == "fixed", "params"] = '{"steps":128,"L":128}'
    table = summary.summary_table(rows, Baseline("fixed", {"L": 128, "steps": 128}), correction="holm", **FAST)
    assert len(table) == 2


def test_mismatched_query_sets_say_how_many_are_missing_on_each_side():
    rows = _rows(ARMS, n=20)
    rows = rows[~((rows["strategy"] == "smartcrop") & rows["qid"].isin(["q1", "q2"]))]  # 2 missing from the arm
    extra = rows[rows["strategy"] == "smartcrop"].iloc[[0]].assign(qid="q99")  # 1 the baseline lacks
    rows = pd.concat([rows, extra])
    with pytest.raises(
        ValueError,
        match=r"smartcrop .*'test': 2 \(qid, seed\) pair\(s\) of the baseline missing "
        r"from the strategy, 1 of the strategy missing from the baseline",
    ):
        summary.summary_table(rows, correction="holm", **FAST)


def test_an_arm_on_a_split_without_baseline_rows_is_a_mismatch():
    rows = pd.concat([_rows(ARMS, n=10), _rows({"oracle": ARMS["oracle"]}, n=10, split="shift_mix")])
    expected = r"oracle \{\} on split 'shift_mix': 0 .*, 10 of the strategy missing from the baseline"
    with pytest.raises(ValueError, match=expected):
        summary.pair_with_baseline(rows)


def test_bad_tables_are_rejected_with_the_problem_named():
    rows = _rows(ARMS, n=10)
    with pytest.raises(ValueError, match="empty"):
        summary.summary_table(rows.iloc[:0], correction="holm")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['flops_total'\]"):
        summary.summary_table(rows.drop(columns="flops_total"), correction="holm")
    with pytest.raises(ValueError, match=r"baseline fixed \{\"L\": 256\} matches no result rows"):
        summary.summary_table(rows, Baseline("fixed", {"L": 256}), correction="holm")
    with pytest.raises(ValueError, match="repeat one"):
        summary.summary_table(pd.concat([rows, rows.iloc[[3]]]), correction="holm")
    with pytest.raises(ValueError, match="unknown correction method 'bonferroni'"):
        summary.summary_table(rows, correction="bonferroni")
    with pytest.raises(ValueError, match=r"column 'score' holds 1 missing or non-finite value\(s\)"):
        summary.summary_table(rows.assign(score=[np.nan] + [1.0] * (len(rows) - 1)), correction="holm")
    with pytest.raises(ValueError, match="params must be a JSON object"):
        summary.summary_table(rows.assign(params="L=128"), correction="holm")


def test_noninferiority_columns_follow_the_margin():
    # Identical binary scores still need enough queries to rule out a 5-point loss (Tango's score test:
    # with 60 queries the Holm-adjusted p is 0.08; with 200, 0.001).
    table = summary.summary_table(_rows(ARMS, n=200), correction="holm", margin=0.05, **FAST).set_index("strategy")
    assert table.loc["oracle", "non_inferior"] is True  # identical scores
    assert table.loc["smartcrop", "non_inferior"] is False  # loses every right answer
    assert table.loc["fixed", "non_inferior"] is None


def test_markdown_and_latex_show_intervals_stars_and_the_correction():
    table = summary.summary_table(_rows(ARMS), correction="fdr_bh", **FAST)
    md = summary.to_markdown(table)
    assert "FLOPs saved % [95% CI]" in md and "***" in md and "Benjamini-Hochberg" in md
    assert "| L=128 " in md and "tau=0.9" in md
    tex = summary.to_latex(table)
    assert tex.startswith(r"\begin{tabular}") and r"quality $\Delta$ pp" in tex and r"exact\_match" in tex
    assert r"FLOPs saved \% [95\% CI]" in tex and "***" in tex
