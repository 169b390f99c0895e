"""Own-length labels: the length a model produces at the maximum canvas (docs/design.md §7).

Length labels are the model's own, not the reference answer's: the labelling run samples every query at
the maximum canvas and records the length before the first end token. It is cached on disk per (model
fingerprint: weights, dtype, tokenizer and special ids; sampler settings, canvas, seed, device), one JSON
line per query, so every run, predictor and notebook
shares one labelling run and a killed labelling run resumes where it stopped.

The labelling run stops a query after the first fully committed block that holds an end token
(``stop_after_eos_block``). This is exact, not an approximation: with semi-autoregressive blocks, the passes
that decide blocks up to the first EOS are the same whether or not later blocks are decoded afterwards, and
committed tokens are never remasked, so the response before the first EOS is token-identical to the full
run's (``tests/test_labels.py`` checks it), at a fraction of the forward passes. It always decodes the whole
canvas without a KV cache (the reference decoding), whatever ``window`` and ``cache`` the caller's sampler
has, so every window and cache mode of a model shares one set of labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ptdlib import DATA_DIR
from ptdlib.sampling.sampler import SamplerConfig, sample

#: Default cache folder (the repository's ``data/cache/labels``; override with ``PTD_CACHE_DIR``).
DEFAULT_CACHE = DATA_DIR / "cache"


def cache_dir() -> Path:
    """The label cache folder: ``$PTD_CACHE_DIR/labels``, default ``data/cache/labels``."""
    return Path(os.environ.get("PTD_CACHE_DIR", DEFAULT_CACHE)) / "labels"


#: Above this many parameters the fingerprint hashes a sample of every tensor instead of all of it.
_FULL_HASH_PARAMS = 50_000_000
_SAMPLE = 4096  # elements hashed from the start of each tensor of a large model


def _tensor_bytes(t: torch.Tensor, limit: int | None = None) -> bytes:
    """The raw bytes of a tensor (any dtype, bfloat16 included), optionally of its first ``limit`` elements."""
    flat = t.detach().reshape(-1)
    if limit is not None:
        flat = flat[:limit]
    return flat.cpu().contiguous().view(torch.uint8).numpy().tobytes()


def model_fingerprint(lm) -> str:
    """A short hash of what decides the model's outputs.

    It covers the weights as loaded (dtype included), the tokenizer (vocabulary and chat template) and the
    special ids. Small models hash every weight; a model over 50M parameters (hashing 8B weights would take minutes)
    hashes every tensor's name, shape, dtype and first 4,096 values, which tells fine-tuned checkpoints of
    one architecture apart.

    Args:
        lm: The :class:`~ptdlib.models.base.DiffusionLM`.

    Returns:
        16 hex digits.
    """
    h = hashlib.sha256(lm.model_id.encode())
    n = sum(p.numel() for p in lm.network.parameters())
    limit = None if n <= _FULL_HASH_PARAMS else _SAMPLE
    for name, p in lm.network.state_dict().items():
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        h.update(_tensor_bytes(p, limit))
    tok = lm.tokenizer
    if hasattr(tok, "get_vocab"):
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(str(getattr(tok, "chat_template", None)).encode())
    h.update(json.dumps([lm.mask_id, lm.eos_id, list(lm.end_ids), lm.pad_id, lm.logits_shift]).encode())
    return h.hexdigest()[:16]


def _cache_path(lm, canvas: int, sampler: SamplerConfig, seed: int) -> Path:
    # window and cache are left out: labels never use them (module docstring), and older files keep their names
    settings = {k: v for k, v in asdict(sampler).items() if k not in ("window", "cache")}
    if not (settings["confidence_eos_eot_inf"] or settings["suppress_eos"]):
        # older files keep their names; with suppress_eos (EOS only since confidence_eos_eot_inf came) a new one
        del settings["confidence_eos_eot_inf"]
    key = json.dumps({"canvas": canvas, "sampler": settings, "seed": seed, "device": lm.device.type}, sort_keys=True)
    name = f"{lm.model_id}-{model_fingerprint(lm)}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.jsonl"
    return cache_dir() / name


def label_queries(
    lm,
    queries,
    *,
    canvas: int = 128,
    sampler: SamplerConfig = SamplerConfig(),
    seed: int = 0,
    batch_size: int = 32,
    use_cache: bool = True,
    progress: bool = False,
) -> dict:
    """Label every query with the model's own response at the maximum canvas (cached on disk).

    The labelling run stops each query after its EOS block, on the full window and without a KV cache, so its
    tokens are those of the full run.

    Args:
        lm: The model.
        queries: The queries (``qid``, ``prompt``).
        canvas: The maximum canvas in tokens.
        sampler: Sampler settings (``window`` and ``cache`` are ignored).
        seed: Sampling seed.
        batch_size: Queries per forward pass.
        use_cache: Read and append the cache file (keyed by model fingerprint, canvas, settings, seed, device).
        progress: Show a progress bar.

    Returns:
        ``{qid: {"qid", "prompt", "length", "truncated", "text"}}`` for every query.
    """
    path = _cache_path(lm, canvas, sampler, seed)
    done: dict = {}
    if use_cache and path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a killed process: that query is labelled again
                continue
            done[(rec["qid"], rec["prompt"])] = rec
    todo = [q for q in queries if (q.qid, q.prompt) not in done]
    early_stop = dataclasses.replace(sampler, stop_after_eos_block=True, window="full", cache="none")
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(todo), batch_size * 4):
            chunk = todo[i : i + batch_size * 4]
            outs = sample(
                lm,
                [q.prompt for q in chunk],
                canvas,
                early_stop,
                seed=seed,
                query_ids=[q.qid for q in chunk],
                batch_size=batch_size,
                progress=progress,
            )
            recs = [
                {"qid": q.qid, "prompt": q.prompt, "length": o.length, "truncated": o.truncated, "text": o.text}
                for q, o in zip(chunk, outs)
            ]
            if use_cache:
                with open(path, "a") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in recs))
            done.update({(r["qid"], r["prompt"]): r for r in recs})
    return {q.qid: done[(q.qid, q.prompt)] for q in queries}


def own_lengths(lm, queries, canvas: int = 128, seed: int = 0, **kwargs) -> np.ndarray:
    """The model's own response length for each query (tokens before the first end token at ``canvas``).

    Args:
        lm: The model.
        queries: The queries.
        canvas: The maximum canvas in tokens.
        seed: Sampling seed.
        **kwargs: Passed to :func:`label_queries`.

    Returns:
        Int array of shape ``(n_queries,)``.
    """
    labels = label_queries(lm, queries, canvas=canvas, seed=seed, **kwargs)
    return np.array([labels[q.qid]["length"] for q in queries], dtype=int)
