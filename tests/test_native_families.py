"""Published LLaDA and Dream checkpoints load natively (no checkpoint code) and compute the published forward."""

import json
import warnings

import pytest
import torch
from hub_layouts import dream_reference_logits, llada_reference_logits, write_dream, write_llada

from ptdlib.models.families import UnsupportedCheckpoint, detect_family, read_config
from ptdlib.models.hf import load_hf_dllm
from ptdlib.models.padding import PaddingWarning, check_padding_invariance
from ptdlib.models.spec import ModelSpec, load_lm
from ptdlib.sampling.sampler import SamplerConfig, sample

#: float32 rounding bound the issue sets for native vs published logits
EXACT = 1e-4
REFERENCES = {"llada": llada_reference_logits, "dream": dream_reference_logits}


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {"llada": write_llada(root / "LLaDA-tiny"), "dream": write_dream(root / "Dream-tiny")}


def _ids(lm, shape, seed):
    return torch.randint(0, len(lm.tokenizer), shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_published_layout_loads_without_any_python_file(hub_dirs, family):
    path = hub_dirs[family]
    assert not list(path.glob("*.py"))
    assert detect_family(read_config(path)).name == family
    lm = load_hf_dllm(path)  # trust_remote_code stays False
    assert lm.batch_invariant
    assert lm.logits_shift == (1 if family == "dream" else 0)
    tok = lm.tokenizer
    mask, eos, eot = {
        "llada": ("<|mdm_mask|>", "<|endoftext|>", "<|eot_id|>"),
        "dream": ("<|mask|>", "<|endoftext|>", "<|im_end|>"),
    }[family]
    assert (lm.mask_id, lm.eos_id) == (tok.convert_tokens_to_ids(mask), tok.convert_tokens_to_ids(eos))
    assert lm.end_ids == (lm.eos_id, tok.convert_tokens_to_ids(eot))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_native_logits_equal_the_published_forward_unpadded(hub_dirs, family):
    lm = load_hf_dllm(hub_dirs[family])
    ids = _ids(lm, (2, 11), seed=1)
    native = lm.network(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    reference = REFERENCES[family](hub_dirs[family], ids)
    assert (native - reference).abs().max().item() <= EXACT


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_left_padded_row_gets_the_logits_it_gets_alone(hub_dirs, family):
    lm = load_hf_dllm(hub_dirs[family])
    long, short = _ids(lm, (1, 12), seed=2), _ids(lm, (1, 7), seed=3)
    pad = torch.full((1, 5), lm.pad_id)
    ids = torch.cat([long, torch.cat([pad, short], 1)])
    attn = torch.ones_like(ids)
    attn[1, :5] = 0
    native = lm.network(input_ids=ids, attention_mask=attn).logits
    ref = REFERENCES[family]
    assert (native[1, 5:] - ref(hub_dirs[family], short)[0]).abs().max().item() <= EXACT
    assert (native[0] - ref(hub_dirs[family], long)[0]).abs().max().item() <= EXACT


def test_dream_logits_are_shifted_so_index_i_predicts_token_i(hub_dirs):
    lm = load_hf_dllm(hub_dirs["dream"])
    ids = _ids(lm, (1, 9), seed=4)
    raw = dream_reference_logits(hub_dirs["dream"], ids)
    torch.testing.assert_close(lm.logits(ids)[:, 1:], raw[:, :-1], atol=EXACT, rtol=0)


class _IgnoresMask(torch.nn.Module):
    """The original LLaDA modelling file's behaviour: attention without the padding mask, positions 0..T-1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.inner(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            position_ids=torch.arange(input_ids.shape[1])[None].expand_as(input_ids),
            **kwargs,
        )


def test_padding_probe_catches_a_model_that_ignores_its_mask_and_batches_stay_exact(hub_dirs):
    lm = load_hf_dllm(hub_dirs["llada"])
    lm.network = _IgnoresMask(lm.network)
    with pytest.warns(PaddingWarning, match="does not honour its attention mask"):
        assert not check_padding_invariance(lm)
    assert lm.batch_invariant is False
    prompts = ["How many clips did Natalia sell?", "Write a function.", "Answer in fewer than 50 words and do not."]
    cfg = SamplerConfig(block_length=8)
    together = sample(lm, prompts, 16, cfg, batch_size=8)
    alone = [sample(lm, [p], 16, cfg, query_ids=[i], batch_size=1)[0] for i, p in enumerate(prompts)]
    assert [o.tokens for o in together] == [o.tokens for o in alone]


def test_padding_probe_passes_models_that_honour_their_mask(hub_dirs):
    lm = load_hf_dllm(hub_dirs["dream"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PaddingWarning)
        assert check_padding_invariance(lm)


def test_bfloat16_load_on_cpu_keeps_rotary_frequencies_in_float32(hub_dirs):
    lm32 = load_hf_dllm(hub_dirs["llada"])
    lm16 = load_hf_dllm(hub_dirs["llada"], dtype=torch.bfloat16)
    assert next(lm16.network.parameters()).dtype == torch.bfloat16
    assert all(b.dtype == torch.float32 and not b.is_meta for n, b in lm16.network.named_buffers() if "inv_freq" in n)
    ids = _ids(lm32, (1, 10), seed=5)
    a, b = lm32.logits(ids), lm16.logits(ids).float()
    assert torch.isfinite(b).all()
    assert (a - b).abs().max() / a.abs().max() < 0.1  # bf16 rounding, not a different model


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    path = write_llada(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["n_layers"] = 3  # the file holds two blocks
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"do not match its config.json.*missing \['model.layers.2"):
        load_hf_dllm(path)


def test_unsupported_published_option_is_named(tmp_path):
    path = write_llada(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["scale_logits"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedCheckpoint, match="scale_logits=True.*model.trust_remote_code"):
        load_hf_dllm(path)


def test_unknown_family_without_remote_code_names_the_yaml_key(tmp_path):
    path = write_llada(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="some_new_dllm", architectures=["SomeNewDLLM"])
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model.trust_remote_code: true"):
        load_hf_dllm(path)


BROKEN_CODE = """
from transformers import PretrainedConfig, PreTrainedModel

class BrokenConfig(PretrainedConfig):
    model_type = "broken_dllm"

class BrokenModel(PreTrainedModel):
    config_class = BrokenConfig

    def __init__(self, config):
        super().__init__(config)
        raise AttributeError("'BrokenModel' object has no attribute 'all_tied_weights_keys'")
"""


def test_remote_code_that_breaks_under_this_transformers_names_both_versions(tmp_path):
    import transformers

    path = write_llada(tmp_path / "m")
    (path / "broken.py").write_text(BROKEN_CODE)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(
        model_type="broken_dllm",
        architectures=["BrokenModel"],
        auto_map={"AutoConfig": "broken.BrokenConfig", "AutoModel": "broken.BrokenModel"},
    )
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError,
        match=rf"installed transformers {transformers.__version__} .*saved with "
        rf"transformers 4\.46\.3.*AttributeError",
    ):
        load_hf_dllm(path, trust_remote_code=True)


def test_one_spec_loads_embedded_and_hub_layouts(hub_dirs):
    assert load_lm(ModelSpec()).model_id == "ptd-tiny"
    lm = load_lm({"path": str(hub_dirs["dream"]), "dtype": "float32"}, device="cpu")
    assert lm.logits_shift == 1
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['styel'\\] in model"):
        load_lm({"path": str(hub_dirs["dream"]), "styel": "dream"})
    with pytest.raises(ValueError, match="unknown model.family 'mdlm'; choose from auto, llada, dream, remote"):
        ModelSpec(family="mdlm")


class _RejectsIntegerMask(torch.nn.Module):
    """Dream's published forward: a 2-D integer attention mask reaches SDPA and raises."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if attention_mask is not None:
            raise RuntimeError("Expected attn_mask dtype to be bool or float or to match query dtype, got long int")
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_model_that_cannot_take_a_padding_mask_is_run_one_prompt_length_at_a_time(hub_dirs):
    lm = load_hf_dllm(hub_dirs["dream"])
    reference = sample(
        lm, ["How many clips?", "Write a function that returns the sum."], 16, SamplerConfig(block_length=8)
    )
    lm.network = _RejectsIntegerMask(lm.network)
    with pytest.warns(PaddingWarning, match="a padded forward failed: RuntimeError: Expected attn_mask dtype"):
        assert not check_padding_invariance(lm)
    again = sample(lm, ["How many clips?", "Write a function that returns the sum."], 16, SamplerConfig(block_length=8))
    assert [o.tokens for o in again] == [o.tokens for o in reference]
