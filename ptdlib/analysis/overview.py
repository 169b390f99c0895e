"""How each strategy of a result table compares with the references: cost ratios, truncation and quality.

:func:`strategy_overview` is the per-arm table of the report: FLOPs relative to the fixed maximum canvas
(LLaDA's reference setting) and to the oracle (the cheapest canvas that holds the model's own answer, not
deployable), truncation before and after recovery, re-runs and mean score, each over the same queries.
Quality *tests* (Newcombe or paired BCa intervals, exact McNemar / sign-flip, Holm) come from
:func:`ptdlib.stats.summary.summary_table`; :func:`forest_plot` draws its quality differences with their intervals,
and :func:`noninferiority_reading` turns its non-inferiority columns into one sentence per arm (Wellek, 2010:
a non-significant difference is not evidence of no loss; a one-sided test against a margin is).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ptdlib.stats.summary import params_label

#: Columns the overview needs from result rows.
OVERVIEW_COLUMNS = (
    "split",
    "qid",
    "seed",
    "strategy",
    "params",
    "recovery",
    "chosen_canvas",
    "final_canvas",
    "truncated",
    "truncated_final",
    "reruns",
    "flops_total",
    "score",
)


def arm_label(strategy: str, params: str, recovery: str | None = None) -> str:
    """``predicted(alpha=0.05, margin=conformal)``; the recovery is appended when it is not ``max``."""
    inner = params_label(params) if isinstance(params, str) else ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{strategy}({inner})" + ("" if recovery in (None, "max") else f"/{recovery}")


def short_arm_labels(frame: pd.DataFrame) -> list[str]:
    """Arm labels without the parameters every arm of the same strategy shares (``predicted(alpha=0.1)``).

    A strategy with a single arm keeps all its parameters; a recovery other than ``max`` is appended.
    """
    params = [json.loads(p) for p in frame["params"]]
    shared = {}
    for strategy in frame["strategy"].unique():
        mine = [p for p, s in zip(params, frame["strategy"]) if s == strategy]
        distinct = {json.dumps(p, sort_keys=True) for p in mine}
        keys = set().union(*mine) if mine else set()
        shared[strategy] = (
            set() if len(distinct) < 2 else {k for k in keys if len({json.dumps(p.get(k)) for p in mine}) == 1}
        )
    recoveries = frame["recovery"] if "recovery" in frame else [None] * len(frame)
    return [
        arm_label(s, {k: v for k, v in p.items() if k not in shared[s]}, r)
        for s, p, r in zip(frame["strategy"], params, recoveries)
    ]


def _reference(rows: pd.DataFrame, strategy: str, params: dict | None) -> pd.DataFrame | None:
    sel = rows["strategy"] == strategy
    if params is not None:
        sel &= rows["params"].map(lambda p: json.loads(p) == params)
    ref = rows[sel]
    if ref.empty:
        return None
    # one reference per query: the first arm found (e.g. one recovery of it)
    first = ref.groupby(["params", "recovery"], sort=False).ngroup() == 0
    return ref[first.to_numpy()].set_index(["split", "qid", "seed"])["flops_total"]


def strategy_overview(rows: pd.DataFrame, max_canvas: int) -> pd.DataFrame:
    """One row per (split, strategy, params, recovery): cost, truncation, re-runs and score.

    ``flops_vs_fixed`` = ΣFLOPs / ΣFLOPs of ``fixed`` at ``max_canvas``, ``flops_vs_oracle`` likewise with the
    ``oracle`` arm, both over the queries the arm shares with the reference (NaN if the run has none).
    ``truncation`` is the share of first attempts without EOS, ``rerun_rate`` the share re-run,
    ``truncated_final`` the share still truncated after recovery, ``score`` the mean score.
    """
    if not isinstance(rows, pd.DataFrame) or rows.empty:
        raise ValueError("strategy_overview: no result rows")
    missing = [c for c in OVERVIEW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"strategy_overview: result rows lack column(s) {missing}")
    refs = {"fixed": _reference(rows, "fixed", {"L": int(max_canvas)}), "oracle": _reference(rows, "oracle", None)}
    out = []
    for (split, strategy, params, recovery), g in rows.groupby(["split", "strategy", "params", "recovery"], sort=False):
        rec = {
            "split": split,
            "strategy": strategy,
            "params": params,
            "recovery": recovery,
            "n": len(g),
            "mean_canvas": g["chosen_canvas"].mean(),
            "mean_final_canvas": g["final_canvas"].mean(),
            "truncation": g["truncated"].mean(),
            "rerun_rate": (g["reruns"] > 0).mean(),
            "truncated_final": g["truncated_final"].mean(),
            "flops_mean": g["flops_total"].mean(),
            "score": g["score"].mean(),
        }
        keys = pd.MultiIndex.from_frame(g[["split", "qid", "seed"]])
        for name, ref in refs.items():
            if ref is None:
                rec[f"flops_vs_{name}"] = np.nan
                continue
            shared = keys.isin(ref.index)
            base = ref.reindex(keys[shared]).sum()
            rec[f"flops_vs_{name}"] = g["flops_total"].to_numpy()[shared].sum() / base if base > 0 else np.nan
        out.append(rec)
    table = pd.DataFrame(out)
    table.insert(1, "arm", short_arm_labels(table))
    return table


def overview_markdown(overview: pd.DataFrame, digits: int = 2) -> str:
    """The overview as a Markdown table (percentages for rates and score, ratios for FLOPs)."""
    shown = pd.DataFrame(
        {
            "split": overview["split"],
            "strategy": overview["arm"],
            "n": overview["n"].astype(int).astype(str),
            "mean canvas": overview["mean_canvas"].map(lambda v: f"{v:.1f}"),
            "FLOPs / fixed": overview["flops_vs_fixed"].map(lambda v: "—" if pd.isna(v) else f"{v:.{digits}f}"),
            "FLOPs / oracle": overview["flops_vs_oracle"].map(lambda v: "—" if pd.isna(v) else f"{v:.{digits}f}"),
            "truncated %": (100 * overview["truncation"]).map(lambda v: f"{v:.1f}"),
            "re-run %": (100 * overview["rerun_rate"]).map(lambda v: f"{v:.1f}"),
            "truncated after recovery %": (100 * overview["truncated_final"]).map(lambda v: f"{v:.1f}"),
            "score %": (100 * overview["score"]).map(lambda v: f"{v:.1f}"),
        }
    )
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def forest_plot(table: pd.DataFrame, ax, *, margin: float | None = None):
    """Quality Δ of every compared arm with its interval (a summary_table), stars in the label.

    ``margin`` (score units) draws the non-inferiority bound at ``-100·margin`` points.
    """
    t = table.dropna(subset=["quality_delta"]).reset_index(drop=True)
    if t.empty:
        raise ValueError("forest_plot: the summary table compares no arm with the baseline")
    labels = [f"{s} · {arm} {stars}".strip() for s, arm, stars in zip(t["split"], short_arm_labels(t), t["stars"])]
    y = np.arange(len(t))[::-1]
    err = np.vstack([t["quality_delta"] - t["quality_delta_low"], t["quality_delta_high"] - t["quality_delta"]])
    ax.errorbar(t["quality_delta"], y, xerr=err, fmt="o", capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    if margin is not None:
        unit = 100 if table.attrs.get("quality_delta", "points") == "points" else None
        if unit is not None:
            ax.axvline(-unit * margin, color="C3", ls="--", lw=1, label=f"non-inferiority margin −{unit * margin:g} pp")
            ax.legend(loc="lower right")
    ax.set_yticks(y, labels)
    unit = "pp" if table.attrs.get("quality_delta", "points") == "points" else "%"
    conf = round(100 * table.attrs.get("confidence", 0.95))
    ax.set_xlabel(f"quality Δ vs {table.attrs.get('baseline', 'baseline')} ({unit}, {conf}% CI)")
    return ax


def noninferiority_reading(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per compared arm: Δ with its interval, both p-values and a verdict in words.

    Needs a summary_table built with ``margin=``. Verdicts: ``non-inferior`` (one-sided test rejects a loss of
    the margin or more, after correction), ``worse`` (two-sided test finds a loss), ``better`` (finds a
    gain), ``inconclusive`` (neither: the interval is too wide to tell); tests at level ``alpha``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if "non_inferior" not in table:
        raise ValueError("noninferiority_reading needs a summary_table built with margin=...")
    t = table.dropna(subset=["quality_delta"]).reset_index(drop=True)
    verdicts = []
    for _, r in t.iterrows():
        significant = r["p_adjusted"] < alpha
        if significant and r["quality_delta"] > 0:
            verdict = "better"
        elif r["non_inferior"]:
            verdict = "non-inferior"
        elif significant:
            verdict = "worse"
        else:
            verdict = "inconclusive"
        verdicts.append(verdict)
    return pd.DataFrame(
        {
            "split": t["split"],
            "strategy": short_arm_labels(t),
            "quality_delta": t["quality_delta"],
            "low": t["quality_delta_low"],
            "high": t["quality_delta_high"],
            "p_adjusted": t["p_adjusted"],
            "ni_p_adjusted": t["ni_p_adjusted"],
            "verdict": verdicts,
        }
    ).reset_index(drop=True)
