"""Held-out metrics of a D-LLM that need no sampler: masked-token accuracy and the length signal.

* **Masked-token accuracy** at mask ratio r: the canvas holds the reference answer padded with EOS; a
  fraction r of canvas positions is masked (exactly ``round(r L)`` per query); accuracy of the argmax on
  masked positions, over the answer and its first EOS (``answer``) and over the whole canvas (``canvas``,
  dominated by easy EOS padding).
* **Length signal** (SmartCrop's observation, "Diffusion LMs are natively length-aware"): one forward pass
  over prompt + all-mask canvas; the estimate is the first canvas position whose P(EOS or EOT) exceeds a
  threshold (the number of tokens before it); reported as Spearman correlation and MAE against the
  reference answer length.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from ptdlib.models.batching import answer_canvas, left_pad, with_canvas
from ptdlib.models.tokenizer import encode_prompt


def end_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a response: EOS and, where the model has one, EOT."""
    ids = [tokenizer.eos_token_id]
    eot = getattr(model.config, "eot_token_id", None)
    if eot is not None and eot != tokenizer.eos_token_id:
        ids.append(eot)
    return ids


def _batches(xs, n):
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


@torch.no_grad()
def masked_token_accuracy(
    model, tokenizer, queries, ratio: float, canvas: int = 128, seed: int = 0, batch_size: int = 64
) -> dict:
    """Masked-token accuracy of the argmax at mask ratio ``ratio`` (see module docstring).

    Args:
        model: The network (returns ``.logits``).
        tokenizer: Its tokenizer.
        queries: Items with ``prompt`` and ``answer`` text.
        ratio: Mask ratio r in (0, 1]; ``max(1, round(r * canvas))`` canvas positions are masked per query.
        canvas: Canvas length in tokens (the answer padded with EOS).
        seed: Seed of the mask draws.
        batch_size: Queries per forward pass.

    Returns:
        ``{"answer": accuracy over the answer and its first EOS, "canvas": accuracy over the whole canvas}``.

    Raises:
        ValueError: If ``ratio`` is outside (0, 1], or an answer does not fit the canvas with its EOS.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"mask ratio must be in (0, 1], got {ratio}")
    gen = torch.Generator().manual_seed(seed)
    hit_a = n_a = hit_c = n_c = 0
    device = next(model.parameters()).device
    for qs in _batches(queries, batch_size):
        p_ids, p_attn = left_pad([encode_prompt(tokenizer, q.prompt) for q in qs], tokenizer.pad_token_id)
        answers = [tokenizer(q.answer, add_special_tokens=False)["input_ids"] for q in qs]
        target = answer_canvas(answers, canvas, tokenizer.eos_token_id)
        k = max(1, round(ratio * canvas))
        order = torch.rand(len(qs), canvas, generator=gen).argsort(dim=1)
        masked = torch.zeros_like(target, dtype=torch.bool).scatter_(1, order[:, :k], True)
        ids, attn = with_canvas(p_ids, p_attn, torch.where(masked, tokenizer.mask_token_id, target))
        pred = (
            model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, p_ids.shape[1] :].argmax(-1).cpu()
        )
        correct = (pred == target) & masked
        in_answer = torch.arange(canvas)[None] <= torch.tensor([len(a) for a in answers])[:, None]
        hit_a += int((correct & in_answer).sum())
        n_a += int((masked & in_answer).sum())
        hit_c += int(correct.sum())
        n_c += int(masked.sum())
    return {"answer": hit_a / max(n_a, 1), "canvas": hit_c / max(n_c, 1)}


@torch.no_grad()
def eos_probabilities(model, tokenizer, prompts: list[str], canvas: int = 128, batch_size: int = 64) -> np.ndarray:
    """P(EOS or EOT) at each canvas position, from one pass over prompt + all-mask canvas.

    Args:
        model: The network (returns ``.logits``).
        tokenizer: Its tokenizer.
        prompts: ``n`` prompts.
        canvas: Canvas length in tokens.
        batch_size: Prompts per forward pass.

    Returns:
        Probabilities of shape ``(n, canvas)``.
    """
    device = next(model.parameters()).device
    ends = end_token_ids(model, tokenizer)
    out = []
    for ps in _batches(prompts, batch_size):
        p_ids, p_attn = left_pad([encode_prompt(tokenizer, p) for p in ps], tokenizer.pad_token_id)
        blank = torch.full((len(ps), canvas), tokenizer.mask_token_id, dtype=torch.long)
        ids, attn = with_canvas(p_ids, p_attn, blank)
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, p_ids.shape[1] :]
        out.append(logits.float().softmax(-1)[..., ends].sum(-1).cpu().numpy())
    return np.concatenate(out)


def first_crossing(p: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, the first index where ``p`` exceeds ``threshold``.

    Args:
        p: Probabilities, shape ``(n, L)``.
        threshold: The level to cross (strictly).

    Returns:
        Int array of shape ``(n,)``; ``L`` for a row that never crosses.
    """
    above = p > threshold
    return np.where(above.any(axis=1), above.argmax(axis=1), p.shape[1])


def length_signal(model, tokenizer, queries, canvas: int = 128, threshold: float = 0.5) -> dict:
    """How well the first-crossing length estimate tracks the reference answer lengths.

    Args:
        model: The network (returns ``.logits``).
        tokenizer: Its tokenizer.
        queries: Items with ``prompt`` and ``answer_length``.
        canvas: Canvas length in tokens.
        threshold: P(end token) level of :func:`first_crossing`.

    Returns:
        ``{"spearman", "mae" (tokens), "under_rate" (share of estimates below the reference)}``.
    """
    p = eos_probabilities(model, tokenizer, [q.prompt for q in queries], canvas)
    est = first_crossing(p, threshold)
    true = np.array([q.answer_length for q in queries])
    rho = spearmanr(est, true).statistic
    return {"spearman": float(rho), "mae": float(np.abs(est - true).mean()), "under_rate": float((est < true).mean())}


def heldout_metrics(model, tokenizer, queries, canvas: int = 128, ratios=(0.25, 0.5, 0.75, 1.0)) -> dict:
    """Masked-token accuracy (answer positions) per ratio, and the length signal, on ``queries``.

    Args:
        model: The network (returns ``.logits``).
        tokenizer: Its tokenizer.
        queries: Items with ``prompt``, ``answer`` and ``answer_length``.
        canvas: Canvas length in tokens.
        ratios: Mask ratios of the accuracy.

    Returns:
        ``{"mask_acc@<r>": ..., "length_spearman": ..., "length_mae": ..., "length_under_rate": ...}``, each
        rounded to 4 decimals.
    """
    acc = {
        f"mask_acc@{r}": round(masked_token_accuracy(model, tokenizer, queries, r, canvas)["answer"], 4) for r in ratios
    }
    sig = length_signal(model, tokenizer, queries, canvas)
    return {**acc, **{f"length_{k}": round(v, 4) for k, v in sig.items()}}
