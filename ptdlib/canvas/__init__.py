"""Canvas-length strategies behind one interface and one registry.

``make_policy("smartcrop", tau=0.9)`` builds a policy by name; an unknown name or parameter fails loudly,
naming what is allowed.
"""

from __future__ import annotations

import inspect

from ptdlib.canvas.base import CanvasLimits, CanvasPolicy, round_canvas
from ptdlib.canvas.daedal import DaedalCanvas
from ptdlib.canvas.evaluate import ROW_COLUMNS, evaluate_strategy
from ptdlib.canvas.policies import FixedCanvas, GrowthCanvas, HeuristicCanvas, OracleCanvas, SmartCrop
from ptdlib.canvas.predicted import PredictedCanvas
from ptdlib.canvas.recovery import RECOVERIES
from ptdlib.canvas.rho_eos import RhoEosCanvas
from ptdlib.canvas.smartcrop_conformal import CalibratedSmartCrop
from ptdlib.registry import Registry
from ptdlib.validation import check_types

#: name -> policy class (each class's ``name``), in the order error messages list them
POLICIES: Registry = Registry("canvas policy")
for _cls in (
    FixedCanvas,
    OracleCanvas,
    HeuristicCanvas,
    PredictedCanvas,
    SmartCrop,
    GrowthCanvas,
    CalibratedSmartCrop,
    DaedalCanvas,
    RhoEosCanvas,
):
    POLICIES.register(_cls.name)(_cls)


def policy_parameters(name: str) -> list[str]:
    """The keyword parameters policy ``name`` accepts."""
    return [p for p in inspect.signature(get_policy_class(name).__init__).parameters if p != "self"]


def get_policy_class(name: str) -> type[CanvasPolicy]:
    """The policy class registered as ``name``.

    Raises:
        ValueError: For an unknown name (the message lists the choices).
    """
    return POLICIES.lookup(name)


def make_policy(name: str, **params) -> CanvasPolicy:
    """Build a canvas policy by name.

    Args:
        name: A key of :data:`POLICIES`.
        **params: The policy's constructor parameters.

    Returns:
        The :class:`CanvasPolicy`.

    Raises:
        ValueError: For an unknown name or parameter, or a value of the wrong type (the message names the
            choices); the policy's own checks may raise ValueError too.
    """
    allowed = policy_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"canvas policy {name!r} has no parameter(s) {unknown}; allowed: {allowed or 'none'}")
    cls = get_policy_class(name)
    check_types(cls, params, name)  # types from the constructor's annotations ("false" is not False)
    return cls(**params)


__all__ = [
    "POLICIES",
    "RECOVERIES",
    "ROW_COLUMNS",
    "CalibratedSmartCrop",
    "CanvasLimits",
    "CanvasPolicy",
    "DaedalCanvas",
    "FixedCanvas",
    "GrowthCanvas",
    "RhoEosCanvas",
    "HeuristicCanvas",
    "OracleCanvas",
    "PredictedCanvas",
    "SmartCrop",
    "evaluate_strategy",
    "get_policy_class",
    "make_policy",
    "policy_parameters",
    "round_canvas",
]
