"""Result rows -> paired comparisons with a baseline -> the summary table (DataFrame, Markdown, LaTeX).

A result row is one (query, strategy, params, seed), as the runner writes it (docs/design.md §9). An *arm* is a
(strategy, params) pair; every arm is compared with one baseline arm (by default the fixed canvas
``fixed {"L": 128}``) on the same queries, joined on (split, qid, seed). Repeated seeds of one query are
averaged before testing: queries, not seeds, are the independent units.

The table follows the layout of the SmartCrop paper ("Diffusion LMs are natively length-aware"): per
(split, strategy), the average processed length (prompt + canvas), the score, FLOPs saved % with its
bootstrap interval, and the quality difference with significance stars after a multiple-comparison
correction the caller names. Tests and intervals come from :mod:`ptdlib.stats.paired`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptdlib.registry import Registry
from ptdlib.stats import paired as stats

PAIR_KEYS = ("split", "qid", "seed")  # what makes two rows of different arms the same measurement
ARM_KEYS = ("strategy", "params")
_EXAMPLES = 3  # missing (qid, seed) pairs quoted in a mismatch error

#: Paired tests of per-query scores that are not all binary, by the name ``summary_table(continuous_test=)``
#: takes: name -> ``test(x, y, *, n_resamples, seed) -> TestResult`` (binary scores always get exact McNemar).
CONTINUOUS_TESTS = Registry("continuous test")
#: How the quality difference is expressed, by the name ``summary_table(quality_delta=)`` takes:
#: name -> ``interval(x, y, *, binary, confidence, n_resamples, seed) -> Interval``.
QUALITY_DELTAS = Registry("quality delta")


@CONTINUOUS_TESTS.register("sign_flip")
def _sign_flip(x, y, *, n_resamples: int, seed: int) -> stats.TestResult:
    """Paired sign-flip permutation test (Fisher 1935), ``n_resamples`` random flips seeded by ``seed``."""
    return stats.sign_flip_test(x, y, n_resamples=n_resamples, seed=seed)


@CONTINUOUS_TESTS.register("wilcoxon")
def _wilcoxon(x, y, *, n_resamples: int, seed: int) -> stats.TestResult:
    """Wilcoxon signed-rank test (Wilcoxon 1945); exact or normal, so no resampling."""
    return stats.wilcoxon_test(x, y)


@QUALITY_DELTAS.register("points")
def _points(x, y, *, binary: bool, confidence: float, n_resamples: int, seed: int) -> stats.Interval:
    """100 (mean x - mean y), percentage points: Newcombe's paired interval on binary scores, else BCa."""
    d = (
        stats.paired_proportion_diff(x, y, confidence=confidence)
        if binary
        else stats.bootstrap_mean_diff(x, y, confidence=confidence, n_resamples=n_resamples, seed=seed)
    )
    return stats.Interval(100 * d.estimate, 100 * d.low, 100 * d.high, d.confidence, d.method)


@QUALITY_DELTAS.register("relative")
def _relative(x, y, *, binary: bool, confidence: float, n_resamples: int, seed: int) -> stats.Interval:
    """100 (mean x / mean y - 1), percent of the baseline, paired BCa bootstrap."""
    return stats.bootstrap_relative_diff(x, y, confidence=confidence, n_resamples=n_resamples, seed=seed)


