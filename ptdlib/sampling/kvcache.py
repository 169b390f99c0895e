"""Key/value caches in the sampler: Fast-dLLM's prefix and dual caches, as the loop's forward-pass strategy.

Fast-dLLM (Wu et al., 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and
Parallel Decoding", §3.2) and dLLM-Var (Yang et al., 2025) decode a block with a cache refreshed per block:

* ``none``: every step is one full pass over prompt + canvas (LLaDA's reference sampler).
* ``prefix``: the block's first step is a full pass that also stores every layer's keys and values (the
  *refresh*); the block's other steps compute only the current block and everything after it, whose queries
  attend to the cached keys of the prompt and the completed blocks plus their own fresh keys.
* ``dual``: as ``prefix``, but the masked suffix after the block is cached too, so a cached step computes
  only the current block's queries, attending to all cached keys (the block's own recomputed).

With a growing window (nothing after the current block exists) the two caches compute the same thing.
A bidirectional model's cached keys go stale as the block is filled, so a cache changes the tokens; measure
the change, do not assume it away. Each pass is reported with what it really computed: a refresh as a full
pass (``seq_len`` tokens), a cached pass with ``query_len`` query tokens against ``seq_len`` keys
(:class:`~ptdlib.sampling.events.ForwardEvent`), which the FLOP ledger prices accordingly.

The sampler owns the loop; it asks a :class:`BlockForward` for each step's logits. One is made per batch by
:func:`block_forward`. Caching needs a network that takes ``use_cache`` / ``past_key_values`` /
``cache_start`` (the embedded model, :mod:`ptdlib.models.modeling`); others are refused with a clear error.
"""

from __future__ import annotations

import torch

# the cache modes the cost model plans (numpy only); CACHE_MODES is re-exported
from ptdlib.cost.plans import CACHE_MODES, check_cache_mode  # noqa: F401
from ptdlib.sampling.events import ForwardEvent, counted_logits, emit_forward


def check_cacheable(lm, mode: str) -> None:
    """Check that ``lm`` can run the sampler with cache ``mode``.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM`.
        mode: One of :data:`CACHE_MODES`.

    Raises:
        ValueError: For an unknown mode, a network without KV-cache support, or a model whose logits are shifted
            or that cannot be batched.
    """
    check_cache_mode(mode)
    if mode == "none":
        return
    if not getattr(lm.network, "supports_kv_cache", False):
        raise ValueError(
            f"cache mode {mode!r} needs a network that runs with cached keys and values "
            f"(use_cache / past_key_values / cache_start, as the embedded model); "
            f"{lm.model_id} ({type(lm.network).__name__}) has none; use cache 'none'"
        )
    if getattr(lm, "logits_shift", 0) or not getattr(lm, "batch_invariant", True):
        raise ValueError(
            f"cache mode {mode!r} is not supported for {lm.model_id}: its logits are shifted or it "
            "cannot be batched; use cache 'none'"
        )


class BlockForward:
    """No cache: each step is one full pass over the columns given (``counted_logits``)."""

    def __init__(self, lm, kind: str, callbacks):
        self.lm, self.kind, self.callbacks = lm, kind, callbacks

    def logits(self, x, attn, rows, trim: int, block: int, s: int, e: int, qids, step: int) -> tuple[torch.Tensor, int]:
        """The logits of one step, and the batch column of their first position.

        Args:
            x: Token ids of columns ``trim …`` of the batch rows ``rows``, shape ``(rows, width)``.
            attn: Their attention mask, same shape.
            rows: 1-D tensor of batch indices.
            trim: Batch column of ``x``'s first column.
            block: Index of the current block.
            s: The current block's first batch column.
            e: One past its last batch column.
            qids: The query id of each row.
            step: The step index reported with the pass.

        Returns:
            ``(logits, first)``: logits of shape ``(rows, n, V)`` for batch columns ``first … first + n``.
        """
        return counted_logits(self.lm, x, attn, self.kind, qids, self.callbacks, step), trim


class CachedBlockForward(BlockForward):
    """Prefix or dual cache (module docstring): a refresh pass per block, then cached passes."""

    def __init__(self, lm, kind: str, callbacks, mode: str):
        super().__init__(lm, kind, callbacks)
        check_cacheable(lm, mode)
        self.mode = mode
        self.block = None  # the block the cache was refreshed for
        self.rows = None  # batch rows of the refresh pass, in order
        self.first = 0  # batch column of the cache's first column
        self.cache = None

    def _fresh_enough(self, rows, trim: int, block: int, width: int) -> bool:
        if self.cache is None or block != self.block or trim < self.first:
            return False
        if self.first + self.cache.seq_len != trim + width:  # the sequence ends elsewhere: not this cache's
            return False
        return bool(torch.isin(rows, self.rows).all())

    def logits(self, x, attn, rows, trim, block, s, e, qids, step):
        width = x.shape[1]
        if not self._fresh_enough(rows, trim, block, width):
            with torch.no_grad():
                out = self.lm.network(input_ids=x, attention_mask=attn, use_cache=True)
            self.block, self.rows, self.first, self.cache = block, rows.clone(), trim, out.past_key_values
            emit_forward(self.callbacks, ForwardEvent(self.kind, tuple(qids), int(width), step))
            return out.logits, trim
        end = trim + width if self.mode == "prefix" else e  # query columns: block (+ suffix for prefix)
        where = torch.searchsorted(self.rows, rows)  # the sampler's rows come sorted (from nonzero())
        cache = self.cache.select(where.to(x.device), trim - self.first)
        with torch.no_grad():
            out = self.lm.network(input_ids=x[:, s - trim : end - trim], past_key_values=cache, cache_start=s - trim)
        emit_forward(self.callbacks, ForwardEvent(self.kind, tuple(qids), int(width), step, query_len=end - s))
        return out.logits, s


def block_forward(lm, mode: str, kind: str, callbacks) -> BlockForward:
    """The forward-pass strategy of cache ``mode`` for one batch of the sampler.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM`.
        mode: One of :data:`CACHE_MODES`.
        kind: Forward kind reported with each pass.
        callbacks: Objects with ``on_forward``.

    Returns:
        A :class:`BlockForward` (``none``) or a :class:`CachedBlockForward`.

    Raises:
        ValueError: For an unknown mode or a model that cannot be cached (:func:`check_cacheable`).
    """
    check_cache_mode(mode)
    return BlockForward(lm, kind, callbacks) if mode == "none" else CachedBlockForward(lm, kind, callbacks, mode)
