"""Hugging Face D-LLM checkpoints (LLaDA, Dream, and others) behind the :class:`DiffusionLM` interface.

``load_hf_dllm(path)`` reads ``config.json`` and, for a family the project implements natively
(:mod:`ptdlib.models.families`: LLaDA and its fine-tunes, Dream), builds the model from ``transformers``' own
layer stacks with the published weights: the pinned ``transformers`` loads it and no checkpoint code runs.
Any other checkpoint goes through the ``transformers`` Auto classes (``AutoModelForMaskedLM``, then
``AutoModelForCausalLM``, then ``AutoModel``), running the checkpoint's own Python code only when the caller
opts in (``trust_remote_code=True``; ``model.trust_remote_code: true`` in a run config). Code that fails under
the installed ``transformers`` is one ``ValueError`` naming both versions.

Logits convention (``logits_shift``): native families know theirs (LLaDA: logit i predicts token i, Nie et al.,
2025; Dream: logit i predicts token i + 1, as the autoregressive model it was adapted from, Ye et al., 2025,
"Dream 7B"); for other checkpoints ``style="llada"`` (default) or ``style="dream"`` says it, and
``DiffusionLM.logits`` shifts Dream-style logits back.

Special ids are read from the checkpoint, each overridable: the mask id from ``config.mask_token_id`` or the
tokenizer's mask token; EOS from the config or the tokenizer (every id of a config that lists several ends a
response); EOT (end of turn, which also ends a response) from ``config.eot_token_id`` or the first of
:data:`END_OF_TURN_TOKENS` the vocabulary holds. A missing mask or EOS id is a ``ValueError`` that says which
argument to pass. The maximum number of positions comes from the config (:data:`POSITION_ATTRIBUTES`).

Positions count real tokens only (``cumsum(attention_mask) - 1``), so a left-padded prompt sees the positions
it would see alone. Whether a model honours its attention mask at all is probed once at load
(:mod:`ptdlib.models.padding`): one that does not is never batched across prompt lengths.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Tokenizer,
)

import ptdlib.models  # noqa: F401  (registers the embedded architecture with the Auto classes)
from ptdlib.models.base import DiffusionLM
from ptdlib.models.families import FAMILIES, Family, build_native, detect_family, get_family, read_config

#: what an error says when loading might need the checkpoint's own code
REMOTE_CODE_HINT = (
    " (if the checkpoint ships its own code, set model.trust_remote_code: true in the run config, "
    "or trust_remote_code=True in Python)"
)
#: ``family`` value that loads a checkpoint through the Auto classes even when a native family knows it
REMOTE = "remote"
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
        """The wrapped model's config."""
        return self.model.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        """Run the wrapped model.

        Args:
            input_ids: Token ids, shape ``(B, T)``.
            attention_mask: Optional ``(B, T)`` mask, 0 at left padding; when given (and the model takes
                ``position_ids``), positions are ``cumsum(attention_mask) - 1`` clamped at 0.
            **kwargs: Passed on to the model (``use_cache`` defaults to False where the model takes it).

        Returns:
            The wrapped model's output.
        """
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
    raise ValueError(
        f"config of {path} names no maximum number of positions (looked for {', '.join(POSITION_ATTRIBUTES)})"
    )


