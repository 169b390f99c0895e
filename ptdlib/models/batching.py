"""Tensors for prompt + canvas batches: left-padded prompts followed by a canvas of equal width.

Left padding puts every prompt's last token at the same column, so the canvas of every row starts at the
same column ``P`` (the padded prompt width) and ``ids[:, P:]`` is the canvas.
"""

from __future__ import annotations

import torch


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask) of shape (B, max len), sequences right-aligned."""
    if not seqs:
        raise ValueError("cannot pad an empty list of sequences")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            attn[i, width - len(s):] = 1
    return ids, attn


def with_canvas(prompt_ids: torch.Tensor, prompt_attn: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate left-padded prompts (B, P) with a canvas (B, L); canvas positions attend and are attended."""
    ids = torch.cat([prompt_ids, canvas], dim=1)
    attn = torch.cat([prompt_attn, torch.ones_like(canvas)], dim=1)
    return ids, attn


def answer_canvas(answers: list[list[int]], canvas_len: int, eos_id: int) -> torch.Tensor:
    """Answers padded with EOS to ``canvas_len`` (LLaDA's SFT target); an answer must leave room for one EOS."""
    out = torch.full((len(answers), canvas_len), eos_id, dtype=torch.long)
    for i, a in enumerate(answers):
        if len(a) >= canvas_len:
            raise ValueError(f"answer of {len(a)} tokens does not fit a canvas of {canvas_len} with its EOS")
        out[i, : len(a)] = torch.tensor(a, dtype=torch.long)
    return out
