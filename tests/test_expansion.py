"""Training-free variable length: DAEDAL and rho-EOS decisions on hand-made EOS densities and a stub model."""

import numpy as np
import pytest
import torch

from ptdlib.canvas import CanvasLimits, evaluate_strategy, make_policy
from ptdlib.canvas.daedal import DaedalEditor, end_confidence
from ptdlib.canvas.rho_eos import GROW, KEEP, SHRINK, RhoEosEditor, decide, eos_density, step_multiplier
from ptdlib.cost.flops import FlopLedger
from ptdlib.sampling.edits import InsertMasks, Resize, StepView
from ptdlib.sampling.sampler import SamplerConfig
from ptdlib.tasks import make_split

M, EOS, EOT, A = 9, 3, 4, 7  # mask, end tokens and an answer token of the hand-made views (V = 64)
V = 64


def _view(before, after, pred, conf=None, qids=None, block=(0, 8), end_p=None):
    """A StepView over one or more hand-made canvases: ``pred`` the argmax per position, ``conf`` its probability."""
    before, after, pred = (torch.as_tensor(x) for x in (before, after, pred))
    rows, W = pred.shape
    conf = torch.full((rows, W), 0.99) if conf is None else torch.as_tensor(conf, dtype=torch.float)
    others = V - 2 - (~torch.isin(pred, torch.tensor([EOS, EOT]))).long()  # non-end tokens other than pred
    probs = ((1 - conf) / others)[..., None].expand(rows, W, V).clone()  # the rest spread over them
    probs[..., [EOS, EOT]] = 0.0
    probs.scatter_(-1, pred[..., None], conf[..., None])
    return StepView(
        step=0,
        block_start=block[0],
        block_end=block[1],
        query_ids=tuple(qids or range(rows)),
        lengths=tuple([W] * rows),
        before=before,
        after=after,
        logits=probs.log(),
        mask_id=M,
        end_ids=(EOS, EOT),
    )


# ---------------------------------------------------------------- rho-EOS
def test_multiplier_doubles_per_tenth_of_density_beyond_the_threshold_up_to_eight():
    # as the reference: ceil((gap + 1e-12) / 0.1), so a gap of exactly 0.1 is already the second interval
    assert [step_multiplier(g) for g in (0.0, 0.05, 0.1, 0.15, 0.25, 0.35, 0.6)] == [1, 1, 2, 2, 4, 8, 8]


@pytest.mark.parametrize(
    "density, action, k",
    [
        (0.0, GROW, 2 * 8),  # gap 0.4: four intervals -> x8
        (0.25, GROW, 2 * 2),  # gap 0.15 -> x2
        (0.4, KEEP, 0),
        (0.5, KEEP, 0),
        (0.6, KEEP, 0),  # inside [rho_low, rho_high]
        (0.65, SHRINK, 2),  # gap 0.05 -> x1
        (1.0, SHRINK, 2 * 8),
    ],
)
def test_grow_below_low_shrink_above_high_keep_between(density, action, k):
    assert decide(density, 0.4, 0.6, expand=2) == (action, k)


def test_density_counts_end_predictions_among_positions_masked_before_the_step():
    before = torch.tensor([A, M, M, M, M, EOS])  # 4 masked; the committed EOS does not count
    pred = torch.tensor([A, A, EOS, EOT, A, EOS])
    assert eos_density(before, pred, 6, M, (EOS, EOT)) == 0.5
    assert eos_density(before, pred, 3, M, (EOS, EOT)) == 0.5  # only the first 3 positions: 1 of 2
    assert eos_density(torch.tensor([A, A]), pred[:2], 2, M, (EOS, EOT)) == 0.0


