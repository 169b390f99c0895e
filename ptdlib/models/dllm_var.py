"""dLLM-Var's training recipe (``ptd train-model --recipe dllm-var``): a model that ends its own answers.

Yang et al., 2025, "Diffusion LLMs Can Have Native Variable Generation Lengths: Let [EOS] Lead the Way"
(dLLM-Var), observe that a model trained with LLaDA's SFT recipe learns where an answer ends from the
canvas end and the EOS padding it sees unmasked, so on a short window it fills the end with EOS (premature
endings). Their recipe, reproduced here on the embedded model:

* **End tokens are always masked.** Every EOS/EOT of a response is masked whatever the sample's mask
  ratio ``t``, so the model must predict the end from the answer itself and never reads it from context.
  An always-masked token's importance weight is ``1 / P(masked) = 1``; answer tokens keep LLaDA's ``1/t``.
* **Several samples are packed into one sequence with full attention.** A row holds
  ``prompt_1 answer_1 EOS prompt_2 answer_2 EOS ...`` (positions run on across samples, every token
  attends to every other), so after an answer's EOS comes unrelated text, not a run of EOS padding; the
  row's tail after the last sample that fits is that sample's EOS run (masked, like every end token).

A share ``1 - pack_frac`` of steps keeps the single-sample LLaDA layout (prompt + EOS-padded full canvas,
with every end token masked as above), so the fixed-canvas setting and the all-mask length probe stay in
the training distribution. The loss is the weighted cross-entropy on masked positions divided by the
number of response positions (LLaDA divides by the canvas length, the same quantity there).

Data and masks of step ``s`` depend on (seed, s) only, so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ptdlib.models.batching import with_canvas
from ptdlib.models.tokenizer import encode_prompt
from ptdlib.tasks import iter_split


@dataclass(frozen=True)
class ResponseBatch:
    """One training batch in the recipe's layout; every tensor is (B, W).

    ``ids``: tokens (prompts, answers, end tokens; ``pad`` where ``attention_mask`` is 0); ``response``:
    positions the model must learn (answers and their end tokens; prompts never); ``end``: the response
    positions that hold an end token (always masked).
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor
    response: torch.Tensor
    end: torch.Tensor


def packed_row(
    samples: list[tuple[list[int], list[int]]], width: int, end_id: int
) -> tuple[list[int], list[bool], int]:
    """Pack (prompt ids, answer ids) samples into one row of ``width`` tokens.

    Each sample contributes ``prompt + answer + [end_id]``; samples are taken in order while they fit; the
    row's remaining tail extends the last sample's end-token run.

    Args:
        samples: ``(prompt ids, answer ids)`` pairs, in order.
        width: Row width in tokens.
        end_id: The end token appended to each answer and filling the tail.

    Returns:
        ``(ids, response flags, samples used)``; ids and flags have ``width`` entries, and a flag is True on
        answers, their end tokens and the tail.

    Raises:
        ValueError: If not even the first sample fits.
    """
    ids: list[int] = []
    response: list[bool] = []
    used = 0
    for prompt, answer in samples:
        need = len(prompt) + len(answer) + 1
        if len(ids) + need > width:
            break
        ids += prompt + answer + [end_id]
        response += [False] * len(prompt) + [True] * (len(answer) + 1)
        used += 1
    if used == 0:
        first = samples[0] if samples else ([], [])
        raise ValueError(f"a sample of {len(first[0]) + len(first[1]) + 1} tokens does not fit a packed row of {width}")
    tail = width - len(ids)
    return ids + [end_id] * tail, response + [True] * tail, used


