"""Reading the response length from one all-mask forward pass (SmartCrop's RQ1).

"Diffusion LMs are natively length-aware" (SmartCrop) asks whether a D-LLM knows, before denoising, how
long its answer will be: one probe pass over prompt + an all-mask canvas gives ``p_i`` = P(EOS or EOT at
canvas position ``i``) (:func:`ptdlib.canvas.policies.eos_probabilities`). Estimators turn the curve into a
length:

* ``product`` -- the first ``i`` where 1 − ∏_{j≤i}(1 − p_j) reaches ``tau`` (positions treated as
  independent; SmartCrop's rule);
* ``running_max`` -- the first ``i`` where max_{j≤i} p_j reaches ``tau`` (``p_i`` read as P(length ≤ i),
  made monotone). This is also the first position whose own ``p_i`` reaches ``tau``;
* ``plain`` -- each position thresholded on its own, order ignored: the number of positions whose ``p_i``
  is below ``tau`` (what a single greedy step would leave as answer rather than EOS).

The first two are :func:`ptdlib.canvas.policies.ended_by` with the first-crossing rule of
:meth:`ptdlib.canvas.SmartCrop.estimate`, applied to a probe computed once, so a grid of rules and
thresholds costs one pass per query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ptdlib.canvas.policies import ended_by

#: Rules of a monotone "answer has ended by position i" curve (ptdlib.canvas.policies.ended_by).
RULES = ("product", "running_max")
#: Thresholds swept by default for the accumulating rules.
DEFAULT_TAUS = (0.5, 0.7, 0.9, 0.95, 0.99)
#: The plain rule's default threshold: EOS is more likely than not at that position.
PLAIN_TAU = 0.5


def _check_p_eos(p_eos) -> np.ndarray:
    p = np.asarray(p_eos, dtype=float)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"p_eos must be an (n_queries, canvas) matrix, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p_eos must hold probabilities in [0, 1]")
    return p


def ended_curve(p_eos, rule: str) -> np.ndarray:
    """P(the answer has ended by position i) under ``rule`` (one of :data:`RULES`), per query."""
    p = _check_p_eos(p_eos)
    if rule not in RULES:
        raise ValueError(f"unknown length rule {rule!r}; choose from {', '.join(RULES)}")
    return ended_by(p, rule)


def plain_count(p_eos, tau: float = PLAIN_TAU) -> np.ndarray:
    """Per query, the number of canvas positions whose EOS probability is below ``tau`` (order ignored)."""
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    return (_check_p_eos(p_eos) < tau).sum(axis=1)


def first_crossing(curve, tau: float, default: int | None = None) -> np.ndarray:
    """Per row, the first position where ``curve >= tau``; ``default`` (the canvas length) where it never does.

    The same rule as :meth:`ptdlib.canvas.SmartCrop.estimate`: the estimate is the number of tokens before
    the predicted EOS, so a crop after ``estimate + 1`` positions holds it.
    """
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    c = np.asarray(curve, dtype=float)
    if c.ndim != 2:
        raise ValueError(f"curve must be an (n_queries, canvas) matrix, got shape {c.shape}")
    crossed = c >= tau
    fallback = c.shape[1] if default is None else default
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1), fallback)


def estimator_name(rule: str, tau: float) -> str:
    return f"{rule} τ={tau:g}"


def estimator_estimates(
    p_eos, rules: Sequence[str] = RULES, taus: Sequence[float] = DEFAULT_TAUS, plain_tau: float | None = PLAIN_TAU
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """(name -> length estimates, name -> {"rule", "tau"}) for every rule × tau, plus ``plain`` at ``plain_tau``.

    Names are ``"product τ=0.9"``-style; pass both dicts to :func:`ptdlib.analysis.estimates.metrics_table`.
    """
    p = _check_p_eos(p_eos)
    estimates, meta = {}, {}
    for rule in rules:
        curve = ended_curve(p, rule)
        for tau in taus:
            name = estimator_name(rule, tau)
            estimates[name], meta[name] = first_crossing(curve, tau), {"rule": rule, "tau": float(tau)}
    if plain_tau is not None:
        name = estimator_name("plain", plain_tau)
        estimates[name], meta[name] = plain_count(p, plain_tau), {"rule": "plain", "tau": float(plain_tau)}
    return estimates, meta


def length_order(lengths) -> np.ndarray:
    """Query indices sorted by own length (stable: ties keep their order), for heatmaps."""
    return np.argsort(np.asarray(lengths), kind="stable")


def length_bins(lengths, n_bins: int = 4) -> np.ndarray:
    """Bin edges of own length at its quantiles (at most ``n_bins`` bins; duplicate edges are merged)."""
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    y = np.asarray(lengths, dtype=float)
    if y.size == 0:
        raise ValueError("no lengths to bin")
    edges = np.unique(np.quantile(y, np.linspace(0, 1, n_bins + 1)))
    if len(edges) == 1:  # every length equal: one bin around it
        edges = np.array([edges[0], edges[0] + 1])
    return edges


def mean_curves(p_eos, lengths, edges, rule: str = "running_max") -> pd.DataFrame:
    """Mean ``p_eos`` and mean ended-by curve (``rule``) per own-length bin, by canvas position (tidy).

    Columns: ``bin`` (label ``"a–b"``), ``position``, ``p_eos``, ``ended``, ``mean_length``, ``n``. Bins
    are closed on the left, and the last one on the right too.
    """
    p = _check_p_eos(p_eos)
    y = np.asarray(lengths, dtype=float)
    if len(y) != len(p):
        raise ValueError(f"got {len(y)} lengths for {len(p)} probe rows")
    ended = ended_curve(p, rule)
    index = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, len(edges) - 2)
    frames = []
    for b in range(len(edges) - 1):
        keep = index == b
        if not keep.any():
            continue
        label = f"{edges[b]:g}–{edges[b + 1]:g}"
        frames.append(
            pd.DataFrame(
                {
                    "bin": label,
                    "position": np.arange(p.shape[1]),
                    "p_eos": p[keep].mean(0),
                    "ended": ended[keep].mean(0),
                    "mean_length": y[keep].mean(),
                    "n": int(keep.sum()),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
