"""The embedded masked diffusion LM: LLaDA's architecture in miniature, as a Hugging Face model.

A bidirectional transformer (no causal mask) with RMSNorm, SwiGLU feed-forward blocks, rotary position
embeddings and ``scaled_dot_product_attention``, as in LLaDA (Nie et al., 2025, "Large Language Diffusion
Models"). A learned absolute position embedding is added to the rotary one: on this project's tiny models,
counting tasks were not learned with rotary positions alone.

``PtdLladaConfig`` / ``PtdLladaModel`` are registered with ``AutoConfig``, ``AutoModel`` and
``AutoModelForMaskedLM`` when :mod:`ptdlib.models` is imported, so a saved model loads with
``AutoModelForMaskedLM.from_pretrained(dir)`` and ``model(input_ids, attention_mask).logits`` works with
left-padded prompts (positions count real tokens only).

**Key/value caching** (Fast-dLLM, Wu et al., 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM
by Enabling KV Cache and Parallel Decoding"). ``model(ids, mask, use_cache=True)`` also returns the keys and
values of every layer (a :class:`KVCache`); ``model(part, past_key_values=cache, cache_start=c)`` then computes
only the tokens ``part`` that stand at columns ``c … c + n`` of the cached sequence: their queries attend to
every cached key, with the keys and values of those ``n`` columns recomputed from ``part``. Rows and key mask
come from the cache. A bidirectional model's cached keys are stale once other tokens change, so the result is
an approximation (exact only where nothing the cached columns depend on has changed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class PtdLladaConfig(PretrainedConfig):
    """Sizes of the embedded model (defaults: the shipped model's shape)."""

    model_type = "ptd_llada"

    def __init__(
        self,
        vocab_size: int = 355,  # the synthetic suite's word vocabulary plus 8 special tokens
        d_model: int = 128,  # residual width
        n_layers: int = 4,  # transformer blocks
        n_heads: int = 4,  # attention heads (head size d_model / n_heads)
        mlp_hidden: int = 384,  # SwiGLU hidden width (about 8/3 of d_model, rounded to 128)
        max_position_embeddings: int = 192,  # prompt + canvas tokens the model can place
        rope_theta: float = 10000.0,  # rotary base, as in LLaMA/LLaDA
        rms_norm_eps: float = 1e-5,  # RMSNorm epsilon
        learned_positions: bool = True,  # add a learned absolute position embedding to the rotary one
        mask_token_id: int = 1,  # canvas mask; the tokenizer's ids are written here when the model is built
        eos_token_id: int = 3,  # pads the response canvas after the answer
        eot_token_id: int = 4,  # end of turn; also ends a response
        bos_token_id: int = 2,
        pad_token_id: int = 0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.mlp_hidden = mlp_hidden
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.learned_positions = learned_positions
        self.mask_token_id = mask_token_id
        self.eot_token_id = eot_token_id
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model {d_model} must split into n_heads {n_heads} heads of even size")
        kwargs.setdefault("tie_word_embeddings", False)  # LLaDA's output head is untied
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)


@dataclass
class KVCache:
    """Keys and values of every layer from one full pass, with the key mask and positions of its columns.

    ``keys[l]`` and ``values[l]`` are (B, H, T, head_dim), rotary already applied to the keys; ``key_mask``
    (B, T) bool marks real (non-padding) columns; ``position_ids`` (B, T) their positions.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_mask: torch.Tensor
    position_ids: torch.Tensor

    @property
    def seq_len(self) -> int:
        """Number of cached columns ``T``."""
        return int(self.key_mask.shape[1])

    def select(self, rows: torch.Tensor, start: int = 0) -> KVCache:
        """The cache of batch rows ``rows`` from column ``start`` on (dropping padding columns no row needs)."""
        return KVCache(
            [k[rows, :, start:] for k in self.keys],
            [v[rows, :, start:] for v in self.values],
            self.key_mask[rows, start:],
            self.position_ids[rows, start:],
        )


@dataclass
class CachedMaskedLMOutput(MaskedLMOutput):
    """``MaskedLMOutput`` plus the :class:`KVCache` of a ``use_cache=True`` pass."""

    past_key_values: KVCache | None = None


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale (no bias, no mean subtraction), as in LLaMA and LLaDA."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        """``weight * x / sqrt(mean(x**2) + eps)`` over the last dimension."""
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos and sin tables for integer positions.

    Args:
        positions: Positions, shape ``(B, T)``.
        head_dim: Attention head size (even).
        theta: Rotary base.

    Returns:
        ``(cos, sin)``, each of shape ``(B, 1, T, head_dim / 2)``, float32.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[..., None] * inv_freq
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` (B, H, T, head_dim) by the tables of :func:`rotary_tables`."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    """One pre-norm transformer block: bidirectional rotary attention, then a SwiGLU MLP, each residual."""

    def __init__(self, cfg: PtdLladaConfig):
        super().__init__()
        d, h = cfg.d_model, cfg.mlp_hidden
        self.n_heads = cfg.n_heads
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.mlp_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.gate_up = nn.Linear(d, 2 * h, bias=False)
        self.down = nn.Linear(h, d, bias=False)

    def forward(self, x, cos, sin, attn_mask, cached: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0):
        """One pre-norm attention + SwiGLU block.

        Args:
            x: Hidden states, shape ``(B, T, D)``.
            cos: Rotary cos table of x's positions (:func:`rotary_tables`).
            sin: Rotary sin table of x's positions.
            attn_mask: Boolean key mask broadcastable to ``(B, H, T, keys)``, True at real keys.
            cached: ``(keys, values)`` of a longer sequence; x's tokens then stand at its columns ``start …``
                and attend to all of its keys, their own recomputed.
            start: Column of x's first token in the cached sequence.

        Returns:
            ``(new x, (keys, values) of x's tokens)``.
        """
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        fresh = (k, v)
        if cached is not None:
            ck, cv = cached
            k = torch.cat([ck[:, :, :start], k, ck[:, :, start + T :]], dim=2)
            v = torch.cat([cv[:, :, :start], v, cv[:, :, start + T :]], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # bidirectional: no causal mask
        x = x + self.attn_out(a.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up), fresh


class PtdLladaModel(PreTrainedModel):
    """Bidirectional LLaDA-style transformer returning token logits for every position."""

    config_class = PtdLladaConfig
    base_model_prefix = "ptd_llada"
    _supports_sdpa = True
    supports_kv_cache = True  # forward takes use_cache / past_key_values / cache_start (ptdlib.sampling.kvcache)

    def __init__(self, config: PtdLladaConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = (
            nn.Embedding(config.max_position_embeddings, config.d_model) if config.learned_positions else None
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        std = 0.02
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        # Scale residual projections by depth (GPT-2 style) so the residual stream starts near unit size.
        if isinstance(module, Block):
            for lin in (module.attn_out, module.down):
                nn.init.normal_(lin.weight, std=std / math.sqrt(2 * self.config.n_layers))

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        output_hidden_states: bool = False,
        use_cache: bool = False,
        past_key_values: KVCache | None = None,
        cache_start: int | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Logits of every position; see the module docstring for ``use_cache`` / ``past_key_values``.

        Args:
            input_ids: Token ids, shape ``(B, T)`` (``(B, n)`` with ``past_key_values``).
            attention_mask: ``(B, T)`` of 0/1, 0 at padding keys; None: all ones.
            position_ids: ``(B, T)``; None: ``cumsum(attention_mask) - 1`` clamped at 0.
            output_hidden_states: Also return every layer's hidden states (the last one normed).
            use_cache: Return the :class:`KVCache` of this pass.
            past_key_values: A cache; ``input_ids`` are then its columns ``cache_start … cache_start + n``.
            cache_start: Column of the first input token in the cache.
            **kwargs: Accepted and ignored.

        Returns:
            A :class:`CachedMaskedLMOutput` with ``.logits`` of shape ``(B, T, vocab_size)``.

        Raises:
            ValueError: If a position reaches ``max_position_embeddings``, or ``cache_start`` or the batch size
                does not fit the cache.
        """
        if past_key_values is not None:
            return self._forward_cached(input_ids, past_key_values, cache_start, output_hidden_states)
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            # Left padding must not shift positions: count real tokens only.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"sequence needs position {int(position_ids.max())} but the model has "
                f"max_position_embeddings={self.config.max_position_embeddings}"
            )
        x = self.embed(input_ids)
        if self.pos_embed is not None:
            x = x + self.pos_embed(position_ids)
        cos, sin = rotary_tables(position_ids, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): padding keys are ignored
        hidden, keys, values = [x], [], []
        for block in self.blocks:
            x, (k, v) = block(x, cos, sin, key_mask)
            hidden.append(x)
            if use_cache:
                keys.append(k)
                values.append(v)
        hidden[-1] = self.norm(x)  # as in transformers: the last hidden state is the normed one
        cache = KVCache(keys, values, attention_mask.bool(), position_ids) if use_cache else None
        return CachedMaskedLMOutput(
            logits=self.lm_head(hidden[-1]),
            hidden_states=tuple(hidden) if output_hidden_states else None,
            past_key_values=cache,
        )

    def _forward_cached(self, input_ids, cache: KVCache, start: int | None, output_hidden_states: bool):
        """Logits of ``input_ids`` (B, n), the tokens at columns ``start … start + n`` of the cached sequence."""
        B, n = input_ids.shape
        if start is None or not 0 <= start <= cache.seq_len - n:
            raise ValueError(
                f"cache_start must place {n} tokens inside the cached {cache.seq_len} columns "
                f"(0 … {cache.seq_len - n}), got {start}"
            )
        if cache.key_mask.shape[0] != B:
            raise ValueError(f"the cache holds {cache.key_mask.shape[0]} rows but input_ids has {B}")
        position_ids = cache.position_ids[:, start : start + n]
        x = self.embed(input_ids)
        if self.pos_embed is not None:
            x = x + self.pos_embed(position_ids)
        cos, sin = rotary_tables(position_ids, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        key_mask = cache.key_mask[:, None, None, :]
        hidden = [x]
        for block, k, v in zip(self.blocks, cache.keys, cache.values):
            x, _ = block(x, cos, sin, key_mask, cached=(k, v), start=start)
            hidden.append(x)
        hidden[-1] = self.norm(x)
        return CachedMaskedLMOutput(
            logits=self.lm_head(hidden[-1]), hidden_states=tuple(hidden) if output_hidden_states else None
        )
