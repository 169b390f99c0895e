"""The masked-diffusion sampling loop with LLaDA's semantics, batched, with a canvas length per query.

:func:`sample` reproduces ``generate()`` of the LLaDA reference code (Nie et al., 2025, "Large Language Diffusion
Models"): prompt + ``L`` mask tokens, blocks of ``block_length`` decoded left to right, ``steps`` split evenly
over the blocks, one forward pass per step followed by the commit rule of :mod:`ptdlib.sampling.commit`;
committed tokens are never remasked. :class:`SamplerConfig` holds the settings: the reference's guidance and
end-token options, Fast-dLLM's threshold rule and KV caches (:mod:`ptdlib.sampling.kvcache`), dLLM-Var's
growing window and the EOS-led early stop. A canvas editor (:mod:`ptdlib.sampling.edits`) may grow or shrink
live canvases between steps.

Every forward pass is reported to ``callbacks`` as a :class:`~ptdlib.sampling.events.ForwardEvent` and every
step's commits as a :class:`~ptdlib.sampling.events.StepEvent`, whose step index is the query's step in its
schedule (``block * steps_per_block + i``; with the threshold rule, the batch's pass count);
:class:`~ptdlib.sampling.events.TraceRecorder` records them for plots. Blocks, the commit rule, windows, caches and batching:
docs/design.md §4; per-query seeding (a query's tokens never depend on its batch): docs/design.md §9.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from ptdlib.cost.plans import WINDOWS, sampler_batches, sampler_steps
from ptdlib.models.base import DiffusionLM
from ptdlib.models.batching import left_pad
from ptdlib.sampling.commit import RANDOM_REMASKING, check_remasking, commit_step, transfer_schedule
from ptdlib.sampling.edits import StepView, apply_edit
from ptdlib.sampling.events import FORWARD_KINDS, StepEvent, counted_logits, emit_step
from ptdlib.sampling.kvcache import block_forward, check_cache_mode


@dataclass(frozen=True)
class SamplerConfig:
    """How to denoise a canvas; the defaults are LLaDA's reference settings with S = L."""

    steps: int | None = None  # total denoising steps; None means steps = canvas length (LLaDA's S = L)
    block_length: int = 32  # semi-autoregressive block; must divide the canvas length
    temperature: float = 0.0  # Gumbel-max noise temperature (0 = greedy)
    remasking: str = "low_confidence"  # confidence of a candidate: "low_confidence" (softmax prob) or "random"
    cfg_scale: float = 0.0  # unsupervised classifier-free guidance (prompt masked in the unconditional branch)
    suppress_eos: bool = False  # the reference's logits_eos_inf: EOS logit -inf (EOS only; end-of-turn stays allowed)
    confidence_eos_eot_inf: bool = False  # the reference's option of that name: EOS/EOT candidates committed last
    threshold: float | None = (
        None  # Fast-dLLM: commit every masked position at or above this confidence (>= 1 per step)
    )
    stop_after_eos_block: bool = False  # stop a query once a fully committed block holds EOS (EOS-led growth)
    window: str = "full"  # one of WINDOWS: the whole canvas, or dLLM-Var's growing window (stops after the EOS block)
    cache: str = (
        "none"  # one of ptdlib.sampling.kvcache.CACHE_MODES: none, or Fast-dLLM's prefix / dual cache per block
    )

    @property
    def stops_after_eos_block(self) -> bool:
        """Whether a query stops once a fully committed block holds an end token (always, on a growing window)."""
        return self.stop_after_eos_block or self.window == "growing"

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; choose from {', '.join(WINDOWS)}")
        check_cache_mode(self.cache)
        if self.cache != "none" and self.cfg_scale > 0:
            raise ValueError(
                f"cache {self.cache!r} does not combine with guidance (cfg_scale {self.cfg_scale}); "
                "use cache 'none' or cfg_scale 0"
            )
        if self.steps is not None and (not isinstance(self.steps, numbers.Integral) or self.steps <= 0):
            raise ValueError(f"steps must be a positive integer or None (= canvas length), got {self.steps!r}")
        if not isinstance(self.block_length, numbers.Integral) or self.block_length <= 0:
            raise ValueError(f"block_length must be a positive integer, got {self.block_length!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        check_remasking(self.remasking)
        if not self.cfg_scale >= 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] or None, got {self.threshold}")

    def plan(self, canvas_length: int) -> tuple[int, int]:
        """The block structure of a canvas.

        Args:
            canvas_length: Canvas length ``L`` in tokens.

        Returns:
            ``(number of blocks, steps per block)``.

        Raises:
            ValueError: If ``L`` is not a positive integer, ``block_length`` does not divide it, ``steps`` exceeds
                it, or the number of blocks does not divide ``steps``.
        """
        return sampler_steps(canvas_length, self.block_length, self.steps)  # the rule the cost model plans with