def canonical_params(params) -> str:
    """A strategy's parameters as canonical JSON (sorted keys, fixed spacing), from a dict or a JSON string."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError as e:
            raise ValueError(f"params must be a JSON object, got {params!r} ({e.msg})") from None
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a JSON object (a mapping), got {params!r}")
    return json.dumps(dict(params), sort_keys=True, separators=(", ", ": "))


def params_label(params: str) -> str:
    """``'{"L": 128, "tau": 0.9}'`` -> ``'L=128, tau=0.9'`` for tables."""
    return ", ".join(f"{k}={v}" for k, v in json.loads(params).items())


@dataclass(frozen=True)
class Baseline:
    """Selects the baseline arm: rows whose strategy equals ``strategy`` and whose params equal ``params``.

    ``params`` may be a dict or a JSON string; it is compared after parsing, so key order and spacing in
    the result table do not matter.
    """

    strategy: str = "fixed"  # the LLaDA reference sampler: one canvas length for every query
    params: str | Mapping = '{"L": 128}'  # the canvas the embedded model was trained on (docs/design.md §13)

    def __post_init__(self):
        object.__setattr__(self, "params", canonical_params(self.params))

    @property
    def label(self) -> str:
        return f"{self.strategy} {self.params}"


DEFAULT_BASELINE = Baseline()


# ---------------------------------------------------------------- pairing
def _require(rows: pd.DataFrame, columns, what: str) -> pd.DataFrame:
    if not isinstance(rows, pd.DataFrame):
        raise ValueError(f"{what}: expected a pandas DataFrame of result rows, got {type(rows).__name__}")
    if rows.empty:
        raise ValueError(f"{what}: no result rows (the table is empty)")
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ValueError(f"{what}: result rows lack column(s) {missing}; present: {list(rows.columns)}")
    rows = rows.copy()
    rows["params"] = rows["params"].map(canonical_params)
    return rows


def _mismatch(split, arm, base_keys: set, arm_keys: set) -> str | None:
    only_base, only_arm = sorted(base_keys - arm_keys), sorted(arm_keys - base_keys)
    if not only_base and not only_arm:
        return None

    def examples(keys):
        return ", ".join(f"{q}/seed {s}" for q, s in keys[:_EXAMPLES]) + (", ..." if len(keys) > _EXAMPLES else "")

    text = (
        f"strategy {arm[0]} {arm[1]} on split {split!r}: {len(only_base)} (qid, seed) pair(s) of the "
        f"baseline missing from the strategy, {len(only_arm)} of the strategy missing from the baseline"
    )
    parts = [
        f"baseline only: {examples(only_base)}" if only_base else "",
        f"strategy only: {examples(only_arm)}" if only_arm else "",
    ]
    return text + " (" + "; ".join(p for p in parts if p) + ")"


def pair_with_baseline(
    rows: pd.DataFrame, baseline: Baseline = DEFAULT_BASELINE, *, values: tuple[str, ...] = ("score", "flops_total")
) -> pd.DataFrame:
    """Join every non-baseline arm with the baseline on (split, qid, seed).

    Returns one row per (split, strategy, params, qid, seed) with each column of ``values`` twice: ``v``
    (the strategy) and ``v_base``. An arm is compared on each split where it has rows, and there it must
    cover exactly the baseline's (qid, seed) pairs; otherwise one ValueError lists every mismatch with the
    counts missing on each side. Duplicate rows of one measurement are an error too.
    """
    rows = _require(rows, (*PAIR_KEYS, *ARM_KEYS, *values), "pair_with_baseline")
    for v in values:
        bad = ~np.isfinite(pd.to_numeric(rows[v], errors="coerce").astype(float))
        if bad.any():
            raise ValueError(
                f"pair_with_baseline: column {v!r} holds {int(bad.sum())} missing or non-finite "
                f"value(s), e.g. in the row of {rows.loc[bad, ['strategy', 'qid']].iloc[0].to_dict()}"
            )
    is_base = (rows["strategy"] == baseline.strategy) & (rows["params"] == baseline.params)
    if not is_base.any():
        arms = sorted({f"{s} {p}" for s, p in zip(rows["strategy"], rows["params"])})
        raise ValueError(f"baseline {baseline.label} matches no result rows; arms present: {arms}")
    dup = rows.duplicated([*PAIR_KEYS, *ARM_KEYS], keep=False)
    if dup.any():
        first = rows.loc[dup, [*ARM_KEYS, *PAIR_KEYS]].iloc[0].to_dict()
        raise ValueError(
            f"{int(dup.sum())} result rows repeat one (strategy, params, split, qid, seed), "
            f"e.g. {first}; each measurement must appear once"
        )
    base, others = rows[is_base], rows[~is_base]
    if others.empty:
        raise ValueError(f"only the baseline {baseline.label} is present; nothing to compare with it")
    base_sets = {s: set(zip(g["qid"], g["seed"])) for s, g in base.groupby("split", sort=False)}
    problems = []
    for (split, strategy, params), g in others.groupby(["split", *ARM_KEYS], sort=False):
        problem = _mismatch(split, (strategy, params), base_sets.get(split, set()), set(zip(g["qid"], g["seed"])))
        if problem:
            problems.append(problem)
    if problems:
        raise ValueError(
            "compared strategies were run on different queries than the baseline "
            f"{baseline.label}:\n  " + "\n  ".join(problems)
        )
    base = base[[*PAIR_KEYS, *values]].rename(columns={v: f"{v}_base" for v in values})
    keep = ["split", *ARM_KEYS, "qid", "seed", *values]
    return others[keep].merge(base, on=list(PAIR_KEYS), how="inner", validate="many_to_one")


# ---------------------------------------------------------------- the summary table
def _arm_order(rows: pd.DataFrame, baseline: Baseline) -> list[tuple[str, str, str]]:
    """(split, strategy, params) in order of first appearance, the baseline first within each split."""
    seen = list(dict.fromkeys(zip(rows["split"], rows["strategy"], rows["params"])))
    splits = list(dict.fromkeys(s for s, _, _ in seen))

    def is_base(k):
        return (k[1], k[2]) == (baseline.strategy, baseline.params)

    return [k for s in splits for k in sorted((k for k in seen if k[0] == s), key=lambda k: not is_base(k))]


def summary_table(
    rows: pd.DataFrame,
    baseline: Baseline = DEFAULT_BASELINE,
    *,
    correction: str,
    quality_delta: str = "points",
    continuous_test: str = "sign_flip",
    confidence: float = 0.95,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    margin: float | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per (split, strategy, params): processed length, score, FLOPs saved %, quality Δ with tests.

    * ``avg_len``: mean of prompt_len + final_canvas, the length every denoising pass processes.
    * ``score``: mean score (the ``metric`` column names it: exact match or validity).
    * ``flops_saved_pct`` ``[low, high]``: 100 (1 - ΣFLOPs / ΣFLOPs of the baseline) over the same queries,
      probes, predictor passes and re-runs included (``flops_total``), paired BCa bootstrap interval.
    * ``quality_delta`` ``[low, high]``: ``"points"`` = 100 (mean score - baseline mean score), percentage
      points; ``"relative"`` = 100 (mean score / baseline mean - 1), percent of the baseline. Points on
      binary scores get Newcombe's paired score interval (:func:`ptdlib.stats.paired.paired_proportion_diff`);
      everything else the paired BCa bootstrap.
    * ``p_value``: exact McNemar when both sides' per-query scores are binary, else ``continuous_test``
      (``"sign_flip"`` or ``"wilcoxon"``, the names in :data:`CONTINUOUS_TESTS`); ``p_adjusted`` corrects the
      whole table's family of comparisons with ``correction`` (``"holm"`` or ``"fdr_bh"``, required), and
      ``stars`` reads it.
    * with ``margin`` (score units, e.g. 0.02): ``ni_p_value``/``ni_p_adjusted``/``non_inferior`` from
      :func:`ptdlib.stats.paired.noninferiority`. Without it, a non-significant Δ is **not** evidence of equivalence.

    Baseline rows carry NaN in the comparison columns. Seeds of one query are averaged first (queries are
    the independent units), so ``n`` counts queries.
    """
    if correction not in stats.CORRECTIONS:
        raise ValueError(f"unknown correction method {correction!r}; choose from {', '.join(stats.CORRECTIONS)}")
    delta_interval = QUALITY_DELTAS.lookup(quality_delta)
    continuous = CONTINUOUS_TESTS.lookup(continuous_test)
    rows = _require(
        rows, (*PAIR_KEYS, *ARM_KEYS, "score", "metric", "flops_total", "prompt_len", "final_canvas"), "summary_table"
    )
    pairs = pair_with_baseline(rows, baseline, values=("score", "flops_total"))
    per_query = pairs.groupby(["split", *ARM_KEYS, "qid"]).mean(numeric_only=True)  # sorted: fast .loc
    rows["processed_len"] = rows["prompt_len"] + rows["final_canvas"]
    opts = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)

    out = []
    for key in _arm_order(rows, baseline):
        split, strategy, params = key
        arm = rows[(rows["split"] == split) & (rows["strategy"] == strategy) & (rows["params"] == params)]
        rec = dict(
            split=split,
            strategy=strategy,
            params=params,
            n=arm["qid"].nunique(),
            avg_len=arm["processed_len"].mean(),
            metric="+".join(sorted(arm["metric"].unique())),
            score=arm["score"].mean(),
        )
        if (strategy, params) != (baseline.strategy, baseline.params):
            q = per_query.loc[key]
            x, y = q["score"].to_numpy(), q["score_base"].to_numpy()
            flops = stats.bootstrap_saved_pct(q["flops_total"], q["flops_total_base"], **opts)
            binary = stats.is_binary(x) and stats.is_binary(y)
            d = delta_interval(x, y, binary=binary, **opts)
            test = stats.mcnemar_exact(x, y) if binary else continuous(x, y, n_resamples=n_resamples, seed=seed)
            rec.update(
                flops_saved_pct=flops.estimate,
                flops_saved_low=flops.low,
                flops_saved_high=flops.high,
                quality_delta=d.estimate,
                quality_delta_low=d.low,
                quality_delta_high=d.high,
                quality_ci=d.method,
                test=test.test,
                p_value=test.p_value,
            )
            if margin is not None:
                ni = stats.noninferiority(x, y, margin=margin, alpha=alpha, **opts)
                rec.update(ni_p_value=ni.p_value)
        out.append(rec)
    table = pd.DataFrame(out)
    table.insert(table.columns.get_loc("p_value") + 1, "p_adjusted", stats.adjust_pvalues(table["p_value"], correction))
    table.insert(table.columns.get_loc("p_adjusted") + 1, "stars", table["p_adjusted"].map(stats.stars))
    if margin is not None:
        table["ni_p_adjusted"] = stats.adjust_pvalues(table["ni_p_value"], correction)
        table["non_inferior"] = [None if np.isnan(p) else bool(p < alpha) for p in table["ni_p_adjusted"]]
    table.attrs.update(
        baseline=baseline.label,
        correction=correction,
        quality_delta=quality_delta,
        confidence=confidence,
        margin=margin,
    )
    return table


