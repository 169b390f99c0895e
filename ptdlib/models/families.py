"""Native, weight-compatible implementations of the published D-LLM families.

A checkpoint directory as published on the Hub (``config.json`` + safetensors + tokenizer files) is recognised
from its ``config.json`` (``model_type``, ``architectures``) and built from the layer stack that
``transformers`` itself maintains (``LlamaForCausalLM``, ``Qwen2ForCausalLM``), run **bidirectionally** (no
causal mask; padding keys masked) with the checkpoint's weights renamed onto it. No Python file of the
checkpoint runs, so the pinned ``transformers`` loads it (the way serving engines carry their own model
implementations).

Families (facts from the published configs and weight files):

* ``llada`` — LLaDA-8B Base/Instruct (Nie et al., 2025, "Large Language Diffusion Models"), LLaDA-1.5, and
  dLLM-Var (Yang et al., 2025, "Diffusion LLMs with native variable generation lengths: let [EOS] lead the
  way"), which fine-tunes LLaDA without changing its architecture: ``model_type: llada``, ``architectures: [LLaDAModelLM]``; OLMo-style config fields
  (``d_model``, ``n_heads``, ``n_kv_heads``, ``n_layers``, ``mlp_hidden_size``, ``embedding_size``,
  ``max_sequence_length``, ``rope_theta``, ``rms_norm_eps``, ``weight_tying``, ``include_bias``) and weight
  names ``model.transformer.{wte, blocks.N.{q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out,attn_norm,
  ff_norm}, ln_f, ff_out}``. A LLaMA block: RMSNorm, rotary positions (half rotation), SwiGLU with
  ``silu(ff_proj(x)) * up_proj(x)``, untied output layer. Logit ``i`` predicts token ``i``.
* ``dream`` — Dream-v0 Base/Instruct 7B (Ye et al., 2025, "Dream 7B"): ``model_type: Dream``,
  ``architectures: [DreamModel]``; the Qwen2 layout and weight names (q/k/v biases, grouped-query heads).
  Logit ``i`` predicts token ``i + 1`` (the autoregressive model Dream was adapted from); the adapter shifts.

Configuration flags a family's published code supports but no published checkpoint uses (ALiBi, q/k layer
norm, logit scaling, ...) are refused with a message naming the field, rather than silently ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

#: weight files of a checkpoint, in the order they are looked for
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


class UnsupportedCheckpoint(ValueError):
    """A checkpoint of a known family uses a configuration the native implementation does not have."""


@dataclass(frozen=True)
class Family:
    """One published D-LLM family: how to recognise it, build it natively and load its weights."""

    name: str
    model_types: tuple[str, ...]  # config.json "model_type" values (compared case-insensitively)
    architectures: tuple[str, ...]  # config.json "architectures" entries
    logits_shift: int  # positions between a logit and the token it predicts (0: LLaDA, 1: Dream)
    hf_config: Callable[[dict], object]  # config.json dict -> transformers config of the native layer stack
    model_class: type  # the transformers class that holds the layer stack
    rename: Callable[[str], str]  # published weight name -> native weight name

    def matches(self, config: dict) -> bool:
        """Whether a config.json dict's ``model_type`` (case-insensitive) or ``architectures`` name this family."""
        mt = str(config.get("model_type", "")).lower()
        archs = set(config.get("architectures") or ())
        return mt in {m.lower() for m in self.model_types} or bool(archs & set(self.architectures))


def _require(config: dict, field: str, where: str):
    if config.get(field) is None:
        raise UnsupportedCheckpoint(f"{where} config.json lacks {field!r}, which the native implementation needs")
    return config[field]


# ------------------------------------------------------------------ LLaDA
#: LLaDA (OLMo-style) config fields whose published values the native LLaMA block reproduces
LLADA_REQUIRED_VALUES = {
    "block_type": "llama",  # pre-norm LLaMA block with separate q/k/v projections
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "rope": True,
    "alibi": False,
    "attention_layer_norm": False,  # no q/k norm
    "input_emb_norm": False,  # embeddings are not scaled by sqrt(d_model)
    "scale_logits": False,
    "clip_qkv": None,
    "block_group_size": 1,
}


