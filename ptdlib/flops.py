"""FLOPs of D-LLM forward passes: fvcore counts cached per shape, cross-checks, and a per-query ledger.

**Convention: 2 FLOPs per multiply-add.** fvcore counts 1 per multiply-add; :class:`FlopCounter` doubles
its counts. ``torch.utils.flop_counter.FlopCounterMode`` already counts 2 per multiply-add. The analytic
model (:func:`ptdlib.shapes.analytic_flops`) uses 2 as well, so all three are comparable.

**Attention.** fvcore has no handle for ``aten::scaled_dot_product_attention`` and would skip the
quadratic part of the cost (36 % of a 4-layer d=256 model's FLOPs at 1,024 tokens). :func:`sdpa_macs`
counts it as Q K^T plus the weighted sum of V: ``B * H_q * T_q * T_k * (hd_qk + hd_v)`` multiply-adds,
over the full T x T (bidirectional, as a D-LLM computes it). FlopCounterMode knows the CUDA kernels but
not ``aten._scaled_dot_product_flash_attention_for_cpu``; :func:`count_with_torch` registers the same
formula for it.

**Not counted** (by fvcore, FlopCounterMode or the analytic model): RMSNorm/LayerNorm, softmax, RoPE,
SiLU and the SwiGLU product, residual additions, bias additions, and embedding lookups (a gather, not
arithmetic). These are O(T d) or O(H T^2) elementwise work against O(T d^2) and O(T^2 d) matrix
products. :func:`ptdlib.shapes.uncounted_flops_estimate` bounds them generously: 1.1 % (16 tokens) to
1.7 % (192 tokens) of the counted FLOPs for the embedded model (d=128), and 0.04 % (256 tokens) to 0.11 %
(2,048 tokens) for LLaDA-8B, so every ratio of two counts (a saving) is off by well under 1 %. On
accelerators they are memory-bound work that fuses away, and matrix-product FLOPs are what hardware
peaks and MFU refer to.

**Caching.** A forward pass costs the same for every batch of the same shape, and exactly ``batch`` times
the cost of one row, so each ``seq_len`` is counted once at batch 1 and scaled (a run with thousands of
forward passes traces a handful of shapes).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Hashable

import torch
from torch import nn

from ptdlib.shapes import (FLOPS_PER_MAC, AnalyticCounter, FlopSource, ModelShape, analytic_flops, check_positive,
                           check_seq_len)

#: fvcore's name for the fused attention op in a traced graph.
SDPA_JIT_OP = "aten::scaled_dot_product_attention"


def _fvcore_nn():
    """``fvcore.nn``, imported without the torch.jit DeprecationWarning its import raises under torch 2.x."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn

    return fvcore.nn


def sdpa_macs(q_shape, k_shape, v_shape) -> int:
    """Multiply-adds of attention over (B, H_q, T_q, hd) queries and (B, H_kv, T_k, hd) keys/values.

    Q K^T: B H_q T_q T_k hd_qk; weights times V: B H_q T_q T_k hd_v (grouped KV heads are broadcast).
    """
    rows = math.prod(q_shape[:-1])  # B * H_q * T_q (any leading batch dimensions)
    t_k, d_qk, d_v = k_shape[-2], q_shape[-1], v_shape[-1]
    return int(rows * t_k * (d_qk + d_v))


def _sdpa_fvcore_handle(inputs, outputs) -> int:
    """fvcore handle (1 per multiply-add, fvcore's own convention) for aten::scaled_dot_product_attention."""
    from fvcore.nn.jit_handles import get_shape

    return sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]))


def _matrix_product_handles() -> dict:
    """fvcore handles (1 per multiply-add) for matrix products and attention, nothing elementwise."""
    from fvcore.nn import jit_handles as h

    return {"aten::linear": h.linear_flop_jit, "aten::matmul": h.matmul_flop_jit, "aten::mm": h.matmul_flop_jit,
            "aten::addmm": h.addmm_flop_jit, "aten::bmm": h.bmm_flop_jit, "aten::einsum": h.einsum_flop_jit,
            "aten::_convolution": h.conv_flop_jit, SDPA_JIT_OP: _sdpa_fvcore_handle}


