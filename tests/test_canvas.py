"""Canvas policies, truncation recovery and the strategy evaluation that counts every pass."""

import numpy as np
import pytest

from ptdlib.canvas import (
    CanvasLimits,
    FixedCanvas,
    GrowthCanvas,
    OracleCanvas,
    SmartCrop,
    evaluate_strategy,
    make_policy,
    round_canvas,
)
from ptdlib.canvas.policies import ended_by
from ptdlib.sampling.sampler import SamplerConfig, sample
from ptdlib.tasks import make_split

LIMITS = CanvasLimits(max_canvas=64, round_to=32)
SAMPLER = SamplerConfig(block_length=32)


@pytest.fixture(scope="module")
def queries():
    return make_split("test", 4, seed=1)


def test_round_canvas_rounds_up_to_whole_blocks_and_caps_at_the_maximum():
    assert round_canvas([0, 1, 32, 33, 64, 500], LIMITS).tolist() == [32, 32, 32, 64, 64, 64]


def test_running_max_rule_is_monotone_and_product_rule_accumulates():
    p = np.array([[0.2, 0.5, 0.3, 0.9]])
    assert ended_by(p, "running_max").tolist() == [[0.2, 0.5, 0.5, 0.9]]
    np.testing.assert_allclose(ended_by(p, "product"), [[0.2, 0.6, 0.72, 0.972]])
    with pytest.raises(ValueError, match="unknown SmartCrop rule 'sum'"):
        ended_by(p, "sum")


def test_smartcrop_crops_at_the_first_crossing_plus_eos(monkeypatch, tiny_lm, queries):
    import ptdlib.canvas.policies as pol

    p = np.zeros((len(queries), 64))
    p[:, 40] = 0.95  # every answer "ends" at position 40
    monkeypatch.setattr(pol, "eos_probabilities", lambda *a, **k: p)
    crop = SmartCrop(tau=0.9)
    assert crop.estimate(tiny_lm, queries, LIMITS).tolist() == [40] * len(queries)
    assert crop.choose(tiny_lm, queries, LIMITS).tolist() == [64] * len(queries)  # 41 tokens -> 2 blocks
    p[:, 40] = 0.5
    assert crop.estimate(tiny_lm, queries, LIMITS).tolist() == [64] * len(queries)  # never crosses: maximum


def test_full_canvas_policy_matches_fixed_sampler(tiny_lm, queries, counter):
    rows = evaluate_strategy(tiny_lm, queries, FixedCanvas(64), counter, sampler=SAMPLER, limits=LIMITS)
    direct = sample(tiny_lm, [q.prompt for q in queries], 64, SAMPLER, query_ids=[q.qid for q in queries])
    assert [r["response"] for r in rows] == [o.text for o in direct]
    assert all(r["forward_passes"] == 64 and r["reruns"] == 0 for r in rows)


def test_row_flops_are_the_sum_over_the_querys_forward_passes(tiny_lm, queries, counter):
    rows = evaluate_strategy(tiny_lm, queries, SmartCrop(tau=0.5), counter, sampler=SAMPLER, limits=LIMITS)
    for r in rows:
        P = r["prompt_len"]
        probe = counter.forward_flops(max(len(tiny_lm.encode_prompt(q.prompt)) for q in queries) + 64)
        assert r["flops_probe"] == probe  # one probe pass over the batch's padded prompt + maximum canvas
        assert r["flops_total"] == r["flops_probe"] + r["flops_denoise"] + r["flops_rerun"]
        assert r["forward_passes"] == 1 + r["chosen_canvas"] + (64 if r["reruns"] else 0)
        assert r["flops_denoise"] >= r["chosen_canvas"] * counter.forward_flops(P + r["chosen_canvas"])


def test_truncated_results_are_rerun_at_the_maximum_and_counted(tiny_lm, queries, counter):
    rows = evaluate_strategy(tiny_lm, queries, FixedCanvas(32), counter, recovery="max", sampler=SAMPLER, limits=LIMITS)
    full = sample(tiny_lm, [q.prompt for q in queries], 64, SAMPLER, query_ids=[q.qid for q in queries])
    truncated = [r for r in rows if r["truncated"]]
    assert truncated, "a random tiny model almost never writes EOS in 32 tokens"
    for r, o in zip(rows, full):
        if r["truncated"]:
            assert (r["final_canvas"], r["reruns"]) == (64, 1) and r["flops_rerun"] > 0
            assert r["response"] == o.text  # the re-run is the maximum-canvas run
        else:
            assert (r["final_canvas"], r["reruns"], r["flops_rerun"]) == (32, 0, 0)


def test_no_recovery_keeps_the_truncated_result(tiny_lm, queries, counter):
    rows = evaluate_strategy(
        tiny_lm, queries, FixedCanvas(32), counter, recovery="none", sampler=SAMPLER, limits=LIMITS
    )
    assert all(r["reruns"] == 0 and r["final_canvas"] == 32 and r["flops_rerun"] == 0 for r in rows)


