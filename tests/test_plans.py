"""The forward-pass plans of ptdlib.cost.plans: hand-computed cases, and the passes the real sampler makes."""

import subprocess
import sys
from collections import Counter, defaultdict
from functools import partial

import numpy as np
import pytest
import torch
from conftest import EOS_BOOST, TINY

from ptdlib.analysis.margins import policy_outcome
from ptdlib.canvas import CanvasLimits
from ptdlib.canvas.recovery import recover
from ptdlib.cost import plans as pl
from ptdlib.cost.flops import FlopLedger
from ptdlib.models.embedded import build_model, embedded_lm
from ptdlib.sampling.sampler import SamplerConfig, sample

PROMPTS = [
    "count from 3 to 9",
    "repeat kiwi 4 times",
    "reverse : cat dog sun moon tree ship rain",
    "spell tiger",
    "count from 1 to 2",
    "repeat sun 2 times",
]


@pytest.fixture(scope="module")
def eos_lm(tokenizer):
    """A seeded tiny model whose answers end at varied lengths (9 to 62 tokens on these prompts)."""
    torch.manual_seed(0)
    model = build_model(tokenizer, **TINY).eval()
    model.lm_head.weight.data[tokenizer.eos_token_id] *= EOS_BOOST
    return embedded_lm(model, tokenizer, model_id="tiny-eos")


class Passes:
    """Callback: per query id, a Counter of the passes it took part in (``T`` or ``(T, T_q)`` when cached)."""

    def __init__(self):
        self.plans = defaultdict(Counter)

    def on_forward(self, event):
        key = event.seq_len if event.query_len is None else (event.seq_len, event.query_len)
        for qid in event.query_ids:
            self.plans[qid][key] += 1


class SquareCounter:
    """A FLOP source whose price tells every sequence length apart."""

    def forward_flops(self, seq_len, batch=1, query_len=None):
        return batch * (seq_len * seq_len + 1 if query_len is None else 1000 * seq_len + query_len)


def prompt_lens(lm):
    return [len(lm.encode_prompt(p)) for p in PROMPTS]


# ---------------------------------------------------------------- hand-computed cases
def test_plans_module_imports_without_torch():
    code = "import sys, ptdlib.cost.plans; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_round_to_block_rounds_up_to_whole_blocks_at_least_one_capped():
    assert pl.round_to_block([0, 1, 8, 9, 130], 8, 128).tolist() == [8, 8, 8, 16, 128]
    assert pl.round_to_block([0, 33], 32).tolist() == [32, 64]


def test_eos_stop_decodes_up_to_the_block_holding_eos_or_the_whole_canvas():
    # EOS at position length: lengths 0 and 7 end in block 0, 8 in block 1; 64 and 100 do not fit
    assert pl.eos_stop(64, [0, 7, 8, 63, 64, 100], 8).tolist() == [8, 8, 16, 64, 64, 64]


def test_attempts_follow_each_recovery_until_the_answer_fits_or_the_maximum():
    for recovery, canvases, starts in [
        ("max", [16, 128], [0, 0]),
        ("double", [16, 32, 64], [0, 0, 0]),
        ("extend", [16, 32, 64], [0, 16, 32]),
        ("none", [16], [0]),
    ]:
        runs = pl.attempts([16, 128], [40, 200], max_canvas=128, recovery=recovery)
        assert [int(a.canvas[0]) for a in runs] == canvases
        assert [int(a.start[0]) for a in runs] == starts
        assert runs[0].truncated.tolist() == [True, True]  # the second query is cut at the maximum: never re-run
        assert all(not a.rows[1] for a in runs[1:])


def test_measured_truncation_overrides_the_labels_of_the_first_attempt():
    runs = pl.attempts([16, 16], [5, 40], max_canvas=64, truncated=[True, False], early_stop=True, block=8)
    assert [a.rows.tolist() for a in runs] == [[True, True], [True, False]]
    assert runs[0].end.tolist() == [16, 16]  # a truncated attempt decodes its whole canvas
    assert runs[1].end.tolist()[0] == 8  # the re-run at 64 stops after the block holding EOS (position 5)


