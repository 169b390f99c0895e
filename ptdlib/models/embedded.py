"""Building, saving and loading the embedded model exactly as a Hugging Face checkpoint.

A model directory holds ``config.json`` + ``model.safetensors`` (``save_pretrained``), the tokenizer
files, and ``training_card.json``. Loading goes through ``AutoModelForMaskedLM`` / ``AutoTokenizer``, the
same path as any LLaDA-style checkpoint, with checks that turn a broken directory into one clear error.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

import ptdlib.models  # noqa: F401  (registers the architecture with the Auto classes)
from ptdlib import DATA_DIR
from ptdlib.models.base import DiffusionLM
from ptdlib.models.metrics import end_token_ids
from ptdlib.models.modeling import PtdLladaConfig, PtdLladaModel
from ptdlib.models.tokenizer import encode_prompt

#: Where the project's data lives (the repository's ``data/`` folder).
#: The embedded default model's name and directory.
DEFAULT_MODEL_NAME = "ptd-tiny"
DEFAULT_MODEL_DIR = DATA_DIR / "models" / DEFAULT_MODEL_NAME
CARD_FILE = "training_card.json"


def build_model(tokenizer, **overrides) -> PtdLladaModel:
    """A freshly initialised model whose vocabulary and special ids come from ``tokenizer``.

    Args:
        tokenizer: The embedded tokenizer.
        **overrides: :class:`~ptdlib.models.modeling.PtdLladaConfig` fields (they win over the tokenizer's ids).

    Returns:
        The :class:`~ptdlib.models.modeling.PtdLladaModel`.
    """
    ids = dict(
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        eot_token_id=tokenizer.convert_tokens_to_ids("<|eot|>"),
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return PtdLladaModel(PtdLladaConfig(**{**ids, **overrides}))


def save_model(model, tokenizer, out_dir: str | Path, card: dict | None = None) -> Path:
    """Save weights (safetensors), config, tokenizer and training card into ``out_dir``.

    Args:
        model: The model (``save_pretrained``).
        tokenizer: Its tokenizer.
        out_dir: The directory, created if missing.
        card: The training card; None: none is written.

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if card is not None:
        (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return out_dir


def load_pretrained(path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The model and tokenizer of a saved directory.

    Args:
        path: The model directory; None: the embedded model.
        device: Device the model is moved to.
        dtype: Dtype of the weights.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Raises:
        FileNotFoundError: If the directory is missing.
        ValueError: For a corrupt one (no config, unreadable weights, weights whose names or shapes disagree
            with the config, or a tokenizer whose size is not the config's ``vocab_size``).
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not (path / "config.json").exists():
        raise ValueError(f"model directory {path} has no config.json")
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except Exception as e:  # transformers raises several types for unreadable or mismatched weights
        raise ValueError(f"cannot load model weights from {path}: {type(e).__name__}: {e}") from e
    check_weights_match(info, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(
            f"tokenizer in {path} has {len(tokenizer)} tokens but the config says vocab_size={model.config.vocab_size}"
        )
    return model.to(device).eval(), tokenizer


def check_weights_match(info: dict, path) -> None:
    """Refuse a load that transformers would complete with freshly initialised or ignored weights.

    A ``config.json`` that says 5 layers beside 4 layers of weights would otherwise load with a random fifth
    layer (and only a log line).

    Args:
        info: ``from_pretrained(..., output_loading_info=True)``'s report.
        path: The model directory, for the message.

    Raises:
        ValueError: If any weight is missing, unexpected or mismatched (the message names the first of each
            kind).
    """
    problems = []
    for kind, what in (
        ("missing_keys", "missing from the weights (would be random)"),
        ("unexpected_keys", "in the weights but not in the config's model"),
        ("mismatched_keys", "of another shape than the config's"),
    ):
        keys = sorted(k if isinstance(k, str) else k[0] for k in info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} weight(s) {what}: {shown}")
    if problems:
        raise ValueError(f"model in {path} does not match its config.json: {'; '.join(problems)}")


def training_card(path: str | Path | None = None) -> dict:
    """The training card saved with a model (empty if there is none)."""
    p = (Path(path) if path is not None else DEFAULT_MODEL_DIR) / CARD_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def embedded_lm(model, tokenizer, model_id: str = "ptd-tiny") -> DiffusionLM:
    """Wrap an in-memory embedded model (e.g. one a test just built) as a DiffusionLM.

    Args:
        model: The embedded network.
        tokenizer: Its tokenizer (its special ids and prompt format are used).
        model_id: Name recorded for provenance.

    Returns:
        The :class:`~ptdlib.models.base.DiffusionLM`.
    """
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


def load_embedded(
    path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> DiffusionLM:
    """Load the embedded model as a DiffusionLM.

    Args:
        path: The model directory; None: the shipped ``data/models/ptd-tiny``.
        device: Device of the weights.
        dtype: Dtype of the weights.

    Returns:
        The :class:`~ptdlib.models.base.DiffusionLM` (model id: the directory's name).

    Raises:
        FileNotFoundError: If the directory is missing.
        ValueError: If it is corrupt (see :func:`load_pretrained`).
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    model, tok = load_pretrained(path, device=device, dtype=dtype)
    return embedded_lm(model, tok, model_id=path.name)