class DllmVarBatchSource:
    """Deterministic batches of the dLLM-Var recipe: step ``s`` gets the same rows whatever the start step.

    ``base`` is the LLaDA-recipe :class:`~ptdlib.models.training.BatchSource` whose batches serve the
    single-sample steps; ``end_ids`` are the token ids that end a response (EOS first).
    """

    def __init__(self, tokenizer, cfg, base, end_ids: tuple[int, ...], split: str = "train"):
        """Set up the source.

        Args:
            tokenizer: The model's tokenizer.
            cfg: The training config (``pack_frac``, ``pack_width``, ``canvas``, ``batch_size``, ``seed``,
                ``family_weights``).
            base: The LLaDA-recipe batch source of the single-sample steps.
            end_ids: Token ids that end a response (EOS first).
            split: The task split the packed rows are drawn from.

        Raises:
            ValueError: If ``pack_frac`` is outside [0, 1] or ``pack_width`` does not exceed the canvas.
        """
        if not 0.0 <= cfg.pack_frac <= 1.0:
            raise ValueError(f"pack_frac must be in [0, 1], got {cfg.pack_frac}")
        if cfg.pack_width <= cfg.canvas:
            raise ValueError(f"pack_width ({cfg.pack_width}) must exceed the canvas ({cfg.canvas})")
        self.tok, self.cfg, self.base, self.split = tokenizer, cfg, base, split
        self.end_ids = tuple(end_ids)

    def _packed(self, step: int) -> ResponseBatch:
        cfg = self.cfg
        stream = iter_split(
            self.split, seed=cfg.seed * 1_000_003 + 7_919 * (step + 1) + 1, family_weights=cfg.family_weights or None
        )
        eos = self.end_ids[0]
        rows, flags = [], []
        pending = next(stream)
        for _ in range(cfg.batch_size):
            samples = []
            while sum(len(p) + len(a) + 1 for p, a in samples) <= cfg.pack_width:
                samples.append(
                    (
                        encode_prompt(self.tok, pending.prompt),
                        self.tok(pending.answer, add_special_tokens=False)["input_ids"],
                    )
                )
                pending = next(stream)
            row, resp, _ = packed_row(samples, cfg.pack_width, eos)
            rows.append(row)
            flags.append(resp)
        ids = torch.tensor(rows, dtype=torch.long)
        response = torch.tensor(flags, dtype=torch.bool)
        return ResponseBatch(ids, torch.ones_like(ids), response, response & self._is_end(ids))

    def _single(self, step: int) -> ResponseBatch:
        prompt_ids, prompt_attn, target = self.base.batch(step)
        ids, attn = with_canvas(prompt_ids, prompt_attn, target)
        response = torch.zeros_like(ids, dtype=torch.bool)
        response[:, prompt_ids.shape[1] :] = True
        return ResponseBatch(ids, attn, response, response & self._is_end(ids))

    def _is_end(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, torch.tensor(self.end_ids, dtype=ids.dtype))

    def batch(self, step: int) -> ResponseBatch:
        """The batch of step ``step``: packed with probability ``pack_frac`` (drawn from the seed and step)."""
        packed = random.Random(f"{self.cfg.seed}|pack|{step}").random() < self.cfg.pack_frac
        return self._packed(step) if packed else self._single(step)


def dllm_var_loss(model, batch: ResponseBatch, mask_id: int, eps: float, gen: torch.Generator) -> torch.Tensor:
    """The recipe's loss: cross-entropy on masked response positions, weighted 1/t (answers) or 1 (end tokens).

    Each row draws ``t ~ U(eps, 1]``; answer tokens are masked with probability ``t``, end tokens always.
    Divided by the number of response positions in the batch (Yang et al., 2025, dLLM-Var).

    Args:
        model: The network; called with ``input_ids`` and ``attention_mask``, returns ``.logits`` ``(B, W, V)``.
        batch: The batch (tensors of shape ``(B, W)``).
        mask_id: The mask token id.
        eps: Lower bound of the mask ratio ``t``.
        gen: Generator of the mask draws.

    Returns:
        The scalar loss.
    """
    B, W = batch.ids.shape
    t = (1 - eps) * torch.rand(B, 1, generator=gen) + eps
    masked = batch.response & ((torch.rand(B, W, generator=gen) < t) | batch.end)
    inputs = torch.where(masked, torch.full_like(batch.ids, mask_id), batch.ids)
    logits = model(input_ids=inputs, attention_mask=batch.attention_mask).logits
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.ids.reshape(-1), reduction="none")
    weight = torch.where(batch.end, torch.ones_like(t.expand(B, W)), 1.0 / t.expand(B, W))
    return (ce.view(B, W) * masked * weight).sum() / batch.response.sum().clamp(min=1)