def test_run_plans_of_caches_windows_and_guidance():
    assert pl.run_plan(10, 64, block=32) == Counter({74: 64})
    assert pl.run_plan(10, 64, block=32, cache="dual") == Counter({74: 2, (74, 32): 62})
    assert pl.run_plan(10, 64, block=32, cache="prefix") == Counter({74: 2, (74, 64): 31, (74, 32): 31})
    assert pl.run_plan(10, 64, block=8, end=24, window="growing") == Counter({18: 8, 26: 8, 34: 8})
    assert pl.run_plan(10, 64, block=8, start=32) == Counter({74: 32})  # extend: only the new blocks
    assert pl.sampler_plan(10, 32, SamplerConfig(block_length=8, cfg_scale=1.0)) == Counter({42: 64})
    assert pl.sampler_plan(10, 32, SamplerConfig(block_length=8, steps=8)) == Counter({42: 8})


def test_query_plan_adds_the_rerun_and_stops_early_only_when_asked():
    run = partial(pl.sampler_plan, sampler=SamplerConfig(block_length=8))
    plain = pl.query_plans([5], [16], [20], max_canvas=64, run=run)
    assert plain.plans == [Counter({21: 16, 69: 64})] and plain.reruns.tolist() == [1]
    stop = partial(pl.sampler_plan, sampler=SamplerConfig(block_length=8, stop_after_eos_block=True))
    early = pl.query_plans([5], [16], [20], max_canvas=64, run=stop, early_stop=True, block=8)
    assert early.plans == [Counter({21: 16, 69: 24})]  # EOS at 20 lies in block 2 of the re-run


def test_plans_refuse_what_they_cannot_know():
    with pytest.raises(ValueError, match="threshold"):
        pl.sampler_plan(5, 32, SamplerConfig(threshold=0.9))
    with pytest.raises(ValueError, match="answer's length"):
        pl.sampler_plan(5, 32, SamplerConfig(stop_after_eos_block=True))
    with pytest.raises(ValueError, match="unknown truncation recovery"):
        pl.attempts([16], [3], max_canvas=64, recovery="triple")
    with pytest.raises(ValueError, match="block"):
        pl.attempts([16], [3], max_canvas=64, early_stop=True)


def test_sampler_batches_group_by_canvas_longest_prompt_first_ties_in_order():
    assert pl.sampler_batches([3, 9, 5, 9], [16, 16, 32, 16], 2) == [[1, 3], [0], [2]]


def test_one_list_of_recoveries_and_of_cache_modes():
    from ptdlib.canvas.recovery import RECOVERIES
    from ptdlib.experiment import config
    from ptdlib.predictor import PRICED_RECOVERIES
    from ptdlib.sampling.kvcache import CACHE_MODES

    assert RECOVERIES is pl.RECOVERIES and config.RECOVERIES is pl.RECOVERIES and CACHE_MODES is pl.CACHE_MODES
    assert PRICED_RECOVERIES == ("max", "double", "extend") and pl.FRESH_RECOVERIES == ("max", "double", "none")


# ---------------------------------------------------------------- the passes the real sampler makes
@pytest.mark.parametrize(
    "block,batch_size,cache,cfg_scale",
    [(8, 32, "none", 0.0), (4, 2, "none", 0.0), (8, 2, "dual", 0.0), (16, 3, "prefix", 0.0), (8, 4, "none", 1.0)],
)
def test_batched_plans_equal_the_passes_the_sampler_makes(eos_lm, block, batch_size, cache, cfg_scale):
    cfg = SamplerConfig(block_length=block, cache=cache, cfg_scale=cfg_scale)
    canvases = [16, 32, 16, 48, 32, 16]
    seen = Passes()
    sample(eos_lm, PROMPTS, canvases, cfg, callbacks=[seen], batch_size=batch_size)
    want = pl.batched_plans(prompt_lens(eos_lm), canvases, partial(pl.sampler_plan, sampler=cfg), batch_size)
    assert [seen.plans[i] for i in range(len(PROMPTS))] == want


