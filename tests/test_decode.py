"""Decoding never crashes on token ids the tokenizer does not have (an output layer wider than the tokenizer)."""

import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from ptdlib.sampling.sampler import SamplerConfig, sample

EXTRA_ROWS = 9  # output rows past the tokenizer, as Dream-7B's 152,064 logits over ~151,665 tokens


class StrictTokenizer:
    """A tokenizer that raises on ids it does not have, as slow (Python) tokenizers do."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def decode(self, ids, skip_special_tokens=False):
        bad = [t for t in ids if not 0 <= t < len(self.inner)]
        if bad:
            raise KeyError(f"unknown token ids {bad}")
        return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)


class WideHead(nn.Module):
    """Wraps a network: ``EXTRA_ROWS`` more logits than the tokenizer, the first extra one winning at odd canvas
    positions.

    Like Dream's, its embedding takes the extra ids too (here they are read as the tokenizer's last id).
    """

    def __init__(self, inner, vocab_size):
        super().__init__()
        self.inner, self.vocab_size = inner, vocab_size

    def forward(self, input_ids, attention_mask=None, **kwargs):
        ids = input_ids.clamp(max=self.vocab_size - 1)
        logits = self.inner(input_ids=ids, attention_mask=attention_mask).logits
        wide = torch.cat([logits, logits.new_full((*logits.shape[:2], EXTRA_ROWS), -1e4)], dim=-1)
        wide[:, -7::2, self.vocab_size] = 1e4  # canvas positions 1, 3, 5, 7 of an 8-token canvas (the last 8)
        return wide


@pytest.fixture()
def wide_lm(tiny_lm):
    tok = StrictTokenizer(tiny_lm.tokenizer)
    return replace(tiny_lm, tokenizer=tok, network=WideHead(tiny_lm.network, len(tok)))


def test_ids_past_the_tokenizer_are_left_out_of_the_text(tiny_lm):
    tok = tiny_lm.tokenizer
    words = [tok.convert_tokens_to_ids(w) for w in ("cat", "dog")]
    lm = replace(tiny_lm, tokenizer=StrictTokenizer(tok))
    with pytest.raises(KeyError):  # what decoding did before: the tokenizer's own error
        lm.tokenizer.decode([words[0], len(tok), words[1]])
    with pytest.warns(UserWarning, match=f"outside 0..{len(tok) - 1}"):
        assert lm.decode([words[0], len(tok), words[1], len(tok) + 5, -1]) == "cat dog"
    assert lm.decode(words) == tok.decode(words, skip_special_tokens=True) == "cat dog"


def test_sampling_a_model_wider_than_its_tokenizer_decodes(wide_lm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = sample(wide_lm, ["spell tiger"], 8, SamplerConfig(block_length=8))[0]
    past = len(wide_lm.tokenizer)
    assert out.tokens[1::2] == [past] * 4  # the sampler did pick the id the tokenizer lacks
    kept = [t for t in out.tokens[: out.length] if t < past]
    assert out.text == wide_lm.tokenizer.inner.decode(kept, skip_special_tokens=True)
