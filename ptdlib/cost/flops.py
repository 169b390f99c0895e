"""FLOPs of D-LLM forward passes: fvcore counts cached per shape, cross-checks, and a per-query ledger.

:class:`FlopCounter` prices one forward pass (``forward_flops(seq_len, batch, query_len)``; :func:`counter_for`
builds one for a model, a preset name or a ``config.json``); :class:`FlopLedger` is the sampler callback that
sums each query's passes by kind; :func:`cross_check` compares the counters. Conventions (docs/design.md §5):

* **2 FLOPs per multiply-add.** fvcore counts 1 per multiply-add, so :class:`FlopCounter` doubles its counts;
  ``torch.utils.flop_counter.FlopCounterMode`` and :func:`ptdlib.cost.shapes.analytic_flops` count 2 already.
* **Attention.** fvcore has no handle for ``aten::scaled_dot_product_attention``; :func:`sdpa_macs` is
  registered for it (Q K^T plus the weighted sum of V over the full, bidirectional T x T), and
  :func:`count_with_torch` gives FlopCounterMode the same formula for the CPU kernel it does not know.
* **Not counted**: norms, softmax, RoPE, activations, residual and bias additions, embedding lookups
  (:func:`ptdlib.cost.shapes.uncounted_flops_estimate` bounds them: well under 1 % of any saving).
* **KV-cached passes** (:mod:`ptdlib.sampling.kvcache`) compute ``query_len`` tokens against ``seq_len`` keys;
  they are counted by running the network's own cached forward on a cache of ``seq_len`` columns.
* **Caching.** A pass costs ``batch`` times one row, so each length is counted once at batch 1 and scaled.
* **Fallbacks: counting never stops a run.** If fvcore's ``torch.jit.trace`` fails, the counter tries
  FlopCounterMode, then the analytic model of the config (:data:`COUNTER_METHODS`), warns once, and prices
  every length with the counter it fell back to; ``method`` names it (a row's ``flop_counter``). A count of
  zero FLOPs is a failure.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Hashable
from pathlib import Path

import torch
from torch import nn

from ptdlib.cost.shapes import (
    FLOPS_PER_MAC,
    AnalyticCounter,
    FlopSource,
    ModelShape,
    analytic_flops,
    check_positive,
    check_seq_len,
    model_shape,
    shape_from_config,
)

#: fvcore's name for the fused attention op in a traced graph.
SDPA_JIT_OP = "aten::scaled_dot_product_attention"

#: The counters :class:`FlopCounter` tries, in order: fvcore's jit trace, ``torch.utils.flop_counter``'s
#: ``FlopCounterMode``, the analytic model of the config. A result row's ``flop_counter`` is one of these.
COUNTER_METHODS = ("fvcore", "flop_counter_mode", "analytic")
#: Characters of a counter's error message quoted in the fallback warning (jit errors run to pages).
_REASON_CHARS = 200


def _fvcore_nn():
    """``fvcore.nn``, imported without the torch.jit DeprecationWarning its import raises under torch 2.x."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn

    return fvcore.nn


def sdpa_macs(q_shape, k_shape, v_shape) -> int:
    """Multiply-adds of scaled dot-product attention.

    Q K^T: B H_q T_q T_k hd_qk; weights times V: B H_q T_q T_k hd_v (grouped KV heads are broadcast).

    Args:
        q_shape: Query shape ``(B, H_q, T_q, hd_qk)`` (any leading batch dimensions).
        k_shape: Key shape ``(B, H_kv, T_k, hd_qk)``.
        v_shape: Value shape ``(B, H_kv, T_k, hd_v)``.

    Returns:
        Multiply-adds (1 per multiply-add; double for FLOPs).
    """
    rows = math.prod(q_shape[:-1])  # B * H_q * T_q (any leading batch dimensions)
    t_k, d_qk, d_v = k_shape[-2], q_shape[-1], v_shape[-1]
    return int(rows * t_k * (d_qk + d_v))


