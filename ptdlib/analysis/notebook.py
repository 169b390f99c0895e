"""The notebooks' parameters: what each must be, checked in one call right after the ``parameters`` cell.

A notebook's first code cell after its ``parameters`` cell is one call, ``check_notebook("04_margin_tradeoffs",
globals())``: it checks every parameter against the notebook's declared :class:`NotebookParams` (types, ranges,
choices, rules tying parameters together), so that a bad parameter stops the notebook right there with one
clear :class:`ParameterError`, instead of a traceback deep in a computation; in smoke mode it then shrinks
the sizes (the tests' seconds-fast run). The declarations of the seven notebooks are at the end of this
module, one function per notebook; a test checks that each names exactly the parameters of its notebook.
Where results and figures are read and written: :mod:`ptdlib.analysis.finished_run`, :mod:`ptdlib.analysis.plotting`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from ptdlib.validation import check_value


class ParameterError(ValueError):
    """A notebook parameter has the wrong type or value."""


@dataclass(frozen=True)
class Param:
    """What a parameter must be: a type, and optionally a closed range or a set of choices."""

    kind: type | tuple[type, ...]  # int, float (ints accepted), bool, str, list, dict, or a tuple of them
    low: float | None = None  # smallest allowed value (inclusive)
    high: float | None = None  # largest allowed value (inclusive)
    choices: Sequence[Any] | None = None  # allowed values; of a list: of its items, of a dict: of its keys
    optional: bool = False  # None is allowed
    each: Param | None = None  # of a list: what every item must be (named name[i]); of a dict: every value


def check_param(name: str, value, spec: Param):
    """Check one parameter against its declaration.

    Args:
        name: The parameter's name, as the message gives it (``"taus[1]"`` for an item of ``taus``).
        value: Its value.
        spec: What it must be.

    Returns:
        ``value``, unchanged.

    Raises:
        ParameterError: ``value`` has the wrong type, lies outside ``[spec.low, spec.high]``, is not (or, for a
            list or dict, holds an item or key that is not) one of ``spec.choices``, or has an item that fails
            ``spec.each``. The message names the parameter, the rule and the bad value.
    """
    if value is None and spec.optional:
        return value
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    try:  # the same type rules as a run config's fields (ptdlib.validation): "false" is not a bool
        check_value(f"parameter {name!r}", value, typing.Union[kinds + ((type(None),) if spec.optional else ())])
    except ValueError as e:
        raise ParameterError(str(e)) from None
    items = value if isinstance(value, (list, tuple, dict)) else [value]  # a dict's keys are its choices
    for item in items:
        if spec.choices is not None and item not in spec.choices:
            raise ParameterError(f"parameter {name!r} must be one of {list(spec.choices)}, got {item!r}")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        lo = "-inf" if spec.low is None else spec.low
        hi = "inf" if spec.high is None else spec.high
        raise ParameterError(f"parameter {name!r} must be in [{lo}, {hi}], got {value!r}")
    if spec.each is not None:
        named = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in named:
            check_param(f"{name}[{key!r}]", item, spec.each)
    return value


def check_params(**specs: tuple) -> None:
    """``check_params(n=(n, Param(int, 1)), tau=(tau, Param(float, 0, 1)))``: check each (value, spec)."""
    for name, (value, spec) in specs.items():
        check_param(name, value, spec)


@dataclass(frozen=True)
class Rule:
    """A condition tying parameters together (``max_canvas`` a multiple of the block), with its message."""

    holds: Callable[[Mapping[str, Any]], bool]  # parameter name -> value, to True when the parameters are fine
    message: str  # formatted with the parameters: "parameter 'canvas' ({canvas}) must be ..."


@dataclass(frozen=True)
class NotebookParams:
    """What one notebook's parameters must be, and what its smoke mode shrinks."""

    params: Mapping[str, Param]  # every parameter of the notebook's ``parameters`` cell, in its order
    rules: Sequence[Rule] = ()  # checked after every parameter passed its own check
    smoke: Callable[[Mapping[str, Any]], dict] | None = None  # parameters -> the values smoke mode sets


def check_notebook(name: str, namespace: MutableMapping[str, Any]) -> None:
    """Check a notebook's parameters; in smoke mode, shrink its sizes.

    Args:
        name: The notebook's file name without ``.ipynb``, a key of :data:`NOTEBOOKS` (``"04_margin_tradeoffs"``).
        namespace: The notebook's ``globals()``, holding its parameters (papermill's values injected).
            In smoke mode (``smoke`` true) the sizes the notebook's smoke mode shrinks are rebound in it,
            and a line names them.

    Raises:
        ParameterError: A parameter fails its declaration or a rule (the first one found, in the parameters
            cell's order, then the rules').
        KeyError: ``name`` is not a notebook of :data:`NOTEBOOKS`, or ``namespace`` lacks a declared parameter
            (the notebook and its declaration disagree).
    """
    if name not in NOTEBOOKS:
        raise KeyError(f"no parameter declaration for notebook {name!r}; known: {', '.join(NOTEBOOKS)}")
    spec = NOTEBOOKS[name]()
    missing = [k for k in spec.params if k not in namespace]
    if missing:
        raise KeyError(f"notebook {name!r} does not define the declared parameter(s) {missing}")
    values = {k: namespace[k] for k in spec.params}
    for key, param in spec.params.items():
        check_param(key, values[key], param)
    for rule in spec.rules:
        if not rule.holds(values):
            raise ParameterError(rule.message.format(**values))
    shrunk = spec.smoke(values) if spec.smoke is not None and values.get("smoke") else {}
    namespace.update(shrunk)
    if shrunk:
        print("smoke mode: " + ", ".join(f"{k}={v!r}" for k, v in shrunk.items()))


