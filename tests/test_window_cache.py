"""dLLM-Var's growing window and Fast-dLLM's KV caches in the sampler, and how the FLOP ledger prices them."""

from dataclasses import replace

import pytest
import torch
from conftest import TINY
from torch import nn

from ptdlib.canvas import make_policy
from ptdlib.cost.flops import FlopLedger, cross_check
from ptdlib.cost.shapes import AnalyticCounter, ModelShape, analytic_flops, shape_from_config
from ptdlib.models.base import DiffusionLM
from ptdlib.models.embedded import build_model, embedded_lm
from ptdlib.sampling.events import ForwardEvent, TraceRecorder
from ptdlib.sampling.sampler import SamplerConfig, sample

WORD, TRIGGER = 20, 21  # vocabulary ids the stub writes / looks for (word tokens of the embedded vocabulary)


class EndsAt(nn.Module):
    """Stub D-LLM: predicts WORD everywhere and EOS from real position ``after`` on, in rows holding TRIGGER."""

    def __init__(self, vocab, eos_id, after):
        super().__init__()
        self.vocab, self.eos_id, self.after = vocab, eos_id, after
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the stub a device

    def forward(self, input_ids, attention_mask=None, **kwargs):
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pos = attention_mask.long().cumsum(-1) - 1
        ends = (pos >= self.after) & (input_ids == TRIGGER).any(-1, keepdim=True)
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., WORD] = 5.0
        logits[..., self.eos_id] = torch.where(ends, 10.0, 0.0)
        return logits


@pytest.fixture(scope="module")
def stub_lm(tokenizer):
    eos = tokenizer.eos_token_id
    return DiffusionLM(
        network=EndsAt(len(tokenizer), eos, after=4 + 10),
        tokenizer=tokenizer,
        mask_id=tokenizer.mask_token_id,
        eos_id=eos,
        end_ids=(eos,),
        pad_id=tokenizer.pad_token_id,
        max_positions=64,
        model_id="stub",
    )


PROMPT_ENDS = [TRIGGER, 30, 31, 32]  # 4 tokens; the stub ends its answer at canvas position 10
PROMPT_RUNS = [33, 30, 31, 32]  # no trigger: the answer never ends


def _passes(rec, qid):
    return [e.seq_len for e in rec.forwards if qid in e.query_ids]


# ---------------------------------------------------------------- growing window
def test_growing_window_passes_see_the_prompt_and_the_blocks_so_far_and_stop_after_the_eos_block(stub_lm):
    rec = TraceRecorder()
    ends, runs = sample(
        stub_lm, [PROMPT_ENDS, PROMPT_RUNS], 32, SamplerConfig(block_length=8, window="growing"), callbacks=[rec]
    )
    # block b of 8 tokens: a pass over 4 prompt + 8 (b + 1) tokens, 8 passes per block (S = L)
    assert _passes(rec, 0) == [12] * 8 + [20] * 8  # stopped after block 1, which holds its EOS
    assert _passes(rec, 1) == [12] * 8 + [20] * 8 + [28] * 8 + [36] * 8  # ran to the maximum length
    assert (ends.length, ends.truncated, ends.steps_run) == (10, False, 16)
    assert ends.tokens[:16] == [WORD] * 10 + [stub_lm.eos_id] * 6 and set(ends.tokens[16:]) == {stub_lm.mask_id}
    assert (runs.length, runs.truncated, runs.tokens) == (32, True, [WORD] * 32)


def test_full_window_growth_prices_the_whole_canvas_and_decodes_the_same_tokens(stub_lm):
    rec = TraceRecorder()
    cfg = SamplerConfig(block_length=8, window="full", stop_after_eos_block=True)
    full = sample(stub_lm, [PROMPT_ENDS, PROMPT_RUNS], 32, cfg, callbacks=[rec])
    grown = sample(stub_lm, [PROMPT_ENDS, PROMPT_RUNS], 32, replace(cfg, window="growing"))
    assert _passes(rec, 0) == [36] * 16 and _passes(rec, 1) == [36] * 32
    assert [o.tokens for o in full] == [o.tokens for o in grown]


