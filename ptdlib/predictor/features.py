"""Features of a prompt for the AdaRLP length predictor, computed before any generation.

Predict-then-Diffuse (AdaRLP) estimates a diffusion LM's response length from the prompt alone, then adds a
calibrated margin (``ptdlib.predictor.calibration``). Two feature groups, chosen by a :class:`FeatureSet`
so that a notebook can ablate them:

* ``"text"`` -- statistics read off the prompt text, generic rather than keyed to a task family: word
  count; how many words are numbers and their max / min / sum / range / last value; how many list items
  follow a ``:``; ``b - a`` in "... from a to b"; ``n`` in "... n times"; ``log1p`` of the counts (so that
  a linear model on log length can use them); and a bag of the first non-numeric word(s), whose vocabulary
  is learned on the training prompts (unseen words fall into one ``other`` column).
* ``"generic"`` -- learned from data for real prompts: TF-IDF word and character n-grams plus numeric
  statistics (:mod:`ptdlib.predictor.generic`). ``"text"`` is then the hand-written ablation: on the synthetic
  suite it knows the families' patterns, on real text it has nothing to read.
* ``"hidden"`` -- the D-LLM's own representation of the prompt: one prompt-only forward pass
  (``lm.last_hidden``), summarised by the mean of the last-layer states over real prompt tokens and the
  state of the prompt's last token. The pass is reported to callbacks as a ``ForwardEvent`` of kind
  ``"predictor"``, so the FLOP ledger charges it to the strategy that uses it.
* ``"probe"`` -- the hybrid with SmartCrop: a summary of the EOS curve of one all-mask probe pass
  (:mod:`ptdlib.predictor.probe`), reported as kind ``"probe"``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ptdlib.sampling.events import ForwardEvent, emit_forward

#: The feature groups a :class:`FeatureSet` can choose from.
FEATURE_GROUPS = ("text", "hidden", "generic", "probe")

_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")
_FROM_TO = re.compile(r"\bfrom\s+([-+]?\d+(?:\.\d+)?)\s+to\s+([-+]?\d+(?:\.\d+)?)")
_TIMES = re.compile(r"([-+]?\d+)\s+times\b")
_OTHER = "<other>"  # keyword-bag column of words not in the learned vocabulary

#: Names of the text statistics, in column order (the keyword bag follows them).
TEXT_STATS = (
    "n_words",
    "n_numbers",
    "num_max",
    "num_min",
    "num_sum",
    "num_range",
    "num_last",
    "n_list_items",
    "from_to_span",
    "times_n",
    "log1p_n_list_items",
    "log1p_from_to_span",
    "log1p_times_n",
    "log1p_num_last",
    "log1p_num_sum",
)


@dataclass(frozen=True)
class FeatureSet:
    """Which features the predictor uses (survives ``FeatureSet.from_dict(asdict(fs))``)."""

    # Text statistics only by default: on the embedded model (256 train / 256 test queries, ridge with a
    # cross-validated penalty) they give MAE 2.86 tokens, text + prompt states 5.36, prompt states alone 6.0,
    # and text + the states' first 4/8/16 principal components 2.97/3.03/3.46. The states add no length
    # information the prompt's numbers do not carry, and they cost a forward pass. Add "hidden" to study them.
    groups: tuple[str, ...] = ("text",)
    n_keywords: int = 1  # leading non-numeric words that enter the keyword bag ("count", "repeat", ...)
    max_keywords: int = 64  # cap on the keyword vocabulary (most frequent words in the training prompts)
    min_keyword_count: int = 2  # a word seen fewer times in training prompts goes to the "other" column
    batch_size: int = 64  # prompts per predictor forward pass (bounds memory, not results)
    probe_canvas: int = 128  # all-mask canvas of the "probe" group's pass: the maximum canvas, as SmartCrop's

    def __post_init__(self):
        groups = tuple(self.groups) if not isinstance(self.groups, str) else (self.groups,)
        object.__setattr__(self, "groups", groups)
        bad = [g for g in groups if g not in FEATURE_GROUPS]
        if not groups or bad:
            raise ValueError(f"feature groups must be a non-empty subset of {FEATURE_GROUPS}, got {groups}")
        if len(set(groups)) != len(groups):
            raise ValueError(f"feature groups must not repeat, got {groups}")
        for name in ("n_keywords", "max_keywords", "min_keyword_count", "batch_size", "probe_canvas"):
            value = getattr(self, name)
            lowest = 0 if name == "n_keywords" else 1
            if not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSet:
        return cls(**d)

    def to_dict(self) -> dict:
        return {**asdict(self), "groups": list(self.groups)}


def text_statistics(prompt: str) -> list[float]:
    """The :data:`TEXT_STATS` of one prompt (numbers and counts read off whitespace-split words)."""
    words = prompt.split()
    nums = [float(w) for w in words if _NUMBER.match(w)]
    colon = next((i for i, w in enumerate(words) if w.endswith(":")), None)  # "sort : a b" or "sort: a b"
    n_list = len(words) - colon - 1 if colon is not None else 0
    m = _FROM_TO.search(prompt)
    span = float(m.group(2)) - float(m.group(1)) if m else 0.0
    t = _TIMES.search(prompt)
    times_n = float(t.group(1)) if t else 0.0
    num_sum = sum(nums)
    stats = [
        len(words),
        len(nums),
        max(nums, default=0.0),
        min(nums, default=0.0),
        num_sum,
        (max(nums) - min(nums)) if nums else 0.0,
        nums[-1] if nums else 0.0,
        n_list,
        span,
        times_n,
    ]
    # log1p of magnitude: a length that grows like n, n / log n or log n is close to linear in log1p(n).
    stats += [math.log1p(abs(v)) for v in (n_list, span, times_n, stats[6], num_sum)]
    return [float(v) for v in stats]


def leading_keywords(prompt: str, k: int) -> list[str]:
    """The first ``k`` words of ``prompt`` that are neither numbers nor punctuation, lower-cased."""
    out = []
    for w in prompt.lower().split():
        if len(out) == k:
            break
        if not _NUMBER.match(w) and any(ch.isalpha() for ch in w):
            out.append(w)
    return out


def prompt_representation(
    lm, prompts: Sequence[str], callbacks=(), query_ids: Sequence[Hashable] | None = None, batch_size: int = 64
) -> np.ndarray:
    """(N, 2·D) prompt states of ``lm``: mean over real prompt tokens, then the last prompt token's state.

    One prompt-only forward pass per batch, reported as a ``"predictor"`` :class:`ForwardEvent` (so its
    FLOPs are counted). Prompts are batched in order of length to keep padding, and so counted FLOPs, low.
    """
    import torch

    from ptdlib.models.batching import left_pad  # torch-heavy; imported when the hidden group is used

    if query_ids is None:
        query_ids = list(range(len(prompts)))
    if len(query_ids) != len(prompts):
        raise ValueError(f"got {len(query_ids)} query ids for {len(prompts)} prompts")
    encoded = [lm.encode_prompt(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[np.ndarray | None] = [None] * len(prompts)
    device = lm.device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, attn = left_pad([encoded[i] for i in rows], lm.pad_id)
        lm.check_length(ids.shape[1])
        hidden = lm.last_hidden(ids.to(device), attn.to(device)).float().cpu()
        emit_forward(callbacks, ForwardEvent("predictor", tuple(query_ids[i] for i in rows), int(ids.shape[1])))
        weights = attn.to(hidden.dtype)[:, :, None]
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        last = hidden[:, -1]  # left padding: every prompt ends in the last column
        feats = torch.cat([mean, last], dim=1).double().numpy()
        for j, i in enumerate(rows):
            out[i] = feats[j]
    return np.stack(out)


class FeatureExtractor:
    """Turns prompts into a feature matrix; ``fit`` learns the keyword vocabulary (and notes the model).

    ``fit_transform(train_prompts, lm)`` once, then ``transform(prompts, lm)`` with the same model: the
    hidden features of one D-LLM mean nothing to a predictor trained on another's, so a different
    ``lm.model_id`` or hidden size is rejected.
    """

    def __init__(self, feature_set: FeatureSet = FeatureSet()):
        self.feature_set = feature_set
        self.keywords: list[str] | None = None  # learned vocabulary; None until fit
        self.model_id: str | None = None  # the D-LLM whose states the hidden features are
        self.hidden_dim: int | None = None  # width of the hidden block (2 · d_model)
        self.generic = None  # GenericTextFeatures learned on the training prompts (the "generic" group)

    @property
    def is_fitted(self) -> bool:
        return self.keywords is not None

    @property
    def uses_hidden(self) -> bool:
        return "hidden" in self.feature_set.groups

    def fit(self, prompts: Sequence[str]) -> FeatureExtractor:
        if len(prompts) == 0:
            raise ValueError("cannot fit features on an empty list of prompts")
        fs = self.feature_set
        counts = Counter(w for p in prompts for w in leading_keywords(p, fs.n_keywords))
        kept = [w for w, c in counts.most_common() if c >= fs.min_keyword_count][: fs.max_keywords]
        self.keywords = sorted(kept)
        if "generic" in fs.groups:
            from ptdlib.predictor.generic import GenericTextFeatures

            self.generic = GenericTextFeatures().fit(prompts)
        return self

    def fit_transform(self, prompts: Sequence[str], lm=None, callbacks=(), query_ids=None) -> np.ndarray:
        self.fit(prompts)
        self.model_id = self.hidden_dim = None
        return self.transform(prompts, lm, callbacks, query_ids)

    @property
    def feature_names(self) -> list[str]:
        self._check_fitted()
        names: list[str] = []
        if "text" in self.feature_set.groups:
            names += list(TEXT_STATS) + [f"kw={w}" for w in self.keywords + [_OTHER]]
        if "generic" in self.feature_set.groups:
            names += self.generic.feature_names
        if self.uses_hidden and self.hidden_dim is not None:
            half = self.hidden_dim // 2
            names += [f"h_mean_{i}" for i in range(half)] + [f"h_last_{i}" for i in range(half)]
        if "probe" in self.feature_set.groups:
            from ptdlib.predictor.probe import PROBE_FEATURES

            names += list(PROBE_FEATURES)
        return names

    def text_features(self, prompts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        index = {w: i for i, w in enumerate(self.keywords)}
        bag = np.zeros((len(prompts), len(self.keywords) + 1))
        for r, p in enumerate(prompts):
            for w in leading_keywords(p, self.feature_set.n_keywords):
                bag[r, index.get(w, len(self.keywords))] += 1
        stats = np.array([text_statistics(p) for p in prompts], dtype=float).reshape(len(prompts), len(TEXT_STATS))
        return np.hstack([stats, bag])

    def transform(self, prompts: Sequence[str], lm=None, callbacks=(), query_ids=None) -> np.ndarray:
        """(N, n_features) float matrix; needs ``lm`` when the ``hidden`` group is used."""
        self._check_fitted()
        if len(prompts) == 0:
            raise ValueError("cannot compute features of an empty list of prompts")
        blocks = []
        if "text" in self.feature_set.groups:
            blocks.append(self.text_features(prompts))
        if "generic" in self.feature_set.groups:
            blocks.append(self.generic.transform(prompts))
        if self.uses_hidden:
            if lm is None:
                raise ValueError("the 'hidden' feature group needs the D-LLM (lm=...) for its prompt pass")
            if self.model_id is not None and lm.model_id != self.model_id:
                raise ValueError(
                    f"predictor's hidden features come from model {self.model_id!r}, got model {lm.model_id!r}"
                )
            hidden = prompt_representation(lm, prompts, callbacks, query_ids, self.feature_set.batch_size)
            if self.hidden_dim is not None and hidden.shape[1] != self.hidden_dim:
                raise ValueError(f"hidden features have width {hidden.shape[1]}, predictor expects {self.hidden_dim}")
            self.model_id, self.hidden_dim = lm.model_id, hidden.shape[1]
            blocks.append(hidden)
        if "probe" in self.feature_set.groups:
            if lm is None:
                raise ValueError("the 'probe' feature group needs the D-LLM (lm=...) for its probe pass")
            from ptdlib.predictor.probe import probe_representation

            blocks.append(
                probe_representation(
                    lm, prompts, self.feature_set.probe_canvas, callbacks, query_ids, self.feature_set.batch_size
                )
            )
        return np.hstack(blocks)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("untrained predictor: its features are not fitted; call fit(...) first")
