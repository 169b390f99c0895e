"""Model shapes and the analytic, itemised FLOP count of one LLaMA/LLaDA-style forward pass.

**Convention: 2 FLOPs per multiply-add** (one multiply and one add), as in Kaplan et al. (2020), "Scaling
Laws for Neural Language Models" (their C_forward ~ 2 N + 2 n_layer n_ctx d_attn) and in nanoGPT's
``transformer_sizing``. Only matrix products are counted; see :mod:`ptdlib.cost.flops` for what that leaves out
and why it is small.

For a batch of ``B`` sequences of ``T`` tokens, per layer (``d`` = d_model, ``H`` query heads of size
``hd``, ``H_kv`` key/value heads, ``h`` = MLP hidden width, ``V`` = vocabulary):

* ``attn/qkv``    2 B T d (H hd + 2 H_kv hd)   query, key and value projections
* ``attn/scores`` 2 * 2 B H T^2 hd            Q K^T and the attention-weighted sum of V (full T x T:
  a D-LLM attends bidirectionally, and the count ignores causal savings for autoregressive models too)
* ``attn/out``    2 B T (H hd) d              output projection
* ``mlp``         2 B T d h * 3               SwiGLU: gate, up and down projections (2 for a GELU MLP)

and once per forward ``lm_head`` = 2 B T d V (logits at every position: a D-LLM needs all of them).
Embedding lookups, the learned position embedding of the embedded model, RoPE and RMSNorm are not matrix
products and are not counted.

A **KV-cached pass** (:mod:`ptdlib.sampling.kvcache`, Fast-dLLM) computes only ``T_q`` of the ``T`` tokens: every term
above takes ``T_q`` for ``T``, except ``attn/scores`` = 2 * 2 B H T_q T hd (the queries attend to all keys).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

#: MLP kinds and the number of d x h weight matrices each multiplies by.
MLP_MATRICES = {"swiglu": 3, "gelu": 2}

#: 2 FLOPs per multiply-add (see module docstring).
FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a LLaMA/LLaDA-style transformer that determine its FLOPs (no weights)."""

    name: str  # preset or model id, for tables and provenance
    n_layers: int  # transformer blocks
    d_model: int  # residual width
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (= n_heads without grouped-query attention)
    mlp_hidden: int  # MLP hidden width (per branch for SwiGLU)
    vocab_size: int  # output head width (LLaDA's embedding_size where it differs from vocab_size)
    max_positions: int  # prompt + canvas tokens the model can place
    tied_head: bool = False  # output head shares the embedding matrix (changes parameters, not FLOPs)
    mlp: str = "swiglu"  # one of MLP_MATRICES
    head_dim: int | None = None  # per-head width; None means d_model // n_heads

    def __post_init__(self):
        for field_name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "mlp_hidden", "vocab_size", "max_positions"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field_name} must be a positive integer, got {value!r}")
        if self.mlp not in MLP_MATRICES:
            raise ValueError(f"unknown mlp kind {self.mlp!r}; choose from {', '.join(MLP_MATRICES)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} does not split into {self.n_heads} heads; give head_dim")

    @property
    def hd(self) -> int:
        """Per-head width."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        """Weights of the matrix products plus the token embedding (norms and position tables left out)."""
        d, hd = self.d_model, self.hd
        per_layer = d * hd * (self.n_heads + 2 * self.n_kv_heads) + self.n_heads * hd * d
        per_layer += MLP_MATRICES[self.mlp] * d * self.mlp_hidden
        head = 0 if self.tied_head else d * self.vocab_size
        return self.n_layers * per_layer + d * self.vocab_size + head

    def to_dict(self) -> dict:
        """The shape's fields as a dict (inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelShape:
        """A shape from its fields; ValueError for sizes that are not positive or do not fit together."""
        return cls(**data)


def analytic_flops(shape: ModelShape, seq_len: int, batch: int = 1, query_len: int | None = None) -> dict[str, int]:
    """Itemised FLOPs (2 per multiply-add) of one forward pass over ``batch`` x ``seq_len`` tokens.

    Formulas in the module docstring (after Kaplan et al., 2020).

    Args:
        shape: The model's shape.
        seq_len: Tokens per row of a full pass, or keys of a cached one.
        batch: Rows.
        query_len: Tokens computed by a KV-cached pass against ``seq_len`` keys; None: a full pass.

    Returns:
        FLOPs by part: ``attn/qkv``, ``attn/scores``, ``attn/out``, ``mlp`` (each summed over layers),
        ``lm_head`` and ``total``.

    Raises:
        ValueError: For a non-positive ``seq_len``, ``batch`` or ``query_len``, or ``query_len`` > ``seq_len``.
    """
    check_positive("seq_len", seq_len)
    check_positive("batch", batch)
    q = seq_len if query_len is None else query_len
    check_positive("query_len", q)
    if q > seq_len:
        raise ValueError(f"query_len {q} exceeds the {seq_len} keys it attends to")
    bt, d, hd, L = batch * q, shape.d_model, shape.hd, shape.n_layers
    macs = {
        "attn/qkv": L * bt * d * hd * (shape.n_heads + 2 * shape.n_kv_heads),
        "attn/scores": L * 2 * batch * shape.n_heads * q * seq_len * hd,
        "attn/out": L * bt * shape.n_heads * hd * d,
        "mlp": L * bt * d * shape.mlp_hidden * MLP_MATRICES[shape.mlp],
        "lm_head": bt * d * shape.vocab_size,
    }
    out = {k: FLOPS_PER_MAC * v for k, v in macs.items()}
    out["total"] = sum(out.values())
    return out


