"""The embedded model behind the :class:`~ptdlib.models.base.DiffusionLM` interface."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ptdlib.models.base import DiffusionLM
from ptdlib.models.embedded import DEFAULT_MODEL_DIR, load_model
from ptdlib.models.metrics import end_token_ids
from ptdlib.models.tokenizer import encode_prompt


def embedded_lm(model, tokenizer, model_id: str = "ptd-tiny") -> DiffusionLM:
    """Wrap an in-memory embedded model (e.g. one a test just built) as a DiffusionLM."""
    return DiffusionLM(
        network=model,
        tokenizer=tokenizer,
        mask_id=tokenizer.mask_token_id,
        eos_id=tokenizer.eos_token_id,
        end_ids=tuple(end_token_ids(model, tokenizer)),
        pad_id=tokenizer.pad_token_id,
        max_positions=model.config.max_position_embeddings,
        model_id=model_id,
        prompt_encoder=partial(encode_prompt, tokenizer),  # rejects words outside the vocabulary
    )


def load_embedded(path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> DiffusionLM:
    """The embedded model from ``path`` (default: the shipped ``data/models/ptd-tiny``)."""
    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    model, tok = load_model(path, device=device, dtype=dtype)
    return embedded_lm(model, tok, model_id=path.name)
