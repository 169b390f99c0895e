"""The safety margin of the predicted (AdaRLP) policy, swept analytically: FLOPs, truncation, re-runs.

At temperature 0 the sampler is deterministic and its cost depends only on the canvases it is given: a fresh
canvas of ``L`` tokens takes ``S`` denoising passes (``S = L`` in LLaDA's reference setting), each over the
batch's padded prompt plus ``L`` positions (Nie et al., 2025, "Large Language Diffusion Models"). So once the
predictor's estimates and the model's own lengths (``ptdlib.experiment.labels``) are known, the FLOPs and the truncation
rate of *any* margin follow without sampling:

* :func:`sampling_flops` prices the plans of :mod:`ptdlib.cost.plans` under the sampler's own batching rule
  (queries grouped by canvas, longest prompt first, ``batch_size`` per forward pass, inside the runner's chunks
  of consecutive queries) with the same FLOP counter the ledger uses, so it reproduces the ``flops_denoise`` of
  result rows exactly;
* :func:`prompt_pass_flops` does the same for the predictor's prompt-only pass (``flops_predictor``);
* :func:`policy_outcome` adds Predict-then-Diffuse's recovery (re-run at the maximum canvas) or doubling;
* :func:`sweep_margins` and :func:`conformal_sweep` tabulate many margins / nominal levels at once;
* :func:`pareto_front` picks the margins no other margin beats on both cost and risk.

**The label model.** A canvas ``c`` is counted as truncated when the own length (at the maximum canvas) is
``≥ c``. The real sampler on a shorter canvas may answer differently (the canvas end is a length cue to a
model trained on full canvases), so the sweep is exact for FLOPs given the truncation flags, and for the
truncation of the labels; result rows at a few margins show how far the real sampler departs from it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from ptdlib.canvas.base import CanvasLimits
from ptdlib.cost.plans import FRESH_RECOVERIES, attempts, batched_plans, plan_flops, sampler_plan
from ptdlib.predictor.conformal import ConformalMargin, bound, canvas_from_upper
from ptdlib.sampling.sampler import SamplerConfig

#: Recoveries whose cost follows from the labels (``extend`` continues a partly decoded canvas: not analytic).
ANALYTIC_RECOVERIES = FRESH_RECOVERIES
#: Margin scales: ``additive`` (U = pred + m tokens) or ``log`` (U = (1 + pred)·e^m - 1).
SCALES = ("additive", "log")


# ---------------------------------------------------------------- checks
def _int_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr.astype(float))) or np.any(arr.astype(float) < 0):
        raise ValueError(f"{name} must hold finite values >= 0, got e.g. {arr[:3].tolist()}")
    return arr.astype(np.int64)


def _same_length(**arrays) -> None:
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"arrays must be equally long (one entry per query), got {sizes}")


def _check_analytic(sampler: SamplerConfig) -> None:
    if sampler.threshold is not None or sampler.stops_after_eos_block:
        raise ValueError(
            "the number of passes is analytic only with a fixed schedule: got threshold="
            f"{sampler.threshold}, stop_after_eos_block={sampler.stop_after_eos_block}, "
            f"window={sampler.window!r}"
        )


def _check_batching(batch_size: int, chunk_size: int | None) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1 or None, got {chunk_size!r}")


def _chunks(n: int, chunk_size: int | None) -> list[np.ndarray]:
    size = n if chunk_size is None else chunk_size
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


# ---------------------------------------------------------------- FLOPs of the sampler's passes
def passes_per_canvas(canvas: int, sampler: SamplerConfig = SamplerConfig()) -> int:
    """Forward passes per query to denoise a fresh canvas of ``canvas`` tokens (two per step with guidance)."""
    _check_analytic(sampler)
    return sum(sampler_plan(0, int(canvas), sampler).values())


def _sample_flops(idx: np.ndarray, canvases, prompt_lens, counter, sampler, batch_size, out) -> None:
    """Add to ``out`` the FLOPs of one ``sample()`` call over queries ``idx`` (the sampler's batching)."""
    _check_analytic(sampler)
    plans = batched_plans(
        prompt_lens[idx].tolist(), canvases[idx].tolist(), partial(sampler_plan, sampler=sampler), batch_size
    )
    out[idx] += np.array([plan_flops(plan, counter) for plan in plans], dtype=np.int64)


def sampling_flops(
    canvases,
    prompt_lens,
    counter,
    *,
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 32,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Per-query FLOPs of denoising each query once at its canvas, as the sampler batches it.

    Queries are given in the order the run evaluates them; ``chunk_size`` consecutive queries form one
    ``evaluate_strategy`` call (the runner's chunks; None: one call). Within a call, queries are grouped by
    canvas, sorted longest prompt first and cut into batches of ``batch_size``; every row of a batch pays
    ``counter.forward_flops(max prompt in batch + L)`` per pass. ``counter`` is any FLOP source with
    ``forward_flops(seq_len)`` (:class:`ptdlib.cost.flops.FlopCounter`, :class:`ptdlib.cost.shapes.AnalyticCounter`).
    """
    c, P = _int_array(canvases, "canvases"), _int_array(prompt_lens, "prompt_lens")
    _same_length(canvases=c, prompt_lens=P)
    _check_batching(batch_size, chunk_size)
    out = np.zeros(len(c), dtype=np.int64)
    for idx in _chunks(len(c), chunk_size):
        _sample_flops(idx, c, P, counter, sampler, batch_size, out)
    return out


def prompt_pass_flops(prompt_lens, counter, *, batch_size: int = 64, chunk_size: int | None = None) -> np.ndarray:
    """Per-query FLOPs of the predictor's prompt-only pass (``ptdlib.predictor.features.prompt_representation``).

    Prompts of one call are sorted shortest first and batched by ``batch_size`` (the FeatureSet's), each row
    paying one pass over its batch's longest prompt.
    """
    P = _int_array(prompt_lens, "prompt_lens")
    _check_batching(batch_size, chunk_size)
    out = np.zeros(len(P), dtype=np.int64)
    for idx in _chunks(len(P), chunk_size):
        order = sorted(idx.tolist(), key=lambda i: P[i])
        for s in range(0, len(order), batch_size):
            batch = order[s : s + batch_size]
            out[batch] += counter.forward_flops(int(max(P[i] for i in batch)))
    return out


def policy_outcome(
    canvases,
    own_lengths,
    prompt_lens,
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 32,
    chunk_size: int | None = None,
    recovery: str = "max",
    truncated=None,
    extra_flops=0,
) -> pd.DataFrame:
    """Per query: truncation, re-runs, final canvas and FLOPs by kind of a policy that chose ``canvases``.

    ``truncated``: the first attempt's truncation flags, if measured; by default the label model
    (``own_length >= canvas``). Recovery ``max`` re-runs every truncated query whose canvas is below the
    maximum at the maximum (Predict-then-Diffuse), ``double`` doubles its canvas until the label fits or the
    maximum is reached (later attempts use the label model), ``none`` keeps it. Re-runs of one chunk share
    batches, as in :func:`ptdlib.canvas.evaluate_strategy`. ``extra_flops`` (scalar or per query: a probe or
    predictor pass) is added to ``flops_total``.
    """
    if recovery not in ANALYTIC_RECOVERIES:
        raise ValueError(f"recovery {recovery!r} is not analytic; choose from {', '.join(ANALYTIC_RECOVERIES)}")
    c, y = _int_array(canvases, "canvases"), _int_array(own_lengths, "own_lengths")
    P = _int_array(prompt_lens, "prompt_lens")
    _same_length(canvases=c, own_lengths=y, prompt_lens=P)
    if np.any(c < 1) or np.any(c > limits.max_canvas):
        bad = c[(c < 1) | (c > limits.max_canvas)][:3].tolist()
        raise ValueError(f"canvases must be in [1, {limits.max_canvas}], got e.g. {bad}")
    first = y >= c if truncated is None else np.asarray(truncated, dtype=bool)
    _same_length(canvases=c, truncated=first)
    denoise = sampling_flops(c, P, counter, sampler=sampler, batch_size=batch_size, chunk_size=chunk_size)
    rerun = np.zeros(len(c), dtype=np.int64)
    final, reruns, missed = c.copy(), np.zeros(len(c), dtype=np.int64), first.copy()
    for a in attempts(c, y, max_canvas=limits.max_canvas, recovery=recovery, truncated=first)[1:]:
        for idx in _chunks(len(c), chunk_size):  # re-runs of one chunk share batches
            todo = idx[a.rows[idx]]
            if len(todo):
                _sample_flops(todo, a.canvas, P, counter, sampler, batch_size, rerun)
        final, missed, reruns = a.canvas, np.where(a.rows, a.truncated, missed), reruns + a.rows
    extra = np.broadcast_to(np.asarray(extra_flops, dtype=np.int64), c.shape)
    return pd.DataFrame(
        {
            "own_length": y,
            "prompt_len": P,
            "chosen_canvas": c,
            "final_canvas": final,
            "truncated": first,
            "truncated_final": missed,
            "reruns": reruns,
            "flops_denoise": denoise,
            "flops_rerun": rerun,
            "flops_extra": extra,
            "flops_total": denoise + rerun + extra,
        }
    )


# ---------------------------------------------------------------- margins
def margin_canvases(
    predictions, margin: float, limits: CanvasLimits = CanvasLimits(), scale: str = "additive"
) -> np.ndarray:
    """Canvases of a margin rule: ``U = pred + m`` or ``(1 + pred)·e^m - 1``, then ``floor(U) + 1`` in blocks."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    pred = np.clip(np.asarray(predictions, dtype=float), 0.0, None)
    return canvas_from_upper(bound(pred, float(margin), scale), limits.max_canvas, limits.round_to)


def reference_flops(
    own_lengths,
    prompt_lens,
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 32,
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-query FLOPs of the two references: the fixed maximum canvas and the oracle (own length + EOS)."""
    y = _int_array(own_lengths, "own_lengths")
    fixed = np.full(len(y), limits.max_canvas)
    oracle = canvas_from_upper(y, limits.max_canvas, limits.round_to)
    kw = dict(sampler=sampler, batch_size=batch_size, chunk_size=chunk_size)
    return {
        "fixed": sampling_flops(fixed, prompt_lens, counter, **kw),
        "oracle": sampling_flops(oracle, prompt_lens, counter, **kw),
    }


def sweep_margins(
    predictions,
    own_lengths,
    prompt_lens,
    margins,
    counter,
    *,
    limits: CanvasLimits = CanvasLimits(),
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 32,
    chunk_size: int | None = None,
    scale: str = "additive",
    recovery: str = "max",
    extra_flops=0,
) -> pd.DataFrame:
    """One row per margin: mean canvas, truncation before recovery, re-run rate, FLOPs (label model).

    Columns: ``margin``, ``mean_canvas``, ``truncation`` (share with own length ≥ canvas), ``rerun_rate``
    (share re-run at least once), ``truncated_final`` (still truncated after recovery), ``flops`` (mean per
    query, re-runs and ``extra_flops`` included), ``flops_vs_fixed`` and ``flops_vs_oracle`` (ratios of
    total FLOPs to the fixed maximum canvas and to the oracle, same batching).
    """
    m = np.asarray(margins, dtype=float).reshape(-1)
    if m.size == 0 or not np.all(np.isfinite(m)):
        raise ValueError(f"margins must be a non-empty list of finite numbers, got {m[:5].tolist()}")
    kw = dict(limits=limits, sampler=sampler, batch_size=batch_size, chunk_size=chunk_size)
    ref = reference_flops(own_lengths, prompt_lens, counter, **kw)
    rows = []
    for margin in m:
        c = margin_canvases(predictions, margin, limits, scale)
        out = policy_outcome(c, own_lengths, prompt_lens, counter, recovery=recovery, extra_flops=extra_flops, **kw)
        total = out["flops_total"].sum()
        rows.append(
            {
                "margin": float(margin),
                "mean_canvas": out["chosen_canvas"].mean(),
                "truncation": out["truncated"].mean(),
                "rerun_rate": (out["reruns"] > 0).mean(),
                "truncated_final": out["truncated_final"].mean(),
                "flops": out["flops_total"].mean(),
                "flops_vs_fixed": total / ref["fixed"].sum(),
                "flops_vs_oracle": total / ref["oracle"].sum(),
            }
        )
    return pd.DataFrame(rows)


def conformal_sweep(
    calib_predictions,
    calib_lengths,
    predictions,
    own_lengths,
    alphas,
    *,
    limits: CanvasLimits = CanvasLimits(),
    scale: str = "additive",
) -> pd.DataFrame:
    """Nominal level vs realised miss rate of split conformal margins fitted on calib, applied to a test set.

    One row per ``alpha``: the conformal quantile ``margin`` (Lei et al. 2018; Angelopoulos & Bates 2021),
    ``miss_rate`` = share of test lengths above the bound ``U`` (what the guarantee is about:
    ``α - 1/(n+1) ≤ P(length > U) ≤ α`` on exchangeable data, ``lower_bound`` column), and ``truncation`` =
    share with length ≥ the canvas actually served (``U`` rounded up to whole blocks: lower still).
    """
    pred = np.clip(np.asarray(predictions, dtype=float), 0.0, None)
    y = np.asarray(own_lengths, dtype=float)
    _same_length(predictions=pred, own_lengths=y)
    rows = []
    for alpha in np.asarray(alphas, dtype=float).reshape(-1):
        rule = ConformalMargin.fit(calib_predictions, calib_lengths, alpha=float(alpha), scale=scale)
        upper = rule.upper(pred)
        canvas = canvas_from_upper(upper, limits.max_canvas, limits.round_to)
        rows.append(
            {
                "alpha": float(alpha),
                "margin": rule.margin,
                "n_calib": rule.n,
                "lower_bound": max(0.0, float(alpha) - 1.0 / (rule.n + 1)),
                "miss_rate": float(np.mean(y > upper)),
                "truncation": float(np.mean(y >= canvas)),
                "mean_canvas": float(canvas.mean()),
            }
        )
    return pd.DataFrame(rows)


def flop_cost(counter, sampler: SamplerConfig = SamplerConfig()) -> Callable:
    """``cost(canvas, prompt_len)`` in FLOPs of one unbatched query, for :class:`CostOptimalMargin`.

    ``S(L) · F(P + L)`` elementwise: the measured counterpart of ``quadratic_cost``.
    """

    def cost(canvas, prompt_len):
        c, P = np.broadcast_arrays(np.asarray(canvas, dtype=float), np.asarray(prompt_len, dtype=float))
        flat = [
            passes_per_canvas(int(ci), sampler) * counter.forward_flops(int(ci + pi))
            for ci, pi in zip(c.ravel(), P.ravel())
        ]
        return np.asarray(flat, dtype=float).reshape(c.shape)

    return cost


def pareto_front(cost, loss) -> np.ndarray:
    """Boolean mask of points no other point beats: lower or equal ``cost`` and ``loss``, one strictly.

    Both are minimised (pass ``-quality`` to maximise quality). Exact duplicates are all kept.
    """
    x, y = np.asarray(cost, dtype=float), np.asarray(loss, dtype=float)
    _same_length(cost=x, loss=y)
    dominated = (
        (x[None, :] <= x[:, None])
        & (y[None, :] <= y[:, None])
        & ((x[None, :] < x[:, None]) | (y[None, :] < y[:, None]))
    ).any(axis=1)
    return ~dominated


# ---------------------------------------------------------------- the run's predictor, re-fitted
def predicted_cell(cfg, margin: str | None = None):
    """The first ``predicted`` cell of run config ``cfg`` (with margin method ``margin`` if given)."""
    cells = [c for c in cfg.cells if c.name == "predicted" and (margin is None or c.kwargs.get("margin") == margin)]
    if not cells:
        have = sorted({c.label for c in cfg.cells})
        raise ValueError(
            f"the run has no predicted strategy{'' if margin is None else f' with margin {margin!r}'}; "
            f"its strategies: {', '.join(have)}"
        )
    return cells[0]


def run_predictions(run: dict, lm, splits, *, cell=None, progress: bool = False) -> pd.DataFrame:
    """Per query of each split: the run's predictor estimate, own length, prompt length, predictor FLOPs.

    ``run`` is the run record (``run.json``, e.g. ``load_results(dir).attrs["run"]``) and ``lm`` its model
    (checked against the record's weights fingerprint). The predictor is fitted exactly as ``ptd run`` fits it
    (same train and calib queries, cached own-length labels), so its estimates are those behind the run's
    ``predicted`` rows. ``splits`` maps a split name to a query count (None: the run's count, or its
    ``calib``/``train`` size); splits the run did not evaluate are labelled here (the labelling run is cached
    and shared). Rows are in the split's query order.
    """
    from ptdlib.experiment.config import RunConfig
    from ptdlib.experiment.labels import model_fingerprint
    from ptdlib.experiment.runner import Workbench
    from ptdlib.tasks import make_split

    cfg = RunConfig.from_dict(run["config"])
    fingerprint = model_fingerprint(lm)
    if fingerprint != run["model"]["fingerprint"]:
        raise ValueError(
            f"the model {lm.model_id!r} (weights {fingerprint}) is not the run's model "
            f"{run['model']['id']!r} (weights {run['model']['fingerprint']}); pass its model spec"
        )
    bench = Workbench(lm, cfg, progress=progress)
    policy = bench.policy(cell or predicted_cell(cfg))
    counter = None
    frames = []
    for split, n in dict(splits).items():
        if n is None:
            queries = bench.queries(split)
        else:
            queries = make_split(split, int(n), seed=cfg.data_seed)
        own = bench.own_lengths(queries)
        P = np.array([len(lm.encode_prompt(q.prompt)) for q in queries])
        if policy.predictor.extractor.uses_hidden:
            if counter is None:
                from ptdlib.cost.flops import FlopCounter

                counter = FlopCounter(lm)
            extra = prompt_pass_flops(
                P, counter, batch_size=policy.predictor.config.features.batch_size, chunk_size=cfg.chunk
            )
        else:
            extra = np.zeros(len(queries), dtype=np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "qid": [q.qid for q in queries],
                    "family": [q.family for q in queries],
                    "prompt_len": P,
                    "own_length": [own[q.qid] for q in queries],
                    "prediction": policy.predictor.predict_prompts(queries, lm),
                    "flops_predictor": extra,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def label_model_check(rows: pd.DataFrame, counter, cfg) -> pd.DataFrame:
    """How well the analytic model reproduces a run's rows, per arm whose cost is analytic.

    For each (split, strategy, params, recovery, seed) of ``rows`` (result rows of run config ``cfg``), with the
    arm's own canvases and the sampler settings the arm ran with (its policy's ``sampler_config`` of the run's
    sampler, as the runner builds them): ``flops_exact`` = share of rows whose ``flops_total`` the analytic replay
    (given the measured first-attempt truncation) reproduces exactly; ``truncation`` (measured) next to
    ``truncation_labels`` (own length ≥ canvas), the gap being how often the model answers differently on
    a shorter canvas. Arms whose sampler stops early (growth, ``early_stop``) or has a threshold rule, with
    ``extend`` recovery, or with a canvas edited while decoding (daedal, rho_eos: their policies have an
    ``editor``) are skipped.

    Args:
        rows: Result rows of the run (:data:`ptdlib.canvas.ROW_COLUMNS`).
        counter: The FLOP counter of the run's model.
        cfg: The run's :class:`~ptdlib.experiment.config.RunConfig`.

    Returns:
        One row per replayed arm and seed, with a short ``arm`` label.

    Raises:
        ValueError: If ``rows`` hold an arm that is not a cell of ``cfg``.
    """
    from ptdlib.analysis.overview import short_arm_labels
    from ptdlib.canvas import CanvasPolicy, get_policy_class, make_policy

    def edits(strategy: str) -> bool:
        cls = get_policy_class(strategy)
        return cls.editor is not CanvasPolicy.editor or cls.initial_canvases is not CanvasPolicy.initial_canvases

    cells = {(c.name, c.params): c for c in cfg.cells}
    online = {(c.name, c.params) for c in cfg.cells if c.online}  # served batch by batch in one chunk
    out = []
    keys = ["split", "strategy", "params", "recovery", "seed"]
    for (split, strategy, params, recovery, seed), g in rows.groupby(keys, sort=False):
        if recovery not in ANALYTIC_RECOVERIES or edits(strategy):
            continue
        if (strategy, params) not in cells:
            raise ValueError(
                f"rows of {strategy} {params} are not of a cell of the run config; its cells: "
                f"{', '.join(sorted(c.label for c in cells.values()))}"
            )
        cell = cells[strategy, params]
        sampler = make_policy(cell.name, **cell.kwargs).sampler_config(cfg.sampler)  # the arm's, as the runner's
        if sampler.stops_after_eos_block or sampler.threshold is not None:
            continue  # rows leave a batch's passes as they finish: not analytic
        g = g.sort_values("qid")
        extra = (g["flops_probe"] + g["flops_predictor"]).to_numpy()
        sim = policy_outcome(
            g["chosen_canvas"],
            g["own_length"],
            g["prompt_len"],
            counter,
            limits=cfg.limits,
            sampler=sampler,
            batch_size=cfg.batch_size,
            chunk_size=cfg.batch_size if (strategy, params) in online else cfg.chunk,
            recovery=recovery,
            truncated=g["truncated"].to_numpy(),
            extra_flops=extra,
        )
        out.append(
            {
                "split": split,
                "strategy": strategy,
                "params": params,
                "recovery": recovery,
                "seed": seed,
                "n": len(g),
                "flops_exact": float(np.mean(sim["flops_total"].to_numpy() == g["flops_total"].to_numpy())),
                "truncation": g["truncated"].mean(),
                "truncation_labels": float(np.mean(g["own_length"].to_numpy() >= g["chosen_canvas"].to_numpy())),
            }
        )
    table = pd.DataFrame(out)
    if not table.empty:
        table.insert(1, "arm", short_arm_labels(table))
    return table