def test_growth_stops_early_without_changing_the_response(tiny_lm, queries, counter):
    # On the full canvas (a fixed-canvas model's growth) the passes up to the EOS block are those of the fixed
    # run; the growing window (the default, dLLM-Var) shows the model less and may change tokens.
    grown = evaluate_strategy(
        tiny_lm, queries, GrowthCanvas(32, window="full"), counter, sampler=SAMPLER, limits=LIMITS
    )
    fixed = evaluate_strategy(tiny_lm, queries, FixedCanvas(64), counter, sampler=SAMPLER, limits=LIMITS)
    assert [g["response"] for g in grown] == [f["response"] for f in fixed]
    assert all(g["forward_passes"] <= f["forward_passes"] for g, f in zip(grown, fixed))


def test_oracle_uses_own_length_plus_eos_and_needs_labels(tiny_lm, queries):
    oracle = OracleCanvas().with_labels({q.qid: 31 for q in queries})
    assert oracle.choose(tiny_lm, queries, LIMITS).tolist() == [32] * len(queries)
    oracle.with_labels({q.qid: 32 for q in queries})
    assert oracle.choose(tiny_lm, queries, LIMITS).tolist() == [64] * len(queries)
    with pytest.raises(ValueError, match="no own-length label for 4 queries"):
        OracleCanvas().choose(tiny_lm, queries, LIMITS)


def test_untrained_policies_fail_clearly(tiny_lm, queries):
    with pytest.raises(ValueError, match="heuristic policy is not fitted"):
        make_policy("heuristic").choose(tiny_lm, queries, LIMITS)
    with pytest.raises(ValueError, match="predicted policy is untrained"):
        make_policy("predicted").choose(tiny_lm, queries, LIMITS)


def test_predicted_policy_refuses_to_report_on_its_calibration_split(tiny_lm):
    train, calib = make_split("train", 30), make_split("calib", 20)
    lengths = lambda qs: np.array([q.answer_length for q in qs])  # noqa: E731  (synthetic labels)
    pol = make_policy("predicted", margin="conformal", alpha=0.1, features="text").fit(
        tiny_lm, train, lengths(train), calib, lengths(calib), LIMITS
    )
    assert pol.choose(tiny_lm, make_split("test", 5), LIMITS).max() <= 64
    with pytest.raises(ValueError, match="overlap|calibration"):
        pol.choose(tiny_lm, calib, LIMITS)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("smartcrop", {"tau": 0.0}, r"tau must be in \(0, 1\], got 0.0"),
        ("smartcrop", {"tau": 1.5}, r"tau must be in \(0, 1\], got 1.5"),
        ("smartcrop", {"pad": -1}, "pad must be >= 0"),
        ("heuristic", {"margin": -2}, "margin must be >= 0"),
        ("predicted", {"alpha": 1.0}, r"alpha must be in \(0, 1\)"),
        ("predicted", {"margin": "magic"}, "unknown margin method 'magic'"),
        ("predicted", {"margin": "aci", "gamma": 0}, r"gamma \(the ACI step size\) must be in \(0, 1\), got 0"),
        ("fixed", {"L": 0}, "L must be a positive"),
        ("smartcrp", {}, "unknown canvas policy 'smartcrp'; choose from fixed, oracle, heuristic, predicted"),
        ("smartcrop", {"tua": 0.5}, r"has no parameter\(s\) \['tua'\]"),
    ],
)
def test_bad_policy_parameters_are_named(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_policy(name, **params)


def test_unknown_recovery_is_named(tiny_lm, queries, counter):
    with pytest.raises(ValueError, match="unknown truncation recovery 'retry'"):
        evaluate_strategy(tiny_lm, queries, FixedCanvas(32), counter, recovery="retry", limits=LIMITS)


def test_aci_policy_learns_online_from_each_served_batch(tiny_lm, counter):
    """Calibrated on lengths far too short, the ACI margin truncates at first and widens as misses arrive."""
    train, calib, test = make_split("train", 30), make_split("calib", 20), make_split("test", 8, seed=2)
    pol = make_policy("predicted", margin="aci", alpha=0.1, gamma=0.5).fit(
        tiny_lm, train, np.zeros(len(train)), calib, np.zeros(len(calib)), LIMITS
    )
    assert pol.online and pol.params()["gamma"] == 0.5
    start_margin = pol.rule.margin()
    rows = evaluate_strategy(tiny_lm, test, pol, counter, sampler=SAMPLER, limits=LIMITS, batch_size=2)
    assert len(pol.rule.errors) == len(test)  # one update per served query, in serving order
    assert pol.rule.errors == [int(r["truncated"]) for r in rows]  # the first attempt's truncation
    assert sum(pol.rule.errors) >= 2  # the tiny model's answers overrun a one-block canvas
    assert pol.rule.alpha_t < 0.1 and pol.rule.margin() > start_margin
    with pytest.raises(ValueError, match="never served"):
        pol.observe(test[:1], [3], [32], [False])


def test_offline_policies_ignore_feedback_and_batching(tiny_lm, queries, counter):
    pol = FixedCanvas(L=32)
    assert not pol.online
    a = evaluate_strategy(tiny_lm, queries, pol, counter, sampler=SAMPLER, limits=LIMITS, batch_size=2)
    b = evaluate_strategy(tiny_lm, queries, pol, counter, sampler=SAMPLER, limits=LIMITS, batch_size=4)
    assert [r["response"] for r in a] == [r["response"] for r in b]
