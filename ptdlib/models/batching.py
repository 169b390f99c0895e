"""Tensors for prompt + canvas batches: left-padded prompts followed by a canvas of equal width.

Left padding puts every prompt's last token at the same column, so the canvas of every row starts at the
same column ``P`` (the padded prompt width) and ``ids[:, P:]`` is the canvas.
"""

from __future__ import annotations

import torch


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token sequences to one width, right-aligned.

    Args:
        seqs: ``B`` token-id lists (an empty one is all padding).
        pad_id: Id written at padding positions.

    Returns:
        ``(ids, attention_mask)``, both int64 of shape ``(B, max len)``; the mask is 0 at padding.

    Raises:
        ValueError: If ``seqs`` is empty.
    """
    if not seqs:
        raise ValueError("cannot pad an empty list of sequences")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            attn[i, width - len(s) :] = 1
    return ids, attn


def with_canvas(
    prompt_ids: torch.Tensor, prompt_attn: torch.Tensor, canvas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate left-padded prompts with a canvas; canvas positions attend and are attended.

    Args:
        prompt_ids: Left-padded prompt ids, shape ``(B, P)``.
        prompt_attn: Their attention mask, shape ``(B, P)``.
        canvas: Canvas ids, shape ``(B, L)``.

    Returns:
        ``(ids, attention_mask)``, both of shape ``(B, P + L)``.
    """
    ids = torch.cat([prompt_ids, canvas], dim=1)
    attn = torch.cat([prompt_attn, torch.ones_like(canvas)], dim=1)
    return ids, attn


def answer_canvas(answers: list[list[int]], canvas_len: int, eos_id: int) -> torch.Tensor:
    """Answers padded with EOS to ``canvas_len`` (LLaDA's SFT target).

    Args:
        answers: ``B`` answer token-id lists.
        canvas_len: Canvas length ``L`` in tokens.
        eos_id: The EOS token id.

    Returns:
        Int64 tensor of shape ``(B, L)``.

    Raises:
        ValueError: If an answer leaves no room for one EOS (``len(answer) >= canvas_len``).
    """
    out = torch.full((len(answers), canvas_len), eos_id, dtype=torch.long)
    for i, a in enumerate(answers):
        if len(a) >= canvas_len:
            raise ValueError(f"answer of {len(a)} tokens does not fit a canvas of {canvas_len} with its EOS")
        out[i, : len(a)] = torch.tensor(a, dtype=torch.long)
    return out