@dataclass
class SampleOutput:
    """The result of sampling one query."""

    query_id: Hashable
    canvas_length: int
    tokens: list[int]  # the final canvas (mask ids remain after an early stop)
    text: str  # decoded response: the tokens before the first end token
    length: int  # number of tokens before the first end token (the canvas length if there is none)
    truncated: bool  # the canvas holds no end token: the answer may have been cut
    forward_passes: int  # network evaluations over this query (two per step with guidance)
    steps_run: int  # denoising steps this query took part in


def _query_seed(seed: int, query_id) -> int:
    """A 63-bit generator seed from (seed, query id), stable across processes (unlike ``hash``)."""
    key = f"{seed}|{type(query_id).__name__}|{query_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def _end_position(tokens: list[int], end_ids: tuple[int, ...]) -> int | None:
    return next((i for i, t in enumerate(tokens) if t in end_ids), None)


class _Batch:
    """One batch of queries sharing a canvas length: the state of the loop and one forward pass + commit."""

    def __init__(self, lm, cfg, prompts, canvases, qids, gens, kind, callbacks, bar, editor=None):
        self.lm, self.cfg, self.qids, self.gens, self.kind, self.callbacks, self.bar = (
            lm,
            cfg,
            qids,
            gens,
            kind,
            callbacks,
            bar,
        )
        self.editor = editor  # a CanvasEditor (ptdlib.sampling.edits) or None: canvases then change between steps
        self.prompt_lens = [len(p) for p in prompts]
        dev = lm.device
        p_ids, p_attn = left_pad(prompts, lm.pad_id)
        self.P = p_ids.shape[1]
        canvas = torch.tensor(canvases, dtype=torch.long)
        self.x = torch.cat([p_ids, canvas], 1).to(dev)
        self.attn = torch.cat([p_attn, torch.ones_like(canvas)], 1).to(dev)
        self.is_prompt = torch.cat([p_attn.bool(), torch.zeros_like(canvas, dtype=torch.bool)], 1).to(dev)
        self.pad = torch.tensor([self.P - len(p) for p in prompts])  # left padding of each row
        self.B, self.L = canvas.shape
        self.lens = torch.full((self.B,), self.L, dtype=torch.long)  # canvas length of each row (edits change it)
        self.active = torch.ones(self.B, dtype=torch.bool)
        self.passes = [0] * self.B
        self.steps_run = [0] * self.B
        self.end_ids = torch.tensor(lm.end_ids, device=dev)
        self.want_steps = any(hasattr(cb, "on_step") for cb in callbacks)
        self.forward = block_forward(lm, cfg.cache, kind, callbacks)  # how a step's logits are computed (caches)

    def run(self) -> None:
        if self.editor is not None:
            return self._run_editable()
        cfg, bl, mask_id = self.cfg, self.cfg.block_length, self.lm.mask_id
        n_blocks, spb = cfg.plan(self.L)
        step = 0
        for b in range(n_blocks):
            s, e = self.P + b * bl, self.P + (b + 1) * bl
            if not self.active.any():
                break
            if cfg.threshold is None:
                sched = transfer_schedule((self.x[:, s:e] == mask_id).sum(1).cpu(), spb)
                for i in range(spb):
                    k = sched[:, i]
                    rows = (self.active & (k > 0)).nonzero().squeeze(1)
                    if len(rows):
                        self._step(rows, k[rows], b, s, e, b * spb + i)
            else:
                while True:
                    rows = (self.active & (self.x[:, s:e] == mask_id).any(1).cpu()).nonzero().squeeze(1)
                    if not len(rows):
                        break
                    self._step(rows, None, b, s, e, step)
                    step += 1
            if cfg.stops_after_eos_block:
                ended = torch.isin(self.x[:, self.P : e], self.end_ids).any(1).cpu()
                self.active &= ~ended

    def _run_editable(self) -> None:
        """The loop when an editor may change canvases between steps (see :mod:`ptdlib.sampling.edits`).

        Each step denoises the current block, the first block (of ``block_length`` canvas positions) that still
        holds a mask in some active row; rows with no mask there sit the step out. A step commits one token
        per row (LLaDA's S = L: one pass per masked position) or, with ``threshold``, Fast-dLLM's rule. The
        last block may be partial (canvases need not be whole blocks). Rows whose canvases span the same number
        of blocks share a forward pass. Without edits this is the plain loop with S = L, token for token.
        Early stopping: a row stops once its fully committed blocks hold EOS.
        """
        bl, mask_id, P = self.cfg.block_length, self.lm.mask_id, self.P
        # a row commits at least one token per step, so it can take no more steps than the positions its prompt
        # leaves; an editor that keeps re-opening a canvas past that would never finish: stop such rows
        cap = torch.tensor([self.lm.max_positions - n for n in self.prompt_lens])
        step = 0
        while True:
            stuck = self.active & (torch.tensor(self.steps_run) >= cap)
            if stuck.any():
                warnings.warn(
                    f"queries {[self.qids[r] for r in stuck.nonzero().squeeze(1).tolist()]} stopped after "
                    f"as many steps as they have positions: the canvas editor kept re-opening them",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.active &= ~stuck
            masked = (self.x[:, P:] == mask_id).cpu() & self.active[:, None]
            todo = masked.any(1)
            if not todo.any():
                break
            b = int(masked.float().argmax(1)[todo].min()) // bl  # argmax of a bool row: its first mask
            rows = masked[:, b * bl : (b + 1) * bl].any(1).nonzero().squeeze(1)
            # rows whose canvases span the same number of blocks share a pass, as fresh canvases of one length
            # do (sample() groups queries by canvas length): a row is not padded to a much longer neighbour
            width = (self.lens[rows] + bl - 1) // bl
            for w in width.unique().tolist():
                sub = rows[width == w]
                k = None if self.cfg.threshold is not None else torch.ones(len(sub), dtype=torch.long)
                self._step(sub, k, b, P + b * bl, P + (b + 1) * bl, step)
            step += 1
            if self.cfg.stop_after_eos_block:
                canvas = self.x[:, P:].cpu()
                pos = torch.arange(canvas.shape[1])[None, :]
                inside = pos < self.lens[:, None]
                masked = (canvas == mask_id) & inside
                done = torch.where(masked.any(1), masked.float().argmax(1) // bl * bl, self.lens)
                ended = (torch.isin(canvas, self.end_ids.cpu()) & inside & (pos < done[:, None])).any(1)
                self.active &= ~ended

    def _draw(self, rows: list[int], shape: tuple[int, ...]) -> torch.Tensor:
        u = torch.stack([torch.rand(shape, generator=self.gens[r], dtype=torch.float64) for r in rows])
        return u.to(self.lm.device)

    def _step(self, rows: torch.Tensor, k, block: int, s: int, e: int, step: int) -> None:
        lm, cfg = self.lm, self.cfg
        every = len(rows) == self.B
        trim = int(self.pad[rows].min())  # padding columns no selected row needs
        right = self.P + int(self.lens[rows].max())  # ... on both sides (edited canvases differ in length)
        if cfg.window == "growing":
            right = min(right, e)  # nothing after the current block exists yet
        e = min(e, right)
        idx = rows.to(self.x.device)
        x = (self.x if every else self.x[idx])[:, trim:right]
        attn = (self.attn if every else self.attn[idx])[:, trim:right]
        # an editor sees the logits of whole canvases; the commit rule those of the current block
        lo, hi = (self.P - trim, right - trim) if self.editor is not None else (s - trim, e - trim)
        before = x[:, self.P - trim :].clone() if self.editor is not None else None
        qids = tuple(self.qids[r] for r in rows.tolist())
        if cfg.cfg_scale > 0:
            is_prompt = (self.is_prompt if every else self.is_prompt[idx])[:, trim:right]
            uncond = x.masked_fill(is_prompt, lm.mask_id)
            logits = counted_logits(
                lm, torch.cat([x, uncond]), torch.cat([attn, attn]), self.kind, qids + qids, self.callbacks, step
            )
            cond, unc = logits[:, lo:hi].chunk(2)
            logits = unc + (cfg.cfg_scale + 1) * (cond - unc)
        else:
            logits, first = self.forward.logits(x, attn, rows, trim, block, s, e, qids, step)
            logits = logits[:, lo + trim - first : hi + trim - first]  # a cached pass starts at the block
        canvas_logits = logits
        logits = logits[:, s - trim - lo : e - trim - lo]
        if cfg.suppress_eos:  # logits_eos_inf: EOS only, as the reference
            logits = logits.clone()
            logits[..., lm.eos_id] = float("-inf")
        row_list = rows.tolist()
        bl, V = logits.shape[1], logits.shape[2]
        gumbel = self._draw(row_list, (bl, V)) if cfg.temperature > 0 else None
        remask = self._draw(row_list, (bl,)) if cfg.remasking in RANDOM_REMASKING else None
        block_tokens = x[:, s - trim : e - trim]
        transfer, x0 = commit_step(
            logits,
            block_tokens,
            lm.mask_id,
            k=None if k is None else k.to(logits.device),
            temperature=cfg.temperature,
            remasking=cfg.remasking,
            threshold=cfg.threshold,
            gumbel_uniforms=gumbel,
            remask_uniforms=remask,
            last_ids=lm.end_ids if cfg.confidence_eos_eot_inf else (),
        )
        new = torch.where(transfer, x0, block_tokens)
        if every:
            self.x[:, s:e] = new
        else:
            self.x[idx, s:e] = new
        per_pass = 2 if cfg.cfg_scale > 0 else 1
        for r in row_list:
            self.passes[r] += per_pass
            self.steps_run[r] += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.want_steps:
            hit = transfer.cpu()
            new_cpu = new.cpu()
            positions = tuple(tuple((h.nonzero().squeeze(1) + (s - self.P)).tolist()) for h in hit)
            tokens = tuple(tuple(t[h].tolist()) for t, h in zip(new_cpu, hit))
            emit_step(self.callbacks, StepEvent(step, block, qids, positions, tokens))
        if self.editor is not None:
            self._edit(rows, step, s, e, before, canvas_logits)

    def _edit(self, rows: torch.Tensor, step: int, s: int, e: int, before: torch.Tensor, logits) -> None:
        """Show the editor this step's rows and apply the edits it returns (canvases may grow or shrink)."""
        P, mask_id, row_list = self.P, self.lm.mask_id, rows.tolist()
        view = StepView(
            step,
            s - P,
            e - P,
            tuple(self.qids[r] for r in row_list),
            tuple(int(self.lens[r]) for r in row_list),
            before,
            self.x[rows.to(self.x.device), P : P + before.shape[1]],
            logits,
            mask_id,
            self.lm.end_ids,
        )
        where = {self.qids[r]: r for r in row_list}
        edited: dict[int, list[int]] = {}
        for ed in self.editor.edit(view) or ():
            r = where.get(ed.query_id)
            if r is None:
                raise ValueError(f"canvas edit for query {ed.query_id!r}, which took no part in step {step}")
            tokens = edited.get(r, self.x[r, P : P + int(self.lens[r])].tolist())
            edited[r] = apply_edit(tokens, ed, mask_id, self.lm.max_positions - self.prompt_lens[r])
        if not edited:
            return
        grow = P + max(len(t) for t in edited.values()) - self.x.shape[1]
        if grow > 0:  # new columns are filler: not attended, not masks
            B, dev = self.B, self.x.device
            self.x = torch.cat([self.x, torch.full((B, grow), self.lm.pad_id, dtype=torch.long, device=dev)], 1)
            self.attn = torch.cat([self.attn, torch.zeros((B, grow), dtype=self.attn.dtype, device=dev)], 1)
            self.is_prompt = torch.cat([self.is_prompt, torch.zeros((B, grow), dtype=torch.bool, device=dev)], 1)
        for r, tokens in edited.items():
            n = len(tokens)
            self.x[r, P:] = self.lm.pad_id
            self.x[r, P : P + n] = torch.tensor(tokens, dtype=torch.long, device=self.x.device)
            self.attn[r, P:] = 0
            self.attn[r, P : P + n] = 1
            self.lens[r] = n

    def outputs(self) -> list[SampleOutput]:
        out = []
        for r in range(self.B):
            n = int(self.lens[r])  # the canvas length (edits may have changed it)
            tokens = self.x[r, self.P : self.P + n].tolist()
            end = _end_position(tokens, self.lm.end_ids)
            length = n if end is None else end
            out.append(
                SampleOutput(
                    self.qids[r],
                    n,
                    tokens,
                    self.lm.decode(tokens[:length]),
                    length,
                    end is None,
                    self.passes[r],
                    self.steps_run[r],
                )
            )
        return out


def _prompt_ids(lm: DiffusionLM, prompts) -> list[list[int]]:
    return [lm.encode_prompt(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]


def sample(
    lm: DiffusionLM,
    prompts: Sequence[str | list[int]],
    canvas: int | Sequence[int],
    cfg: SamplerConfig = SamplerConfig(),
    *,
    seed: int = 0,
    callbacks=(),
    kind: str = "denoise",
    query_ids: Sequence | None = None,
    batch_size: int = 32,
    init_canvas: Sequence[list[int] | None] | None = None,
    progress: bool = False,
    editor=None,
) -> list[SampleOutput]:
    """Denoise a canvas after each prompt, with LLaDA's semantics (docs/design.md §4).

    Reproduces ``generate()`` of the LLaDA reference code (Nie et al., 2025), batched, with a canvas length per
    query. A query's tokens depend on ``seed`` and its query id only, never on its batch neighbours.

    Args:
        lm: The model.
        prompts: Per query, text (chat-formatted by ``lm.encode_prompt``) or token ids used as they are.
        canvas: Canvas length in tokens, one for all queries or one per query.
        cfg: Steps, blocks, temperature, commit rule, window and cache.
        seed: Seeds each query's generator together with its query id.
        callbacks: Objects with ``on_forward`` / ``on_step``; every forward pass and every step's commits are
            reported to them (:mod:`ptdlib.sampling.events`).
        kind: Forward kind reported with each pass, one of ``FORWARD_KINDS``.
        query_ids: Unique ids of the queries (default: their positions in the call).
        batch_size: Queries per forward pass (queries are grouped by canvas length).
        init_canvas: Per query a canvas of its canvas length to continue (committed tokens stay, masks are
            denoised), or None for all masks.
        progress: Show a progress bar of forward passes.
        editor: A :class:`~ptdlib.sampling.edits.CanvasEditor` that may insert masks into live canvases or resize
            them after every step (DAEDAL, ρ-EOS); canvases then need not be whole blocks, and ``steps`` must be
            None (one token per step, S = L) unless ``threshold`` is set.

    Returns:
        One :class:`SampleOutput` per prompt, in order; each output's ``canvas_length`` is its final canvas.

    Raises:
        ValueError: If the per-query sequences do not have one entry per prompt, query ids repeat, a prompt is
            empty, ``kind`` or ``batch_size`` is invalid, a canvas length does not fit ``cfg``'s block structure
            (:meth:`SamplerConfig.plan`) or prompt + canvas exceed ``lm.max_positions``, an ``init_canvas`` has
            another length than its canvas, or an editor is combined with a growing window, a cache, fixed
            ``steps`` without a threshold, or a pad id equal to the mask id.
    """
    n = len(prompts)
    if n == 0:
        return []
    lengths = [canvas] * n if isinstance(canvas, numbers.Number) else list(canvas)
    lengths = [int(L) if isinstance(L, numbers.Integral) else L for L in lengths]  # numpy ints welcome
    qids = list(range(n)) if query_ids is None else list(query_ids)
    inits = [None] * n if init_canvas is None else list(init_canvas)
    for name, seq in (("canvas lengths", lengths), ("query_ids", qids), ("init_canvas", inits)):
        if len(seq) != n:
            raise ValueError(f"got {len(seq)} {name} for {n} prompts; give one per prompt")
    if len(set(qids)) != n:
        raise ValueError("query_ids must be unique (each query seeds its own generator)")
    empty = [q for q, p in zip(qids, prompts) if (not p.strip() if isinstance(p, str) else len(p) == 0)]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise ValueError(f"query {empty[0]!r}: the prompt is empty{more}; give every query a prompt")
    if kind not in FORWARD_KINDS:
        raise ValueError(f"unknown forward kind {kind!r}; choose from {', '.join(FORWARD_KINDS)}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if editor is not None:
        if cfg.window != "full" or cfg.cache != "none":
            raise ValueError(
                f"a canvas editor needs window 'full' and cache 'none', got window {cfg.window!r} and "
                f"cache {cfg.cache!r}"
            )
        if cfg.steps is not None and cfg.threshold is None:
            raise ValueError(
                f"a canvas editor needs steps=None (one token per step) or a threshold, got steps={cfg.steps}"
            )
        if lm.pad_id == lm.mask_id:
            raise ValueError(f"a canvas editor needs a pad id distinct from the mask id {lm.mask_id} (filler columns)")
        bad = [L for L in lengths if not isinstance(L, numbers.Integral) or L <= 0]
        if bad:
            raise ValueError(f"canvas lengths must be positive integers, got {bad[:3]}")
        plans = {}
    else:
        plans = {L: cfg.plan(L) for L in dict.fromkeys(lengths)}  # validates every canvas length first
    ids = _prompt_ids(lm, prompts)
    canvases = []
    for q, p, L, init in zip(qids, ids, lengths, inits):
        if len(p) + L > lm.max_positions:
            raise ValueError(
                f"query {q!r}: prompt of {len(p)} tokens + canvas of {L} = {len(p) + L} exceeds the "
                f"model's {lm.max_positions} positions; the canvas can be at most {lm.max_positions - len(p)}"
            )
        if init is not None and len(init) != L:
            raise ValueError(f"query {q!r}: init_canvas has {len(init)} tokens but its canvas length is {L}")
        canvases.append([lm.mask_id] * L if init is None else [int(t) for t in init])

    # grouped by canvas length, longest prompt first (less padding per batch): the rule the cost model replays
    batches = sampler_batches([len(p) for p in ids], lengths, batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # one tick per forward pass; the threshold rule's number of passes is not known in advance
        total = (
            None
            if cfg.threshold is not None or editor is not None
            else sum(plans[lengths[m[0]]][0] * plans[lengths[m[0]]][1] for m in batches)
        )
        bar = tqdm(total=total, desc="denoising passes", unit="pass")
    results: list[SampleOutput | None] = [None] * n
    try:
        for members in batches:
            batch = _Batch(
                lm,
                cfg,
                [ids[i] for i in members],
                [canvases[i] for i in members],
                [qids[i] for i in members],
                [torch.Generator().manual_seed(_query_seed(seed, qids[i])) for i in members],
                kind,
                callbacks,
                bar,
                editor,
            )
            with torch.no_grad():
                batch.run()
            for i, out in zip(members, batch.outputs()):
                results[i] = out
    finally:
        if bar is not None:
            bar.close()
    return results
