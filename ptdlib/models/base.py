"""The one small interface every D-LLM adapter offers to the sampler, the probes and the FLOP counter.

A :class:`DiffusionLM` wraps a network and its tokenizer and answers:

* ``logits(ids, attention_mask)`` -> (B, T, V) float logits where ``logits[:, i]`` predicts token ``i``
  (adapters of models whose outputs are shifted by one position, like Dream, undo the shift here);
* ``mask_id``, ``eos_id``, ``end_ids`` (EOS and EOT: any of them ends a response), ``pad_id``;
* ``max_positions`` (prompt + canvas tokens the model can place), ``model_id`` (for provenance);
* ``encode_prompt(text)`` -> chat-formatted prompt ids ending where the canvas starts, ``decode(ids)``.

Everything else (sampling loops, FLOP counting, canvas policies) talks to this interface only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch


@dataclass
class DiffusionLM:
    """A masked diffusion LM behind one interface (see module docstring)."""

    network: torch.nn.Module  # returns an object with ``.logits`` (or a tensor) from (input_ids, attention_mask)
    tokenizer: object
    mask_id: int
    eos_id: int
    end_ids: tuple[int, ...]  # token ids that end a response (EOS first)
    pad_id: int
    max_positions: int
    model_id: str
    logits_shift: int = 0  # 1 for models whose logits at i predict token i + 1 (Dream)
    prompt_encoder: object = field(default=None, repr=False)  # callable(text) -> ids; default: chat template
    batch_invariant: bool = True  # honours its attention mask (ptdlib.models.padding); if not, no mixed lengths

    @property
    def device(self) -> torch.device:
        """The device the network's parameters are on."""
        return next(self.network.parameters()).device

    def _run(self, pick, ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
        """``pick(network output)`` for (B, T) ``ids``.

        For a model that ignores (or cannot take) its attention mask, rows of equal real length run together
        without their left padding and without a mask (zeros are returned at padding positions), so no row ever
        sees padding.
        """
        if self.batch_invariant or attention_mask is None:
            return pick(self.network(input_ids=ids, attention_mask=attention_mask, **kwargs))
        T = ids.shape[1]
        real = attention_mask.long().sum(1)
        out = None
        for n in real.unique().tolist():
            rows = (real == n).nonzero().squeeze(1)
            part = pick(self.network(input_ids=ids[rows, T - n :], attention_mask=None, **kwargs))
            if out is None:
                out = part.new_zeros((ids.shape[0], T, *part.shape[2:]))
            out[rows, T - n :] = part
        return out

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position logits, aligned so that ``logits[:, i]`` predicts token ``i``.

        Args:
            ids: Token ids, shape ``(B, T)``.
            attention_mask: Optional ``(B, T)`` mask, 0 at left padding.

        Returns:
            Logits of shape ``(B, T, V)``; a ``logits_shift`` model's outputs are moved back by one position
            (position 0 keeps its own row).
        """
        logits = self._run(lambda out: out if isinstance(out, torch.Tensor) else out.logits, ids, attention_mask)
        if self.logits_shift:
            # Dream-style: position i's logits predict token i+1; move them so that index i predicts token i.
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    @torch.no_grad()
    def last_hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last-layer hidden states (the D-LLM's own representation, e.g. of a prompt).

        Args:
            ids: Token ids, shape ``(B, T)``.
            attention_mask: Optional ``(B, T)`` mask, 0 at left padding.

        Returns:
            Hidden states of shape ``(B, T, D)``.
        """
        return self._run(lambda out: out.hidden_states[-1], ids, attention_mask, output_hidden_states=True)

    def encode_prompt(self, text: str) -> list[int]:
        """Prompt token ids ending where the canvas starts.

        Uses ``prompt_encoder`` when set, else the tokenizer's chat template (one user turn plus the generation
        prompt), else the plain tokenization of ``text``.

        Args:
            text: The user's prompt.

        Returns:
            The prompt's token ids.
        """
        if self.prompt_encoder is not None:
            return list(self.prompt_encoder(text))
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        return tok(text)["input_ids"]

    def decode(self, ids) -> str:
        """The text of token ids, special tokens skipped; ids the tokenizer does not have are dropped.

        A model's output layer can have more rows than its tokenizer has tokens (Dream-7B: 152,064 logits, about
        151,665 tokens; the extra rows pad the matrix to a multiple of 128 and no text maps to them), so a sampler
        can pick an id past ``len(tokenizer)``, on which tokenizers raise or print nothing. Such ids (and negative
        ones) are left out of the text, with one warning per model naming the tokenizer's size; they still count
        as canvas tokens for a response's length. A tokenizer without ``len()`` gets the ids unfiltered.

        Args:
            ids: Token ids (any iterable of ints or a 1-D tensor).

        Returns:
            The decoded text.
        """
        ids = [int(t) for t in ids]
        try:
            size = len(self.tokenizer)
        except TypeError:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        known = [t for t in ids if 0 <= t < size]
        if len(known) < len(ids):  # the same text each time, so Python shows it once per model
            warnings.warn(
                f"{self.model_id}: token ids outside 0..{size - 1} (its tokenizer's {size} tokens) are left "
                "out of decoded text; the output layer has more rows than the tokenizer",
                stacklevel=2,
            )
        return self.tokenizer.decode(known, skip_special_tokens=True)

    def check_length(self, total: int) -> None:
        """Check that a prompt + canvas of ``total`` tokens fits the model's positions.

        Args:
            total: Prompt plus canvas length, in tokens.

        Raises:
            ValueError: If ``total`` exceeds ``max_positions``.
        """
        if total > self.max_positions:
            raise ValueError(f"prompt + canvas of {total} tokens exceeds the model's {self.max_positions} positions")