@pytest.mark.parametrize(
    "window,cache", [("full", "none"), ("full", "dual"), ("growing", "none"), ("growing", "prefix")]
)
def test_early_stop_plan_equals_the_passes_of_one_query(eos_lm, window, cache):
    cfg = SamplerConfig(block_length=8, stop_after_eos_block=window == "full", window=window, cache=cache)
    stopped = 0
    for canvas in (16, 64):
        seen = Passes()
        outs = sample(eos_lm, PROMPTS, canvas, cfg, callbacks=[seen], batch_size=1)  # one row per pass: no padding
        for i, (P, out) in enumerate(zip(prompt_lens(eos_lm), outs)):
            assert seen.plans[i] == pl.sampler_plan(P, canvas, cfg, length=out.length)
            stopped += sum(seen.plans[i].values()) < canvas
    assert stopped > 0  # some queries did stop early


def _recovered_passes(lm, canvases, cfg, recovery, max_canvas, batch_size=1):
    """Per query: the passes of a first attempt plus the re-runs of ``recover``, and the outputs."""
    seen = Passes()
    qids = list(range(len(PROMPTS)))
    first = sample(lm, PROMPTS, canvases, cfg, callbacks=[seen], batch_size=batch_size)

    def resample(indices, new, init):
        return sample(
            lm,
            [PROMPTS[i] for i in indices],
            new,
            cfg,
            callbacks=[seen],
            kind="rerun",
            query_ids=[qids[i] for i in indices],
            batch_size=batch_size,
            init_canvas=init,
        )

    final, _, reruns = recover(recovery, first, np.array(canvases), max_canvas, lm.mask_id, resample)
    return [seen.plans[i] for i in qids], first, final, reruns


@pytest.mark.parametrize("recovery", pl.RECOVERIES)
def test_query_plans_equal_the_passes_of_the_recovery_code_on_a_growing_window(eos_lm, recovery):
    # on a growing window a pass sees nothing after its block, so an answer does not depend on the canvas: the own
    # length at the maximum canvas is the truth of every attempt
    cfg = SamplerConfig(block_length=4, window="growing")
    own = [o.length for o in sample(eos_lm, PROMPTS, 64, cfg)]
    canvases = [4, 8, 12, 16, 4, 64]
    got, _, final, reruns = _recovered_passes(eos_lm, canvases, cfg, recovery, 64)
    want = pl.query_plans(
        prompt_lens(eos_lm),
        canvases,
        own,
        max_canvas=64,
        recovery=recovery,
        early_stop=True,
        block=4,
        run=partial(pl.sampler_plan, sampler=cfg),
    )
    assert got == want.plans
    assert want.reruns.tolist() == reruns.tolist() and want.truncated_final.tolist() == [o.truncated for o in final]
    assert recovery == "none" or reruns.sum() > 0


@pytest.mark.parametrize("early_stop", [False, True])
def test_query_plans_with_measured_truncation_equal_the_passes_of_a_max_rerun(eos_lm, early_stop):
    cfg = SamplerConfig(block_length=8, stop_after_eos_block=early_stop)
    canvases = [16, 32, 16, 32, 64, 8]
    got, first, final, reruns = _recovered_passes(eos_lm, canvases, cfg, "max", 64)
    want = pl.query_plans(
        prompt_lens(eos_lm),
        canvases,
        [o.length for o in final],
        max_canvas=64,
        early_stop=early_stop,
        block=8,
        truncated=[o.truncated for o in first],
        run=partial(pl.sampler_plan, sampler=cfg),
    )
    assert got == want.plans and reruns.sum() > 0


