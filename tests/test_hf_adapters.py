"""Hugging Face adapters, tested on tiny checkpoints the tests build and save themselves."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import ptdlib.models.hf as hf
from ptdlib.models.embedded import save_model
from ptdlib.models.hf import load_hf_dllm
from ptdlib.models.tokenizer import build_tokenizer
from ptdlib.sampling.sampler import SamplerConfig, sample


@pytest.fixture(scope="module")
def llada_dir(tiny_model, tokenizer, tmp_path_factory):
    """The tiny embedded model saved as a LLaDA-style checkpoint (config carries mask_token_id)."""
    return save_model(tiny_model, tokenizer, tmp_path_factory.mktemp("llada"))


def _qwen2_dir(path, keep_mask_token=True, **config):
    """A tiny transformers Qwen2 model standing in for Dream (logits shifted by one), with our tokenizer."""
    tok = build_tokenizer()
    if not keep_mask_token:
        tok.mask_token = None
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=96,
        **config,
    )
    Qwen2ForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    return _qwen2_dir(tmp_path_factory.mktemp("dream"))


def test_llada_style_checkpoint_reads_ids_positions_and_logits(llada_dir, tiny_model, tokenizer):
    lm = load_hf_dllm(llada_dir)
    assert (lm.mask_id, lm.eos_id, lm.pad_id) == (
        tokenizer.mask_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert lm.end_ids == (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot|>"))
    assert (lm.max_positions, lm.logits_shift, lm.model_id) == (
        tiny_model.config.max_position_embeddings,
        0,
        llada_dir.name,
    )
    ids = torch.tensor([lm.encode_prompt("count from 1 to 3") + [lm.mask_id] * 4])
    torch.testing.assert_close(lm.logits(ids), tiny_model(input_ids=ids).logits)


def test_llada_style_checkpoint_samples_like_the_in_memory_model(llada_dir, tiny_lm):
    cfg = SamplerConfig(block_length=8)
    prompts = ["repeat kiwi 3 times", "spell tiger"]
    loaded = sample(load_hf_dllm(llada_dir), prompts, 16, cfg)
    assert [o.tokens for o in loaded] == [o.tokens for o in sample(tiny_lm, prompts, 16, cfg)]


def test_dream_style_logits_are_shifted_back_by_one(dream_dir):
    lm = load_hf_dllm(dream_dir, style="dream")
    assert lm.logits_shift == 1 and lm.max_positions == 96
    ids = torch.tensor([[2, 6, 208, 209, 9, 7, lm.mask_id, lm.mask_id]])
    raw = lm.network(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(lm.logits(ids)[:, 1:], raw[:, :-1])


def test_dream_style_ids_come_from_the_tokenizer(dream_dir):
    lm = load_hf_dllm(dream_dir, style="dream")
    tok = build_tokenizer()
    assert (lm.mask_id, lm.eos_id) == (tok.mask_token_id, tok.eos_token_id)
    assert lm.end_ids == (tok.eos_token_id, tok.convert_tokens_to_ids("<|eot|>"))


def test_left_padding_does_not_move_positions(dream_dir):
    lm = load_hf_dllm(dream_dir, style="dream")
    short, long = [2, 6, 208, 7], [2, 6, 208, 209, 9, 210, 11, 7]
    cfg = SamplerConfig(block_length=4, temperature=0.8)
    together = sample(lm, [short, long], 8, cfg)
    alone = [sample(lm, [p], 8, cfg, query_ids=[i])[0] for i, p in enumerate([short, long])]
    assert [o.tokens for o in together] == [o.tokens for o in alone]


def test_missing_mask_id_is_a_clear_error_and_can_be_overridden(tmp_path):
    path = _qwen2_dir(tmp_path, keep_mask_token=False)
    with pytest.raises(ValueError, match="cannot find the mask token id.*pass mask_id="):
        load_hf_dllm(path, style="dream")
    lm = load_hf_dllm(path, style="dream", mask_id=1, eos_id=4, eot_id=3)
    assert (lm.mask_id, lm.eos_id, lm.end_ids) == (1, 4, (4, 3))


def test_every_eos_id_a_config_lists_ends_a_response(tmp_path):
    lm = load_hf_dllm(_qwen2_dir(tmp_path, eos_token_id=[3, 5]), style="dream")
    assert (lm.eos_id, lm.end_ids) == (3, (3, 5, 4))


def test_unknown_style_is_rejected(llada_dir):
    with pytest.raises(ValueError, match="unknown model style 'mdlm'; choose from llada, dream"):
        load_hf_dllm(llada_dir, style="mdlm")


def test_remote_code_runs_only_when_the_user_opts_in(llada_dir, monkeypatch):
    seen = []
    for auto in (hf.AutoConfig, hf.AutoTokenizer, *hf.AUTO_CLASSES):
        original = auto.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    load_hf_dllm(llada_dir)
    assert seen and set(seen) == {False}
    seen.clear()
    load_hf_dllm(llada_dir, trust_remote_code=True)
    assert seen and set(seen) == {True}
