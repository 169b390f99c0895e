"""Tiny random-weight checkpoints laid out as the published LLaDA and Dream checkpoints, built by the tests.

The layouts are facts of the published checkpoints: their ``config.json`` field names, their safetensors weight
names, their special tokens and chat templates. Sizes are tiny and the weights random (seeded). The tokenizer
is a real byte-level BPE trained here on a few sentences. No ``.py`` file is written: the project must load
these without running checkpoint code.

``llada_reference_logits`` / ``dream_reference_logits`` are the published forward passes written out in plain
torch from the weight dictionaries (the formulas of the papers' model cards), used as the truth the native
models are checked against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May?",
    "Write a function that returns the sum of a list of numbers.",
    "Answer in fewer than 50 words and do not use any commas.",
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 6 7 8 9 10",
    "def add(a, b):\n    return a + b\n",
]

LLADA_SPECIALS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|mdm_mask|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
]
LLADA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
DREAM_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bpe(specials: list[str], vocab_size: int = 320) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _normal(gen, *shape, std=0.05):
    return torch.randn(*shape, generator=gen) * std


def write_llada(
    path: Path, *, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=48, pad_rows=8, seed=0
) -> Path:
    """A LLaDA-layout checkpoint (``model_type: llada``; ``model.transformer.*`` weights) in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    raw = _bpe(LLADA_SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        mask_token="<|mdm_mask|>",
        chat_template=LLADA_TEMPLATE,
    )
    tok.save_pretrained(path)
    vocab = len(tok) + pad_rows  # the output layer may have more rows than the tokenizer, as on the Hub
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLADA_SPECIALS}
    config = {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": d_model,
        "embedding_dropout": 0.0,
        "embedding_size": vocab,
        "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": 256,
        "mlp_hidden_size": mlp_hidden,
        "mlp_ratio": 4,
        "multi_query_attention": None,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "n_layers": n_layers,
        "pad_token_id": ids["<|endoftext|>"],
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab,
        "weight_tying": False,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(seed)
    kv = d_model // n_heads * n_kv_heads
    w = {
        "model.transformer.wte.weight": _normal(g, vocab, d_model, std=1.0),
        "model.transformer.ln_f.weight": 1 + _normal(g, d_model, std=0.1),
        "model.transformer.ff_out.weight": _normal(g, vocab, d_model, std=0.3),
    }
    for i in range(n_layers):
        b = f"model.transformer.blocks.{i}."
        w.update(
            {
                b + "q_proj.weight": _normal(g, d_model, d_model, std=0.2),
                b + "k_proj.weight": _normal(g, kv, d_model, std=0.2),
                b + "v_proj.weight": _normal(g, kv, d_model, std=0.2),
                b + "attn_out.weight": _normal(g, d_model, d_model, std=0.2),
                b + "ff_proj.weight": _normal(g, mlp_hidden, d_model, std=0.2),
                b + "up_proj.weight": _normal(g, mlp_hidden, d_model, std=0.2),
                b + "ff_out.weight": _normal(g, d_model, mlp_hidden, std=0.2),
                b + "attn_norm.weight": 1 + _normal(g, d_model, std=0.1),
                b + "ff_norm.weight": 1 + _normal(g, d_model, std=0.1),
            }
        )
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def write_dream(
    path: Path, *, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2, intermediate=48, pad_rows=8, seed=0
) -> Path:
    """A Dream-layout checkpoint (``model_type: Dream``; Qwen2 weight names with q/k/v biases) in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    raw = _bpe(DREAM_SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        mask_token="<|mask|>",
        chat_template=DREAM_TEMPLATE,
    )
    tok.save_pretrained(path)
    cfg_file = path / "tokenizer_config.json"  # as published: a tokenizer class from the checkpoint's own code
    tcfg = json.loads(cfg_file.read_text())
    tcfg.update(
        {
            "tokenizer_class": "DreamTokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        }
    )
    cfg_file.write_text(json.dumps(tcfg, indent=2))
    vocab = len(tok) + pad_rows
    ids = {t: tok.convert_tokens_to_ids(t) for t in DREAM_SPECIALS}
    config = {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": 256,
        "max_window_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": n_kv_heads,
        "pad_token_id": ids["<|endoftext|>"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(seed)
    hd = hidden // n_heads
    w = {
        "model.embed_tokens.weight": _normal(g, vocab, hidden, std=1.0),
        "model.norm.weight": 1 + _normal(g, hidden, std=0.1),
        "lm_head.weight": _normal(g, vocab, hidden, std=0.3),
    }
    for i in range(n_layers):
        b = f"model.layers.{i}."
        w.update(
            {
                b + "self_attn.q_proj.weight": _normal(g, hidden, hidden, std=0.2),
                b + "self_attn.q_proj.bias": _normal(g, hidden, std=0.2),
                b + "self_attn.k_proj.weight": _normal(g, n_kv_heads * hd, hidden, std=0.2),
                b + "self_attn.k_proj.bias": _normal(g, n_kv_heads * hd, std=0.2),
                b + "self_attn.v_proj.weight": _normal(g, n_kv_heads * hd, hidden, std=0.2),
                b + "self_attn.v_proj.bias": _normal(g, n_kv_heads * hd, std=0.2),
                b + "self_attn.o_proj.weight": _normal(g, hidden, hidden, std=0.2),
                b + "mlp.gate_proj.weight": _normal(g, intermediate, hidden, std=0.2),
                b + "mlp.up_proj.weight": _normal(g, intermediate, hidden, std=0.2),
                b + "mlp.down_proj.weight": _normal(g, hidden, intermediate, std=0.2),
                b + "input_layernorm.weight": 1 + _normal(g, hidden, std=0.1),
                b + "post_attention_layernorm.weight": 1 + _normal(g, hidden, std=0.1),
            }
        )
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


# ------------------------------------------------------------------ reference forwards (plain torch)
def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x, theta):
    """Rotary embedding with the half split (LLaMA/LLaDA/Qwen2) at positions 0..T-1; x (B, H, T, hd)."""
    T, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv
    cos, sin = torch.cat([ang.cos()] * 2, -1).float(), torch.cat([ang.sin()] * 2, -1).float()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _attention(q, k, v, n_heads, n_kv):
    B, T, _ = q.shape
    hd = q.shape[-1] // n_heads
    q = q.view(B, T, n_heads, hd).transpose(1, 2)
    k = k.view(B, T, n_kv, hd).transpose(1, 2).repeat_interleave(n_heads // n_kv, 1)
    v = v.view(B, T, n_kv, hd).transpose(1, 2).repeat_interleave(n_heads // n_kv, 1)
    return q, k, v


def _sdpa(q, k, v):
    att = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)  # bidirectional: no mask
    B, H, T, hd = q.shape
    return (att @ v).transpose(1, 2).reshape(B, T, H * hd)


def llada_reference_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """LLaDA's forward for one unpadded batch ``ids`` (B, T): (B, T, V) float32 logits, logit i for token i."""
    from safetensors.torch import load_file

    cfg = json.loads((path / "config.json").read_text())
    w = load_file(str(path / "model.safetensors"))
    H, KV, eps, theta = cfg["n_heads"], cfg["n_kv_heads"], cfg["rms_norm_eps"], cfg["rope_theta"]
    x = F.embedding(ids, w["model.transformer.wte.weight"])
    for i in range(cfg["n_layers"]):
        b = lambda n: w[f"model.transformer.blocks.{i}.{n}.weight"]  # noqa: E731, B023 (used in this iteration only)
        h = _rms(x, b("attn_norm"), eps)
        q, k, v = _attention(h @ b("q_proj").T, h @ b("k_proj").T, h @ b("v_proj").T, H, KV)
        x = x + _sdpa(_rotate(q, theta), _rotate(k, theta), v) @ b("attn_out").T
        h = _rms(x, b("ff_norm"), eps)
        x = x + (F.silu(h @ b("ff_proj").T) * (h @ b("up_proj").T)) @ b("ff_out").T
    return _rms(x, w["model.transformer.ln_f.weight"], eps) @ w["model.transformer.ff_out.weight"].T


def dream_reference_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """Dream's raw forward for one unpadded batch ``ids`` (B, T): (B, T, V) logits, logit i for token i + 1."""
    from safetensors.torch import load_file

    cfg = json.loads((path / "config.json").read_text())
    w = load_file(str(path / "model.safetensors"))
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    x = F.embedding(ids, w["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p = lambda n: w[f"model.layers.{i}.{n}"]  # noqa: E731, B023 (used in this iteration only)
        h = _rms(x, p("input_layernorm.weight"), eps)
        proj = [h @ p(f"self_attn.{n}_proj.weight").T + p(f"self_attn.{n}_proj.bias") for n in "qkv"]
        q, k, v = _attention(*proj, H, KV)
        x = x + _sdpa(_rotate(q, theta), _rotate(k, theta), v) @ p("self_attn.o_proj.weight").T
        h = _rms(x, p("post_attention_layernorm.weight"), eps)
        x = (
            x
            + (F.silu(h @ p("mlp.gate_proj.weight").T) * (h @ p("mlp.up_proj.weight").T)) @ p("mlp.down_proj.weight").T
        )
    return _rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T