def test_low_density_inserts_masks_before_the_first_committed_end_token():
    pol = make_policy("rho_eos", expand=2)
    # 8 positions, masked 1-6; none predicted EOS (rho = 0 -> grow by 16, capped by the maximum canvas 20)
    before = [[A, M, M, M, M, M, M, EOS]]
    after = [[A, A, M, M, M, M, M, EOS]]
    pred = [[A, A, A, A, A, A, A, EOS]]
    assert RhoEosEditor(pol, max_canvas=20).edit(_view(before, after, pred)) == [InsertMasks(0, 7, 12)]
    after = [[A, A, M, M, M, M, M, M]]  # no committed end token: the masks are appended
    assert RhoEosEditor(pol, max_canvas=64).edit(_view(before, after, pred)) == [InsertMasks(0, 8, 16)]


def test_high_density_shrinks_the_tail_but_never_cuts_a_committed_answer_token():
    pol = make_policy("rho_eos", expand=2)
    before = [[A, A, M, M, M, M, M, M]]
    pred = [[A, A, A, EOS, EOS, EOS, EOS, EOS]]  # 5 of 6 masked predict EOS: rho 0.83 -> shrink by 2 * 4
    after = [[A, A, A, M, M, M, M, M]]
    # the cut stops past the last committed answer token (position 2) plus one position for its EOS
    assert RhoEosEditor(pol, max_canvas=64).edit(_view(before, after, pred)) == [Resize(0, 4)]
    after = [[A, A, M, M, M, M, M, A]]  # an answer token committed at the end: nothing may be cut
    assert RhoEosEditor(pol, max_canvas=64).edit(_view(before, after, pred)) == []


def test_length_changes_stop_after_adjust_steps():
    pol = make_policy("rho_eos", adjust_steps=2)
    ed = RhoEosEditor(pol, max_canvas=64)
    view = _view([[M] * 8], [[A] + [M] * 7], [[A] * 8])  # rho 0: grow every time it may
    assert [len(ed.edit(view)) for _ in range(4)] == [1, 1, 0, 0]


# ---------------------------------------------------------------- DAEDAL
def test_end_confidence_averages_the_last_check_end_predictions_over_check():
    pred = torch.tensor([[A, EOS, A, EOS, EOS]])
    conf = torch.tensor([[0.9, 0.6, 0.9, 0.8, 1.0]])
    probs = _view(pred, pred, pred, conf).logits.softmax(-1)
    # the last 2 end-argmax positions (3 and 4): (0.8 + 1.0) / 2; with check 4: (0.6 + 0.8 + 1.0) / 4
    assert end_confidence(probs, [5], (EOS, EOT), 2).item() == pytest.approx(0.9)
    assert end_confidence(probs, [5], (EOS, EOT), 4).item() == pytest.approx(0.6)
    assert end_confidence(probs, [3], (EOS, EOT), 2).item() == pytest.approx(0.3)  # a canvas of 3 positions


def test_daedal_replaces_the_least_confident_uncommitted_mask_of_the_block():
    pol = make_policy("daedal", expand=3, check=2, low_confidence=0.1, insert_eos_threshold=0.9)
    before = [[M, M, M, M, M, M, M, M]]
    after = [[A, M, M, M, M, M, M, M]]
    pred = [[A, A, A, A, A, A, A, A]]  # no end token predicted: end confidence 0
    conf = [[0.99, 0.5, 0.05, 0.02, 0.5, 0.5, 0.019, 0.5]]
    ed = DaedalEditor(pol, max_canvas=64)
    # the block is positions 0-3: position 3 (0.02) is the least confident there (6 is outside the block)
    assert ed.edit(_view(before, after, pred, conf, block=(0, 4))) == [InsertMasks(0, 3, 2)]
    assert DaedalEditor(pol, max_canvas=9).edit(_view(before, after, pred, conf, block=(0, 4))) == [
        InsertMasks(0, 3, 1)
    ]
    assert DaedalEditor(pol, max_canvas=8).edit(_view(before, after, pred, conf, block=(0, 4))) == []  # at the max