def test_growth_policy_runs_the_growing_window_and_keeps_the_full_canvas_variant():
    grown = make_policy("growth", block=32).sampler_config(SamplerConfig())
    assert (grown.window, grown.stops_after_eos_block) == ("growing", True)
    full = make_policy("growth", block=32, window="full")
    assert full.sampler_config(SamplerConfig()).window == "full" and full.params() == {"block": 32, "window": "full"}
    with pytest.raises(ValueError, match="growth window must be one of full, growing, got 'grow'"):
        make_policy("growth", window="grow")


def test_unknown_window_or_cache_is_rejected_naming_the_choices():
    with pytest.raises(ValueError, match="unknown window 'grow'; choose from full, growing"):
        SamplerConfig(window="grow")
    with pytest.raises(ValueError, match="unknown cache mode 'kv'; choose from none, prefix, dual"):
        SamplerConfig(cache="kv")
    with pytest.raises(ValueError, match="does not combine with guidance"):
        SamplerConfig(cache="dual", cfg_scale=1.0)


# ---------------------------------------------------------------- the cached forward of the embedded model
def _ids(tokenizer, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, len(tokenizer), (2, n), generator=g)


@pytest.mark.parametrize("start,end", [(12, 20), (12, 28), (0, 28)])  # dual (block), prefix (block + suffix), all
def test_cached_pass_logits_equal_the_full_pass_when_no_token_changed(tiny_model, tokenizer, start, end):
    ids = _ids(tokenizer, 28)
    attn = torch.ones_like(ids)
    attn[1, :3] = 0  # a left-padded row
    with torch.no_grad():
        full = tiny_model(input_ids=ids, attention_mask=attn, use_cache=True)
        part = tiny_model(input_ids=ids[:, start:end], past_key_values=full.past_key_values, cache_start=start)
    real = attn[:, start:end].bool()
    torch.testing.assert_close(part.logits[real], full.logits[:, start:end][real], atol=1e-5, rtol=1e-5)


def test_one_layer_cache_is_exact_after_the_block_changes_and_deeper_caches_go_stale(tokenizer):
    # With one layer, a column's keys depend on its own token only: refreshing the block's keys is exact.
    # With two, the cached keys of the other columns saw the old block: the cache is an approximation.
    ids = _ids(tokenizer, 24, seed=1)
    changed = ids.clone()
    changed[:, 8:16] = tokenizer.mask_token_id
    gaps = {}
    for layers in (1, 2):
        torch.manual_seed(0)
        model = build_model(tokenizer, **{**TINY, "n_layers": layers}).eval()
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True).past_key_values
            cached = model(input_ids=changed[:, 8:16], past_key_values=cache, cache_start=8).logits
            exact = model(input_ids=changed).logits[:, 8:16]
        gaps[layers] = float((cached - exact).abs().max())
    assert gaps[1] < 1e-5 and gaps[2] > 1e-3


def test_cached_pass_outside_the_cache_is_rejected(tiny_model, tokenizer):
    with torch.no_grad():
        cache = tiny_model(input_ids=_ids(tokenizer, 10), use_cache=True).past_key_values
        with pytest.raises(ValueError, match="cache_start must place 8 tokens inside the cached 10 columns"):
            tiny_model(input_ids=_ids(tokenizer, 8), past_key_values=cache, cache_start=4)


# ---------------------------------------------------------------- caches in the sampler
PROMPTS = [[40, 41, 42, 43, 44], [45, 46, 47, 48, 49]]  # equal lengths: no padding columns


@pytest.mark.parametrize(
    "mode,query_lens",
    [
        ("prefix", [None] + [16] * 7 + [None] + [8] * 7),  # block 0 computes itself and the suffix
        ("dual", [None] + [8] * 7 + [None] + [8] * 7),  # only the current block
    ],
)
def test_each_block_refreshes_the_cache_then_runs_cached_passes(tiny_lm, mode, query_lens):
    rec = TraceRecorder()
    sample(tiny_lm, PROMPTS, 16, SamplerConfig(block_length=8, cache=mode), callbacks=[rec])
    assert [e.query_len for e in rec.forwards] == query_lens
    assert {e.seq_len for e in rec.forwards} == {21}  # every pass attends to prompt + whole canvas


