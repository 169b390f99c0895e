"""The embedded model: tokenizer, Hugging Face save/load, bad directories, and a training smoke run."""

import json

import pytest
import torch
from conftest import TINY
from transformers import AutoModelForMaskedLM, AutoTokenizer

from ptdlib.models.batching import left_pad, with_canvas
from ptdlib.models.embedded import build_model, embedded_lm, load_pretrained, save_model
from ptdlib.models.tokenizer import SPECIAL_TOKENS, encode_prompt
from ptdlib.models.training import TrainConfig, train
from ptdlib.tasks import make_split


def test_tokenizer_round_trips_every_split_and_has_distinct_special_ids(tokenizer):
    for q in make_split("train", 200) + make_split("heldout_family", 20):
        for text in (q.prompt, q.answer):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(ids) == text
            assert tokenizer.unk_token_id not in ids
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)


def test_tokenizer_reloads_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert encode_prompt(again, "count from 3 to 9") == encode_prompt(tokenizer, "count from 3 to 9")
    assert again.mask_token_id == tokenizer.mask_token_id and again.padding_side == "left"


def test_prompt_with_unknown_words_is_rejected_naming_them(tokenizer):
    with pytest.raises(ValueError, match=r"\['banan', 'zz'\]"):
        encode_prompt(tokenizer, "spell banan zz")


def test_save_load_round_trip_gives_identical_logits(tiny_model, tokenizer, tmp_path):
    save_model(tiny_model, tokenizer, tmp_path / "m")
    loaded, tok = load_pretrained(tmp_path / "m")
    auto = AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    ids, attn = left_pad([encode_prompt(tok, "sort : 3 1 2"), encode_prompt(tok, "spell tiger")], tok.pad_token_id)
    with torch.no_grad():
        ref = tiny_model(input_ids=ids, attention_mask=attn).logits
        assert torch.equal(loaded(input_ids=ids, attention_mask=attn).logits, ref)
        assert torch.equal(auto(input_ids=ids, attention_mask=attn).logits, ref)


def test_left_padding_does_not_change_a_prompts_logits(tiny_lm):
    short, long = tiny_lm.encode_prompt("spell tiger"), tiny_lm.encode_prompt("reverse : cat dog sun moon tree")
    canvas = torch.full((1, 8), tiny_lm.mask_id)
    alone = tiny_lm.logits(*with_canvas(*left_pad([short], tiny_lm.pad_id), canvas))
    ids, attn = with_canvas(*left_pad([short, long], tiny_lm.pad_id), canvas.repeat(2, 1))
    batched = tiny_lm.logits(ids, attn)
    torch.testing.assert_close(batched[0, -8:], alone[0, -8:], rtol=1e-4, atol=1e-5)


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")


def test_corrupt_weights_are_a_clear_error(tiny_model, tokenizer, tmp_path):
    save_model(tiny_model, tokenizer, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot load model weights"):
        load_pretrained(tmp_path)


def test_config_whose_sizes_disagree_with_the_weights_is_rejected(tiny_model, tokenizer, tmp_path):
    save_model(tiny_model, tokenizer, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["d_model"] = 64
    cfg["n_heads"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="cannot load model weights"):
        load_pretrained(tmp_path)


def test_sequence_longer_than_the_models_positions_is_rejected(tokenizer):
    model = build_model(tokenizer, **{**TINY, "max_position_embeddings": 16}).eval()
    lm = embedded_lm(model, tokenizer)
    ids = torch.full((1, 17), lm.mask_id)
    with pytest.raises(ValueError, match="position 16.*max_position_embeddings=16"):
        lm.logits(ids)


def test_two_step_training_smoke_run_saves_a_loadable_model_with_card(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, checkpoint_every=1, eval_every=0, model=TINY, threads=1)
    card = train(cfg, tmp_path / "m", evaluate=lambda m, t: {"ok": 1.0})
    assert card["steps_done"] == 2 and card["heldout"] == {"ok": 1.0}
    assert json.loads((tmp_path / "m" / "training_card.json").read_text())["config"]["steps"] == 2
    model, _ = load_pretrained(tmp_path / "m")
    assert model.config.d_model == TINY["d_model"]


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    import ptdlib.models.training as tr

    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, checkpoint_every=1, eval_every=0, model=TINY, threads=1)
    train(cfg, tmp_path / "straight")

    original = tr.BatchSource.batch

    def interrupted(self, step):
        if step == 2:
            raise KeyboardInterrupt  # the process dies after checkpointing step 2
        return original(self, step)

    monkeypatch.setattr(tr.BatchSource, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(tr.BatchSource, "batch", original)
    card = train(cfg, tmp_path / "resumed")
    assert card["steps_done"] == 3
    a, _ = load_pretrained(tmp_path / "straight")
    b, _ = load_pretrained(tmp_path / "resumed")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)


def test_training_can_start_from_a_saved_models_weights(tiny_model, tokenizer, tmp_path):
    save_model(tiny_model, tokenizer, tmp_path / "start", card={"steps_done": 40, "train_seconds": 12.5})
    cfg = TrainConfig(
        steps=1, batch_size=2, warmup=1, lr=1e-9, eval_every=0, model=TINY, threads=1, init_from=str(tmp_path / "start")
    )
    card = train(cfg, tmp_path / "out")
    assert card["steps_total"] == 41 and card["initialised_from"]["steps_total"] == 40  # lineage carried
    assert card["initialised_from"]["card"] == {"steps_done": 40, "train_seconds": 12.5}  # the earlier phase kept
    assert card["train_seconds_total"] >= 12.5
    out, _ = load_pretrained(tmp_path / "out")
    ref = tiny_model.state_dict()
    for name, p in out.state_dict().items():  # one step at a negligible learning rate: still the start weights
        torch.testing.assert_close(p, ref[name], rtol=0, atol=1e-6, msg=name)