class _LogitsOnly(nn.Module):
    """Makes a Hugging Face model traceable: ``forward(input_ids)`` returns a plain logits tensor."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, input_ids):
        out = self.network(input_ids=input_ids)
        return out if isinstance(out, torch.Tensor) else out.logits


def _input_ids(network: nn.Module, seq_len: int, batch: int, token_id: int) -> torch.Tensor:
    device = next(network.parameters()).device
    return torch.full((batch, seq_len), token_id, dtype=torch.long, device=device)


def count_with_fvcore(network: nn.Module, seq_len: int, batch: int = 1, token_id: int = 0) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one forward pass by operator, counted by fvcore with the SDPA handle."""
    check_positive("seq_len", seq_len)
    check_positive("batch", batch)
    analysis = _fvcore_nn().FlopCountAnalysis(_LogitsOnly(network), (_input_ids(network, seq_len, batch, token_id),))
    # fvcore's defaults also price norms and upsampling; keep matrix products only, plus attention.
    analysis.clear_op_handles().set_op_handle(**_matrix_product_handles())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        by_op = analysis.by_operator()
    return {op: FLOPS_PER_MAC * int(n) for op, n in by_op.items() if n}


def _sdpa_torch_formula(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula (2 per multiply-add) for the CPU flash-attention kernel it does not know."""
    return FLOPS_PER_MAC * sdpa_macs(q_shape, k_shape, v_shape)


def count_with_torch(network: nn.Module, seq_len: int, batch: int = 1, token_id: int = 0) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one forward pass by operator, counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    check_positive("seq_len", seq_len)
    check_positive("batch", batch)
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_torch_formula}
    mode = FlopCounterMode(display=False, custom_mapping=extra)
    with torch.no_grad(), mode:
        _LogitsOnly(network)(_input_ids(network, seq_len, batch, token_id))
    return {str(op): int(n) for op, n in mode.get_flop_counts()["Global"].items() if n}


class FlopCounter:
    """fvcore FLOP counts of a network's forward pass, cached per sequence length and scaled by batch.

    ``network_or_lm`` is a :class:`~ptdlib.models.base.DiffusionLM` or a module called as
    ``network(input_ids=ids)`` that returns logits or an object with ``.logits``. ``fallback``: a shape whose
    analytic count is used (with a warning) if the network cannot be traced.
    """

    method = "fvcore"

    def __init__(self, network_or_lm, max_positions: int | None = None, fallback: ModelShape | None = None):
        # Duck-typed DiffusionLM check: importing ptdlib.models would pull in transformers for every user.
        lm = network_or_lm if hasattr(network_or_lm, "network") and hasattr(network_or_lm, "mask_id") else None
        self.network = lm.network if lm is not None else network_or_lm
        if not isinstance(self.network, nn.Module):
            raise ValueError(f"expected a DiffusionLM or torch.nn.Module, got {type(network_or_lm).__name__}")
        config = getattr(self.network, "config", None)
        self.max_positions = max_positions or (lm.max_positions if lm is not None else None) or getattr(
            config, "max_position_embeddings", None)
        # A token every model's embedding has; the mask token is what a D-LLM canvas is made of.
        self.token_id = lm.mask_id if lm is not None else 0
        self.fallback = fallback
        self._cache: dict[int, dict[str, int]] = {}

    @classmethod
    def for_shape(cls, shape: ModelShape) -> FlopSource:
        """A counter for a configuration too large to hold: a LLaMA-layout stand-in on the meta device.

        Same matrix-product shapes as ``shape`` (LLaDA is LLaMA-shaped; a causal vs bidirectional mask
        does not change the count), no weights in memory. Falls back to the analytic model if tracing
        on the meta device fails, and uses it directly for shapes the stand-in cannot take (non-SwiGLU).
        """
        from transformers import LlamaConfig, LlamaForCausalLM

        if shape.mlp != "swiglu":
            return AnalyticCounter(shape)  # the LLaMA stand-in only has a SwiGLU MLP
        config = LlamaConfig(
            vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.mlp_hidden,
            num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
            num_key_value_heads=shape.n_kv_heads, head_dim=shape.hd, max_position_embeddings=shape.max_positions,
            tie_word_embeddings=shape.tied_head, hidden_act="silu",
        )
        with torch.device("meta"):
            network = LlamaForCausalLM(config).eval()
        return cls(network, max_positions=shape.max_positions, fallback=shape)

    def count(self, seq_len: int) -> dict[str, int]:
        """FLOPs of one row of ``seq_len`` tokens by operator (cached)."""
        check_seq_len(seq_len, self.max_positions)
        if seq_len not in self._cache:
            if self.method == "analytic":
                self._cache[seq_len] = AnalyticCounter(self.fallback).count(seq_len)
            else:
                try:
                    self._cache[seq_len] = count_with_fvcore(self.network, seq_len, token_id=self.token_id)
                except Exception as e:  # tracing failures come as many exception types
                    if self.fallback is None:
                        raise
                    warnings.warn(f"fvcore could not trace the network ({type(e).__name__}: {e}); "
                                  f"using the analytic model of {self.fallback.name}", stacklevel=2)
                    self.method = "analytic"
                    self._cache.clear()
                    return self.count(seq_len)
        return dict(self._cache[seq_len])

    def forward_flops(self, seq_len: int, batch: int = 1) -> int:
        """FLOPs of one forward pass over ``batch`` rows of ``seq_len`` tokens (2 per multiply-add)."""
        check_positive("batch", batch)
        return batch * sum(self.count(seq_len).values())

    @property
    def cached_lengths(self) -> tuple[int, ...]:
        return tuple(sorted(self._cache))


def cross_check(network: nn.Module, shape: ModelShape, seq_lens, token_id: int = 0) -> list[dict]:
    """fvcore, FlopCounterMode and the analytic model at each length, with their largest relative gap."""
    rows = []
    for t in seq_lens:
        counts = {
            "fvcore": sum(count_with_fvcore(network, t, token_id=token_id).values()),
            "torch": sum(count_with_torch(network, t, token_id=token_id).values()),
            "analytic": analytic_flops(shape, t)["total"],
        }
        hi, lo = max(counts.values()), min(counts.values())
        rows.append({"seq_len": t, **counts, "max_rel_diff": (hi - lo) / hi})
    return rows


class FlopLedger:
    """A sampler callback summing FLOPs per query by kind of forward pass (denoise, probe, predictor, rerun).

    Each row of a forward pass over a (B, T) batch costs ``counter.forward_flops(T)`` (padding included:
    a padded row is computed like any other), added to that row's query under the event's kind.
    """

    def __init__(self, counter: FlopSource):
        self.counter = counter
        self._flops: dict[Hashable, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._passes: dict[Hashable, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lengths: dict[Hashable, list[int]] = defaultdict(list)

    def on_forward(self, event) -> None:
        flops = self.counter.forward_flops(event.seq_len)
        for qid in event.query_ids:
            self._flops[qid][event.kind] += flops
            self._passes[qid][event.kind] += 1
            self._lengths[qid].append(event.seq_len)

    def per_query(self) -> dict[Hashable, dict[str, int]]:
        """{query_id: {kind: FLOPs}}."""
        return {q: dict(kinds) for q, kinds in self._flops.items()}

    def forward_lengths(self, query_id: Hashable) -> list[int]:
        """The sequence length of every forward pass a query took part in, in order (for re-pricing)."""
        return list(self._lengths.get(query_id, []))

    def total(self, kind: str | None = None) -> int:
        """FLOPs over all queries, of one kind or of all kinds."""
        return sum(n for kinds in self._flops.values() for k, n in kinds.items() if kind is None or k == kind)

    def to_frame(self):
        """A tidy pandas frame: one row per (query_id, kind) with ``flops`` and ``forward_passes``."""
        import pandas as pd

        rows = [{"query_id": q, "kind": k, "flops": n, "forward_passes": self._passes[q][k]}
                for q, kinds in self._flops.items() for k, n in kinds.items()]
        return pd.DataFrame(rows, columns=["query_id", "kind", "flops", "forward_passes"])

    def reset(self) -> None:
        self._flops.clear()
        self._passes.clear()
        self._lengths.clear()


def counter_for(model) -> FlopSource:
    """A counter for a DiffusionLM / module (fvcore), or for a shape or preset name (meta-device stand-in)."""
    from ptdlib.shapes import preset

    if isinstance(model, str):
        model = preset(model)
    if isinstance(model, ModelShape):
        return FlopCounter.for_shape(model)
    return FlopCounter(model)


__all__ = [
    "AnalyticCounter", "FlopCounter", "FlopLedger", "FlopSource", "count_with_fvcore", "count_with_torch",
    "counter_for", "cross_check", "sdpa_macs",
]