# ---------------------------------------------------------------- rendering
def _fmt(v: float, digits: int) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _with_ci(est, low, high, digits, suffix="") -> str:
    if not np.isfinite(est):
        return "—"
    return f"{_fmt(est, digits)}{suffix} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def format_summary(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """The summary as display strings: score in %, intervals in brackets, stars after the quality Δ."""
    unit = "pp" if table.attrs.get("quality_delta", "points") == "points" else "%"
    conf = round(100 * table.attrs.get("confidence", 0.95))
    shown = pd.DataFrame(
        {
            "split": table["split"],
            "strategy": table["strategy"],
            "params": table["params"].map(params_label),
            "n": table["n"].astype(int).astype(str),
            "avg length": table["avg_len"].map(lambda v: _fmt(v, digits)),
            "metric": table["metric"],
            "score %": (100 * table["score"]).map(lambda v: _fmt(v, digits)),
            f"FLOPs saved % [{conf}% CI]": [
                _with_ci(e, lo, hi, digits)
                for e, lo, hi in zip(table["flops_saved_pct"], table["flops_saved_low"], table["flops_saved_high"])
            ],
            f"quality Δ {unit} [{conf}% CI]": [
                _with_ci(e, lo, hi, digits, s)
                for e, lo, hi, s in zip(
                    table["quality_delta"], table["quality_delta_low"], table["quality_delta_high"], table["stars"]
                )
            ],
        }
    )
    if "non_inferior" in table:
        shown["non-inferior"] = table["non_inferior"].map(lambda v: "" if pd.isna(v) else ("yes" if v else "no"))
    return shown


def _footnote(table: pd.DataFrame) -> str:
    a = table.attrs
    text = (
        f"Baseline: {a.get('baseline', '?')}. Stars: * p<0.05, ** p<0.01, *** p<0.001 after "
        f"{stats.CORRECTIONS.get(a.get('correction'), a.get('correction'))}."
    )
    if a.get("margin") is not None:
        text += f" Non-inferiority margin: {a['margin']} (score units)."
    return text


def to_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """The summary as a Markdown table (pandas ``to_markdown``, via tabulate) with a footnote."""
    md = format_summary(table, digits).to_markdown(index=False, disable_numparse=True)  # keep "53.0" as shown
    return md + "\n\n" + _footnote(table) + "\n"


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "Δ": r"$\Delta$",
    "—": "---",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def to_latex(table: pd.DataFrame, digits: int = 1) -> str:
    """The summary as a LaTeX ``tabular`` (pandas ``to_latex``) with a footnote as a LaTeX comment line."""
    shown = format_summary(table, digits)
    shown = shown.map(_latex_escape)
    shown.columns = [_latex_escape(c) for c in shown.columns]
    body = shown.to_latex(index=False, escape=False)
    return body + "% " + _footnote(table) + "\n"
