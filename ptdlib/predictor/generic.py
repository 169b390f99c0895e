"""Generic prompt-text features, learned from data: TF-IDF word and character n-grams plus numeric statistics.

AdaRLP (Predict-then-Diffuse) predicts a response length from the prompt alone. The ``text`` feature group
(:mod:`ptdlib.predictor.features`) reads patterns written for the synthetic families ("from a to b", "n
times"); on real prompts (GSM8K questions, IFEval instructions, code stubs) the predictor must learn which
words matter. This group is the standard bag-of-n-grams representation (Salton & Buckley, 1988, for TF-IDF):
scikit-learn's ``TfidfVectorizer`` over word uni- and bigrams and over character 2-4-grams within words
(robust to inflection, numbers and code identifiers), with sublinear term frequency, each capped at the most
frequent n-grams of the training prompts, plus numeric statistics any prompt has (characters, words, lines,
sentences, numbers and their magnitude, list and code lines). What it learned is plain data
(:meth:`GenericTextFeatures.state`): vocabularies and inverse document frequencies, saved as JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

#: numeric statistics of a prompt, in column order (the word and character n-grams follow them)
GENERIC_STATS = (
    "n_chars",
    "n_words",
    "n_lines",
    "n_sentences",
    "n_numbers",
    "n_distinct_words",
    "log1p_num_max",
    "log1p_num_sum",
    "n_list_lines",
    "n_code_lines",
    "log1p_n_chars",
    "log1p_n_words",
)
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_CODE_LINE = re.compile(r"^\s*(?:def |class |import |from |return |if |for |while |#|>>>)|[{};]\s*$")


def generic_statistics(prompt: str) -> list[float]:
    """The :data:`GENERIC_STATS` of one prompt."""
    words = _WORD.findall(prompt)
    numbers = []
    for m in _NUMBER.findall(prompt):
        try:
            numbers.append(abs(float(m.replace(",", ""))))
        except ValueError:
            continue
    lines = prompt.splitlines() or [""]
    stats = [
        len(prompt),
        len(words),
        len(lines),
        max(1, len(_SENTENCE_END.findall(prompt))),
        len(numbers),
        len({w.lower() for w in words}),
        math.log1p(max(numbers, default=0.0)),
        math.log1p(sum(numbers)),
        sum(bool(_LIST_LINE.match(line)) for line in lines),
        sum(bool(_CODE_LINE.search(line)) for line in lines),
        math.log1p(len(prompt)),
        math.log1p(len(words)),
    ]
    return [float(v) for v in stats]


def _vectorizers(max_word: int, max_char: int, word_vocab=None, char_vocab=None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(
        analyzer="word",
        ngram_range=(1, 2),
        max_features=max_word,
        sublinear_tf=True,
        lowercase=True,
        vocabulary=word_vocab,
    )
    char = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(2, 4),
        max_features=max_char,
        sublinear_tf=True,
        lowercase=True,
        vocabulary=char_vocab,
    )
    return word, char


class GenericTextFeatures:
    """TF-IDF word and character n-grams plus :data:`GENERIC_STATS` (see module docstring).

    ``fit(prompts)`` learns the vocabularies and IDF weights on training prompts; ``transform(prompts)`` gives
    an (N, d) dense matrix; ``state()`` / ``from_state()`` round-trip what was learned as JSON-able data.
    """

    def __init__(self, max_word_features: int = 256, max_char_features: int = 256):
        for name, value in (("max_word_features", max_word_features), ("max_char_features", max_char_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.max_word, self.max_char = max_word_features, max_char_features
        self._word = self._char = None

    @property
    def is_fitted(self) -> bool:
        return self._word is not None

    def fit(self, prompts: Sequence[str]) -> GenericTextFeatures:
        if len(prompts) == 0:
            raise ValueError("cannot fit generic text features on an empty list of prompts")
        self._word, self._char = _vectorizers(self.max_word, self.max_char)
        self._word.fit(prompts)
        self._char.fit(prompts)
        return self

    def transform(self, prompts: Sequence[str]) -> np.ndarray:
        if not self.is_fitted:
            raise ValueError("generic text features are not fitted; call fit(prompts) first")
        stats = np.array([generic_statistics(p) for p in prompts], dtype=float).reshape(
            len(prompts), len(GENERIC_STATS)
        )
        return np.hstack([stats, self._word.transform(prompts).toarray(), self._char.transform(prompts).toarray()])

    @property
    def feature_names(self) -> list[str]:
        if not self.is_fitted:
            raise ValueError("generic text features are not fitted; call fit(prompts) first")
        return (
            list(GENERIC_STATS)
            + [f"w={t}" for t in self._word.get_feature_names_out()]
            + [f"c={t}" for t in self._char.get_feature_names_out()]
        )

    def state(self) -> dict:
        """What was learned, as plain JSON-able data."""
        if not self.is_fitted:
            raise ValueError("generic text features are not fitted; nothing to save")
        return {
            "max_word_features": self.max_word,
            "max_char_features": self.max_char,
            "word_vocabulary": {k: int(v) for k, v in self._word.vocabulary_.items()},
            "word_idf": [float(x) for x in self._word.idf_],
            "char_vocabulary": {k: int(v) for k, v in self._char.vocabulary_.items()},
            "char_idf": [float(x) for x in self._char.idf_],
        }

    @classmethod
    def from_state(cls, state: dict) -> GenericTextFeatures:
        """Rebuild from :meth:`state` (no refitting, no pickle)."""
        obj = cls(state["max_word_features"], state["max_char_features"])
        obj._word, obj._char = _vectorizers(
            obj.max_word, obj.max_char, state["word_vocabulary"], state["char_vocabulary"]
        )
        obj._word.idf_ = np.asarray(state["word_idf"], dtype=float)
        obj._char.idf_ = np.asarray(state["char_idf"], dtype=float)
        return obj