# --------------------------------------------------------------- the notebooks' parameters
# One function per notebook, in the order of its parameters cell (tests/test_notebook_params.py checks that the
# names agree). Functions, so that a notebook imports only the registries its own declaration needs.

#: parameters every notebook that loads a model shares
_MODEL = {"model": Param(dict), "device": Param(str)}
_FIGURES = {"figures_dir": Param(str, optional=True)}
_BLOCKS = Rule(
    lambda p: p["max_canvas"] % 32 == 0,
    "parameter 'max_canvas' must be a multiple of the block length 32, got {max_canvas}",
)
_FEATURES = ["text", "hidden", "text+hidden"]


def _tour() -> NotebookParams:
    from ptdlib.tasks import FAMILIES

    return NotebookParams(
        {
            "smoke": Param(bool),
            **_MODEL,
            **_FIGURES,
            "family": Param(str, choices=list(FAMILIES)),
            "query_index": Param(int, 0),
            "max_canvas": Param(int, 8),
            "steps": Param(int, 1, optional=True),
            "tau": Param(float, 1e-6, 1),
            "rule": Param(str, choices=["running_max", "product"]),
            "alpha": Param(float, 1e-3, 0.999),
            "features": Param(str, choices=_FEATURES),
            "n_train": Param(int, 8),
            "n_calib": Param(int, 4),
            "show_positions": Param(int, 1),
            "seed": Param(int, 0),
            "torch_threads": Param(int, 1),
        },
        rules=[_BLOCKS],  # seconds, not minutes: short canvases, few denoising steps, few training queries
        smoke=lambda p: {"max_canvas": 64, "steps": 16, "n_train": 24, "n_calib": 12, "features": "text"},
    )


def _length_signal() -> NotebookParams:
    from ptdlib.tasks import SPLITS

    return NotebookParams(
        {
            "smoke": Param(bool),
            **_MODEL,
            **_FIGURES,
            "split": Param(str, choices=list(SPLITS)),
            "n_queries": Param(int, 2),
            "max_canvas": Param(int, 8),
            "steps": Param(int, 1, optional=True),
            "taus": Param(list, each=Param(float, 1e-6, 1)),
            "plain_tau": Param(float, 1e-6, 1),
            "focus_tau": Param(float, 1e-6, 1),
            "n_bins": Param(int, 1, 10),
            "seed": Param(int, 0),
            "torch_threads": Param(int, 1),
        },
        rules=[
            Rule(
                lambda p: p["focus_tau"] in p["taus"],
                "parameter 'focus_tau' must be one of taus {taus}, got {focus_tau}",
            ),
            _BLOCKS,
        ],
        smoke=lambda p: {"n_queries": 16, "max_canvas": 64, "steps": 16},
    )  # a few queries, a short canvas


def _predictor() -> NotebookParams:
    from ptdlib.predictor import REGRESSORS

    return NotebookParams(
        {
            "smoke": Param(bool),
            **_MODEL,
            **_FIGURES,
            "n_train": Param(int, 8),
            "n_calib": Param(int, 4),
            "n_test": Param(int, 4),
            "max_canvas": Param(int, 8),
            "steps": Param(int, 1, optional=True),
            "regressor": Param(str, choices=list(REGRESSORS)),
            "features": Param(str, choices=_FEATURES),
            "alpha": Param(float, 1e-3, 0.999),
            "smartcrop_tau": Param(float, 1e-6, 1),
            "cost_target": Param(float, 0, 1),
            "seed": Param(int, 0),
            "torch_threads": Param(int, 1),
        },
        rules=[_BLOCKS],
        smoke=lambda p: {"n_train": 32, "n_calib": 12, "n_test": 12, "max_canvas": 64, "steps": 16},
    )


def _evaluable_splits() -> list[str]:
    from ptdlib.tasks import SPLITS

    return [s for s in SPLITS if s not in ("train", "calib")]