def llada_hf_config(config: dict) -> LlamaConfig:
    """The ``LlamaConfig`` whose layer stack computes the LLaDA forward of ``config``.

    Args:
        config: A LLaDA ``config.json`` as a dict.

    Returns:
        The ``transformers.LlamaConfig``.

    Raises:
        UnsupportedCheckpoint: If a field of :data:`LLADA_REQUIRED_VALUES` has another value, a required field is
            missing, or ``include_qkv_bias`` is set without ``include_bias``.
    """
    for field, want in LLADA_REQUIRED_VALUES.items():
        if field in config and config[field] != want:
            raise UnsupportedCheckpoint(
                f"LLaDA config field {field}={config[field]!r} is not supported natively (published checkpoints "
                f"use {want!r}); load it with model.trust_remote_code: true"
            )
    d_model, n_heads = _require(config, "d_model", "LLaDA"), _require(config, "n_heads", "LLaDA")
    if config.get("multi_query_attention"):
        n_kv = 1
    else:
        n_kv = config.get("n_kv_heads") or n_heads
    bias = bool(config.get("include_bias", False))
    if bool(config.get("include_qkv_bias", False)) and not bias:
        raise UnsupportedCheckpoint(
            "LLaDA config include_qkv_bias without include_bias is not supported natively; "
            "load it with model.trust_remote_code: true"
        )
    hidden = config.get("mlp_hidden_size") or int(config.get("mlp_ratio", 4) * d_model)
    return LlamaConfig(
        vocab_size=config.get("embedding_size") or _require(config, "vocab_size", "LLaDA"),  # rows of wte/ff_out
        hidden_size=d_model,
        intermediate_size=hidden,
        num_hidden_layers=_require(config, "n_layers", "LLaDA"),
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        hidden_act="silu",
        max_position_embeddings=_require(config, "max_sequence_length", "LLaDA"),
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.get("rope_theta", 10000.0))},
        attention_bias=bias,
        mlp_bias=bias,
        tie_word_embeddings=bool(config.get("weight_tying", False)),
    )


#: LLaDA block weight name -> LLaMA decoder-layer weight name
LLADA_BLOCK_NAMES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ff_norm": "post_attention_layernorm",
}
LLADA_TOP_NAMES = {"wte": "model.embed_tokens", "ln_f": "model.norm", "ff_out": "lm_head"}
_LLADA_PREFIX = "model.transformer."


def llada_rename(name: str) -> str:
    """The native name of a published LLaDA weight.

    Example: ``model.transformer.blocks.3.attn_out.weight`` -> ``model.layers.3.self_attn.o_proj.weight``.

    Args:
        name: The published weight name.

    Returns:
        The weight's name in the ``LlamaForCausalLM`` layer stack.

    Raises:
        UnsupportedCheckpoint: If ``name`` is not a LLaDA weight name.
    """
    if not name.startswith(_LLADA_PREFIX):
        raise UnsupportedCheckpoint(f"unexpected LLaDA weight {name!r} (LLaDA weights start with {_LLADA_PREFIX!r})")
    rest = name[len(_LLADA_PREFIX) :]
    if rest.startswith("blocks."):
        _, layer, module, param = rest.split(".", 3)
        if module not in LLADA_BLOCK_NAMES:
            raise UnsupportedCheckpoint(f"unexpected LLaDA weight {name!r}")
        return f"model.layers.{layer}.{LLADA_BLOCK_NAMES[module]}.{param}"
    module, param = rest.split(".", 1)
    if module not in LLADA_TOP_NAMES:
        raise UnsupportedCheckpoint(f"unexpected LLaDA weight {name!r}")
    return f"{LLADA_TOP_NAMES[module]}.{param}"


# ------------------------------------------------------------------ Dream
def dream_hf_config(config: dict) -> Qwen2Config:
    """The ``Qwen2Config`` of a Dream config (Dream keeps Qwen2's field names).

    Args:
        config: A Dream ``config.json`` as a dict.

    Returns:
        The ``transformers.Qwen2Config``.

    Raises:
        UnsupportedCheckpoint: For a sliding window, a non-default rope scaling, or a missing required field.
    """
    if config.get("use_sliding_window"):
        raise UnsupportedCheckpoint(
            "Dream config use_sliding_window=true is not supported natively; load it with model.trust_remote_code: true"
        )
    scaling = config.get("rope_scaling")
    if scaling not in (None, {}) and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        raise UnsupportedCheckpoint(
            f"Dream config rope_scaling={scaling!r} is not supported natively; load it with "
            f"model.trust_remote_code: true"
        )
    n_heads = _require(config, "num_attention_heads", "Dream")
    return Qwen2Config(
        vocab_size=_require(config, "vocab_size", "Dream"),
        hidden_size=_require(config, "hidden_size", "Dream"),
        intermediate_size=_require(config, "intermediate_size", "Dream"),
        num_hidden_layers=_require(config, "num_hidden_layers", "Dream"),
        num_attention_heads=n_heads,
        num_key_value_heads=config.get("num_key_value_heads") or n_heads,
        hidden_act=config.get("hidden_act", "silu"),
        max_position_embeddings=_require(config, "max_position_embeddings", "Dream"),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        use_sliding_window=False,
    )


def _same_name(name: str) -> str:
    return name


#: name -> family; detection tries them in this order
FAMILIES: dict[str, Family] = {
    "llada": Family("llada", ("llada",), ("LLaDAModelLM",), 0, llada_hf_config, LlamaForCausalLM, llada_rename),
    "dream": Family("dream", ("dream",), ("DreamModel",), 1, dream_hf_config, Qwen2ForCausalLM, _same_name),
}


