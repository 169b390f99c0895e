"""The per-step commit rule of LLaDA's sampler: which masked positions of the current block to fill, and with what.

The rule takes the logits of one block and returns the candidates and the positions to commit; it never calls
the model (the loop in :mod:`ptdlib.sampling.sampler` does). It follows ``generate()`` of the LLaDA reference code
(Nie et al., 2025, "Large Language Diffusion Models", Algorithm 5 with semi-autoregressive blocks).

:func:`commit_step` is one step, built from :func:`transfer_schedule` (how many tokens each step commits),
:func:`candidates` (argmax, or Gumbel-max in float64), :func:`confidence` (the :data:`REMASKING` rules; end
tokens committed last by :data:`DEMOTION`), :func:`select_top_k` and :func:`select_above_threshold`
(Fast-dLLM's rule). Each choice, where it departs from the reference's code, and why diffusers'
``BlockRefinementScheduler`` is not used instead: docs/design.md §4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NEG_INF = float("-inf")
#: How far a ``last_ids`` candidate's confidence is lowered: confidences lie in [0, 1] (a softmax probability or a
#: uniform draw), so ``c - 2`` lies in [-2, -1], below every other candidate and above committed positions' -inf.
DEMOTION = 2.0


def transfer_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Number of tokens to commit at each step: the masked count spread evenly, remainder first.

    LLaDA's ``get_num_transfer_tokens`` (Nie et al., 2025): ``base = n // steps`` everywhere plus one on the
    first ``n % steps`` steps, e.g. 10 tokens over 3 steps -> [4, 3, 3].

    Args:
        n_masked: Masked positions per row, shape ``(B,)``.
        steps: Steps to spread them over.

    Returns:
        Int64 tensor of shape ``(B, steps)``.

    Raises:
        ValueError: If ``steps`` is not positive.
    """
    if steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    n = n_masked.long().reshape(-1, 1)
    cols = torch.arange(steps, device=n.device).reshape(1, -1)
    return n // steps + (cols < n % steps).long()


