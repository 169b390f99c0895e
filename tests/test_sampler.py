"""The sampler against a literal re-statement of LLaDA's reference ``generate()``, plus its batching contracts."""

from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from ptdlib.models.embedded import DEFAULT_MODEL_DIR
from ptdlib.sampling.commit import select_above_threshold, select_top_k, transfer_schedule
from ptdlib.sampling.events import TraceRecorder
from ptdlib.sampling.sampler import SamplerConfig, _query_seed, sample

PROMPTS = ["count from 3 to 9", "repeat kiwi 4 times", "reverse : cat dog sun moon tree ship rain", "spell tiger"]


def reference_generate(
    lm,
    prompt_ids,
    gen_length,
    steps,
    block_length,
    temperature=0.0,
    cfg_scale=0.0,
    remasking="low_confidence",
    suppress_eos=False,
    confidence_eos_eot_inf=False,
    generator=None,
):
    """LLaDA's generate() re-stated from issue 3 §1: one prompt, no padding, plain loops.

    Randomness follows the project's convention (one generator per query; per step a (block_length, V) float64
    uniform tensor for the Gumbel noise of the current block, then a (block_length,) one for random remasking).
    The reference also computes candidates outside the current block, but their confidence is -inf there (later
    blocks explicitly, earlier ones because they are fully committed), so that dead work is left out.
    """
    mask_id = lm.mask_id
    P = len(prompt_ids)
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[0, :P] = torch.tensor(prompt_ids)
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks
    for nb in range(num_blocks):
        start, end = P + nb * block_length, P + (nb + 1) * block_length
        n_masked = int((x[0, start:end] == mask_id).sum())
        counts = [
            n_masked // steps_per_block + (1 if i < n_masked % steps_per_block else 0) for i in range(steps_per_block)
        ]
        for i in range(steps_per_block):
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                logits, un_logits = lm.logits(torch.cat([x, un_x])).chunk(2)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = lm.logits(x)
            if suppress_eos:  # the reference's logits_eos_inf: the EOS logit only
                logits[:, :, lm.eos_id] = float("-inf")
            block_logits = logits[0, start:end]
            if temperature > 0:
                u = torch.rand(block_logits.shape, generator=generator, dtype=torch.float64)
                noisy = block_logits.to(torch.float64).exp() / (-torch.log(u)) ** temperature
            else:
                noisy = block_logits
            x0 = noisy.argmax(dim=-1)
            if remasking == "low_confidence":
                p = torch.softmax(block_logits.to(torch.float64), dim=-1)
                conf = p[torch.arange(block_length), x0]
            else:
                conf = torch.rand(block_length, generator=generator, dtype=torch.float64)
            conf = torch.where(x[0, start:end] == mask_id, conf, float("-inf"))
            if confidence_eos_eot_inf:  # end-token candidates after every other masked position, then by confidence
                masked = (x[0, start:end] == mask_id).nonzero().squeeze(1).tolist()
                order = sorted(masked, key=lambda j: (int(x0[j]) in lm.end_ids, -float(conf[j]), j))
                select = torch.tensor(order[: counts[i]], dtype=torch.long)
            else:
                _, select = torch.topk(conf, k=counts[i])
            x[0, start + select] = x0[select]
    return x[0, P:].tolist()


def reference_tokens(lm, prompts, L, steps, bl, seed=0, **kw):
    out = []
    for qid, p in enumerate(prompts):
        gen = torch.Generator().manual_seed(_query_seed(seed, qid))
        out.append(reference_generate(lm, lm.encode_prompt(p), L, steps, bl, generator=gen, **kw))
    return out


class EndTokenBias(nn.Module):
    """Wraps a network: adds a large EOS logit at real positions >= ``after`` in rows holding ``trigger``."""

    def __init__(self, inner, eos_id, after, trigger=None):
        super().__init__()
        self.inner, self.eos_id, self.after, self.trigger = inner, eos_id, after, trigger

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
        pos = attention_mask.long().cumsum(-1) - 1
        on = pos >= self.after
        if self.trigger is not None:
            on &= (input_ids == self.trigger).any(-1, keepdim=True)
        logits[..., self.eos_id] += 30.0 * on
        return logits


@pytest.fixture(scope="module")
def eos_lm(tiny_lm):
    """The tiny model, made to end every answer at real position 14 (within the first block of 8 or 16)."""
    return replace(tiny_lm, network=EndTokenBias(tiny_lm.network, tiny_lm.eos_id, after=14))