def get_family(name: str) -> Family:
    """The native family called ``name``.

    Raises:
        ValueError: If no native family has that name (the message lists the choices).
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]


def read_config(path: str | Path) -> dict:
    """The ``config.json`` of a checkpoint directory.

    Args:
        path: The checkpoint directory.

    Returns:
        The config as a dict.

    Raises:
        ValueError: If the file is missing or not valid JSON.
    """
    file = Path(path) / "config.json"
    if not file.exists():
        raise ValueError(f"model directory {path} has no config.json")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None


def detect_family(config: dict) -> Family | None:
    """The native family of a config.json dict, or None if the project does not know it."""
    return next((f for f in FAMILIES.values() if f.matches(config)), None)


# ------------------------------------------------------------------ weights
def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint (sharded with an index, or one file).

    Raises:
        ValueError: If the directory holds neither (``.bin`` pickles are never loaded).
    """
    index = path / SAFETENSORS_INDEX
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    if (path / SAFETENSORS_SINGLE).exists():
        return [path / SAFETENSORS_SINGLE]
    raise ValueError(
        f"model directory {path} holds no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX} "
        f"(native loading reads safetensors only; .bin pickles are never loaded)"
    )


class BidirectionalLM(nn.Module):
    """A transformers decoder stack run without a causal mask (every position attends to every real token).

    ``forward(input_ids (B, T), attention_mask (B, T) of 0/1, position_ids (B, T) | None,
    output_hidden_states)`` returns the transformers output (``.logits`` (B, T, V), ``.hidden_states``).
    Padding keys are masked (``config.is_causal = False`` makes transformers build a bidirectional padding
    mask); positions default to ``cumsum(attention_mask) - 1`` so a left-padded row sees the positions it
    would see alone.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        model.config.is_causal = False  # transformers then builds a bidirectional (padding-only) mask
        for module in model.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False  # and SDPA is never told is_causal=True when there is no padding

    @property
    def config(self):
        """The wrapped model's config."""
        return self.model.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states: bool = False, **kwargs):
        """Run the stack bidirectionally, without a KV cache.

        Args:
            input_ids: Token ids, shape ``(B, T)``.
            attention_mask: ``(B, T)`` of 0/1 (0 at padding keys); None: all ones.
            position_ids: ``(B, T)``; None: ``cumsum(attention_mask) - 1`` clamped at 0.
            output_hidden_states: Also return every layer's hidden states.
            **kwargs: Accepted and ignored.

        Returns:
            The transformers output: ``.logits`` of shape ``(B, T, V)`` and, if asked, ``.hidden_states``.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            use_cache=False,
        )


def build_native(
    family: Family,
    config: dict,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    weights_from: Path | None = None,
) -> BidirectionalLM:
    """The native network of ``config`` (a config.json dict), on ``device`` in ``dtype``.

    With ``weights_from`` (a checkpoint directory), the network is created on the meta device and its
    safetensors weights are renamed and assigned (strict: a missing or unexpected weight is a ValueError),
    so an 8B model needs its weights' memory only once. Without it, weights are randomly initialised.
    Non-persistent buffers (the rotary frequencies) are always computed afresh on ``device``.

    Args:
        family: The native family.
        config: The checkpoint's ``config.json`` as a dict.
        device: Device of the weights.
        dtype: Dtype of the parameters (the rotary frequencies stay float32).
        weights_from: Checkpoint directory to read the weights from; None: random initialisation.

    Returns:
        The :class:`BidirectionalLM`, in eval mode.

    Raises:
        UnsupportedCheckpoint: If the config is not supported natively.
        ValueError: If the weights' names or shapes do not match the config.
    """
    hf_config = family.hf_config(config)
    hf_config._attn_implementation = "sdpa"
    if weights_from is None:
        with torch.device(device):
            model = family.model_class(hf_config)
        for p in model.parameters():  # parameters only: the rotary frequencies stay float32
            p.data = p.data.to(dtype)
        return BidirectionalLM(model.eval())
    with torch.device("meta"):
        model = family.model_class(hf_config)
    state = load_renamed(family, Path(weights_from), device=device, dtype=dtype)
    if hf_config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state.get("model.embed_tokens.weight"))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"weights in {weights_from} do not match its config.json ({family.name} family): "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in state.items():
        want = model.get_parameter(name).shape
        if tuple(tensor.shape) != tuple(want):
            raise ValueError(
                f"weight {name} in {weights_from} has shape {tuple(tensor.shape)} but its config.json "
                f"implies {tuple(want)}"
            )
    model.load_state_dict(state, strict=True, assign=True)
    _rebuild_buffers(model, device)
    return BidirectionalLM(model.eval())


def load_renamed(family: Family, path: Path, *, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every weight of the checkpoint under its native name.

    Args:
        family: The native family (its ``rename``).
        path: The checkpoint directory.
        device: Device the tensors are moved to.
        dtype: Dtype the tensors are cast to.

    Returns:
        Native weight name -> tensor.
    """
    from safetensors import safe_open

    state = {}
    for file in weight_files(path):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                state[family.rename(name)] = f.get_tensor(name).to(device=device, dtype=dtype)
    return state


def _rebuild_buffers(model: nn.Module, device: str) -> None:
    """Recompute buffers left on the meta device (rotary frequencies are not saved in checkpoints)."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if any(b.is_meta for b in child.buffers(recurse=False)):
                fresh = type(child)(config=model.config)
                setattr(parent, child_name, fresh.to(device))
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"native model left uninitialised tensors: {left[:5]}")
