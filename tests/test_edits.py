"""Live canvas edits (ptdlib.sampling.edits) applied by the sampler's loop: positions, what stays committed, FLOPs."""

import pytest
import torch

from ptdlib.cost.flops import FlopLedger
from ptdlib.sampling.edits import InsertMasks, Resize, apply_edit
from ptdlib.sampling.events import TraceRecorder
from ptdlib.sampling.sampler import SamplerConfig, sample

PROMPTS = ["count from 3 to 9", "repeat kiwi 4 times", "spell tiger"]
CFG = SamplerConfig(block_length=8)  # steps=None: one token per step (S = L)


class ScriptedEditor:
    """Edits given per (query id, step); records the canvas each edited query had right after that step."""

    def __init__(self, script):
        self.script = dict(script)  # (qid, step) -> list of edits
        self.seen = {}  # (qid, step) -> canvas tokens after the step's commits, before the edit

    def edit(self, view):
        out = []
        for r, q in enumerate(view.query_ids):
            if (q, view.step) in self.script:
                self.seen[q, view.step] = view.after[r, : view.lengths[r]].tolist()
                out += self.script[q, view.step]
        return out


class Passes:
    def __init__(self):
        self.events = []

    def on_forward(self, event):
        self.events.append(event)


def test_editor_that_never_edits_reproduces_the_plain_sampler(tiny_lm):
    plain = sample(tiny_lm, PROMPTS, 24, CFG)
    edited = sample(tiny_lm, PROMPTS, 24, CFG, editor=ScriptedEditor({}))
    assert [o.tokens for o in edited] == [o.tokens for o in plain]
    assert [o.forward_passes for o in edited] == [o.forward_passes for o in plain] == [24] * 3


def test_inserted_masks_shift_committed_tokens_and_are_all_denoised(tiny_lm):
    editor = ScriptedEditor({(0, 3): [InsertMasks(0, position=2, count=5)]})
    trace, passes = TraceRecorder(), Passes()
    out = sample(tiny_lm, PROMPTS[:1], 16, CFG, editor=editor, callbacks=[trace, passes])[0]
    before = editor.seen[0, 3]  # four tokens committed by steps 0-3, in the first block
    committed = [i for i, t in enumerate(before) if t != tiny_lm.mask_id]
    assert len(committed) == 4
    for i in committed:  # every committed token kept its value, moved right by 5 if it sat at or after 2
        assert out.tokens[i + 5 if i >= 2 else i] == before[i]
    assert out.canvas_length == 21 and tiny_lm.mask_id not in out.tokens
    assert out.forward_passes == 21  # one pass per masked position, the inserted ones included
    P = len(tiny_lm.encode_prompt(PROMPTS[0]))
    assert [e.seq_len for e in passes.events] == [P + 16] * 4 + [P + 21] * 17


def test_shrinking_cuts_the_tail_and_later_passes_are_shorter(tiny_lm, counter):
    editor = ScriptedEditor({(0, 9): [Resize(0, length=12)]})
    ledger, passes = FlopLedger(counter), Passes()
    out = sample(tiny_lm, PROMPTS[:1], 24, CFG, editor=editor, callbacks=[ledger, passes])[0]
    before = editor.seen[0, 9]
    assert out.canvas_length == 12 and out.tokens[:8] == before[:8]  # steps 0-7: the first block
    kept = [i for i in range(8, 12) if before[i] != tiny_lm.mask_id]  # steps 8-9: two of positions 8-15
    assert all(out.tokens[i] == before[i] for i in kept)
    P = len(tiny_lm.encode_prompt(PROMPTS[0]))
    lens = [e.seq_len for e in passes.events]
    assert lens == [P + 24] * 10 + [P + 12] * 2
    assert ledger.per_query()[0]["denoise"] == 10 * counter.forward_flops(P + 24) + 2 * counter.forward_flops(P + 12)


