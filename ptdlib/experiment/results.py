"""Run directories: provenance in ``run.json`` and one crash-safe result file per finished chunk.

Layout of a run directory::

    run.json                      config, model id + fingerprint, seeds, package versions, git revision, date
    chunks/<chunk id>.jsonl       the result rows of one finished chunk, one JSON object per line

**Crash safety.** A chunk file is written to a hidden temporary file in the same folder, flushed, fsync'ed and
moved to its final name with ``os.replace`` (atomic on POSIX), after which the folder is fsync'ed. A file
under its final name is therefore always complete, and a process killed at any moment — ``kill -9``
included — leaves at most a temporary file that readers ignore: it loses the chunk in flight, never writes
half a row or a row twice. The set of chunk files *is* the run's progress; resuming skips chunks whose file
exists. Shards of one run (``ptd run --shard i/n``, possibly on other machines) write disjoint chunk files
into copies of the same directory, which merge by copying the files together or by passing every directory
to :func:`load_results`.

Rows are JSON lines rather than CSV so that types survive (an empty response stays ``""``, booleans stay
booleans); ``ptd summarize`` writes the merged table as ``results.csv``.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ptdlib import REPO_ROOT
from ptdlib.canvas import ROW_COLUMNS
from ptdlib.experiment.config import RunConfig, plan_chunks

RUN_FILE = "run.json"
CHUNK_DIR = "chunks"
CHUNK_SUFFIX = ".jsonl"
#: columns of a stored row: the strategy evaluation's plus the chunk that produced it
COLUMNS = [*ROW_COLUMNS, "chunk"]
#: what identifies a measurement; two rows with the same key must agree (wall time aside)
ROW_KEY = ["split", "qid", "seed", "strategy", "params", "recovery"]
#: columns that legitimately differ between two executions of the same chunk
VOLATILE = ["wall_s"]
#: ``flop_counter`` of rows stored before that column existed: the runner then counted with fvcore and had no
#: fallback (a model fvcore could not trace stopped the run), so every such row was priced by fvcore
LEGACY_FLOP_COUNTER = "fvcore"
#: packages whose versions go into run.json
PACKAGES = ("ptdlib", "torch", "transformers", "fvcore", "numpy", "pandas")
_REPO = REPO_ROOT


# ---------------------------------------------------------------- atomic files
def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that ``path`` is either absent/old or complete, never partial."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # an exception before the rename: leave no temporary file behind
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _plain(value):
    """JSON encoder fallback for numpy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a result row: {value!r}")