# ---------------------------------------------------------------- the commit rule
def test_transfer_schedule_spreads_remainder_first():
    assert transfer_schedule(torch.tensor([10]), 3).tolist() == [[4, 3, 3]]
    assert transfer_schedule(torch.tensor([5, 8, 0]), 4).tolist() == [[2, 1, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]]


def test_top_k_selection_takes_most_confident_and_leftmost_on_ties():
    conf = torch.tensor([[0.1, 0.7, 0.7, float("-inf"), 0.9], [0.5, 0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    sel = select_top_k(conf, torch.tensor([2, 3]))
    assert sel.tolist() == [[False, True, False, False, True], [True, True, True, False, False]]


def test_threshold_selection_commits_at_least_one():
    conf = torch.tensor([[0.2, 0.3, float("-inf")], [0.95, 0.99, 0.1]], dtype=torch.float64)
    masked = torch.tensor([[True, True, False], [True, True, True]])
    assert select_above_threshold(conf, masked, 0.9).tolist() == [[False, True, False], [True, True, False]]


# ---------------------------------------------------------------- faithfulness to the reference
@pytest.mark.parametrize("L,bl,steps", [(16, 16, 16), (16, 8, 8), (24, 8, 12), (16, 8, 6), (15, 5, 6), (16, 4, 16)])
def test_greedy_sampler_matches_reference_token_for_token(tiny_lm, L, bl, steps):
    cfg = SamplerConfig(steps=steps, block_length=bl)
    got = [o.tokens for o in sample(tiny_lm, PROMPTS, L, cfg)]
    assert got == reference_tokens(tiny_lm, PROMPTS, L, steps, bl)


@pytest.mark.parametrize(
    "options",
    [
        dict(temperature=0.7),
        dict(temperature=1.0, remasking="random"),
        dict(remasking="random"),
        dict(cfg_scale=1.5, suppress_eos=True),
        dict(temperature=0.5, cfg_scale=0.5),
        dict(temperature=0.8, confidence_eos_eot_inf=True),
        dict(suppress_eos=True, confidence_eos_eot_inf=True),
    ],
)
def test_seeded_sampler_matches_reference(tiny_lm, options):
    cfg = SamplerConfig(steps=8, block_length=8, **options)
    got = [o.tokens for o in sample(tiny_lm, PROMPTS, 16, cfg, seed=7)]
    assert got == reference_tokens(tiny_lm, PROMPTS, 16, 8, 8, seed=7, **options)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").exists(), reason="shipped model not trained yet")
@pytest.mark.parametrize("L,bl,steps,temperature", [(32, 32, 32, 0.0), (32, 16, 16, 0.0), (32, 8, 32, 0.8)])
def test_sampler_matches_reference_on_shipped_model(L, bl, steps, temperature):
    from ptdlib.models.embedded import load_embedded

    lm = load_embedded()
    cfg = SamplerConfig(steps=steps, block_length=bl, temperature=temperature)
    got = [o.tokens for o in sample(lm, PROMPTS, L, cfg, seed=3)]
    assert got == reference_tokens(lm, PROMPTS, L, steps, bl, seed=3, temperature=temperature)


# ---------------------------------------------------------------- batching contracts
@pytest.mark.parametrize("options", [dict(), dict(temperature=0.9, remasking="random"), dict(cfg_scale=1.0)])
def test_batching_does_not_change_tokens(tiny_lm, options):
    cfg = SamplerConfig(block_length=8, **options)
    together = sample(tiny_lm, PROMPTS, 16, cfg, seed=1)
    alone = [sample(tiny_lm, [p], 16, cfg, seed=1, query_ids=[i])[0] for i, p in enumerate(PROMPTS)]
    in_twos = sample(tiny_lm, PROMPTS, 16, cfg, seed=1, batch_size=2)
    assert [o.tokens for o in together] == [o.tokens for o in alone] == [o.tokens for o in in_twos]


def test_seed_changes_samples_only_above_temperature_zero(tiny_lm):
    hot = SamplerConfig(block_length=8, temperature=1.0)
    assert [o.tokens for o in sample(tiny_lm, PROMPTS, 16, hot, seed=1)] != [
        o.tokens for o in sample(tiny_lm, PROMPTS, 16, hot, seed=2)
    ]
    cold = SamplerConfig(block_length=8)
    assert [o.tokens for o in sample(tiny_lm, PROMPTS, 16, cold, seed=1)] == [
        o.tokens for o in sample(tiny_lm, PROMPTS, 16, cold, seed=2)
    ]


def test_per_query_canvases_equal_separate_calls(tiny_lm):
    cfg = SamplerConfig(block_length=8, temperature=0.5)
    lengths = [8, 24, 16, 8]
    mixed = sample(tiny_lm, PROMPTS, lengths, cfg, query_ids=list("abcd"))
    for p, L, qid, out in zip(PROMPTS, lengths, "abcd", mixed):
        alone = sample(tiny_lm, [p], L, cfg, query_ids=[qid])[0]
        assert (out.canvas_length, out.tokens, out.forward_passes) == (L, alone.tokens, L)


def test_each_forward_pass_is_reported_with_its_padded_length(tiny_lm):
    rec = TraceRecorder()
    lengths = [8, 16, 8, 16]
    outs = sample(tiny_lm, PROMPTS, lengths, SamplerConfig(block_length=8), callbacks=[rec], kind="rerun")
    ids = [tiny_lm.encode_prompt(p) for p in PROMPTS]
    for L in (8, 16):
        members = {i for i in range(4) if lengths[i] == L}
        events = [e for e in rec.forwards if set(e.query_ids) == members]
        assert len(events) == L  # steps = L, one pass per step for the whole group
        assert {e.seq_len for e in events} == {max(len(ids[i]) for i in members) + L}
    assert len(rec.forwards) == 8 + 16 and {e.kind for e in rec.forwards} == {"rerun"}
    assert sum(o.forward_passes for o in outs) == sum(e.batch_size for e in rec.forwards)


def test_guidance_passes_count_both_branches(tiny_lm):
    rec = TraceRecorder()
    outs = sample(tiny_lm, PROMPTS[:2], 8, SamplerConfig(block_length=8, cfg_scale=1.0), callbacks=[rec])
    assert all(e.batch_size == 4 for e in rec.forwards) and len(rec.forwards) == 8
    assert [o.forward_passes for o in outs] == [16, 16] and [o.steps_run for o in outs] == [8, 8]


def test_trace_records_each_position_committed_once_on_schedule(tiny_lm):
    rec = TraceRecorder()
    sample(tiny_lm, PROMPTS[:2], 16, SamplerConfig(steps=6, block_length=8), callbacks=[rec])
    for qid in (0, 1):
        per_step = [len(pos) for _, _, pos, _ in rec.commits[qid]]
        assert per_step == [3, 3, 2, 3, 3, 2]  # 8 tokens over 3 steps in each of the 2 blocks
        steps = rec.commit_steps(qid, 16)
        assert sorted(steps) == sorted([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5])
        assert max(steps[:8]) < min(steps[8:])  # block 0 is filled before block 1 starts


# ---------------------------------------------------------------- early stop, init canvas, threshold
def test_outputs_report_length_and_truncation(tiny_lm, eos_lm):
    ended = sample(eos_lm, PROMPTS, 16, SamplerConfig(block_length=8))
    for p, o in zip(PROMPTS, ended):
        P = len(eos_lm.encode_prompt(p))
        first = next(i for i, t in enumerate(o.tokens) if t in eos_lm.end_ids)
        assert (o.length, o.truncated) == (first, False) and first <= max(0, 14 - P)
        assert o.text == eos_lm.decode(o.tokens[:first])
    plain = sample(tiny_lm, PROMPTS[:1], 8, SamplerConfig(block_length=8))[0]
    if not any(t in tiny_lm.end_ids for t in plain.tokens):
        assert (plain.truncated, plain.length) == (True, 8)


def test_early_stop_keeps_tokens_up_to_the_stop_and_saves_passes(tiny_lm):
    trigger = tiny_lm.tokenizer.convert_tokens_to_ids("kiwi")  # only the "repeat kiwi" query ends early
    lm = replace(tiny_lm, network=EndTokenBias(tiny_lm.network, tiny_lm.eos_id, after=12, trigger=trigger))
    cfg = SamplerConfig(block_length=8, temperature=0.6)
    full = sample(lm, PROMPTS, 32, cfg)
    rec = TraceRecorder()
    stopped = sample(lm, PROMPTS, 32, replace(cfg, stop_after_eos_block=True), callbacks=[rec])
    for f, s in zip(full, stopped):
        n = s.steps_run  # steps = L: one token per step, so the stop happened after n canvas positions
        assert s.tokens[:n] == f.tokens[:n] and all(t == lm.mask_id for t in s.tokens[n:])
        assert s.length == f.length and s.text == f.text
    assert stopped[1].forward_passes == 8 and [o.forward_passes for i, o in enumerate(stopped) if i != 1] == [32] * 3
    assert all(1 not in e.query_ids for e in rec.forwards if e.step >= 8)  # it left the batch


def test_init_canvas_continuing_a_run_reproduces_it(tiny_lm):
    cfg = SamplerConfig(block_length=8, temperature=0.0)
    first = sample(tiny_lm, PROMPTS, 24, cfg)
    half = [o.tokens[:8] + [tiny_lm.mask_id] * 16 for o in first]
    resumed = sample(tiny_lm, PROMPTS, 24, cfg, init_canvas=half)
    assert [o.tokens for o in resumed] == [o.tokens for o in first]
    assert [o.forward_passes for o in resumed] == [16] * 4  # the committed block costs nothing


def test_init_canvas_keeps_committed_tokens_and_fills_every_mask(tiny_lm):
    m = tiny_lm.mask_id
    init = [[5, m, m, 6, m, m, m, 7], None]
    outs = sample(tiny_lm, PROMPTS[:2], 8, SamplerConfig(block_length=8, steps=4), init_canvas=init)
    kept = outs[0].tokens
    assert [kept[0], kept[3], kept[7]] == [5, 6, 7] and m not in kept
    assert outs[0].steps_run == 4 and outs[1].steps_run == 4  # 5 masks over 4 steps: 2, 1, 1, 1


def test_threshold_rule_commits_at_least_one_token_per_pass(tiny_lm):
    strict = sample(tiny_lm, PROMPTS[:2], 16, SamplerConfig(block_length=8, threshold=1.0))
    assert [o.forward_passes for o in strict] == [16, 16]  # a tiny random model is never that sure
    loose = sample(tiny_lm, PROMPTS[:2], 16, SamplerConfig(block_length=8, threshold=1e-9))
    assert [o.forward_passes for o in loose] == [2, 2] and all(tiny_lm.mask_id not in o.tokens for o in loose)


# ---------------------------------------------------------------- end tokens as the reference has them
class PositionLogits(nn.Module):
    """A hand-made stub: fixed logits per canvas position, whatever the tokens (canvas = the last ``L`` positions).

    ``table`` maps a canvas position to {token id: logit}; every other token scores 0.
    """

    def __init__(self, vocab_size, L, table):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the stub a device
        self.base = torch.zeros(L, vocab_size)
        for pos, logits in table.items():
            for tok, value in logits.items():
                self.base[pos, tok] = value

    def forward(self, input_ids, attention_mask=None, **kwargs):
        B, T = input_ids.shape
        out = torch.zeros(B, T, self.base.shape[1])
        out[:, T - self.base.shape[0] :] = self.base
        return out


def stub_lm(tiny_lm, L, table):
    return replace(tiny_lm, network=PositionLogits(len(tiny_lm.tokenizer), L, table))


def test_suppress_eos_forbids_eos_only_so_end_of_turn_still_ends_the_answer(tiny_lm):
    eos, eot = tiny_lm.eos_id, tiny_lm.end_ids[1]
    word = tiny_lm.tokenizer.convert_tokens_to_ids("kiwi")
    assert eot != eos and eot in tiny_lm.end_ids and word not in tiny_lm.end_ids
    # EOS first, EOT second, a word third at every position from 3 on; the word alone before.
    table = {i: {word: 3.0} for i in range(3)} | {i: {eos: 9.0, eot: 8.0, word: 3.0} for i in range(3, 8)}
    lm = stub_lm(tiny_lm, 8, table)
    plain = sample(lm, PROMPTS[:1], 8, SamplerConfig(block_length=8))[0]
    assert plain.tokens == [word] * 3 + [eos] * 5 and plain.length == 3
    forbidden = sample(lm, PROMPTS[:1], 8, SamplerConfig(block_length=8, suppress_eos=True))[0]
    assert forbidden.tokens == [word] * 3 + [eot] * 5  # logits_eos_inf: EOT is still a candidate
    assert (forbidden.length, forbidden.truncated, forbidden.text) == (3, False, "kiwi kiwi kiwi")


def test_confidence_eos_eot_inf_commits_end_tokens_after_every_other_position(tiny_lm):
    eos, eot = tiny_lm.eos_id, tiny_lm.end_ids[1]
    words = [tiny_lm.tokenizer.convert_tokens_to_ids(w) for w in ("cat", "dog", "sun", "moon")]
    # Positions 0-3: a word, less sure the further left (softmax 0.018 to 0.024); 4-7: an end token, sure (0.98).
    table = {i: {w: 2.0 + 0.1 * i} for i, w in enumerate(words)} | {
        4: {eos: 10.0},
        5: {eos: 10.0},
        6: {eot: 10.0},
        7: {eot: 10.0},
    }
    lm = stub_lm(tiny_lm, 8, table)
    final = words + [eos, eos, eot, eot]
    orders = {}
    for option in (False, True):
        rec = TraceRecorder()
        out = sample(lm, PROMPTS[:1], 8, SamplerConfig(block_length=8, confidence_eos_eot_inf=option), callbacks=[rec])[
            0
        ]
        assert out.tokens == final  # the option changes when a token is committed, not which
        orders[option] = rec.commit_steps(0, 8)
    assert orders[False] == [7, 6, 5, 4, 0, 1, 2, 3]  # most confident first: the end tokens, then the words
    assert orders[True] == [3, 2, 1, 0, 4, 5, 6, 7]  # every word first (most confident first), then end tokens


def test_confidence_eos_eot_inf_with_the_threshold_rule_still_commits_every_pass(tiny_lm):
    eos = tiny_lm.eos_id
    word = tiny_lm.tokenizer.convert_tokens_to_ids("kiwi")
    table = {0: {word: 2.0}, 1: {word: 2.1}} | {i: {eos: 10.0} for i in range(2, 8)}
    lm = stub_lm(tiny_lm, 8, table)
    eager = sample(lm, PROMPTS[:1], 8, SamplerConfig(block_length=8, threshold=0.9))[0]
    assert eager.forward_passes == 3  # all six sure end tokens in the first pass, then one word per pass
    last = sample(lm, PROMPTS[:1], 8, SamplerConfig(block_length=8, threshold=0.9, confidence_eos_eot_inf=True))[0]
    assert last.forward_passes == 8  # end tokens never reach the threshold: one (the best) per pass, after the words
    assert last.tokens == eager.tokens == [word, word] + [eos] * 6


# ---------------------------------------------------------------- configuration and bad input
def test_config_survives_a_dict_round_trip():
    cfg = SamplerConfig(
        steps=64,
        block_length=16,
        temperature=0.3,
        remasking="random",
        cfg_scale=1.0,
        suppress_eos=True,
        confidence_eos_eot_inf=True,
        threshold=0.9,
        stop_after_eos_block=True,
    )
    assert SamplerConfig(**asdict(cfg)) == cfg


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(steps=0), "steps must be a positive integer"),
        (dict(steps=-3), "steps must be a positive integer"),
        (dict(block_length=0), "block_length must be a positive integer"),
        (dict(remasking="lowest"), "unknown remasking 'lowest'; choose from low_confidence, random"),
        (dict(cfg_scale=-1.0), "cfg_scale must be >= 0, got -1.0"),
        (dict(temperature=-0.5), "temperature must be >= 0, got -0.5"),
        (dict(threshold=0.0), "threshold must be in (0, 1]"),
        (dict(threshold=1.5), "threshold must be in (0, 1] or None, got 1.5"),
    ],
)
def test_bad_config_is_rejected_with_value_and_allowed_range(options, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        SamplerConfig(**options)


@pytest.mark.parametrize(
    "canvas,options,message",
    [
        (0, dict(), "canvas length must be a positive integer, got 0"),
        (-8, dict(), "canvas length must be a positive integer, got -8"),
        (20, dict(block_length=8), "block_length 8 must divide the canvas length 20"),
        (32, dict(block_length=8, steps=6), "steps 6 must be divisible by the number of blocks 4"),
        (16, dict(block_length=8, steps=32), "steps 32 must be at most the canvas length 16"),
        (192, dict(), "exceeds the model's 192 positions"),
        ([8, 12], dict(block_length=8), "block_length 8 must divide the canvas length 12"),
    ],
)
def test_bad_call_is_rejected_with_value_and_allowed_range(tiny_lm, canvas, options, message):
    prompts = PROMPTS[:2]
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        sample(tiny_lm, prompts, canvas, SamplerConfig(**options))


def test_mismatched_per_query_arguments_are_rejected(tiny_lm):
    with pytest.raises(ValueError, match="got 1 canvas lengths for 2 prompts"):
        sample(tiny_lm, PROMPTS[:2], [8], SamplerConfig(block_length=8))
    with pytest.raises(ValueError, match="init_canvas has 3 tokens but its canvas length is 8"):
        sample(tiny_lm, PROMPTS[:1], 8, SamplerConfig(block_length=8), init_canvas=[[1, 1, 1]])
    with pytest.raises(ValueError, match="query_ids must be unique"):
        sample(tiny_lm, PROMPTS[:2], 8, SamplerConfig(block_length=8), query_ids=["a", "a"])