def test_policy_outcome_prices_the_sampler_batches_of_first_attempts_and_reruns(eos_lm):
    cfg, limits, batch_size = SamplerConfig(block_length=8), CanvasLimits(64, 8), 2
    canvases = [16, 32, 16, 32, 64, 8]
    ledger = FlopLedger(SquareCounter())
    seen = Passes()
    first = sample(eos_lm, PROMPTS, canvases, cfg, callbacks=[ledger, seen], batch_size=batch_size)

    def resample(indices, new, init):
        return sample(
            eos_lm,
            [PROMPTS[i] for i in indices],
            new,
            cfg,
            callbacks=[ledger],
            kind="rerun",
            query_ids=indices,
            batch_size=batch_size,
            init_canvas=init,
        )

    final, _, _ = recover("max", first, np.array(canvases), limits.max_canvas, eos_lm.mask_id, resample)
    out = policy_outcome(
        canvases,
        [o.length for o in final],
        prompt_lens(eos_lm),
        SquareCounter(),
        limits=limits,
        sampler=cfg,
        batch_size=batch_size,
        truncated=[o.truncated for o in first],
    )
    flops = ledger.per_query()
    assert out["flops_denoise"].tolist() == [flops[i].get("denoise", 0) for i in range(len(PROMPTS))]
    assert out["flops_rerun"].tolist() == [flops[i].get("rerun", 0) for i in range(len(PROMPTS))]
    assert out["flops_rerun"].sum() > 0


# ---------------------------------------------------------------- the cost-optimal margin prices the sampler's passes
class SeqLenCounter:
    """One unit per token of a pass: the plan cost that ``quadratic_cost`` (``L · (P + L)`` per attempt) prices."""

    def forward_flops(self, seq_len, batch=1, query_len=None):
        return batch * seq_len


def _plan_costs(prompts, canvases, lengths, sampler, max_canvas):
    """Mean over queries of the plans' cost (re-runs at the maximum, early stop as the sampler does)."""
    runs = pl.query_plans(
        prompts,
        canvases,
        lengths,
        max_canvas=max_canvas,
        recovery="max",
        early_stop=sampler.stops_after_eos_block,
        block=sampler.block_length,
        run=partial(pl.sampler_plan, sampler=sampler),
    )
    return float(np.mean([pl.plan_flops(plan, SeqLenCounter()) for plan in runs.plans]))


def test_cost_optimal_margin_prices_early_stop_at_the_samplers_block_not_the_rounding():
    from ptdlib.predictor.calibration import CostOptimalMargin

    # canvas 64 (rounded to 32), EOS at position 10, prompt 0: the sampler's blocks of 8 stop after 16 passes
    stop = SamplerConfig(block_length=8, stop_after_eos_block=True)
    assert _plan_costs([0], [64], [10], stop, 64) == 16 * 64 == 1024
    rule = CostOptimalMargin.fit([40.0], [10], max_canvas=64, round_to=32, block=8, early_stop=True, margins=[0.0])
    assert rule.expected_costs == (1024.0,)  # not 2048: one block of 32


def test_predicted_cost_optimal_policy_prices_the_sampler_it_runs_with(eos_lm):
    from ptdlib.canvas.predicted import PredictedCanvas
    from ptdlib.predictor.conformal import canvas_from_upper
    from ptdlib.tasks import make_split

    train, calib = make_split("train", 30), make_split("calib", 20)
    lengths = lambda qs: np.array([q.answer_length for q in qs])  # noqa: E731  (synthetic labels)
    limits, base = CanvasLimits(64, 32), SamplerConfig(block_length=8)
    policy = PredictedCanvas(margin="cost_optimal", early_stop=True, features="text").fit(
        eos_lm, train, lengths(train), calib, lengths(calib), limits, "max", sampler=base
    )
    runs_with = policy.sampler_config(base)
    pred = policy.predictor.predict_prompts(calib, eos_lm)
    P = [len(eos_lm.encode_prompt(q.prompt)) for q in calib]
    want = [
        _plan_costs(P, canvas_from_upper(pred + m, 64, 32), lengths(calib), runs_with, 64) for m in policy.rule.margins
    ]
    assert policy.rule.expected_costs == pytest.approx(want, rel=1e-12)
    assert policy.rule.early_stop and runs_with.block_length == 8