def _margin_tradeoffs() -> NotebookParams:
    return NotebookParams(
        {
            "smoke": Param(bool),
            **_MODEL,
            "results_dir": Param(str),
            **_FIGURES,
            "split": Param(str, choices=_evaluable_splits()),
            "margin_min": Param(float, -128, 128),
            "margin_max": Param(float, -128, 512),
            "n_margins": Param(int, 2, 10_000),
            "alphas": Param(list, each=Param(float, 1e-6, 1 - 1e-6)),
            "torch_threads": Param(int, 1, 256),
        },
        rules=[
            Rule(
                lambda p: p["margin_max"] > p["margin_min"],
                "parameter 'margin_max' ({margin_max}) must exceed 'margin_min' ({margin_min})",
            )
        ],
        smoke=lambda p: {"n_margins": 9, "alphas": p["alphas"][:3]},
    )


def _distribution_shift() -> NotebookParams:
    evaluable = _evaluable_splits()
    return NotebookParams(
        {
            "smoke": Param(bool),
            **_MODEL,
            "results_dir": Param(str),
            **_FIGURES,
            "shift_splits": Param(list, choices=evaluable),
            "n_shift": Param(int, 1, 5000),
            "alpha": Param(float, 1e-3, 0.999),
            "percentile": Param(float, 0, 100),
            "alphas": Param(list, each=Param(float, 1e-3, 0.999)),
            "stream_order": Param(list, choices=evaluable),
            "aci_gamma": Param(float, 1e-6, 1),
            "aci_window": Param(int, 1, 100_000),
            "running_window": Param(int, 1, 100_000),
            "torch_threads": Param(int, 1, 256),
        },
        smoke=lambda p: {
            "n_shift": min(p["n_shift"], 6),
            "alphas": p["alphas"][:2],
            "running_window": min(p["running_window"], 4),
        },
    )


def _quality_significance() -> NotebookParams:
    from ptdlib.stats.paired import CORRECTIONS
    from ptdlib.stats.summary import QUALITY_DELTAS

    return NotebookParams(
        {
            "smoke": Param(bool),
            "results_dir": Param(str),
            **_FIGURES,
            "correction": Param(str, choices=list(CORRECTIONS)),
            "quality_delta": Param(str, choices=list(QUALITY_DELTAS)),
            "ni_margin": Param(float, 0, 1),
            "confidence": Param(float, 0.5, 0.999),
            "test_level": Param(float, 1e-4, 0.5),
            "n_resamples": Param(int, 99, 1_000_000),
        },
        smoke=lambda p: {"n_resamples": min(p["n_resamples"], 199)},
    )  # fewer bootstrap resamples


def _deployment_cost() -> NotebookParams:
    from ptdlib.cost.hardware import HARDWARE
    from ptdlib.cost.shapes import PRESETS

    return NotebookParams(
        {
            "smoke": Param(bool),
            **_FIGURES,
            "results_dir": Param(str, optional=True),
            "carry_over": Param(bool),
            "preset": Param(str, choices=list(PRESETS)),
            "hardware_names": Param(list, choices=list(HARDWARE)),
            "queries_per_day": Param(float, 0),
            "prompt_mean": Param(float, 1),
            "response_mean": Param(float, 1),
            "long_response_mean": Param(float, 1),
            "long_fraction": Param(float, 0, 1),
            "spread": Param(float, 0, 5),
            "canvas": Param(int, 1),
            "block": Param(int, 1),
            "batch": Param(int, 1),
            "mfu": Param(float, 1e-3, 1, optional=True),
            "prices": Param(dict, choices=list(HARDWARE), each=Param(float, 0)),  # hardware name -> USD per GPU-hour
            "margin": Param(float, 0),
            "length_error": Param(float, 0),
            "n_sim": Param(int, 10),
            "n_boot": Param(int, 10),
            "mfu_grid": Param(list, each=Param(float, 1e-3, 1)),
            "price_grid": Param(list, each=Param(float, 0)),
            "long_fraction_grid": Param(list, each=Param(float, 0, 1)),
            "seed": Param(int, 0),
        },
        rules=[
            Rule(
                lambda p: len(p["hardware_names"]) > 0,
                "parameter 'hardware_names' must name at least one hardware preset",
            ),
            Rule(
                lambda p: p["canvas"] % p["block"] == 0,
                "parameter 'canvas' ({canvas}) must be a multiple of 'block' ({block})",
            ),
        ],
        smoke=lambda p: {
            "n_sim": 200,
            "n_boot": 50,
            "mfu_grid": p["mfu_grid"][::3],
            "price_grid": p["price_grid"][::3],
            "long_fraction_grid": p["long_fraction_grid"][::3],
        },
    )  # few simulated queries, short grids


#: notebook (file name without .ipynb) -> its parameters' declaration
NOTEBOOKS: dict[str, Callable[[], NotebookParams]] = {
    "01_tour": _tour,
    "02_length_signal": _length_signal,
    "03_predictor": _predictor,
    "04_margin_tradeoffs": _margin_tradeoffs,
    "05_distribution_shift": _distribution_shift,
    "06_quality_significance": _quality_significance,
    "07_deployment_cost": _deployment_cost,
}
