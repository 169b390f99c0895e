"""dLLM-Var's training recipe: end tokens always masked, samples packed into one row, a two-step smoke run."""

import json

import pytest
import torch
from conftest import TINY

from ptdlib.models.dllm_var import DllmVarBatchSource, dllm_var_loss, packed_row
from ptdlib.models.embedded import build_model, load_pretrained
from ptdlib.models.metrics import end_token_ids
from ptdlib.models.training import BatchSource, TrainConfig, train


def test_packed_row_concatenates_samples_and_ends_with_the_last_samples_end_run():
    ids, response, used = packed_row([([10, 11], [20]), ([12], [21, 22]), ([13, 14, 15], [23])], width=10, end_id=3)
    assert used == 2  # the third sample (5 tokens) does not fit after the first two (7 tokens)
    assert ids == [10, 11, 20, 3, 12, 21, 22, 3, 3, 3]
    assert response == [False, False, True, True, False, True, True, True, True, True]


def test_packed_row_names_a_sample_that_cannot_fit():
    with pytest.raises(ValueError, match="does not fit a packed row of 4"):
        packed_row([([1, 2, 3], [4, 5])], width=4, end_id=3)


def _source(tokenizer, model, pack_frac):
    cfg = TrainConfig(batch_size=4, recipe="dllm-var", pack_frac=pack_frac, seed=3)
    return DllmVarBatchSource(tokenizer, cfg, BatchSource(tokenizer, cfg), tuple(end_token_ids(model, tokenizer)))


def test_packed_batches_hold_several_prompts_per_row(tokenizer, tiny_model):
    batch = _source(tokenizer, tiny_model, pack_frac=1.0).batch(0)
    assert batch.ids.shape == (4, 192)
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    per_row = (batch.ids == assistant).sum(1)
    assert (per_row >= 2).all(), per_row  # several samples per row
    assert bool(batch.attention_mask.all())  # full attention: no padding, every token sees every other


class _Spy(torch.nn.Module):
    """Records the inputs it is called with and returns uniform logits."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.seen = vocab, []
        self.bias = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, input_ids, attention_mask=None):
        self.seen.append(input_ids.clone())
        return type("Out", (), {"logits": self.bias.expand(*input_ids.shape, self.vocab)})()


@pytest.mark.parametrize("pack_frac", [0.0, 1.0])
def test_every_end_token_is_masked_and_no_prompt_token_is(tokenizer, tiny_model, pack_frac):
    source = _source(tokenizer, tiny_model, pack_frac)
    spy = _Spy(len(tokenizer))
    ends = end_token_ids(tiny_model, tokenizer)
    for step in range(3):
        batch = source.batch(step)
        assert bool((batch.end == (batch.response & torch.isin(batch.ids, torch.tensor(ends)))).all())
        assert int(batch.end.sum()) > 0
        # a tiny eps: t near 0 masks almost no answer token, and still every end token must be masked
        dllm_var_loss(spy, batch, tokenizer.mask_token_id, eps=1e-6, gen=torch.Generator().manual_seed(step))
        seen = spy.seen[-1]
        assert bool((seen[batch.end] == tokenizer.mask_token_id).all())
        prompt = batch.attention_mask.bool() & ~batch.response
        assert bool((seen[prompt] == batch.ids[prompt]).all())


def test_uniform_logits_give_the_loss_of_log_vocab_per_masked_weight(tokenizer, tiny_model):
    # With t = 1 for every row (eps = 1) all response tokens are masked at weight 1: loss = log V exactly.
    batch = _source(tokenizer, tiny_model, pack_frac=1.0).batch(1)
    loss = dllm_var_loss(_Spy(len(tokenizer)), batch, tokenizer.mask_token_id, eps=1.0, gen=torch.Generator())
    assert loss.item() == pytest.approx(torch.log(torch.tensor(float(len(tokenizer)))).item(), rel=1e-5)


def test_unknown_recipe_is_rejected_naming_the_choices():
    with pytest.raises(ValueError, match="unknown training recipe 'dllm'; choose from llada-sft, dllm-var"):
        TrainConfig(recipe="dllm")


def test_two_step_dllm_var_smoke_run_continues_a_model_and_records_the_recipe(tokenizer, tmp_path):
    torch.manual_seed(0)
    from ptdlib.models.embedded import save_model

    save_model(build_model(tokenizer, **TINY), tokenizer, tmp_path / "start")
    cfg = TrainConfig(
        steps=2,
        batch_size=2,
        warmup=1,
        checkpoint_every=1,
        snapshot_every=1,
        eval_every=0,
        model=TINY,
        threads=1,
        recipe="dllm-var",
        pack_frac=0.5,
        init_from=str(tmp_path / "start"),
    )
    card = train(cfg, tmp_path / "var", work_dir=tmp_path / "work")
    assert card["steps_done"] == 2 and card["config"]["recipe"] == "dllm-var"
    assert json.loads((tmp_path / "var" / "training_card.json").read_text())["config"]["pack_frac"] == 0.5
    assert (tmp_path / "work" / "step-000001" / "model.safetensors").exists()
    model, _ = load_pretrained(tmp_path / "var")
    start, _ = load_pretrained(tmp_path / "start")
    assert not torch.equal(model.lm_head.weight, start.lm_head.weight)  # the two steps changed the weights