def _sdpa_fvcore_handle(inputs, outputs) -> int:
    """The fvcore handle (1 per multiply-add, fvcore's own convention) of aten::scaled_dot_product_attention."""
    from fvcore.nn.jit_handles import get_shape

    return sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]))


def _matrix_product_handles() -> dict:
    """The fvcore handles (1 per multiply-add) of matrix products and attention, nothing elementwise."""
    from fvcore.nn import jit_handles as h

    return {
        "aten::linear": h.linear_flop_jit,
        "aten::matmul": h.matmul_flop_jit,
        "aten::mm": h.matmul_flop_jit,
        "aten::addmm": h.addmm_flop_jit,
        "aten::bmm": h.bmm_flop_jit,
        "aten::einsum": h.einsum_flop_jit,
        "aten::_convolution": h.conv_flop_jit,
        SDPA_JIT_OP: _sdpa_fvcore_handle,
    }


class _LogitsOnly(nn.Module):
    """Makes a Hugging Face model traceable: ``forward(input_ids)`` returns a plain logits tensor.

    With ``cache`` (a KV cache of the network) the pass is a cached one: ``input_ids`` stand at columns
    ``cache_start …`` of the cached sequence.
    """

    def __init__(self, network: nn.Module, cache=None, cache_start: int = 0):
        super().__init__()
        self.network, self.cache, self.cache_start = network, cache, cache_start

    def forward(self, input_ids):
        if self.cache is None:
            out = self.network(input_ids=input_ids)
        else:
            out = self.network(input_ids=input_ids, past_key_values=self.cache, cache_start=self.cache_start)
        return out if isinstance(out, torch.Tensor) else out.logits


def _input_ids(network: nn.Module, seq_len: int, batch: int, token_id: int) -> torch.Tensor:
    device = next(network.parameters()).device
    return torch.full((batch, seq_len), token_id, dtype=torch.long, device=device)


def _traced(network: nn.Module, seq_len: int, batch: int, token_id: int, query_len: int | None):
    """``(module, inputs)`` of the pass to count.

    That is a full pass, or a cached pass of ``query_len`` tokens whose queries attend to a cache of ``seq_len``
    keys (the cache is filled here by one uncounted pass).
    """
    if query_len is None:
        return _LogitsOnly(network), (_input_ids(network, seq_len, batch, token_id),)
    check_positive("query_len", query_len)
    if query_len > seq_len:
        raise ValueError(f"query_len {query_len} exceeds the {seq_len} keys it attends to")
    if not getattr(network, "supports_kv_cache", False):
        raise ValueError(f"{type(network).__name__} cannot run KV-cached passes (no supports_kv_cache)")
    with torch.no_grad():
        cache = network(input_ids=_input_ids(network, seq_len, batch, token_id), use_cache=True).past_key_values
    start = seq_len - query_len
    return _LogitsOnly(network, cache, start), (_input_ids(network, query_len, batch, token_id),)


def count_with_fvcore(
    network: nn.Module, seq_len: int, batch: int = 1, token_id: int = 0, query_len: int | None = None
) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one forward pass by operator, counted by fvcore with the SDPA handle.

    Only matrix products and attention are counted (module docstring, "Not counted").

    Args:
        network: Called as ``network(input_ids=ids)``; returns logits or an object with ``.logits``.
        seq_len: Tokens per row.
        batch: Rows.
        token_id: The token the rows are filled with.
        query_len: Count a KV-cached pass of that many tokens against ``seq_len`` keys (module docstring).

    Returns:
        ``{operator: FLOPs}`` (operators that counted none are left out).

    Raises:
        ValueError: For a non-positive ``seq_len``, ``batch`` or ``query_len``, a ``query_len`` above
            ``seq_len``, or a cached pass on a network without KV-cache support. fvcore's own errors (e.g. a
            model that cannot be traced) pass through.
    """
    check_positive("seq_len", seq_len)
    check_positive("batch", batch)
    analysis = _fvcore_nn().FlopCountAnalysis(*_traced(network, seq_len, batch, token_id, query_len))
    # fvcore's defaults also price norms and upsampling; keep matrix products only, plus attention.
    analysis.clear_op_handles().set_op_handle(**_matrix_product_handles())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        by_op = analysis.by_operator()
    return {op: FLOPS_PER_MAC * int(n) for op, n in by_op.items() if n}


def _sdpa_torch_formula(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula (2 per multiply-add) for the CPU flash-attention kernel it does not know."""
    return FLOPS_PER_MAC * sdpa_macs(q_shape, k_shape, v_shape)