# ---------------------------------------------------------------- provenance
def package_versions() -> dict:
    """Installed version of each of :data:`PACKAGES` (``"not installed"`` if missing)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(repo: Path = _REPO) -> dict:
    """{"revision", "dirty"} of the checkout ptdlib runs from; "unknown" outside a git checkout."""

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)

    try:
        rev = git("rev-parse", "HEAD")
        if rev.returncode != 0:
            return {"revision": "unknown", "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
        return {"revision": rev.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"revision": "unknown", "dirty": None}


def run_record(cfg: RunConfig, model_id: str, fingerprint: str) -> dict:
    """The content of ``run.json``: nothing in it depends on the host, so shards' records agree."""
    return {
        "config": json.loads(json.dumps(asdict(cfg))),
        "model": {"id": model_id, "fingerprint": fingerprint},
        "seeds": list(cfg.seeds),
        "chunks": len(plan_chunks(cfg)),
        "packages": package_versions(),
        "git": git_revision(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def read_run(root: str | Path) -> dict:
    """The ``run.json`` of run directory ``root``.

    Raises:
        FileNotFoundError: If ``root`` has no ``run.json``.
    """
    path = Path(root) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{root} is not a run directory: it has no {RUN_FILE}")
    return json.loads(path.read_text())


def _differences(a, b, where: str = "") -> list[str]:
    """The leaves in which ``a`` and ``b`` differ, by path (``strategies[1].params.tau: stored 0.9, now 0.95``).

    Lists of one length are compared item by item, others by the items added and removed.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}" if where else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and a != b:
        if len(a) == len(b):
            return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
        removed, added = [x for x in a if x not in b], [y for y in b if y not in a]
        return [f"{where}: " + "; ".join([f"no longer {x!r}" for x in removed] + [f"now also {y!r}" for y in added])]
    return [] if a == b else [f"{where}: stored {a!r}, now {b!r}"]


def check_same_run(stored: dict, cfg: RunConfig, fingerprint: str, where: str) -> None:
    """Check that ``stored`` (a run.json) is the run of ``cfg`` and of the model with ``fingerprint``.

    Args:
        stored: The stored run record.
        cfg: The run config.
        fingerprint: The model's weight fingerprint.
        where: Names the stored run in the message.

    Raises:
        ValueError: Listing every difference of config or model fingerprint.
    """
    diffs = _differences(RunConfig.from_dict(stored["config"]).identity(), cfg.identity())
    if stored["model"]["fingerprint"] != fingerprint:
        diffs.append(
            f"model fingerprint: stored {stored['model']['fingerprint']}, now {fingerprint} (the weights changed)"
        )
    if diffs:
        raise ValueError(
            f"{where} holds a different run; use another output directory or the stored config. "
            "Differences:\n  " + "\n  ".join(diffs)
        )


def open_run(root: str | Path, cfg: RunConfig, model_id: str, fingerprint: str) -> Path:
    """Create run directory ``root`` with its run.json, or check that the one there is this run's.

    Args:
        root: The run directory.
        cfg: The run config.
        model_id: The model's id.
        fingerprint: The model's weight fingerprint.

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: If ``root`` holds a different run (checked before anything is created).
    """
    root = Path(root)
    path = root / RUN_FILE
    if path.exists():  # checked before anything is created, so that a refused run leaves the folder as it was
        check_same_run(read_run(root), cfg, fingerprint, str(root))
    (root / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
    if not path.exists():
        atomic_write(path, json.dumps(run_record(cfg, model_id, fingerprint), indent=2) + "\n")
    return root


# ---------------------------------------------------------------- chunk files
def chunk_path(root: str | Path, chunk_id: str) -> Path:
    """The result file of chunk ``chunk_id`` in run directory ``root``."""
    return Path(root) / CHUNK_DIR / f"{chunk_id}{CHUNK_SUFFIX}"


def finished_chunks(root: str | Path) -> set[str]:
    """Ids of the chunks whose result file exists (temporary files of killed writers are ignored)."""
    folder = Path(root) / CHUNK_DIR
    if not folder.is_dir():
        return set()
    return {
        p.name[: -len(CHUNK_SUFFIX)]
        for p in folder.iterdir()
        if p.name.endswith(CHUNK_SUFFIX) and not p.name.startswith(".")
    }


def write_chunk(root: str | Path, chunk_id: str, rows: list[dict]) -> Path:
    """Store the rows of a finished chunk atomically (see module docstring).

    Args:
        root: The run directory.
        chunk_id: The chunk's id.
        rows: Its rows (:data:`~ptdlib.canvas.evaluate.ROW_COLUMNS`); numpy scalars are stored as numbers.

    Returns:
        The chunk file's path.

    Raises:
        TypeError: For a value that cannot be stored as JSON.
    """
    lines = [json.dumps({**{c: row[c] for c in ROW_COLUMNS}, "chunk": chunk_id}, default=_plain) for row in rows]
    path = chunk_path(root, chunk_id)
    atomic_write(path, "".join(line + "\n" for line in lines))
    return path


def read_chunk(path: Path, expected_rows: int | None = None) -> list[dict]:
    """The rows of a chunk file.

    Args:
        path: The chunk file.
        expected_rows: The chunk's planned number of rows, if known.

    Returns:
        One dict per row.

    Raises:
        ValueError: If the file is damaged, holds another number of rows, or rows of another chunk.
    """
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a file cut or changed by hand (ours are atomic)
        raise ValueError(
            f"chunk file {path} is damaged ({e}); delete it and re-run the config to redo the chunk"
        ) from None
    chunk_id = path.name[: -len(CHUNK_SUFFIX)]
    if expected_rows is not None and len(rows) != expected_rows:
        raise ValueError(f"{path} holds {len(rows)} rows, its chunk has {expected_rows} queries")
    if any(r.get("chunk") != chunk_id for r in rows):
        raise ValueError(f"{path} holds rows of another chunk (its 'chunk' column is not {chunk_id})")
    return rows


# ---------------------------------------------------------------- loading and merging
def merged_run(dirs) -> tuple[RunConfig, dict]:
    """The config and run.json shared by run directories ``dirs``.

    Args:
        dirs: Run directories (shards of one run).

    Returns:
        ``(config, run.json of the first directory)``.

    Raises:
        ValueError: If no directory is given or they hold different runs.
        FileNotFoundError: If one is not a run directory.
    """
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("no run directories given")
    first = read_run(dirs[0])
    cfg = RunConfig.from_dict(first["config"])
    for d in dirs[1:]:
        check_same_run(read_run(d), cfg, first["model"]["fingerprint"], f"{d} (merged with {dirs[0]})")
    return cfg, first


def missing_chunks(*dirs) -> list:
    """The planned chunks (:class:`~ptdlib.experiment.config.Chunk`) that no directory of ``dirs`` holds yet."""
    cfg, _ = merged_run(dirs)
    done = set().union(*(finished_chunks(d) for d in dirs))
    return [c for c in plan_chunks(cfg) if c.id not in done]


def load_results(*dirs) -> pd.DataFrame:
    """The result rows of one run, merged over its shard directories ``dirs`` (a tidy table).

    Rows appearing in several files (the same chunk copied twice) are kept once.

    Args:
        *dirs: The run's shard directories.

    Returns:
        A DataFrame with the columns :data:`COLUMNS`, rows in the config's order; ``df.attrs`` holds ``run``
        (the first directory's run.json) and ``missing_chunks`` (ids not yet present).

    Raises:
        ValueError: If the directories hold different runs, a chunk file the config does not plan, a damaged
            chunk, or two copies of a row that disagree on anything but wall time.
    """
    cfg, run = merged_run(dirs)
    planned = {c.id: (i, c) for i, c in enumerate(plan_chunks(cfg))}
    found = []  # (plan position, directory, chunk id): rows come out in the config's order
    for d in dirs:
        for cid in finished_chunks(d):
            if cid not in planned:
                raise ValueError(
                    f"{chunk_path(d, cid)} is not a chunk of the run's config (was it written by "
                    f"another config or another version of ptdlib?)"
                )
            found.append((planned[cid][0], str(d), cid))
    rows = []
    for _, d, cid in sorted(found):
        rows += read_chunk(chunk_path(d, cid), planned[cid][1].size)
    seen = {cid for _, _, cid in found}
    for row in rows:  # rows of older runs (no flop_counter column) resume unchanged
        row.setdefault("flop_counter", LEGACY_FLOP_COUNTER)
    df = pd.DataFrame.from_records(rows, columns=COLUMNS)
    df["source"] = df["source"].fillna("synthetic")  # rows stored before file sources existed
    stable = [c for c in COLUMNS if c not in VOLATILE]
    df = df.drop_duplicates(subset=stable).reset_index(drop=True)
    clash = df.duplicated(ROW_KEY, keep=False)
    if clash.any():
        example = df.loc[clash, ROW_KEY].iloc[0].to_dict()
        raise ValueError(
            f"{int(clash.sum())} rows measure the same (query, strategy, params, seed) with different "
            f"results, e.g. {example}; two copies of a chunk disagree — keep one of them"
        )
    df.attrs.update(run=run, missing_chunks=[cid for cid in planned if cid not in seen])
    return df


__all__ = [
    "CHUNK_DIR",
    "COLUMNS",
    "LEGACY_FLOP_COUNTER",
    "RUN_FILE",
    "ROW_KEY",
    "atomic_write",
    "check_same_run",
    "chunk_path",
    "finished_chunks",
    "git_revision",
    "load_results",
    "merged_run",
    "missing_chunks",
    "open_run",
    "package_versions",
    "read_chunk",
    "read_run",
    "run_record",
    "write_chunk",
]
