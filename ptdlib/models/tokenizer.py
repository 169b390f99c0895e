"""The embedded model's word-level tokenizer: a real ``transformers`` fast tokenizer.

Built with the ``tokenizers`` library (WordLevel model, whitespace split) over the synthetic suite's
vocabulary, saved with ``save_pretrained`` so that ``AutoTokenizer.from_pretrained(dir)`` loads it like any
Hugging Face checkpoint's tokenizer. The special tokens follow LLaDA's roles: a mask token for the canvas,
EOS (padding of the response canvas) and EOT (end of turn), BOS, PAD, and two chat-role markers.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ptdlib.tasks.families import vocabulary_words

PAD, MASK, BOS, EOS, EOT, UNK = "<|pad|>", "<|mask|>", "<|bos|>", "<|eos|>", "<|eot|>", "<|unk|>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, MASK, BOS, EOS, EOT, UNK, USER, ASSISTANT]

#: A one-turn chat template: the prompt between role markers; the canvas follows the assistant marker.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %} <|user|> {{ m['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %} <|assistant|>{% endif %}"
)


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (default: the synthetic suite's vocabulary)."""
    words = vocabulary_words() if words is None else words
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [w for w in words if w not in SPECIAL_TOKENS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        mask_token=MASK,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[EOT, USER, ASSISTANT],
        padding_side="left",  # prompts are left-padded: the canvas always starts right after the prompt
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def unknown_words(tokenizer, text: str) -> list[str]:
    """Words of ``text`` that the tokenizer maps to its unknown token."""
    vocab = tokenizer.get_vocab()
    return [w for w in text.split() if w not in vocab]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant marker.

    Args:
        tokenizer: The embedded tokenizer.
        prompt: The prompt text.

    Returns:
        The prompt's token ids.

    Raises:
        ValueError: If the prompt has words outside the vocabulary (named), rather than mapping them to UNK.
    """
    bad = unknown_words(tokenizer, prompt)
    if bad:
        raise ValueError(f"prompt {prompt!r} has words outside the model's vocabulary: {bad}")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]
