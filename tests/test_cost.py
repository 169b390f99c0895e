"""The deployment cost model: forward-pass plans, roofline seconds, money, savings, the ``ptd cost`` CLI."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from ptdlib.cli.cost import main
from ptdlib.cost.hardware import ASSUMED_MFU, HARDWARE, Hardware, hardware, measure_mfu
from ptdlib.cost.pricing import bootstrap_saving, estimate, price_plans
from ptdlib.cost.shapes import LLADA_8B, AnalyticCounter, ModelShape, analytic_flops
from ptdlib.cost.workload import (
    StrategyParams,
    StrategyPlans,
    canvas_plan,
    plan_strategy,
    plans_from_results,
    synthetic_workload,
)

#: A made-up accelerator with round numbers, so seconds can be checked by hand.
TOY_GPU = Hardware("toy", "toy", peak_flops=1e15, mem_bandwidth=1e12, memory_bytes=1e11, price_per_hour=2.0, mfu=0.5)


def test_a_run_on_canvas_L_costs_L_forward_passes_over_prompt_plus_canvas():
    assert canvas_plan(100, 64) == Counter({164: 64})  # LLaDA: S = L steps, each over P + L tokens
    assert canvas_plan(100, 64, steps_per_token=0.5) == Counter({164: 32})


def test_flops_per_query_are_steps_times_one_forward_pass():
    priced = price_plans([canvas_plan(200, 512)], LLADA_8B, TOY_GPU)
    assert priced["flops"][0] == 512 * analytic_flops(LLADA_8B, 712)["total"]
    assert priced["passes"][0] == 512


def test_seconds_follow_the_roofline_of_compute_and_weight_reads():
    long_plan, short_plan = Counter({2048: 1}), Counter({1: 1})
    priced = price_plans([long_plan, short_plan], LLADA_8B, TOY_GPU, batch=4)
    compute_s = 4 * analytic_flops(LLADA_8B, 2048)["total"] / (1e15 * 0.5)  # batch 4 at half of peak
    weights_s = 2 * LLADA_8B.n_params / 1e12  # bf16 weights read once per pass
    assert compute_s > weights_s
    assert priced["latency_s"][0] == pytest.approx(compute_s)
    assert priced["latency_s"][1] == pytest.approx(weights_s)  # one token: memory-bound
    assert priced["gpu_s"][0] == pytest.approx(compute_s / 4)  # four queries share each pass


def test_gpu_hours_and_cost_per_million_follow_from_gpu_seconds():
    prompts, responses = np.array([50, 80, 120]), np.array([10, 40, 90])
    params = StrategyParams(canvas=256, block=32)
    result = estimate(
        LLADA_8B,
        TOY_GPU,
        plan_strategy("oracle", prompts, responses, params),
        plan_strategy("fixed", prompts, responses, params),
        batch=2,
        n_boot=200,
    )
    arm = result.strategy
    assert arm.gpu_hours_per_million == pytest.approx(1e6 * arm.gpu_seconds_per_query / 3600)
    assert arm.cost_per_million == pytest.approx(2.0 * arm.gpu_hours_per_million)
    assert result.mfu == 0.5 and result.price_per_hour == 2.0
    assert arm.latency_p50_s <= arm.latency_p95_s


def test_oracle_saves_against_fixed_with_an_interval_around_the_point():
    prompts, responses = synthetic_workload(150, 100, n=400, max_response=511, seed=1)
    params = StrategyParams(canvas=512)
    result = estimate(
        LLADA_8B,
        hardware("h100"),
        plan_strategy("oracle", prompts, responses, params),
        plan_strategy("fixed", prompts, responses, params),
        n_boot=500,
    )
    assert 0.5 < result.saving < 1
    assert result.saving_ci[0] < result.saving < result.saving_ci[1]
    assert result.strategy.flops_per_query < result.baseline.flops_per_query


def test_a_strategy_equal_to_the_baseline_saves_nothing():
    prompts, responses = np.array([10, 20, 30, 40]), np.array([5, 6, 7, 8])
    fixed = plan_strategy("fixed", prompts, responses, StrategyParams(canvas=64))
    result = estimate(LLADA_8B, TOY_GPU, fixed, fixed, n_boot=100)
    assert result.saving == 0 and result.saving_ci == (0.0, 0.0)


def test_predicted_canvas_too_short_is_rerun_on_the_maximum_and_both_runs_are_paid():
    params = StrategyParams(canvas=512, block=32, margin=0.0, length_error=0.0)
    # Exact estimates: 64 tokens round to a 64 canvas, which leaves no room for EOS -> re-run; 50 fit in 64.
    plans = plan_strategy("predicted", np.array([30, 30]), np.array([64, 50]), params)
    assert plans.plans[0] == Counter({94: 64, 542: 512, 30: 1})  # run, re-run, predictor pass over the prompt
    assert plans.plans[1] == Counter({94: 64, 30: 1})
    assert plans.reruns.tolist() == [True, False] and plans.truncated.tolist() == [False, False]


def test_smartcrop_pays_one_probe_pass_over_the_full_canvas():
    params = StrategyParams(canvas=256, block=32, margin=0.0, length_error=0.0)
    plans = plan_strategy("smartcrop", np.array([20]), np.array([40]), params)
    assert plans.plans[0] == Counter({84: 64, 276: 1})


def test_fixed_canvas_marks_answers_longer_than_the_canvas_as_truncated():
    plans = plan_strategy("fixed", np.array([5, 5]), np.array([63, 64]), StrategyParams(canvas=64))
    assert plans.truncated.tolist() == [False, True]


def test_synthetic_workload_has_the_requested_means():
    prompts, responses = synthetic_workload(200, 120, n=20000, spread=0.6, seed=0)
    assert prompts.mean() == pytest.approx(200, rel=0.03)
    assert responses.mean() == pytest.approx(120, rel=0.03)
    assert prompts.min() >= 1


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: plan_strategy("fixed", np.array([-1]), np.array([3]), StrategyParams()),
            "prompt lengths must be >= 0, got -1",
        ),
        (
            lambda: plan_strategy("fixed", np.array([1]), np.array([-2]), StrategyParams()),
            "response lengths must be >= 0",
        ),
        (lambda: synthetic_workload(-5, 10), "prompt_mean must be >= 0"),
        (
            lambda: plan_strategy("smartcrp", np.array([1]), np.array([1]), StrategyParams()),
            "unknown strategy 'smartcrp'",
        ),
        (lambda: hardware("tpu"), "unknown hardware preset 'tpu'; choose from h100, h200, a100, l40s"),
        (lambda: Hardware("x", "x", 1e15, 1e12, 1e9, price_per_hour=1.0, mfu=0.0), r"mfu must be in \(0, 1\], got 0.0"),
        (lambda: Hardware("x", "x", 1e15, 1e12, 1e9, price_per_hour=-1.0), "price per GPU-hour must be >= 0"),
        (lambda: price_plans([Counter({10: 1})], LLADA_8B, TOY_GPU, mfu=1.2), r"mfu must be in \(0, 1\], got 1.2"),
        (lambda: price_plans([Counter({5000: 1})], LLADA_8B, TOY_GPU), "exceeds llada-8b's 4096 positions"),
        (lambda: StrategyParams(margin=-0.1), "margin must be >= 0"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_results_table_is_repriced_from_its_forward_passes(tmp_path, capsys):
    frame = pd.DataFrame(
        {
            "query_id": ["q1", "q2", "q1", "q2"],
            "strategy": ["predicted", "predicted", "fixed", "fixed"],
            "prompt_len": [10, 20, 10, 20],
            "canvases": ["[32]", "[32, 128]", "[128]", "[128]"],
            "response_len": [20, 60, 20, 60],
            "flops_total": [1.0, 2.0, 3.0, 4.0],  # counted on another model: not reused
        }
    )
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    prompts, plans, responses = plans_from_results(frame[frame.strategy == "predicted"])
    assert plans.plans == [Counter({42: 32}), Counter({52: 32, 148: 128})]
    assert plans.reruns.tolist() == [False, True] and responses.tolist() == [20, 60]
    ledger_style = frame.assign(forward_lens=["[42, 42]", "[52]", "[138]", "[148]"])
    assert plans_from_results(ledger_style)[1].plans[0] == Counter({42: 2})

    capsys.readouterr()
    assert main(["--results", str(path), "--strategy", "predicted", "--canvas", "128", "--json", "--boot", "50"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    f = AnalyticCounter(LLADA_8B).forward_flops
    assert result["strategy"]["flops_per_query"] == pytest.approx((32 * f(42) + 32 * f(52) + 128 * f(148)) / 2)
    assert result["baseline"]["flops_per_query"] == pytest.approx((128 * f(138) + 128 * f(148)) / 2)


def test_ptdlib_result_rows_give_reruns_final_truncation_own_lengths_and_the_runs_maximum_canvas(tmp_path, capsys):
    frame = pd.DataFrame(
        {
            "strategy": ["predicted", "predicted", "fixed", "fixed"],
            "prompt_len": [10, 20, 10, 20],
            "forward_lens": ["[42]", "[52, 148]", "[138]", "[148]"],
            "final_canvas": [32, 128, 128, 128],
            "reruns": [0, 1, 0, 0],
            "truncated": [False, True, False, False],
            "truncated_final": [False, False, False, False],
            "own_length": [20, 60, 20, 60],
        }
    )
    _, plans, responses = plans_from_results(frame[frame.strategy == "predicted"])
    assert plans.reruns.tolist() == [False, True] and plans.truncated.tolist() == [False, False]
    assert responses.tolist() == [20, 60]
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    capsys.readouterr()
    assert main(["--results", str(path), "--strategy", "predicted", "--json", "--boot", "50"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    f = AnalyticCounter(LLADA_8B).forward_flops
    assert result["baseline"]["flops_per_query"] == pytest.approx((128 * f(138) + 128 * f(148)) / 2)  # canvas 128


def test_cli_notes_say_which_side_of_the_comparison_has_a_kv_cache(capsys):
    base = ["--model", "llada-8b", "--hardware", "h100", "--strategy", "predicted", "--queries", "20", "--boot", "10"]
    assert main(base + ["--cache", "dual"]) == 0
    out = capsys.readouterr().out
    assert "predicted with the dual KV cache, the fixed baseline without a KV cache" in out
    assert "each a full forward pass" not in out
    assert main(base) == 0
    assert "each a full forward pass over prompt + canvas" in capsys.readouterr().out


def test_cli_prints_the_cost_table_and_rejects_bad_input(capsys):
    assert (
        main(["--model", "llada-8b", "--hardware", "h100", "--strategy", "oracle", "--queries", "200", "--boot", "100"])
        == 0
    )
    out = capsys.readouterr().out
    assert "oracle" in out and "fixed" in out and "saving vs fixed" in out and "MFU 0.40" in out
    for argv, message in (
        (["--mfu", "1.5"], "mfu must be in (0, 1]"),
        (["--price", "-2"], "must be >= 0"),
        (["--model", "gpt"], "unknown model preset"),
        (["--response-mean", "-1"], ">= 0"),
        (["--strategy", "magic"], "unknown strategy 'magic'"),
    ):
        assert main(argv + ["--queries", "20", "--boot", "10"]) == 2
        assert message in capsys.readouterr().err


def test_bootstrap_interval_narrows_with_more_queries():
    rng = np.random.default_rng(0)

    def width(n):
        base = rng.uniform(1, 2, n)
        _, lo, hi = bootstrap_saving(base * rng.uniform(0.3, 0.7, n), base, n_boot=400)
        return hi - lo

    assert width(2000) < width(50)


def test_hardware_presets_use_dense_bf16_peaks_and_the_assumed_mfu():
    assert HARDWARE["h100"].peak_flops == HARDWARE["h200"].peak_flops == 989.5e12  # half the sparse 1,979
    assert HARDWARE["a100"].peak_flops == 312e12 and HARDWARE["l40s"].peak_flops == 362.05e12
    assert all(hw.mfu == ASSUMED_MFU for hw in HARDWARE.values())
    assert HARDWARE["h200"].mem_bandwidth > HARDWARE["h100"].mem_bandwidth


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_measure_mfu_without_a_gpu_says_so():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        measure_mfu()


def test_measure_mfu_code_path_runs_on_cpu_with_a_tiny_shape():
    tiny = ModelShape(
        "tiny", n_layers=1, d_model=16, n_heads=2, n_kv_heads=2, mlp_hidden=32, vocab_size=50, max_positions=64
    )
    rows = measure_mfu(tiny, batch_sizes=(2,), seq_lens=(16, 32), hw="h100", device="cpu", warmup=1, iters=2)
    assert [(r["batch"], r["seq_len"]) for r in rows] == [(2, 16), (2, 32)]
    assert all(r["seconds"] > 0 and 0 < r["mfu"] < 1 for r in rows)
    assert rows[0]["flops"] == analytic_flops(tiny, 16, 2)["total"]


def test_strategy_plans_with_unknown_truncation_report_nan():
    plans = StrategyPlans("t", [Counter({20: 4})], np.array([False]))
    result = estimate(LLADA_8B, TOY_GPU, plans, plans, n_boot=10)
    assert np.isnan(result.strategy.truncation_rate)