def uncounted_flops_estimate(shape: ModelShape, seq_len: int, batch: int = 1) -> int:
    """A generous estimate of the FLOPs the matrix-product count leaves out, per forward pass.

    Per layer and token: two RMSNorms (~4 d each: square, mean, scale, weight), RoPE on q and k (~3 per
    element of H hd + H_kv hd), softmax over T keys per head (~5 per score: max, subtract, exp, sum,
    divide) plus the mask add, SwiGLU's activation and product (~6 per hidden unit), two residual adds (d
    each); plus the final norm. Used to state how small the omission is (see :mod:`ptdlib.cost.flops`).

    Args:
        shape: The model's shape.
        seq_len: Tokens per row.
        batch: Rows.

    Returns:
        Estimated elementwise FLOPs of one forward pass.

    Raises:
        ValueError: For a non-positive ``seq_len``.
    """
    check_positive("seq_len", seq_len)
    d, hd = shape.d_model, shape.hd
    per_token_layer = (
        2 * 4 * d
        + 3 * hd * (shape.n_heads + shape.n_kv_heads)
        + 6 * shape.n_heads * seq_len
        + 6 * shape.mlp_hidden
        + 2 * d
    )
    return batch * seq_len * (shape.n_layers * per_token_layer + 4 * d)


def check_positive(name: str, value) -> None:
    """ValueError naming ``name`` unless ``value`` is a positive integer (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_seq_len(seq_len: int, max_positions: int | None) -> None:
    """ValueError unless ``seq_len`` is a positive integer within ``max_positions`` (None: no limit)."""
    check_positive("seq_len", seq_len)
    if max_positions is not None and seq_len > max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds the model's {max_positions} positions")


class FlopSource(Protocol):
    """Anything that prices a forward pass: :class:`AnalyticCounter` or :class:`ptdlib.cost.flops.FlopCounter`."""

    def forward_flops(self, seq_len: int, batch: int = 1, query_len: int | None = None) -> int:
        """FLOPs of one forward pass over ``batch`` rows (2 per multiply-add)."""
        ...


class AnalyticCounter:
    """:func:`analytic_flops` of a shape behind the counter interface (no torch, instant, exact for LLaMA-style)."""

    method = "analytic"

    def __init__(self, shape: ModelShape):
        self.shape = shape
        self.max_positions = shape.max_positions

    def count(self, seq_len: int, query_len: int | None = None) -> dict[str, int]:
        """Itemised FLOPs of one row of ``seq_len`` tokens (a KV-cached pass of ``query_len`` of them).

        Returns:
            The parts of :func:`analytic_flops`, without ``total``.

        Raises:
            ValueError: If ``seq_len`` is not positive or exceeds ``max_positions``.
        """
        check_seq_len(seq_len, self.max_positions)
        items = analytic_flops(self.shape, seq_len, query_len=query_len)
        items.pop("total")
        return items

    def forward_flops(self, seq_len: int, batch: int = 1, query_len: int | None = None) -> int:
        """FLOPs of one forward pass over ``batch`` rows (2 per multiply-add); see :meth:`count`."""
        check_positive("batch", batch)
        return batch * sum(self.count(seq_len, query_len).values())


def _first(cfg: dict, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def shape_from_config(hf_config, name: str | None = None) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face config (object or dict).

    Understands the embedded model's ``PtdLladaConfig``, LLaDA's OLMo-style config (``d_model``,
    ``n_layers``, ``mlp_hidden_size``, ``embedding_size``, ``weight_tying``) and LLaMA/Qwen2/Dream-style
    configs (``hidden_size``, ``num_hidden_layers``, ``intermediate_size``, ``num_key_value_heads``).

    Args:
        hf_config: A config object (with ``to_dict``) or a ``config.json`` dict.
        name: The shape's name (default: the config's ``_name_or_path`` or ``model_type``).

    Returns:
        The :class:`ModelShape`; a SiLU/SwiGLU activation gives ``mlp="swiglu"``, any other ``"gelu"``.

    Raises:
        ValueError: If a size is missing (the message names it and the keys seen).
    """
    cfg = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    d_model = _first(cfg, "d_model", "hidden_size")
    n_heads = _first(cfg, "n_heads", "num_attention_heads")
    mlp_hidden = _first(cfg, "mlp_hidden", "mlp_hidden_size", "intermediate_size")
    if mlp_hidden is None and cfg.get("mlp_ratio") and d_model:
        mlp_hidden = int(cfg["mlp_ratio"] * d_model)
    values = dict(
        n_layers=_first(cfg, "n_layers", "num_hidden_layers"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=_first(cfg, "n_kv_heads", "num_key_value_heads", default=n_heads),
        mlp_hidden=mlp_hidden,
        vocab_size=_first(cfg, "embedding_size", "vocab_size"),
        max_positions=_first(cfg, "max_position_embeddings", "max_sequence_length"),
    )
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"config lacks the sizes {', '.join(missing)} (keys seen: {', '.join(sorted(cfg))})")
    act = str(_first(cfg, "hidden_act", "activation_type", default="silu")).lower()
    head_dim = cfg.get("head_dim")
    return ModelShape(
        name=name or str(_first(cfg, "_name_or_path", "model_type", default="model")) or "model",
        tied_head=bool(_first(cfg, "weight_tying", "tie_word_embeddings", default=False)),
        mlp="swiglu" if ("silu" in act or "swiglu" in act) else "gelu",
        head_dim=head_dim if head_dim and head_dim != d_model // n_heads else None,
        **{k: int(v) for k, v in values.items()},
    )