def candidates(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """The candidate token of each position.

    Temperature 0: argmax. Otherwise the reference's Gumbel-max in float64:
    ``argmax exp(logits) / (-log u) ** temperature``.

    Args:
        logits: Shape ``(B, l, V)``.
        temperature: Gumbel noise temperature (0: greedy).
        uniforms: ``u``, uniform in (0, 1), shape ``(B, l, V)``, supplied by the caller (each query draws its own,
            so batching cannot change a sample); only read when ``temperature > 0``.

    Returns:
        Token ids, shape ``(B, l)``.

    Raises:
        ValueError: If ``temperature > 0`` and ``uniforms`` is None.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    if uniforms is None:
        raise ValueError("temperature > 0 needs uniform draws for the Gumbel noise")
    gumbel = (-torch.log(uniforms.to(torch.float64))) ** temperature
    return (logits.to(torch.float64).exp() / gumbel).argmax(dim=-1)


def _softmax_confidence(logits: torch.Tensor, x0: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    p = torch.softmax(logits.to(torch.float64), dim=-1)
    return p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)


def _random_confidence(logits: torch.Tensor, x0: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    if uniforms is None:
        raise ValueError("random remasking needs uniform draws")
    return uniforms.to(torch.float64)


#: remasking name -> confidence(logits (B, l, V), candidates (B, l), uniforms (B, l) or None) -> (B, l) float64
REMASKING: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "low_confidence": _softmax_confidence,
    "random": _random_confidence,
}
#: remasking rules that consume one uniform draw per position and step
RANDOM_REMASKING = frozenset({"random"})


def check_remasking(name: str) -> None:
    """Check that ``name`` is a key of :data:`REMASKING`.

    Raises:
        ValueError: If it is not (the message lists the choices).
    """
    if name not in REMASKING:
        raise ValueError(f"unknown remasking {name!r}; choose from {', '.join(REMASKING)}")


def confidence(
    remasking: str,
    logits: torch.Tensor,
    x0: torch.Tensor,
    masked: torch.Tensor,
    uniforms: torch.Tensor | None = None,
    last_ids: Sequence[int] = (),
) -> torch.Tensor:
    """The confidence of each candidate.

    Candidates whose token is in ``last_ids`` are lowered by :data:`DEMOTION`, below every other candidate
    (the reference's ``confidence_eos_eot_inf``).

    Args:
        remasking: A key of :data:`REMASKING` (``low_confidence``: the candidate's softmax probability;
            ``random``: a uniform draw).
        logits: Shape ``(B, l, V)``.
        x0: Candidates, shape ``(B, l)``.
        masked: Bool ``(B, l)``, True where the position is still masked.
        uniforms: Uniform draws of shape ``(B, l)`` (``random`` remasking only).
        last_ids: Token ids whose candidates are committed after all others.

    Returns:
        Float64 tensor of shape ``(B, l)``; ``-inf`` where ``masked`` is False (already committed).

    Raises:
        ValueError: For an unknown ``remasking``, or ``random`` remasking without ``uniforms``.
    """
    check_remasking(remasking)
    conf = REMASKING[remasking](logits, x0, uniforms)
    if len(last_ids):
        conf = torch.where(torch.isin(x0, torch.as_tensor(list(last_ids), device=x0.device)), conf - DEMOTION, conf)
    return conf.masked_fill(~masked, NEG_INF)


def select_top_k(conf: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[b]`` most confident positions of each row (ties to the leftmost), vectorised.

    Args:
        conf: Confidences, shape ``(B, l)``.
        k: Positions to pick per row, shape ``(B,)``; must not exceed a row's number of finite confidences
            (the schedule guarantees it).

    Returns:
        Bool tensor of shape ``(B, l)``.
    """
    order = conf.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(conf.shape[-1], device=conf.device).expand_as(order))
    return rank < k.reshape(-1, 1)


def select_above_threshold(conf: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Masked positions with confidence >= ``threshold``, plus each row's most confident one.

    Fast-dLLM's rule (Wu et al., 2025); rows with no masked position commit nothing.

    Args:
        conf: Confidences, shape ``(B, l)`` (``-inf`` at committed positions).
        masked: Bool ``(B, l)``, True where the position is still masked.
        threshold: Confidence level in (0, 1].

    Returns:
        Bool tensor of shape ``(B, l)``.
    """
    best = torch.zeros_like(masked).scatter_(-1, conf.argmax(dim=-1, keepdim=True), True)
    return masked & ((conf >= threshold) | best)


def commit_step(
    logits: torch.Tensor,
    block: torch.Tensor,
    mask_id: int,
    *,
    k: torch.Tensor | None,
    temperature: float,
    remasking: str,
    threshold: float | None = None,
    gumbel_uniforms: torch.Tensor | None = None,
    remask_uniforms: torch.Tensor | None = None,
    last_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the commit rule on a block.

    Args:
        logits: The block's logits after guidance and suppression, shape ``(B, l, V)``.
        block: The block's current tokens, shape ``(B, l)``.
        mask_id: The mask token id.
        k: The schedule's count for this step, shape ``(B,)`` (ignored when ``threshold`` is set).
        temperature: Gumbel noise temperature (0: greedy).
        remasking: A key of :data:`REMASKING`.
        threshold: Fast-dLLM's confidence threshold; None: commit the top ``k``.
        gumbel_uniforms: Uniforms ``(B, l, V)`` for the Gumbel noise (``temperature > 0``).
        remask_uniforms: Uniforms ``(B, l)`` for ``random`` remasking.
        last_ids: Token ids whose candidates are committed after all others (end tokens, for
            ``confidence_eos_eot_inf``).

    Returns:
        ``(transfer, candidates)``: bool ``(B, l)``, True at the positions to commit, and the candidate tokens
        ``(B, l)``.

    Raises:
        ValueError: If uniforms a rule needs are missing, or ``remasking`` is unknown.
    """
    masked = block == mask_id
    x0 = candidates(logits, temperature, gumbel_uniforms)
    conf = confidence(remasking, logits, x0, masked, remask_uniforms, last_ids)
    if threshold is not None:
        transfer = select_above_threshold(conf, masked, threshold)
    else:
        transfer = select_top_k(conf, k) & masked
    return transfer, x0
