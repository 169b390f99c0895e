"""The analyses behind notebooks 1-3 and 7: estimator scores, probe estimators, the tour, predictor cost, deployment."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ptdlib.analysis.deployment import (
    MeasuredArm,
    TrafficProfile,
    carried_plans,
    cost_table,
    draw_workload,
    growth_plans,
    measured_arms,
    strategy_plans,
    whole_blocks,
)
from ptdlib.analysis.estimates import ALL_GROUPS, metrics_table, task_groups
from ptdlib.analysis.length_signal import (
    ended_curve,
    estimator_estimates,
    first_crossing,
    length_bins,
    length_order,
    mean_curves,
)
from ptdlib.analysis.predictor_eval import feature_ablation, generation_flops, heuristic_estimates, predictor_cost
from ptdlib.analysis.tour import (
    commit_step_matrix,
    committed_tokens,
    fill_matrix,
    flops_frame,
    pick_query,
    token_strings,
    trace_strategies,
)
from ptdlib.canvas import CanvasLimits, FixedCanvas, SmartCrop, make_policy, round_canvas
from ptdlib.canvas.policies import eos_probabilities
from ptdlib.cost.shapes import preset
from ptdlib.cost.workload import StrategyParams, canvas_plan, plan_strategy
from ptdlib.sampling.events import StepEvent, TraceRecorder
from ptdlib.sampling.sampler import SamplerConfig
from ptdlib.tasks import make_split

LIMITS = CanvasLimits(max_canvas=64, round_to=32)
SAMPLER = SamplerConfig(block_length=32)


class LinearCounter:
    """A FLOP source where a forward pass over T tokens costs T FLOPs (hand-checkable totals)."""

    def forward_flops(self, seq_len, batch=1):
        return batch * seq_len


@pytest.fixture(scope="module")
def queries():
    return make_split("test", 6, seed=3)


# ---------------------------------------------------------------- estimates
def test_metrics_table_scores_every_group_and_the_pool_against_hand_computed_values():
    est = {"e": np.array([1, 2, 3, 4])}
    table = metrics_table(est, [1, 3, 3, 6], ["a", "a", "b", "b"], meta={"e": {"tau": 0.9}})
    pooled = table[table["group"] == ALL_GROUPS].iloc[0]
    assert pooled["mae"] == pytest.approx(0.75) and pooled["under_rate"] == pytest.approx(0.5)
    assert pooled["tau"] == 0.9
    a = table[table["group"] == "a"].iloc[0]
    assert a["mae"] == pytest.approx(0.5) and a["n"] == 2
    assert sorted(table["group"]) == sorted([ALL_GROUPS, "a", "b"])


def test_metrics_table_names_an_estimator_of_the_wrong_length():
    with pytest.raises(ValueError, match="estimator 'short' gave 2 estimates for 3 queries"):
        metrics_table({"short": [1, 2]}, [1, 2, 3])


def test_task_groups_follow_the_family_registry():
    qs = make_split("test", 30, seed=0)
    groups = task_groups(qs)
    assert set(groups) <= {"follows", "hard", "random"}
    assert all(g == "random" for q, g in zip(qs, groups) if q.family == "animals")


# ---------------------------------------------------------------- length signal
def test_first_crossing_returns_the_first_position_at_tau_or_the_canvas_length():
    curve = np.array([[0.1, 0.5, 0.9], [0.1, 0.2, 0.3]])
    assert first_crossing(curve, 0.5).tolist() == [1, 3]
    assert first_crossing(curve, 0.9, default=99).tolist() == [2, 99]
    with pytest.raises(ValueError, match="tau must be in"):
        first_crossing(curve, 0.0)


def test_probe_estimators_agree_with_smartcrop_estimate(tiny_lm, queries):
    p = eos_probabilities(tiny_lm, queries, LIMITS.max_canvas)
    # thresholds inside the tiny random model's range so that some queries cross and some do not
    for rule, tau in (
        ("product", float(np.median(ended_curve(p, "product")))),
        ("running_max", float(np.median(ended_curve(p, "running_max")))),
    ):
        mine = first_crossing(ended_curve(p, rule), tau)
        theirs = SmartCrop(tau=tau, rule=rule).estimate(tiny_lm, queries, LIMITS)
        assert mine.tolist() == theirs.tolist()
        assert (mine < LIMITS.max_canvas).any()


def test_plain_rule_counts_positions_below_tau_and_grid_names_every_estimator():
    p = np.array([[0.3, 0.3, 0.6, 0.1], [0.0, 0.55, 0.0, 0.0]])
    est, meta = estimator_estimates(p, rules=("product", "running_max"), taus=(0.5,), plain_tau=0.5)
    assert est["plain τ=0.5"].tolist() == [3, 3]  # order ignored, unlike a first crossing
    assert est["product τ=0.5"].tolist() == [1, 1]  # 1 - 0.7 * 0.7 = 0.51 at position 1
    assert est["running_max τ=0.5"].tolist() == [2, 1]
    assert meta["plain τ=0.5"] == {"rule": "plain", "tau": 0.5} and len(est) == 3
    with pytest.raises(ValueError, match="unknown length rule 'sum'; choose from product, running_max"):
        ended_curve(p, "sum")
    with pytest.raises(ValueError, match="probabilities"):
        ended_curve(p * 3, "product")


def test_mean_curves_average_each_length_bin_and_bins_merge_equal_edges():
    assert length_bins([5, 5, 5]).tolist() == [5, 6]
    edges = length_bins([1, 2, 3, 4], n_bins=2)
    p = np.array([[0.0, 1.0], [0.2, 0.0], [0.4, 0.4], [0.6, 0.2]])
    curves = mean_curves(p, [1, 2, 3, 4], edges, rule="running_max")
    first = curves[curves["bin"] == curves["bin"].iloc[0]]
    assert first["p_eos"].tolist() == pytest.approx([0.1, 0.5]) and first["n"].iloc[0] == 2
    assert first["ended"].tolist() == pytest.approx([0.1, 0.6])  # running max of each row, then the mean
    assert curves["n"].groupby(curves["bin"]).first().sum() == 4
    assert length_order([3, 1, 2]).tolist() == [1, 2, 0]


# ---------------------------------------------------------------- tour
def test_fill_matrix_marks_positions_committed_at_or_before_each_step():
    assert fill_matrix([1, 0, 2]).tolist() == [[False, True, False], [True, True, False], [True, True, True]]
    steps = commit_step_matrix([type("R", (), {"commit_steps": np.array([0, -1, 2])})()], width=4)
    assert np.isnan(steps[0, 1]) and np.isnan(steps[0, 3]) and steps[0, 2] == 2


def test_committed_tokens_keep_the_last_commit_of_each_position():
    rec = TraceRecorder()
    rec.on_step(StepEvent(0, 0, ("q",), ((0, 2),), ((7, 8),)))
    rec.on_step(StepEvent(0, 0, ("q",), ((2,),), ((9,),)))  # a re-run overwrites position 2
    assert committed_tokens(rec, "q", 4) == [7, None, 9, None]


def test_pick_query_finds_the_nth_query_of_a_family():
    first, second = pick_query("test", "count", 0), pick_query("test", "count", 1)
    assert first.family == second.family == "count" and first.qid != second.qid
    assert pick_query("test", "count", 0).qid == first.qid
    with pytest.raises(ValueError, match="unknown task family 'cout'"):
        pick_query("test", "cout")


def test_trace_strategies_commits_every_position_and_counts_the_probe(tiny_lm, queries, counter):
    policies = {"fixed": FixedCanvas(64), "crop": SmartCrop(tau=0.5)}
    runs = trace_strategies(tiny_lm, queries[0], policies, counter, limits=LIMITS, sampler=SAMPLER)
    fixed, crop = runs
    assert len(fixed.commit_steps) == 64 and fixed.n_steps == 64  # S = L: one step per position
    # a random model may "commit" the mask token and fill that position again later, so a few stay unrecorded
    assert (fixed.commit_steps >= 0).mean() > 0.8
    assert [t is None for t in fixed.tokens] == (fixed.commit_steps < 0).tolist()
    assert len(token_strings(tiny_lm, fixed.tokens)) == 64
    table = flops_frame(runs)
    assert table.loc[0, "relative_flops"] == 1.0
    assert table.loc[1, "flops_probe"] > 0 and table.loc[0, "flops_probe"] == 0
    assert table.loc[0, "flops_total"] == 64 * counter.forward_flops(fixed.row["prompt_len"] + 64)
    with pytest.raises(ValueError, match="reference 'nope' is not one of the runs"):
        flops_frame(runs, reference="nope")


# ---------------------------------------------------------------- predictor evaluation
def test_generation_flops_add_a_rerun_on_the_maximum_when_the_answer_does_not_fit():
    cfg = SamplerConfig(block_length=4)
    flops = generation_flops(LinearCounter(), [2, 2, 2], [4, 4, 8], [3, 4, 7], max_canvas=8, sampler=cfg)
    # 4 steps over 2 + 4 tokens; the second also re-runs 8 steps over 2 + 8; the third already has the maximum
    assert flops.tolist() == [24, 24 + 80, 80]
    guided = SamplerConfig(block_length=4, cfg_scale=1.0)  # two passes per step: conditional and unconditional
    assert generation_flops(LinearCounter(), [2], [4], [3], max_canvas=8, sampler=guided).tolist() == [48]


def test_heuristic_estimates_recover_a_line_in_prompt_length(tiny_lm):
    train, test = make_split("train", 20, seed=4), make_split("test", 5, seed=4)
    lengths = [2 * len(tiny_lm.encode_prompt(q.prompt)) + 1 for q in train]
    want = [2 * len(tiny_lm.encode_prompt(q.prompt)) + 1 for q in test]
    np.testing.assert_allclose(heuristic_estimates(tiny_lm, train, lengths, test), want, atol=1e-6)


def test_feature_ablation_fits_one_predictor_per_feature_set_and_regressor(tiny_lm):
    train, test = make_split("train", 40, seed=5), make_split("test", 10, seed=5)
    y_train, y_test = [q.answer_length for q in train], [q.answer_length for q in test]
    table, preds = feature_ablation(
        tiny_lm, train, y_train, test, y_test, features=(("text",), ("hidden",)), regressors=("ridge_log",)
    )
    assert table["predictor"].tolist() == ["text / ridge_log", "hidden / ridge_log"]
    assert (table["model_flops"] == 2 * table["n_features"] + 1).all()  # ridge: a dot product plus expm1
    assert table.loc[1, "n_features"] == 2 * tiny_lm.network.config.d_model  # mean and last prompt state
    assert all(len(p) == len(test) for p in preds.values()) and table["mae"].notna().all()


def test_predictor_cost_counts_the_prompt_pass_against_the_flops_saved(tiny_lm, counter):
    train, calib, test = (make_split(s, n, seed=6) for s, n in (("train", 30), ("calib", 20), ("test", 8)))
    short = [3] * len(train)  # every own length short: predicted canvases of one block save half the FLOPs
    policy = make_policy("predicted", margin="conformal", alpha=0.2, features="text+hidden").fit(
        tiny_lm, train, short, calib, [3] * len(calib), LIMITS
    )
    cost = predictor_cost(tiny_lm, policy, test, [3] * len(test), counter, limits=LIMITS, sampler=SAMPLER)
    assert cost["canvases"].tolist() == [32] * len(test) and cost["rerun_rate"] == 0
    assert cost["prompt_pass_flops"] > 0 and cost["saved_flops"] > 0
    total = len(test) * (cost["prompt_pass_flops"] + cost["regressor_flops"])
    assert cost["fraction"] == pytest.approx(total / cost["saved_flops"])
    assert cost["saved_flops"] == pytest.approx(len(test) * (cost["baseline_flops"] - cost["strategy_flops"]))


# ---------------------------------------------------------------- deployment
def test_whole_blocks_agrees_with_round_canvas():
    x = [0, 1, 31, 32, 33, 95.5, 500]
    assert whole_blocks(x, 32, 128).tolist() == round_canvas(x, CanvasLimits(128, 32)).tolist()


def test_growth_decodes_blocks_up_to_the_one_holding_eos_over_the_whole_canvas():
    p = StrategyParams(canvas=128, block=32, growth_window="full")
    plans = growth_plans([10, 10, 10], [40, 63, 127], p)
    assert plans.plans == [Counter({138: 64}), Counter({138: 64}), Counter({138: 128})]
    assert plans.truncated.tolist() == [False, False, False] and not plans.reruns.any()


def test_traffic_profile_mix_draws_long_answers_and_caps_them():
    base = TrafficProfile(n_sim=500, response_mean=50, long_response_mean=400, long_fraction=0.0)
    _, short = draw_workload(base, max_response=511)
    _, mixed = draw_workload(TrafficProfile(**{**base.__dict__, "long_fraction": 1.0}), max_response=300)
    assert short.mean() < 80 and mixed.max() <= 300 and mixed.mean() > 250
    with pytest.raises(ValueError, match="long_fraction must be in"):
        TrafficProfile(long_fraction=1.5)


def _rows():
    own = [10, 40, 100, 10]
    return pd.DataFrame(
        {
            "split": ["test"] * 8,
            "strategy": ["predicted"] * 8,
            "params": [json.dumps({"alpha": 0.1})] * 4 + [json.dumps({"alpha": 0.3})] * 4,
            "recovery": ["max"] * 8,
            "own_length": own * 2,
            "chosen_canvas": [32, 64, 128, 64, 32, 32, 64, 32],
            "final_canvas": [32, 64, 128, 64, 32, 128, 128, 32],
            "truncated": [False] * 4 + [False, True, True, False],
            "flops_total": [10] * 4 + [5] * 4,
        }
    )


def test_measured_arms_keep_the_cheapest_cell_and_its_ratio_to_the_oracle():
    arms = measured_arms(_rows(), round_to=32)
    arm = arms["predicted"]
    assert json.loads(arm.params) == {"alpha": 0.3} and arm.recovery == "max"  # the cheaper of the two cells
    assert arm.canvas_ratio.tolist() == [1.0, 0.5, 0.5, 1.0]  # oracle canvases 32, 64, 128, 32
    assert arm.truncated.tolist() == [False, True, True, False] and "smartcrop" not in arms
    assert measured_arms(_rows().assign(split="calib")) == {}


def test_carried_plans_reproduce_the_measured_ratio_and_rerun_the_truncated():
    p = StrategyParams(canvas=512, block=32)
    exact = MeasuredArm("predicted", "{}", np.array([1.0]), np.array([False]))
    plans = carried_plans(exact, [100, 50], [40, 200], p)
    want = [canvas_plan(100, 64) + Counter({100: 1}), canvas_plan(50, 224) + Counter({50: 1})]
    assert plans.plans == want and not plans.reruns.any()
    short = MeasuredArm("smartcrop", "{}", np.array([0.5]), np.array([True]))
    plans = carried_plans(short, [100], [200], p)
    assert plans.plans == [canvas_plan(100, 128) + canvas_plan(100, 512) + Counter({612: 1})]
    assert plans.reruns.tolist() == [True]


def test_cost_table_compares_every_strategy_with_the_fixed_canvas():
    p = StrategyParams(canvas=512)
    prompts, responses = draw_workload(TrafficProfile(n_sim=60), max_response=511)
    plans, sources = strategy_plans(prompts, responses, p)
    assert sources == {
        "fixed": "rule",
        "oracle": "rule",
        "predicted": "synthetic",
        "smartcrop": "synthetic",
        "growth": "rule",
    }
    table = cost_table(
        plans, preset("llada-8b"), ["h100", "a100"], queries_per_day=2e6, n_boot=20, prices={"h100": 2.0}
    )
    h100 = table[table["hardware"] == "h100"].set_index("strategy")
    assert h100.loc["fixed", "saving"] == 0 and h100.loc["oracle", "saving"] > h100.loc["predicted", "saving"] > 0
    assert (h100["price_per_hour"] == 2.0).all()
    assert h100.loc["oracle", "gpus"] == pytest.approx(h100.loc["oracle", "gpu_hours_per_million"] * 2 / 24)
    assert (
        table[table["hardware"] == "a100"]["cost_per_million"].to_numpy() > h100["cost_per_million"].to_numpy()
    ).all()  # slower per dollar at these prices
    with pytest.raises(ValueError, match="must include 'fixed'"):
        strategy_plans(prompts, responses, p, strategies=("oracle",))


def test_carried_plans_recover_as_the_measured_arm_did():
    p = StrategyParams(canvas=512, block=32)
    # oracle canvas 224 (answer 200 + EOS), ratio 0.25: a first canvas of 64, measured truncated
    double = MeasuredArm("predicted", "{}", np.array([0.25]), np.array([True]), recovery="double")
    plans = carried_plans(double, [100], [200], p)
    attempts = [canvas_plan(100, c) for c in (64, 128, 256)]  # doubled until the answer fits
    assert plans.plans == [sum(attempts, Counter()) + Counter({100: 1})]
    assert plans.reruns.tolist() == [True] and plans.truncated.tolist() == [False]
    kept = carried_plans(dataclasses.replace(double, recovery="none"), [100], [200], p)
    assert kept.plans == [canvas_plan(100, 64) + Counter({100: 1})]
    assert kept.reruns.tolist() == [False] and kept.truncated.tolist() == [True]  # the cut answer is kept
    unsaid = carried_plans(dataclasses.replace(double, recovery=None), [100], [200], p)  # a table without recovery
    assert unsaid.plans == [canvas_plan(100, 64) + canvas_plan(100, 512) + Counter({100: 1})]  # re-run at the maximum


def test_carried_and_synthetic_predicted_plans_agree_on_the_predictor_pass_of_an_empty_prompt():
    # the predictor reads the prompt's hidden states: a prompt of no tokens has no pass to run (and a run refuses it)
    p = StrategyParams(canvas=512, block=32, length_error=0.0, margin=0.0)
    exact = MeasuredArm("predicted", "{}", np.array([1.0]), np.array([False]))
    for prompt in (0, 30):
        carried = carried_plans(exact, [prompt], [40], p)
        assert carried.plans == plan_strategy("predicted", np.array([prompt]), np.array([40]), p).plans
    assert carried_plans(exact, [0], [40], p).plans == [canvas_plan(0, 64)]