def _load_remote(path, config: dict, trust_remote_code: bool, dtype: torch.dtype) -> tuple[nn.Module, type]:
    """A checkpoint of a family the project does not implement, through the ``transformers`` Auto classes."""
    errors = []
    for auto in AUTO_CLASSES:
        try:
            return auto.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype), auto
        except ValueError as e:  # the config is not registered for this Auto class
            errors.append(f"{auto.__name__}: {str(e).splitlines()[0]}")
        except Exception as e:  # the checkpoint's own code broke under the installed transformers
            if not trust_remote_code:
                raise
            saved = config.get("transformers_version", "an unknown version")
            raise ValueError(
                f"the code shipped with {path} does not run under the installed transformers "
                f"{transformers.__version__} (the checkpoint was saved with transformers {saved}): "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
    hint = "" if trust_remote_code else REMOTE_CODE_HINT
    known = ", ".join(FAMILIES)
    raise ValueError(f"no native family ({known}) and no Auto class could load {path}{hint}: " + "; ".join(errors))


def _load_tokenizer(path: Path, trust_remote_code: bool, native: Family | None):
    """The checkpoint's tokenizer.

    A native family's is read from its files with ``transformers``' own classes (``tokenizer.json``; Dream's
    ``DreamTokenizer``, a Qwen2 byte-level BPE, also from ``vocab.json`` + ``merges.txt``), so no tokenizer code
    of the checkpoint runs; other checkpoints go through ``AutoTokenizer``.
    """
    try:
        if native is None:
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if (path / "tokenizer.json").exists():
            return PreTrainedTokenizerFast.from_pretrained(path)
        if native.name == "dream" and (path / "vocab.json").exists() and (path / "merges.txt").exists():
            return Qwen2Tokenizer.from_pretrained(path)
        raise ValueError("no tokenizer.json" + (" (nor vocab.json + merges.txt)" if native.name == "dream" else ""))
    except Exception as e:
        raise ValueError(f"cannot load the tokenizer of {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _check_has_logits(network: nn.Module, vocab_size: int, path) -> None:
    """A model from the ``AutoModel`` fallback may be a bare backbone; one tiny pass tells."""
    with torch.no_grad():
        ids = torch.zeros((1, 2), dtype=torch.long, device=next(network.parameters()).device)
        out = network(input_ids=ids, attention_mask=torch.ones_like(ids))
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if logits is None or logits.shape[-1] < vocab_size:
        raise ValueError(f"the model loaded from {path} returns no token logits (a backbone without an LM head?)")


def resolve_family(config: dict, family: str = "auto") -> Family | None:
    """The native family to build.

    Args:
        config: The checkpoint's ``config.json`` as a dict.
        family: ``"auto"`` (the family ``config`` declares) or a native family's name.

    Returns:
        The :class:`~ptdlib.models.families.Family`, or None where ``config`` declares no native family.
    """
    if family == "auto":
        return detect_family(config)
    return get_family(family)


def load_hf_dllm(
    path: str | Path,
    *,
    family: str = "auto",
    style: str | None = None,
    trust_remote_code: bool = False,
    mask_id: int | None = None,
    eos_id: int | None = None,
    eot_id: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    check_padding: bool = True,
) -> DiffusionLM:
    """A local Hugging Face D-LLM checkpoint as a :class:`DiffusionLM` (see module docstring).

    Args:
        path: Checkpoint directory (``config.json``, safetensors weights, tokenizer files).
        family: ``"auto"`` (from ``config.json``), a native family (:data:`~ptdlib.models.families.FAMILIES`),
            or ``"remote"`` to load through the Auto classes even for a known family (needs
            ``trust_remote_code`` if the checkpoint ships its own code).
        style: Logits convention of a non-native model, ``llada`` (logit i predicts token i) or ``dream``
            (shifted by one); native families know theirs. Default ``llada``.
        trust_remote_code: Let the checkpoint's own Python run (only for families the project does not know).
        mask_id: Mask token id, overriding the one read from the checkpoint.
        eos_id: EOS token id, overriding the one(s) read from the checkpoint.
        eot_id: End-of-turn token id, overriding the one read from the checkpoint.
        device: Device the weights live on.
        dtype: Precision of the weights.
        check_padding: Probe once whether the model honours its attention mask (see
            :func:`ptdlib.models.padding.check_padding_invariance`); a model that does not is never batched across prompt
            lengths.

    Returns:
        The :class:`DiffusionLM`, in eval mode.

    Raises:
        FileNotFoundError: If ``path`` is not a directory.
        ValueError: For an unknown family or style, a checkpoint neither a native family nor an Auto class
            loads, weights that do not match the config, a mask/EOS id that cannot be found, a config without a
            number of positions, or remote code that fails under the installed ``transformers`` (the message
            names both versions).
    """
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown model style {style!r}; choose from {', '.join(STYLES)}")
    if family != "auto" and family != REMOTE and family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from auto, {', '.join(FAMILIES)}, {REMOTE}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    raw_config = read_config(path)
    native = None if family == REMOTE else resolve_family(raw_config, family)
    tokenizer = _load_tokenizer(path, trust_remote_code, native)
    if native is not None:
        config = native.hf_config(raw_config)
        for key in ("mask_token_id", "eot_token_id", "eos_token_id", "pad_token_id"):
            if key in raw_config:
                setattr(config, key, raw_config[key])  # the published ids live beside the architecture fields
        network = build_native(native, raw_config, device=device, dtype=dtype, weights_from=path)
        shift, auto = native.logits_shift, None
    else:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except ValueError as e:
            hint = "" if trust_remote_code else REMOTE_CODE_HINT
            raise ValueError(f"cannot read the config of {path}{hint}: {str(e).splitlines()[0]}") from None
        model, auto = _load_remote(path, raw_config, trust_remote_code, dtype)
        network = PositionCountingNetwork(model.to(device).eval())
        shift = STYLES[style or "llada"]
    mask = mask_id if mask_id is not None else _mask_id(config, tokenizer)
    if mask is None:
        raise ValueError(
            f"cannot find the mask token id of {path}: the config has no mask_token_id and the "
            f"tokenizer no mask token; pass mask_id="
        )
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
    if auto is AutoModel:
        _check_has_logits(network, len(tokenizer), path)
    lm = DiffusionLM(
        network=network,
        tokenizer=tokenizer,
        mask_id=int(mask),
        eos_id=int(eos),
        end_ids=end_ids,
        pad_id=int(eos if pad is None else pad),  # padding is never attended, any id will do
        max_positions=max_positions,
        model_id=path.name,
        logits_shift=shift,
    )
    if check_padding:
        from ptdlib.models.padding import check_padding_invariance

        check_padding_invariance(lm)
    return lm