def test_a_grown_row_takes_its_own_pass_so_its_neighbour_is_not_padded(tiny_lm):
    editor = ScriptedEditor({(1, 0): [Resize(1, length=20)]})
    passes = Passes()
    outs = sample(tiny_lm, PROMPTS[:2], 8, CFG, editor=editor, callbacks=[passes])
    assert [o.canvas_length for o in outs] == [8, 20]
    assert all(tiny_lm.mask_id not in o.tokens for o in outs)
    P0, P1 = (len(tiny_lm.encode_prompt(p)) for p in PROMPTS[:2])
    # step 0: one pass for both; steps 1-7: a pass per canvas width (1 and 3 blocks), each at its own length;
    # then row 1 alone on its second and third blocks
    first = [(2, max(P0, P1) + 8)] + [(1, P0 + 8), (1, P1 + 20)] * 7
    assert [(e.batch_size, e.seq_len) for e in passes.events] == first + [(1, P1 + 20)] * 12


def test_apply_edit_inserts_appends_and_cuts():
    assert apply_edit([1, 2, 3], InsertMasks("q", 1, 2), mask_id=9, max_length=10) == [1, 9, 9, 2, 3]
    assert apply_edit([1, 2, 3], InsertMasks("q", 3, 1), mask_id=9, max_length=10) == [1, 2, 3, 9]
    assert apply_edit([1, 2, 3], Resize("q", 5), mask_id=9, max_length=10) == [1, 2, 3, 9, 9]
    assert apply_edit([1, 2, 3], Resize("q", 2), mask_id=9, max_length=10) == [1, 2]


@pytest.mark.parametrize(
    "edit, message",
    [
        (InsertMasks("q", 4, 1), r"insertion position 4 is outside its canvas of 3 tokens \(allowed 0..3\)"),
        (InsertMasks("q", 0, 0), "at least one mask, got count 0"),
        (Resize("q", 0), "canvas length must be >= 1, got 0"),
        (Resize("q", 11), "canvas of 11 tokens, more than the 10"),
    ],
)
def test_bad_edits_are_rejected_naming_the_value(edit, message):
    with pytest.raises(ValueError, match=message):
        apply_edit([1, 2, 3], edit, mask_id=9, max_length=10)


def test_editor_needs_one_token_per_step_or_a_threshold(tiny_lm):
    with pytest.raises(ValueError, match="steps=None .* or a threshold, got steps=8"):
        sample(tiny_lm, PROMPTS, 16, SamplerConfig(block_length=8, steps=8), editor=ScriptedEditor({}))
    outs = sample(tiny_lm, PROMPTS, 12, SamplerConfig(block_length=8, threshold=0.5), editor=ScriptedEditor({}))
    assert all(o.canvas_length == 12 and tiny_lm.mask_id not in o.tokens for o in outs)  # partial last block


def test_an_edit_for_a_query_not_in_the_step_is_rejected(tiny_lm):
    with pytest.raises(ValueError, match="query 'nobody', which took no part in step 0"):
        sample(tiny_lm, PROMPTS[:1], 8, CFG, editor=ScriptedEditor({(0, 0): [Resize("nobody", 4)]}))


def test_early_stop_with_an_editor_stops_after_the_block_holding_eos(tiny_lm):
    from dataclasses import replace

    plain = sample(tiny_lm, PROMPTS, 32, replace(CFG, stop_after_eos_block=True))
    edited = sample(tiny_lm, PROMPTS, 32, replace(CFG, stop_after_eos_block=True), editor=ScriptedEditor({}))
    assert [o.tokens for o in edited] == [o.tokens for o in plain]
    assert [o.forward_passes for o in edited] == [o.forward_passes for o in plain]
    torch.manual_seed(0)  # (nothing random above; keeps the module order-independent)


class ReopensLastToken:
    """An editor that never lets a canvas finish: it cuts the last token and puts a mask back, every step."""

    def edit(self, view):
        out = []
        for q, n in zip(view.query_ids, view.lengths):
            out += [Resize(q, n - 1), Resize(q, n)]
        return out


def test_an_editor_that_keeps_reopening_a_canvas_cannot_loop_forever(tiny_lm):
    P = len(tiny_lm.encode_prompt(PROMPTS[0]))
    with pytest.warns(RuntimeWarning, match=r"queries \[0\] stopped after as many steps as they have positions"):
        out = sample(tiny_lm, PROMPTS[:1], 8, CFG, editor=ReopensLastToken())[0]
    assert out.steps_run == tiny_lm.max_positions - P  # one commit per step: the most steps a row can need
