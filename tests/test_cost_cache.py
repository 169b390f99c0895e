"""The cost model's cache and window dimension: plans of cached runs and of growth on a growing window."""

from collections import Counter

import pytest

from ptdlib.analysis.deployment import growth_plans
from ptdlib.cost.hardware import hardware
from ptdlib.cost.pricing import price_plans
from ptdlib.cost.shapes import AnalyticCounter, ModelShape
from ptdlib.cost.workload import PLAN_CACHE_MODES, StrategyParams, canvas_plan
from ptdlib.sampling.kvcache import CACHE_MODES

SHAPE = ModelShape(
    name="hand", n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, mlp_hidden=64, vocab_size=100, max_positions=256
)


def test_plan_cache_modes_restate_the_samplers():
    assert PLAN_CACHE_MODES == CACHE_MODES


def test_cached_canvas_plans_refresh_once_per_block_then_run_cached_passes():
    # prompt 10, canvas 64, blocks of 32, S = L: 32 steps per block
    assert canvas_plan(10, 64) == Counter({74: 64})
    assert canvas_plan(10, 64, cache="dual") == Counter({74: 2, (74, 32): 62})
    # prefix: block 0 computes itself and block 1 (64 queries), block 1 only itself (32)
    assert canvas_plan(10, 64, cache="prefix") == Counter({74: 2, (74, 64): 31, (74, 32): 31})
    with pytest.raises(ValueError, match="unknown cache mode 'kv'; choose from none, prefix, dual"):
        canvas_plan(10, 64, cache="kv")


def test_growth_on_a_growing_window_pays_prompt_plus_blocks_so_far():
    p = StrategyParams(canvas=96, block=32)
    # answers of 10 and 40 tokens: one and two blocks; one of 200 never ends: all three blocks
    plans = growth_plans([5, 5, 5], [10, 40, 200], p).plans
    assert plans[0] == Counter({37: 32})
    assert plans[1] == Counter({37: 32, 69: 32})
    assert plans[2] == Counter({37: 32, 69: 32, 101: 32})
    full = growth_plans([5], [40], StrategyParams(canvas=96, block=32, growth_window="full")).plans
    assert full[0] == Counter({101: 64})
    cached = growth_plans([5], [40], StrategyParams(canvas=96, block=32, cache="dual")).plans
    assert cached[0] == Counter({37: 1, (37, 32): 31, 69: 1, (69, 32): 31})


def test_cached_passes_are_priced_by_their_queries():
    counter = AnalyticCounter(SHAPE)
    priced = price_plans([Counter({74: 2, (74, 32): 62})], SHAPE, hardware("h100"))
    expected = 2 * counter.forward_flops(74) + 62 * counter.forward_flops(74, query_len=32)
    assert priced["flops"][0] == expected and priced["passes"][0] == 64
    assert expected < 0.5 * 64 * counter.forward_flops(74)  # most of the canvas is not recomputed


def test_unknown_cache_or_window_in_strategy_params_is_rejected():
    with pytest.raises(ValueError, match="unknown cache mode 'kv'"):
        StrategyParams(cache="kv")
    with pytest.raises(ValueError, match="growth_window must be full or growing, got 'grow'"):
        StrategyParams(growth_window="grow")