def test_growing_window_with_a_cache_computes_only_the_current_block(tiny_lm):
    rec = TraceRecorder()
    sample(tiny_lm, PROMPTS, 16, SamplerConfig(block_length=8, window="growing", cache="prefix"), callbacks=[rec])
    shapes = [(e.seq_len, e.query_len) for e in rec.forwards]
    assert shapes[:8] == [(13, None)] + [(13, 8)] * 7
    assert shapes[8:] in ([], [(21, None)] + [(21, 8)] * 7)  # block 1 only if no answer ended in block 0


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_one_layer_model_decodes_the_same_tokens_with_a_cache(tokenizer, mode):
    torch.manual_seed(3)
    lm = embedded_lm(build_model(tokenizer, **{**TINY, "n_layers": 1}).eval(), tokenizer, model_id="one-layer")
    prompts = ["count from 3 to 9", "repeat kiwi 4 times", "spell tiger"]
    cfg = SamplerConfig(block_length=8)
    plain = [o.tokens for o in sample(lm, prompts, 24, cfg)]
    assert [o.tokens for o in sample(lm, prompts, 24, replace(cfg, cache=mode))] == plain


def test_cache_is_refused_for_a_network_without_cached_passes(stub_lm):
    with pytest.raises(ValueError, match="cache mode 'dual' needs a network that runs with cached keys"):
        sample(stub_lm, [PROMPT_ENDS], 16, SamplerConfig(block_length=8, cache="dual"))


# ---------------------------------------------------------------- pricing cached passes
HAND = ModelShape(
    name="hand", n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, mlp_hidden=64, vocab_size=100, max_positions=64
)


def test_analytic_count_of_a_cached_pass_matches_the_hand_count():
    # 8 query tokens against 40 keys, 2 layers, d 32, 2 heads of 16, SwiGLU 64, vocabulary 100 (multiply-adds):
    macs = {
        "attn/qkv": 2 * 8 * 32 * 16 * 6,
        "attn/scores": 2 * 2 * 2 * 8 * 40 * 16,
        "attn/out": 2 * 8 * 32 * 32,
        "mlp": 2 * 8 * 32 * 64 * 3,
        "lm_head": 8 * 32 * 100,
    }
    got = analytic_flops(HAND, 40, query_len=8)
    assert {k: got[k] for k in macs} == {k: 2 * v for k, v in macs.items()}
    assert got["total"] == 460_800
    assert analytic_flops(HAND, 40)["total"] == 2_304_000  # the refresh: a full pass over 40 tokens
    with pytest.raises(ValueError, match="query_len 41 exceeds the 40 keys"):
        analytic_flops(HAND, 40, query_len=41)


def test_ledger_prices_a_refresh_as_a_full_pass_and_cached_passes_by_their_queries():
    ledger = FlopLedger(AnalyticCounter(HAND))
    ledger.on_forward(ForwardEvent("denoise", ("a", "b"), 40, 0))  # refresh
    for step in range(1, 8):
        ledger.on_forward(ForwardEvent("denoise", ("a", "b"), 40, step, query_len=8))
    assert ledger.per_query() == {q: {"denoise": 2_304_000 + 7 * 460_800} for q in ("a", "b")}
    assert ledger.forward_lengths("a") == [40] * 8 and ledger.forward_query_lengths("a") == [None] + [8] * 7


def test_fvcore_torch_and_analytic_counts_of_cached_passes_agree(tiny_model):
    shape = shape_from_config(tiny_model.config)
    for row in cross_check(tiny_model, shape, [12, 40], query_len=8):
        assert row["max_rel_diff"] == 0, row


def test_dual_cached_sampler_costs_less_than_the_uncached_one(tiny_lm, counter):
    costs = {}
    for mode in ("none", "dual"):
        ledger = FlopLedger(counter)
        sample(tiny_lm, PROMPTS, 32, SamplerConfig(block_length=8, cache=mode), callbacks=[ledger])
        costs[mode] = ledger.total()
    # per block: 1 full pass + 7 passes of 8 queries (of 37 keys) instead of 8 full passes
    expected = 2 * 4 * (counter.forward_flops(37) + 7 * counter.forward_flops(37, query_len=8))
    assert costs["dual"] == expected and costs["none"] == 2 * 32 * counter.forward_flops(37)
