"""Does a model honour its attention mask? One padded-vs-unpadded forward tells, for any model.

Batching left-pads prompts of different lengths. A model that attends to padding (the original LLaDA modelling
file calls attention with ``attn_mask=None``) gives a prompt different logits depending on its batch
neighbours, so results would change with ``batch_size``. :func:`check_padding_invariance` runs a short and a
long sequence together (the short one left-padded) and each alone; if the short one's logits differ beyond
float rounding (or the padded forward fails, as remote code that hands a 2-D integer mask to SDPA does), the
model is marked ``batch_invariant = False`` with one warning, and :meth:`DiffusionLM.logits
<ptdlib.models.base.DiffusionLM.logits>` then runs rows of different real lengths in separate forward passes,
without padding and without a mask.
"""

from __future__ import annotations

import warnings

import torch

#: relative tolerance on the largest logit difference (float rounding of a padded batch is far below it)
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8, torch.bfloat16: 3e-2, torch.float16: 5e-3}
#: lengths of the probe's two sequences (short one left-padded to the long one's length)
PROBE_LENGTHS = (5, 12)
#: seed of the probe's token draw
PROBE_SEED = 0


class PaddingWarning(UserWarning):
    """A model ignores its attention mask; ptdlib batches only prompts of equal length for it."""


def padding_gap(lm) -> float:
    """How much left padding changes a model's logits.

    Runs a short sequence left-padded beside a longer one and alone (lengths :data:`PROBE_LENGTHS`, tokens drawn
    with :data:`PROBE_SEED`).

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM` to probe.

    Returns:
        The largest |Δ logit| of the short sequence between the two runs, relative to its largest |logit|: 0 for
        a model that honours its mask, up to float rounding; inf where the difference is NaN.
    """
    gen = torch.Generator().manual_seed(PROBE_SEED)
    vocab = len(lm.tokenizer)
    short_n, long_n = PROBE_LENGTHS
    short = torch.randint(0, vocab, (1, short_n), generator=gen)
    short[0, -2:] = lm.mask_id  # a canvas tail, as in sampling
    long = torch.randint(0, vocab, (1, long_n), generator=gen)
    dev = lm.device
    ids = torch.full((2, long_n), lm.pad_id, dtype=torch.long)
    ids[0, long_n - short_n :], ids[1] = short[0], long[0]
    attn = torch.zeros_like(ids)
    attn[0, long_n - short_n :], attn[1] = 1, 1
    with torch.no_grad():
        out = lm.network(input_ids=short.to(dev), attention_mask=None)
        alone = (out if isinstance(out, torch.Tensor) else out.logits)[0].float()
        out = lm.network(input_ids=ids.to(dev), attention_mask=attn.to(dev))
        together = (out if isinstance(out, torch.Tensor) else out.logits)[0, long_n - short_n :].float()
    scale = alone.abs().max().clamp(min=1e-6)
    return float(((together - alone).abs().max() / scale).nan_to_num(float("inf")))


def check_padding_invariance(lm) -> bool:
    """Probe ``lm`` once and set ``lm.batch_invariant``.

    A padded forward that raises counts as not invariant. A model that is not invariant gets one
    :class:`PaddingWarning`.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM` to probe (modified in place).

    Returns:
        Whether the gap of :func:`padding_gap` is within :data:`RELATIVE_TOLERANCE` for the weights' dtype.
    """
    dtype = next(lm.network.parameters()).dtype
    try:
        gap, why = padding_gap(lm), ""
    except Exception as e:  # e.g. remote code that hands a 2-D integer mask to SDPA
        gap, why = (
            float("inf"),
            f"; a padded forward failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        )
    ok = gap <= RELATIVE_TOLERANCE.get(dtype, 1e-4)
    lm.batch_invariant = ok
    if not ok:
        change = f" (left padding changed its logits by {gap:.2g} of their scale)" if not why else why
        warnings.warn(
            f"{lm.model_id} does not honour its attention mask{change}: prompts of different lengths are run in "
            f"separate forward passes, without padding or mask",
            PaddingWarning,
            stacklevel=2,
        )
    return ok