def test_daedal_does_not_insert_once_it_sees_the_answers_end():
    pol = make_policy("daedal", check=2)
    before = [[M, M, M, M, M, M, EOS, EOS]]
    pred = [[A, A, A, A, A, A, EOS, EOS]]
    conf = [[0.5, 0.02, 0.5, 0.5, 0.5, 0.5, 0.95, 0.95]]  # end confidence 0.95 >= 0.9
    assert DaedalEditor(pol, max_canvas=64).edit(_view(before, before, pred, conf)) == []


class EndAfter(torch.nn.Module):
    """Stub network: the answer ends at real position ``end`` (EOS logits after it), else token A."""

    def __init__(self, vocab, eos, end):
        super().__init__()
        self.vocab, self.eos, self.end = vocab, eos, end
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the stub a device

    def forward(self, input_ids, attention_mask=None, **kwargs):
        pos = attention_mask.long().cumsum(-1) - 1
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., A] = 5.0
        logits[..., self.eos] += 10.0 * (pos >= self.end)
        return logits


def test_daedal_probes_until_the_canvas_end_is_eos_and_charges_every_probe(tiny_lm, counter):
    from dataclasses import replace

    q = make_split("test", 1, seed=5)
    P = len(tiny_lm.encode_prompt(q[0].prompt))
    lm = replace(tiny_lm, network=EndAfter(tiny_lm.network.config.vocab_size, tiny_lm.eos_id, end=P + 21))
    pol = make_policy("daedal", initial=8, grow=4, check=4, eos_pad=2)
    ledger = FlopLedger(counter)
    limits = CanvasLimits(max_canvas=64, round_to=8)
    # answer of 21 tokens: canvases 8, 12, 16, 20, 24 are probed; at 24 the last 3 positions predict EOS
    # (3 / 4 = 0.75 >= 0.5); 20 has none. Then 2 committed EOS are appended.
    assert pol.choose(lm, q, limits, [ledger]).tolist() == [26]
    assert ledger.per_query()[q[0].qid]["probe"] == sum(counter.forward_flops(P + L) for L in (8, 12, 16, 20, 24))
    assert pol.initial_canvases(lm, [26]) == [[lm.mask_id] * 24 + [lm.eos_id] * 2]


def test_editing_policies_run_end_to_end_and_count_every_pass(tiny_lm, counter):
    qs = make_split("test", 4, seed=2)
    limits, cfg = CanvasLimits(max_canvas=64, round_to=8), SamplerConfig(block_length=8)
    for name in ("daedal", "rho_eos"):
        rows = evaluate_strategy(tiny_lm, qs, make_policy(name), counter, sampler=cfg, limits=limits)
        for r in rows:
            lens = np.array(eval(r["forward_lens"]))
            assert r["flops_total"] == sum(counter.forward_flops(int(n)) for n in lens)
            assert r["flops_total"] == r["flops_probe"] + r["flops_denoise"] + r["flops_rerun"]
            assert 1 <= r["final_canvas"] <= 64


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("daedal", {"expand": 1}, "expand must be an integer >= 2"),
        ("daedal", {"low_confidence": 1.5}, r"low_confidence must be a probability in \[0, 1\], got 1.5"),
        ("rho_eos", {"rho_low": 0.7, "rho_high": 0.6}, "rho_low 0.7 must be at most rho_high 0.6"),
        ("rho_eos", {"threshold": 0.0}, r"threshold must be in \(0, 1\] or None"),
    ],
)
def test_bad_parameters_are_rejected_by_name(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_policy(name, **params)


def test_editing_policies_refuse_recoveries_off_the_block_grid():
    with pytest.raises(ValueError, match="recover with max or none, not 'double'"):
        make_policy("rho_eos").check_recovery("double")
    with pytest.raises(ValueError, match="steps=None"):
        make_policy("daedal").sampler_config(SamplerConfig(steps=64, block_length=8))
    with pytest.raises(ValueError, match="rho_eos decodes one token per step"):
        make_policy("rho_eos").check_config(CanvasLimits(128, 8), SamplerConfig(steps=64, block_length=8))