def _embedded_shape() -> ModelShape:
    """The shipped embedded model's shape: its config.json when present, else the config defaults."""
    from ptdlib.models.embedded import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME  # lazy: imports transformers

    path = Path(DEFAULT_MODEL_DIR) / "config.json"
    if path.exists():
        return shape_from_config(json.loads(path.read_text()), name=DEFAULT_MODEL_NAME)
    from ptdlib.models.modeling import PtdLladaConfig

    return shape_from_config(PtdLladaConfig(), name=DEFAULT_MODEL_NAME)


#: LLaDA-8B-Instruct (Nie et al., 2025; GSAI-ML/LLaDA-8B-Instruct config.json): LLaMA-3-8B-like, untied head.
LLADA_8B = ModelShape(
    name="llada-8b",
    n_layers=32,
    d_model=4096,
    n_heads=32,
    n_kv_heads=32,
    mlp_hidden=12288,
    vocab_size=126464,
    max_positions=4096,
    tied_head=False,
)
#: Dream-v0-7B (Ye et al., 2025) has the shape of Qwen2.5-7B (Qwen2.5 technical report, config.json):
#: grouped-query attention with 4 KV heads, untied head. Its q/k/v biases are additions (not counted).
DREAM_7B = ModelShape(
    name="dream-7b",
    n_layers=28,
    d_model=3584,
    n_heads=28,
    n_kv_heads=4,
    mlp_hidden=18944,
    vocab_size=152064,
    max_positions=131072,
    tied_head=False,
)

#: Preset name -> shape or a function building it (the embedded shape is read when asked for).
PRESETS = {"embedded": _embedded_shape, "llada-8b": LLADA_8B, "dream-7b": DREAM_7B}


def preset(name: str) -> ModelShape:
    """The :class:`ModelShape` of preset ``name`` (see :data:`PRESETS`).

    Raises:
        ValueError: For an unknown preset (the message lists them).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    entry = PRESETS[name]
    return entry() if callable(entry) else entry


def model_shape(spec: str | Path) -> ModelShape:
    """The :class:`ModelShape` of a preset, a checkpoint's ``config.json``, or a checkpoint directory.

    Sizes only, no weights read, so LLaDA-8B or Dream-7B are priced from their published configs on any machine.

    Args:
        spec: A preset name (:data:`PRESETS`), a ``config.json`` path, or a directory holding one.

    Returns:
        The :class:`ModelShape` (named after the checkpoint directory).

    Raises:
        ValueError: If ``spec`` is none of these (the message names the presets), the file is not JSON, or
            the config lacks a size.
    """
    if str(spec) in PRESETS:
        return preset(str(spec))
    path = Path(spec)
    config = path / "config.json" if path.is_dir() else path
    if not config.is_file():
        raise ValueError(
            f"unknown model preset {str(spec)!r} (choose from {', '.join(PRESETS)}), and not a "
            "config.json or a checkpoint directory holding one"
        )
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config} is not a JSON config: {e}") from None
    return shape_from_config(data, name=(path if path.is_dir() else path.parent).name)
