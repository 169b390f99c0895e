"""The experiment-grid configuration of ``ptd run``: a YAML or TOML file parsed into frozen dataclasses.

A run evaluates every *cell* — a canvas strategy with one parameter combination and one truncation recovery —
on every evaluated split and every sampling seed. A strategy entry's list-valued parameters are grid axes
that expand to their cartesian product::

    strategies:
      - {name: fixed, params: {L: [128, 64]}}          # two cells
      - {name: smartcrop, params: {tau: 0.9, rule: [product, running_max]}}

The work is cut into *chunks* (cell x split x seed x a run of ``chunk_size`` consecutive queries); a chunk
is the unit that is written, skipped on resume and assigned to a shard. :func:`plan_chunks` derives them
from the configuration alone, so every process (and ``ptd summarize``) agrees on them.

Unknown keys at any level, unknown strategies or parameters, and unknown split names raise ``ValueError``
naming the bad value and what is allowed. ``RunConfig.from_dict(asdict(cfg)) == cfg``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

import yaml

from ptdlib.canvas import CanvasLimits, CanvasPolicy, get_policy_class, make_policy
from ptdlib.cost.plans import RECOVERIES
from ptdlib.models.spec import ModelSpec
from ptdlib.models.spec import check_choice as _choice
from ptdlib.sampling.sampler import SamplerConfig
from ptdlib.tasks import SPLITS
from ptdlib.tasks.sources import SOURCE_SPLITS, SourceSpec, source_from_dict
from ptdlib.validation import check_types

#: splits used to fit and calibrate policies; never evaluated (docs/design.md §8: calibrate off the test split)
FIT_SPLITS = ("train", "calib")
#: splits a run may evaluate
EVAL_SPLITS = tuple(s for s in SPLITS if s not in FIT_SPLITS)
#: keys of a run configuration that do not change its results (where it is written)
NOT_IDENTITY = ("output",)


def _int(where: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, got {value!r}")


def _positive_int(where: str, value) -> None:
    _int(where, value)
    if value <= 0:
        raise ValueError(f"{where} must be a positive integer, got {value}")


@dataclass(frozen=True)
class StrategySpec:
    """One entry of the grid: a policy name, its parameters (lists are grid axes), an optional recovery."""

    name: str  # a canvas policy registered in ptdlib.canvas.POLICIES (fixed, oracle, smartcrop, ...)
    params: dict = field(default_factory=dict)  # parameter -> value, or a list of values to sweep
    recovery: str | None = None  # what a truncated result gets (ptdlib.cost.plans.RECOVERIES); None: the run's default


@dataclass(frozen=True)
class Cell:
    """One expanded grid point: a policy built with ``kwargs``, whose own ``params()`` are ``params``."""

    name: str
    kwargs: dict  # constructor arguments from the config
    params: str  # canonical JSON of policy.params(): what result rows carry
    recovery: str
    online: bool = False  # the policy learns from served queries (CanvasPolicy.online): one chunk per split

    @property
    def key(self) -> str:
        """``name|params|recovery``: identifies the cell within a run."""
        return f"{self.name}|{self.params}|{self.recovery}"

    @property
    def label(self) -> str:
        """A readable name, e.g. ``smartcrop(tau=0.9)/double`` (the recovery is left out when it is ``max``)."""
        inner = ", ".join(f"{k}={v}" for k, v in json.loads(self.params).items())
        return f"{self.name}({inner})" + ("" if self.recovery == "max" else f"/{self.recovery}")


@dataclass(frozen=True)
class Chunk:
    """A unit of work: one cell on queries ``start:stop`` of ``split`` at sampling ``seed``."""

    id: str
    split: str
    cell: Cell
    seed: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """Number of queries (rows) in the chunk."""
        return self.stop - self.start


@dataclass(frozen=True)
class RunConfig:
    """An experiment grid (see module docstring and ``configs/example.yaml``)."""

    splits: dict  # evaluated split -> number of queries, e.g. {"test": 300, "shift_length": 200}
    strategies: tuple  # StrategySpec entries; each expands to the product of its list-valued params
    model: ModelSpec = ModelSpec()  # the shipped embedded model
    sampler: SamplerConfig = SamplerConfig()  # LLaDA's reference settings (S = L, blocks of 32, greedy)
    limits: CanvasLimits = CanvasLimits()  # canvases are whole blocks of 32 up to 128 (the model's training canvas)
    train: int = 600  # queries of the train split that fitted policies learn from (heuristic, predicted)
    calib: int = 300  # queries of the calib split the predicted policy's margin is calibrated on
    data_seed: int = 0  # seed of make_split for every split (which queries)
    seeds: tuple = (0,)  # sampling seeds; every cell runs once per seed and the seed is in every row
    label_seed: int = 0  # sampling seed of the own-length labelling run at the maximum canvas
    batch_size: int = 32  # queries per forward pass
    chunk_size: int | None = None  # queries per result file (a kill loses at most one); None: batch_size
    recovery: str = "max"  # default truncation recovery (Predict-then-Diffuse: re-run at the maximum)
    baseline: StrategySpec | None = None  # the arm ptd summarize compares with; None: fixed at max_canvas
    output: str = "results/run"  # the run directory (relative paths are relative to the working directory)
    sources: tuple = ()  # file sources (ptdlib.tasks.sources.SourceSpec); empty: the synthetic suite

    def __post_init__(self):
        if not isinstance(self.splits, Mapping) or not self.splits:
            raise ValueError(f"splits must map at least one split name to a query count, got {self.splits!r}")
        if self.sources:
            _check_sources(self.sources, self.splits)
        for name, n in self.splits.items():
            if self.sources:
                _positive_int(f"splits.{name}", n)
                continue
            if name in FIT_SPLITS:
                raise ValueError(
                    f"split {name!r} is used to fit and calibrate policies and cannot be evaluated; "
                    f"evaluate one of {', '.join(EVAL_SPLITS)}"
                )
            if name not in SPLITS:
                raise ValueError(
                    f"unknown split {name!r}; choose from {', '.join(EVAL_SPLITS)} "
                    f"({', '.join(FIT_SPLITS)} are for fitting)"
                )
            _positive_int(f"splits.{name}", n)
        for key in ("train", "calib", "batch_size"):
            _positive_int(key, getattr(self, key))
        for key in ("data_seed", "label_seed"):
            _int(key, getattr(self, key))
        if self.chunk_size is not None:
            _positive_int("chunk_size", self.chunk_size)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {list(self.seeds)}")
        for s in self.seeds:
            _int("seeds[]", s)
        _choice("recovery", self.recovery, RECOVERIES)
        if self.limits.round_to % self.sampler.block_length:
            raise ValueError(
                f"sampler.block_length {self.sampler.block_length} must divide limits.round_to "
                f"{self.limits.round_to} (every canvas is a multiple of round_to)"
            )
        if not self.strategies:
            raise ValueError("strategies is empty: name at least one strategy (e.g. {name: fixed, params: {L: 128}})")
        self.cells  # noqa: B018 (the property expands and validates the grid)
        self._check_runnable()
        self._check_fit_parts()
        self.baseline_arm  # noqa: B018 (the baseline must be one of the cells)

    def _check_fit_parts(self) -> None:
        """With file sources, check that every source has the train and calib parts a learning strategy needs.

        A strategy that learns (heuristic, predicted, ...) fits and calibrates on them; a missing part is found
        here, not after the model loaded.
        """
        learners = sorted({c.name for c in self.cells if get_policy_class(c.name).fit is not CanvasPolicy.fit})
        if not self.sources or not learners:
            return
        for spec in self.sources:
            missing = [s for s in FIT_SPLITS if s not in spec.split_files()]
            if missing:
                raise ValueError(
                    f"source {spec.name!r} has no {' or '.join(missing)} part, which the strategies "
                    f"{', '.join(learners)} learn from; give it fractions or files for train and calib, "
                    f"or drop those strategies"
                )

    def _check_runnable(self) -> None:
        """Check what would otherwise fail only after the model loaded and labels were computed.

        That is the sampler's steps against the maximum canvas (labels and re-runs run there) and every cell's
        own settings.
        """
        try:
            self.sampler.plan(self.limits.max_canvas)
        except ValueError as e:
            raise ValueError(
                f"sampler does not fit limits.max_canvas {self.limits.max_canvas} (the labelling run and "
                f"re-runs use it): {e}"
            ) from None
        for cell in self.cells:
            try:
                make_policy(cell.name, **cell.kwargs).check_config(self.limits, self.sampler)
            except ValueError as e:
                raise ValueError(f"strategy {cell.label}: {e}") from None

    # ------------------------------------------------------------ derived
    @property
    def chunk(self) -> int:
        """Queries per result file (``chunk_size``, else ``batch_size``)."""
        return self.chunk_size or self.batch_size

    @cached_property
    def cells(self) -> tuple[Cell, ...]:
        """Every grid point, in config order.

        Raises:
            ValueError: If two entries build the same policy, or an entry is invalid (:func:`expand`).
        """
        out, seen = [], {}
        for i, spec in enumerate(self.strategies):
            for cell in expand(spec, self.recovery, where=f"strategies[{i}]"):
                if cell.key in seen:
                    raise ValueError(
                        f"strategies[{i}] repeats the cell {cell.label} of {seen[cell.key]} "
                        f"(parameters the policy ignores do not make a new cell)"
                    )
                seen[cell.key] = f"strategies[{i}]"
                out.append(cell)
        return tuple(out)

    @cached_property
    def baseline_arm(self) -> tuple[str, str]:
        """``(strategy, params JSON)`` of the summary's baseline arm (default: fixed at the maximum canvas).

        Raises:
            ValueError: If the baseline names several parameter combinations or is not one of the cells.
        """
        spec = self.baseline or StrategySpec("fixed", {"L": self.limits.max_canvas})
        base = expand(spec, self.recovery, where="baseline")
        if len(base) != 1:
            raise ValueError(f"baseline must name one parameter combination, got {len(base)}")
        arms = {(c.name, c.params) for c in self.cells}
        if (base[0].name, base[0].params) not in arms:
            raise ValueError(
                f"baseline {base[0].label} is not one of the strategies; add it to strategies or set "
                f"baseline to one of: {', '.join(sorted({c.label for c in self.cells}))}"
            )
        return base[0].name, base[0].params

    def identity(self) -> dict:
        """What must match to resume or merge a run directory: everything but where it is written."""
        d = asdict(self)
        for key in NOT_IDENTITY:
            d.pop(key)
        if not d["sources"]:  # a synthetic-suite run keeps the identity it had before sources existed
            d.pop("sources")
        return json.loads(json.dumps(d, sort_keys=True))  # tuples -> lists, as stored in run.json

    # ------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, data: Mapping) -> RunConfig:
        """Build from nested mappings (a parsed file or ``asdict`` of a config).

        Args:
            data: The config's keys; ``splits`` and ``strategies`` are required.

        Returns:
            The :class:`RunConfig`.

        Raises:
            ValueError: For unknown or missing keys, values of the wrong type, or invalid settings (the message
                names the key).
        """
        d = _known(cls, data, "config")
        check_types(cls, d)
        for key, sub in (("model", ModelSpec), ("sampler", SamplerConfig), ("limits", CanvasLimits)):
            if key in d:
                d[key] = _build(sub, d[key], key)
        if "strategies" in d:
            if not isinstance(d["strategies"], (list, tuple)):
                raise ValueError(f"strategies must be a list of {{name, params, recovery}}, got {d['strategies']!r}")
            d["strategies"] = tuple(_strategy(s, f"strategies[{i}]") for i, s in enumerate(d["strategies"]))
        if d.get("baseline") is not None:
            d["baseline"] = _strategy(d["baseline"], "baseline")
        if "seeds" in d:
            seeds = d["seeds"]
            d["seeds"] = tuple(seeds) if isinstance(seeds, (list, tuple)) else (seeds,)
        if "splits" in d and isinstance(d["splits"], Mapping):
            d["splits"] = dict(d["splits"])
        if d.get("sources") is not None:
            if not isinstance(d["sources"], (list, tuple)):
                raise ValueError(
                    f"sources must be a list of {{name, benchmark, path or files, ...}}, got {d['sources']!r}"
                )
            d["sources"] = tuple(
                s if isinstance(s, SourceSpec) else source_from_dict(s, f"sources[{i}]")
                for i, s in enumerate(d["sources"])
            )
        else:
            d.pop("sources", None)
        missing = [m for m in ("splits", "strategies") if m not in d]
        if missing:
            raise ValueError(f"config lacks required key(s) {missing}")
        return cls(**d)


def load_config(path: str | Path) -> RunConfig:
    """Parse a ``.yaml``/``.yml`` (PyYAML) or ``.toml`` (tomllib) run configuration.

    Args:
        path: The config file.

    Returns:
        The :class:`RunConfig`.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For another suffix, text that is not UTF-8 or not valid YAML/TOML (with the position), a
            top level that is not a mapping, or an invalid config (:meth:`RunConfig.from_dict`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix not in (".yaml", ".yml", ".toml"):
        raise ValueError(f"config file {path} must end in .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"config file {path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return RunConfig.from_dict(data)


def expand(spec: StrategySpec, default_recovery: str, where: str = "strategy") -> list[Cell]:
    """The cells of one grid entry: the cartesian product of its list-valued parameters, in key order.

    Args:
        spec: The grid entry.
        default_recovery: The recovery of an entry that names none.
        where: Names the entry in messages (e.g. ``strategies[2]``).

    Returns:
        One :class:`Cell` per parameter combination.

    Raises:
        ValueError: For an unknown recovery, an empty parameter list, a policy that cannot be built with a
            combination, or a recovery the policy refuses (the message starts with ``where``).
    """
    recovery = _choice(f"{where}.recovery", spec.recovery or default_recovery, RECOVERIES)
    axes = []
    for key, value in spec.params.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ValueError(f"{where}.params.{key} is an empty list; give at least one value")
        axes.append([(key, v) for v in values])
    cells = []
    for combo in itertools.product(*axes):
        kwargs = dict(combo)
        try:
            policy = make_policy(spec.name, **kwargs)
        except ValueError as e:  # unknown names, parameters, types and ranges
            raise ValueError(f"{where}: {e}") from None
        except TypeError as e:  # a type the parameter's annotation does not rule out
            raise ValueError(f"{where}: bad parameter value for {spec.name!r} {kwargs}: {e}") from None
        try:
            policy.check_recovery(recovery)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        params = json.dumps(policy.params(), sort_keys=True)
        cells.append(Cell(spec.name, kwargs, params, recovery, online=policy.online))
    return cells


def plan_chunks(cfg: RunConfig) -> list[Chunk]:
    """Every chunk of the run, ordered seed -> split -> query chunk -> cell (so partial results stay paired).

    An online cell (e.g. ``predicted`` with the ``aci`` margin) is one chunk per split and seed: its state
    after a query depends on every query served before, so it cannot be cut, sharded or resumed midway.

    Args:
        cfg: The run config.

    Returns:
        The :class:`Chunk` list; with file sources, each split has ``n`` queries per source.
    """
    out = []
    for seed in cfg.seeds:
        for split, n in cfg.splits.items():
            n *= max(1, len(cfg.sources))  # with file sources: n queries from each source
            for start in range(0, n, cfg.chunk):
                for cell in cfg.cells:
                    if cell.online and start:
                        continue
                    stop = n if cell.online else min(start + cfg.chunk, n)
                    tag = hashlib.sha1(cell.key.encode()).hexdigest()[:10]
                    cid = f"{split}.{cell.name}.{tag}.s{seed}.q{start:06d}-{stop:06d}"
                    out.append(Chunk(cid, split, cell, seed, start, stop))
    return out


def shard_of(chunk_id: str, n_shards: int) -> int:
    """The shard (0..n-1) a chunk belongs to: a stable hash of its id, the same on every machine."""
    return int(hashlib.sha256(chunk_id.encode()).hexdigest()[:12], 16) % n_shards


def parse_shard(text: str) -> tuple[int, int]:
    """Parse a ``--shard`` value.

    Args:
        text: ``"i/n"``.

    Returns:
        ``(i, n)`` with 0 <= i < n.

    Raises:
        ValueError: If ``text`` is not two integers ``i/n`` with n >= 1 and 0 <= i < n.
    """
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need n >= 1 and 0 <= i < n")
    return i, n


# ------------------------------------------------------------ validation helpers
def _check_sources(sources, splits) -> None:
    """With file sources a run evaluates their ``test`` part; source names are unique."""
    for s in sources:
        if not isinstance(s, SourceSpec):
            raise ValueError(f"sources must hold source entries, got {s!r}")
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"source names must be unique, {repeated} repeat")
    evaluable = [s for s in SOURCE_SPLITS if s not in FIT_SPLITS]
    for name in splits:
        if name not in evaluable:
            raise ValueError(
                f"split {name!r} cannot be evaluated on file sources; choose from {', '.join(evaluable)} "
                f"(sources are cut into {', '.join(SOURCE_SPLITS)})"
            )


def _known(cls, data, where: str) -> dict:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    allowed = [f.name for f in fields(cls)]
    for key in data:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in {where}; allowed keys: {', '.join(allowed)}")
    return dict(data)


def _build(cls, data, where: str):
    d = _known(cls, data, where)
    check_types(cls, d, where)  # types from cls's annotations: "false" is not False, "abc" not an int
    return cls(**d)


def _strategy(data, where: str) -> StrategySpec:
    d = _known(StrategySpec, data, where)
    if "name" not in d:
        raise ValueError(f"{where} has no name; every strategy needs one (e.g. name: fixed)")
    params = d.get("params") or {}  # a YAML "params:" with nothing after it is no parameters
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}.params must be a mapping of parameter -> value(s), got {params!r}")
    d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    return StrategySpec(**d)
