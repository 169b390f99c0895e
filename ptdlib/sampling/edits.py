"""Live canvas edits: inserting mask tokens into a canvas being denoised, and growing or shrinking it.

Training-free variable-length samplers change the canvas *during* denoising: DAEDAL (Li et al., "Beyond
Fixed: Variable-Length Denoising for Diffusion Large Language Models", ICLR 2026) replaces a low-confidence
mask by several masks; ρ-EOS (Yang, Jiang & Shao, arXiv:2601.22527) appends or inserts masks when the
implicit EOS density among masked positions is low and cuts the canvas's tail when it is high.

The sampler owns the loop (docs/design.md §4); a policy that edits gives it a :class:`CanvasEditor`. After every
denoising step the loop shows the editor a :class:`StepView` of the rows that took part (their logits, the
canvas before and after the step's commits) and applies the edits it returns with :func:`apply_edit`.
Committed tokens are never changed by an edit, only moved (insertion) or dropped (a shrink cuts the tail).
The next forward pass runs on the edited canvas and is reported, like every pass, with the padded shape it
really had, so the FLOP ledger charges the extra positions.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class InsertMasks:
    """Put ``count`` mask tokens before canvas position ``position`` (``position`` = length appends)."""

    query_id: Hashable
    position: int  # canvas position (0 = first token after the prompt)
    count: int  # masks inserted, >= 1


@dataclass(frozen=True)
class Resize:
    """Set the canvas to ``length`` tokens: cut the tail (committed tokens included) or append masks."""

    query_id: Hashable
    length: int  # new canvas length, >= 1


Edit = InsertMasks | Resize


@dataclass(frozen=True)
class StepView:
    """What an editor sees after one denoising step, for the rows that took part in it.

    Tensors are (rows, W) or (rows, W, V) over canvas positions ``0 … W-1``, ``W`` the longest canvas of the
    rows; positions at or past a row's ``lengths`` entry are filler (neither mask nor part of the canvas).
    """

    step: int  # the batch's pass count (see ptdlib.sampling.sampler)
    block_start: int  # canvas position where the current block starts
    block_end: int  # canvas position one past its end (clipped at the longest canvas)
    query_ids: tuple[Hashable, ...]
    lengths: tuple[int, ...]  # canvas length of each row before any edit of this step
    before: torch.Tensor  # (rows, W) canvas tokens before this step's commits
    after: torch.Tensor  # (rows, W) canvas tokens after them
    logits: torch.Tensor  # (rows, W, V) the pass's logits at canvas positions (after guidance)
    mask_id: int
    end_ids: tuple[int, ...]


class CanvasEditor(Protocol):
    """Decides, after each step, which canvases to edit (none: an empty sequence)."""

    def edit(self, view: StepView) -> Sequence[Edit]:
        """The edits to apply after the step that ``view`` shows (none: an empty sequence)."""
        ...


def apply_edit(tokens: list[int], edit: Edit, mask_id: int, max_length: int) -> list[int]:
    """The canvas ``tokens`` after ``edit``.

    Args:
        tokens: The row's canvas tokens.
        edit: An :class:`InsertMasks` or a :class:`Resize`.
        mask_id: The mask token id (of inserted or appended positions).
        max_length: The longest canvas the row may have (the model's positions minus its prompt).

    Returns:
        The edited canvas (a new list).

    Raises:
        ValueError: If the edit does not fit (the message names the bad value): an insertion position outside
            ``0..len(tokens)``, a count < 1, a length < 1, a result longer than ``max_length``, or an unknown
            edit type.
    """
    n = len(tokens)
    if isinstance(edit, InsertMasks):
        if not 0 <= edit.position <= n:
            raise ValueError(
                f"query {edit.query_id!r}: insertion position {edit.position} is outside its "
                f"canvas of {n} tokens (allowed 0..{n})"
            )
        if edit.count < 1:
            raise ValueError(f"query {edit.query_id!r}: must insert at least one mask, got count {edit.count}")
        out = tokens[: edit.position] + [mask_id] * edit.count + tokens[edit.position :]
    elif isinstance(edit, Resize):
        if edit.length < 1:
            raise ValueError(f"query {edit.query_id!r}: canvas length must be >= 1, got {edit.length}")
        out = tokens[: edit.length] + [mask_id] * max(0, edit.length - n)
    else:
        raise ValueError(f"unknown canvas edit {edit!r}; use InsertMasks or Resize")
    if len(out) > max_length:
        raise ValueError(
            f"query {edit.query_id!r}: the edit makes a canvas of {len(out)} tokens, more than the "
            f"{max_length} its prompt leaves in the model's positions"
        )
    return out