def count_with_torch(
    network: nn.Module, seq_len: int, batch: int = 1, token_id: int = 0, query_len: int | None = None
) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one forward pass by operator, counted by ``FlopCounterMode``.

    Args:
        network: Called as ``network(input_ids=ids)``; returns logits or an object with ``.logits``.
        seq_len: Tokens per row.
        batch: Rows.
        token_id: The token the rows are filled with.
        query_len: Count a KV-cached pass of that many tokens against ``seq_len`` keys (module docstring).

    Returns:
        ``{operator: FLOPs}`` (operators that counted none are left out).

    Raises:
        ValueError: As :func:`count_with_fvcore`.
    """
    from torch.utils.flop_counter import FlopCounterMode

    check_positive("seq_len", seq_len)
    check_positive("batch", batch)
    module, inputs = _traced(network, seq_len, batch, token_id, query_len)  # the cache is filled uncounted
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_torch_formula}
    mode = FlopCounterMode(display=False, custom_mapping=extra)
    with torch.no_grad(), mode:
        module(*inputs)
    return {str(op): int(n) for op, n in mode.get_flop_counts()["Global"].items() if n}


class FlopCounter:
    """FLOP counts of a network's forward pass, cached per sequence length and scaled by batch.

    Counts with fvcore; if that fails, with ``FlopCounterMode``, then with the analytic model of ``fallback``,
    warning once (module docstring, "Fallbacks"). ``method`` names the counter in use (one of
    :data:`COUNTER_METHODS`); ``fallback_reasons`` lists why the earlier ones failed. Counting raises
    ``RuntimeError`` naming every counter's error only if all three fail.

    Args:
        network_or_lm: A :class:`~ptdlib.models.base.DiffusionLM`, or a module called as
            ``network(input_ids=ids)`` that returns logits or an object with ``.logits``.
        max_positions: Longest sequence priced (default: the model's positions or its config's
            ``max_position_embeddings``).
        fallback: Shape of the analytic model (default: the shape read from the network's ``config``).

    Raises:
        ValueError: If ``network_or_lm`` is neither a DiffusionLM nor a ``torch.nn.Module``.
    """

    def __init__(self, network_or_lm, max_positions: int | None = None, fallback: ModelShape | None = None):
        # Duck-typed DiffusionLM check: importing ptdlib.models would pull in transformers for every user.
        lm = network_or_lm if hasattr(network_or_lm, "network") and hasattr(network_or_lm, "mask_id") else None
        self.network = lm.network if lm is not None else network_or_lm
        if not isinstance(self.network, nn.Module):
            raise ValueError(f"expected a DiffusionLM or torch.nn.Module, got {type(network_or_lm).__name__}")
        config = getattr(self.network, "config", None)
        self.max_positions = (
            max_positions
            or (lm.max_positions if lm is not None else None)
            or getattr(config, "max_position_embeddings", None)
        )
        # A token every model's embedding has; the mask token is what a D-LLM canvas is made of.
        self.token_id = lm.mask_id if lm is not None else 0
        self.name = lm.model_id if lm is not None else type(self.network).__name__
        self.fallback = fallback
        self.method = COUNTER_METHODS[0]
        self.fallback_reasons: list[str] = []
        self._cache: dict[int, dict[str, int]] = {}

    @classmethod
    def for_shape(cls, shape: ModelShape) -> FlopSource:
        """A counter for a configuration too large to hold: a LLaMA-layout stand-in on the meta device.

        Same matrix-product shapes as ``shape`` (LLaDA is LLaMA-shaped; a causal vs bidirectional mask
        does not change the count), no weights in memory. Falls back like any :class:`FlopCounter` (to the
        analytic model of ``shape`` last).

        Args:
            shape: The model's shape.

        Returns:
            A :class:`FlopCounter`, or an :class:`~ptdlib.cost.shapes.AnalyticCounter` for shapes the stand-in
            cannot take (non-SwiGLU).
        """
        from transformers import LlamaConfig, LlamaForCausalLM

        if shape.mlp != "swiglu":
            return AnalyticCounter(shape)  # the LLaMA stand-in only has a SwiGLU MLP
        config = LlamaConfig(
            vocab_size=shape.vocab_size,
            hidden_size=shape.d_model,
            intermediate_size=shape.mlp_hidden,
            num_hidden_layers=shape.n_layers,
            num_attention_heads=shape.n_heads,
            num_key_value_heads=shape.n_kv_heads,
            head_dim=shape.hd,
            max_position_embeddings=shape.max_positions,
            tie_word_embeddings=shape.tied_head,
            hidden_act="silu",
        )
        with torch.device("meta"):
            network = LlamaForCausalLM(config).eval()
        counter = cls(network, max_positions=shape.max_positions, fallback=shape)
        counter.name = shape.name
        return counter

    def count(self, seq_len: int, query_len: int | None = None) -> dict[str, int]:
        """FLOPs of one row by operator (analytic: by part), cached per shape.

        Args:
            seq_len: Tokens of a full pass, or keys of a cached one.
            query_len: Tokens computed by a KV-cached pass; None: a full pass.

        Returns:
            ``{operator or part: FLOPs}`` (2 per multiply-add).

        Raises:
            ValueError: If ``seq_len`` is not positive or exceeds ``max_positions``.
            RuntimeError: If every counter fails (the message names each error).
        """
        check_seq_len(seq_len, self.max_positions)
        key = seq_len if query_len is None else (seq_len, query_len)
        if key not in self._cache:
            counts = self._count_new(seq_len, query_len)  # may switch counters and clear the cache
            self._cache[key] = counts
        return dict(self._cache[key])

    def _count_with(self, method: str, seq_len: int, query_len: int | None = None) -> dict[str, int]:
        if method == "fvcore":
            counts = count_with_fvcore(self.network, seq_len, token_id=self.token_id, query_len=query_len)
        elif method == "flop_counter_mode":
            counts = count_with_torch(self.network, seq_len, token_id=self.token_id, query_len=query_len)
        else:
            counts = AnalyticCounter(self._analytic_shape()).count(seq_len, query_len)
        if sum(counts.values()) <= 0:
            raise ValueError(f"counted no FLOPs at {seq_len} tokens (it saw none of the matrix products)")
        return counts

    def _analytic_shape(self) -> ModelShape:
        if self.fallback is None:
            config = getattr(self.network, "config", None)
            if config is None:
                raise ValueError("the network has no config to read its shape from; pass fallback=ModelShape(...)")
            self.fallback = shape_from_config(config, name=self.name)  # ValueError naming the missing sizes
        return self.fallback

    def _count_new(self, seq_len: int, query_len: int | None = None) -> dict[str, int]:
        failures = []
        while True:
            try:
                counts = self._count_with(self.method, seq_len, query_len)
                break
            except Exception as e:  # tracing failures come as many exception types
                message = (str(e).strip().splitlines() or [""])[0][:_REASON_CHARS]
                failures.append(f"{self.method} failed ({type(e).__name__}: {message})")
                position = COUNTER_METHODS.index(self.method) + 1
                if position == len(COUNTER_METHODS):
                    raise RuntimeError(
                        f"no FLOP counter could price {self.name} at {seq_len} tokens: "
                        + "; ".join(self.fallback_reasons + failures)
                    ) from e
                self.method = COUNTER_METHODS[position]
        if failures:
            self.fallback_reasons += failures
            self._cache.clear()  # one counter prices every length
            what = f"the analytic model of {self.fallback.name}" if self.method == "analytic" else self.method
            warnings.warn(
                f"FLOP counting of {self.name}: {'; '.join(failures)}; counting with {what} instead", stacklevel=4
            )
        return counts

    def forward_flops(self, seq_len: int, batch: int = 1, query_len: int | None = None) -> int:
        """FLOPs of one forward pass over ``batch`` rows (2 per multiply-add).

        Args:
            seq_len: Tokens per row of a full pass, or keys of a cached one.
            batch: Rows.
            query_len: Tokens computed per row by a KV-cached pass; None: a full pass.

        Returns:
            ``batch`` times the FLOPs of one row.

        Raises:
            ValueError: For a non-positive ``batch`` or a bad ``seq_len`` (see :meth:`count`).
        """
        check_positive("batch", batch)
        return batch * sum(self.count(seq_len, query_len).values())

    @property
    def cached_lengths(self) -> tuple[int, ...]:
        """The full-pass lengths counted so far (cached passes left out)."""
        return tuple(sorted(k for k in self._cache if isinstance(k, int)))


def cross_check(
    network: nn.Module, shape: ModelShape, seq_lens, token_id: int = 0, query_len: int | None = None
) -> list[dict]:
    """fvcore, FlopCounterMode and the analytic model at each length, with their largest relative gap.

    Args:
        network: The network to count.
        shape: Its shape, for the analytic model.
        seq_lens: Sequence lengths to check.
        token_id: The token the rows are filled with.
        query_len: Check KV-cached passes of that many tokens against each ``seq_len`` keys instead (the
            network must run cached passes; see :mod:`ptdlib.sampling.kvcache`).

    Returns:
        One dict per length: ``seq_len`` (and ``query_len``), ``fvcore``, ``torch``, ``analytic`` (FLOPs of one
        row) and ``max_rel_diff`` ((max - min) / max).
    """
    rows = []
    for t in seq_lens:
        counts = {
            "fvcore": sum(count_with_fvcore(network, t, token_id=token_id, query_len=query_len).values()),
            "torch": sum(count_with_torch(network, t, token_id=token_id, query_len=query_len).values()),
            "analytic": analytic_flops(shape, t, query_len=query_len)["total"],
        }
        hi, lo = max(counts.values()), min(counts.values())
        row = {"seq_len": t} if query_len is None else {"seq_len": t, "query_len": query_len}
        rows.append({**row, **counts, "max_rel_diff": (hi - lo) / hi})
    return rows


class FlopLedger:
    """A sampler callback summing FLOPs per query by kind of forward pass (denoise, probe, predictor, rerun).

    Each row of a forward pass over a (B, T) batch costs ``counter.forward_flops(T)`` (padding included:
    a padded row is computed like any other), added to that row's query under the event's kind. Passes are
    priced when read (:meth:`per_query`, :meth:`total`, :meth:`to_frame`), so that every pass of a query is
    priced by the same counter even if the counter fell back to another one mid-run; :meth:`on_forward`
    prices the pass once as well, so a length the counter refuses fails at the pass that has it.
    """

    def __init__(self, counter: FlopSource):
        self.counter = counter
        # qid -> [(kind, seq_len, query_len)]; query_len is None for a full pass (see ptdlib.sampling.kvcache)
        self._forwards: dict[Hashable, list[tuple[str, int, int | None]]] = defaultdict(list)

    @property
    def method(self) -> str:
        """The counter that prices the passes (``fvcore``, ``flop_counter_mode``, ``analytic``, ...)."""
        return str(getattr(self.counter, "method", type(self.counter).__name__))

    def on_forward(self, event) -> None:
        """Record a :class:`~ptdlib.sampling.events.ForwardEvent` for each of its rows' queries.

        The pass is priced now as well, so a length the counter refuses fails here.
        """
        query_len = getattr(event, "query_len", None)  # a KV-cached pass computes query_len tokens only
        self._price(event.seq_len, query_len)  # count a new shape now (and fail now if it is refused)
        for qid in event.query_ids:
            self._forwards[qid].append((event.kind, event.seq_len, query_len))

    def _price(self, seq_len: int, query_len: int | None) -> int:
        if query_len is None:
            return self.counter.forward_flops(seq_len)
        return self.counter.forward_flops(seq_len, query_len=query_len)

    def _priced(self) -> dict[Hashable, tuple[dict[str, int], dict[str, int]]]:
        """{query_id: ({kind: FLOPs}, {kind: forward passes})}, priced by the counter's current method."""
        out = {}
        for qid, passes in self._forwards.items():
            flops, count = defaultdict(int), defaultdict(int)
            for kind, seq_len, query_len in passes:
                flops[kind] += self._price(seq_len, query_len)
                count[kind] += 1
            out[qid] = (dict(flops), dict(count))
        return out

    def per_query(self) -> dict[Hashable, dict[str, int]]:
        """FLOPs per query and forward kind, priced by the counter's current method.

        Returns:
            ``{query_id: {kind: FLOPs}}``.
        """
        return {q: flops for q, (flops, _) in self._priced().items()}

    def forward_lengths(self, query_id: Hashable) -> list[int]:
        """The sequence length of every forward pass a query took part in, in order (for re-pricing)."""
        return [seq_len for _, seq_len, _ in self._forwards.get(query_id, [])]

    def forward_query_lengths(self, query_id: Hashable) -> list[int | None]:
        """Aligned with :meth:`forward_lengths`: each pass's computed tokens if KV-cached, else None."""
        return [query_len for _, _, query_len in self._forwards.get(query_id, [])]

    def total(self, kind: str | None = None) -> int:
        """FLOPs over all queries, of one kind or of all kinds."""
        return sum(n for kinds in self.per_query().values() for k, n in kinds.items() if kind is None or k == kind)

    def to_frame(self):
        """A tidy pandas frame: one row per (query_id, kind) with ``flops`` and ``forward_passes``."""
        import pandas as pd

        rows = [
            {"query_id": q, "kind": k, "flops": n, "forward_passes": passes[k]}
            for q, (flops, passes) in self._priced().items()
            for k, n in flops.items()
        ]
        return pd.DataFrame(rows, columns=["query_id", "kind", "flops", "forward_passes"])

    def reset(self) -> None:
        """Forget every recorded pass."""
        self._forwards.clear()


def counter_for(model) -> FlopSource:
    """A FLOP counter for a model, with or without its weights.

    Args:
        model: A DiffusionLM or module (counted by :class:`FlopCounter`), or, without weights, a
            :class:`~ptdlib.cost.shapes.ModelShape`, a preset name, or a checkpoint's ``config.json`` (or its
            directory), counted by the meta-device stand-in of :meth:`FlopCounter.for_shape` (see
            :func:`ptdlib.cost.shapes.model_shape`).

    Returns:
        A :class:`~ptdlib.cost.shapes.FlopSource`.
    """
    if isinstance(model, (str, Path)):
        model = model_shape(model)
    if isinstance(model, ModelShape):
        return FlopCounter.for_shape(model)
    return FlopCounter(model)


__all__ = [
    "COUNTER_METHODS",
    "AnalyticCounter",
    "FlopCounter",
    "FlopLedger",
    "FlopSource",
    "count_with_fvcore",
    "count_with_torch",
    "counter_for",
    "cross_check",
    "sdpa_macs",
]
