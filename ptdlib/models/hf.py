"""Hugging Face D-LLM checkpoints (LLaDA-style and Dream-style) behind the :class:`DiffusionLM` interface.

``load_hf_dllm(path, style=...)`` loads a local checkpoint directory with the ``transformers`` Auto classes
(``AutoModelForMaskedLM``, then ``AutoModelForCausalLM``, then ``AutoModel``: LLaDA's remote code registers
``AutoModel``/``AutoModelForCausalLM``, Dream's ``AutoModel``, the embedded model ``AutoModelForMaskedLM``). A
checkpoint's own Python code runs only when the caller passes ``trust_remote_code=True``.

* ``style="llada"``: logits at position i predict token i (LLaDA, Nie et al., 2025).
* ``style="dream"``: logits at position i predict token i + 1, as in the autoregressive model Dream was adapted
  from (Ye et al., 2025, "Dream 7B"); ``DiffusionLM.logits`` shifts them back (``logits_shift=1``).

Special ids are read from the checkpoint, each overridable: the mask id from ``config.mask_token_id`` or the
tokenizer's mask token; EOS from the config or the tokenizer (every id of a config that lists several ends a response); EOT
(end of turn, which also ends a response) from ``config.eot_token_id`` or the first of
:data:`END_OF_TURN_TOKENS` the vocabulary holds. A missing mask or
EOS id is a ``ValueError`` that says which argument to pass. The maximum number of positions comes from the
config (:data:`POSITION_ATTRIBUTES`).

The network is wrapped so that, where the model's ``forward`` accepts ``position_ids``, positions count real
tokens only (``cumsum(attention_mask) - 1``): a left-padded prompt then sees the positions it would see alone.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

import ptdlib.models  # noqa: F401  (registers the embedded architecture with the Auto classes)
from ptdlib.models.base import DiffusionLM

#: style -> logits shift (positions between a logit and the token it predicts)
STYLES = {"llada": 0, "dream": 1}
#: Auto classes tried in order; the first that knows the config loads the checkpoint
AUTO_CLASSES = (AutoModelForMaskedLM, AutoModelForCausalLM, AutoModel)
#: end-of-turn token strings of known chat templates (LLaMA-3/LLaDA, ChatML/Qwen/Dream, the embedded model)
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|eot|>")
#: config attributes that hold the number of positions, by model family
POSITION_ATTRIBUTES = ("max_position_embeddings", "max_sequence_length", "n_positions", "max_seq_len")


class PositionCountingNetwork(nn.Module):
    """Calls a Hugging Face model with positions that skip left padding, and without a KV cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._positions = "position_ids" in params
        self._no_cache = "use_cache" in params

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if attention_mask is not None and self._positions and "position_ids" not in kwargs:
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if self._no_cache:
            kwargs.setdefault("use_cache", False)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def _ints(value) -> list[int]:
    """A config/tokenizer id field as a list (some configs list several EOS ids)."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _first_int(value) -> int | None:
    ids = _ints(value)
    return ids[0] if ids else None


def _mask_id(config, tokenizer) -> int | None:
    found = _first_int(getattr(config, "mask_token_id", None))
    return found if found is not None else _first_int(getattr(tokenizer, "mask_token_id", None))


def _eos_id(config, tokenizer) -> int | None:
    found = _first_int(getattr(config, "eos_token_id", None))
    return found if found is not None else _first_int(getattr(tokenizer, "eos_token_id", None))


def _eot_id(config, tokenizer) -> int | None:
    found = _first_int(getattr(config, "eot_token_id", None))
    if found is not None:
        return found
    vocab = tokenizer.get_vocab()
    return next((vocab[t] for t in END_OF_TURN_TOKENS if t in vocab), None)


def _max_positions(config, path) -> int:
    for name in POSITION_ATTRIBUTES:
        value = getattr(config, name, None)
        if value:
            return int(value)
    raise ValueError(f"config of {path} names no maximum number of positions (looked for {', '.join(POSITION_ATTRIBUTES)})")


def _load_network(path, trust_remote_code: bool, dtype: torch.dtype) -> tuple[nn.Module, type]:
    errors = []
    for auto in AUTO_CLASSES:
        try:
            return auto.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype), auto
        except ValueError as e:  # the config is not registered for this Auto class
            errors.append(f"{auto.__name__}: {str(e).splitlines()[0]}")
    hint = "" if trust_remote_code else " (if the checkpoint ships its own code, pass trust_remote_code=True)"
    raise ValueError(f"no Auto class could load {path}{hint}: " + "; ".join(errors))


def _check_has_logits(network: nn.Module, vocab_size: int, path) -> None:
    """A model from the ``AutoModel`` fallback may be a bare backbone; one tiny pass tells."""
    with torch.no_grad():
        ids = torch.zeros((1, 2), dtype=torch.long, device=next(network.parameters()).device)
        out = network(input_ids=ids, attention_mask=torch.ones_like(ids))
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if logits is None or logits.shape[-1] < vocab_size:
        raise ValueError(f"the model loaded from {path} returns no token logits (a backbone without an LM head?)")


def load_hf_dllm(path: str | Path, *, style: str = "llada", trust_remote_code: bool = False,
                 mask_id: int | None = None, eos_id: int | None = None, eot_id: int | None = None,
                 device: str = "cpu", dtype: torch.dtype = torch.float32) -> DiffusionLM:
    """A local Hugging Face D-LLM checkpoint as a :class:`DiffusionLM` (see module docstring).

    ``mask_id``, ``eos_id``, ``eot_id`` override the ids read from the checkpoint. Raises ``ValueError`` for an
    unknown style, a checkpoint no Auto class loads, or a mask/EOS id that cannot be found.
    """
    if style not in STYLES:
        raise ValueError(f"unknown model style {style!r}; choose from {', '.join(STYLES)}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    mask = mask_id if mask_id is not None else _mask_id(config, tokenizer)
    if mask is None:
        raise ValueError(f"cannot find the mask token id of {path}: the config has no mask_token_id and the "
                         f"tokenizer no mask token; pass mask_id=")
    eos = eos_id if eos_id is not None else _eos_id(config, tokenizer)
    if eos is None:
        raise ValueError(f"cannot find the EOS token id of {path} in its config or tokenizer; pass eos_id=")
    eot = eot_id if eot_id is not None else _eot_id(config, tokenizer)
    extra_eos = [] if eos_id is not None else _ints(getattr(config, "eos_token_id", None))  # e.g. LLaMA-3's list
    end_ids = tuple(dict.fromkeys(int(i) for i in [eos, *extra_eos, eot] if i is not None))
    pad = _first_int(getattr(tokenizer, "pad_token_id", None))
    if pad is None:
        pad = _first_int(getattr(config, "pad_token_id", None))
    max_positions = _max_positions(config, path)

    model, auto = _load_network(path, trust_remote_code, dtype)
    network = PositionCountingNetwork(model.to(device).eval())
    if auto is AutoModel:
        _check_has_logits(network, len(tokenizer), path)
    return DiffusionLM(
        network=network, tokenizer=tokenizer, mask_id=int(mask), eos_id=int(eos), end_ids=end_ids,
        pad_id=int(eos if pad is None else pad),  # padding is never attended, any id will do
        max_positions=max_positions, model_id=path.name, logits_shift=STYLES[style],
    )
