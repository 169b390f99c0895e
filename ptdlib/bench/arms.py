"""Strategy arms across models and KV-cache modes (``ptd bench strategies --models ... --caches ...``).

An *arm* is (model, policy, cache mode), named ``model/policy/cache``, e.g. ``ptd-tiny-var/growth-window/nocache``.
Each (model, cache mode) pair is one resumable run of :data:`ARM_GRID` (one run directory each); the arms are
compared on the same test queries:

* FLOPs relative to the same model's **uncached** oracle (so a cache's saving shows in the ratio), and to its
  uncached fixed 128;
* truncation before recovery, score, wall seconds per query;
* the quality change against the same model's uncached fixed 128: mean score difference and a paired test
  (exact McNemar for binary scores, else a sign-flip test), with Holm's correction over the arms;
* the ``animals`` validity (random-length answers: the premature-EOS failure) and the exact match of the
  length-follows-prompt families.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

#: The policies every (model, cache) run holds (issue 15): fixed 128, oracle, SmartCrop, predicted, and EOS-led
#: growth on dLLM-Var's growing window and on the full canvas.
ARM_GRID = [
    {"name": "fixed", "params": {"L": 128}},
    {"name": "oracle"},
    {"name": "smartcrop", "params": {"tau": 0.9, "rule": "running_max"}},
    {"name": "predicted", "params": {"margin": "conformal", "alpha": 0.1}},
    {"name": "growth", "params": {"block": 32, "window": "growing"}},
    {"name": "growth", "params": {"block": 32, "window": "full"}},
]

#: Named grids: ``full`` (:data:`ARM_GRID`) and ``core``, without the predictor (whose train and calib labelling
#: runs cost more than the other arms together on a small CPU).
ARM_GRIDS = {"full": ARM_GRID, "core": [g for g in ARM_GRID if g["name"] != "predicted"]}

#: Cache mode -> its name in an arm.
CACHE_NAMES = {"none": "nocache", "prefix": "prefix", "dual": "dual"}
#: The family whose answers have a random length (validity score) and the group whose length follows the prompt.
RANDOM_FAMILY, FOLLOWS_GROUP = "animals", "follows"


def policy_name(strategy: str, params: dict) -> str:
    """Short policy name of an arm: ``fixed-128``, ``oracle``, ``growth-window``, ``growth-full``, ``smartcrop-0.9``..."""
    if strategy == "growth":
        return "growth-window" if params.get("window", "growing") == "growing" else "growth-full"
    if strategy == "fixed":
        return f"fixed-{params['L']}"
    if strategy == "smartcrop":
        return f"smartcrop-{params['tau']}"
    if strategy == "predicted":
        alpha = f"-{params['alpha']}" if "alpha" in params else ""
        return f"predicted-{params.get('margin', '')}{alpha}"
    return strategy


def model_name(path: str) -> str:
    """The arm's model name: the directory name, or ``ptd-tiny`` for the embedded default."""
    from ptdlib.models.embedded import DEFAULT_MODEL_NAME

    return DEFAULT_MODEL_NAME if path in ("embedded", "") else Path(path).name


def run_dir(out: str | Path, model: str, cache: str) -> Path:
    return Path(out) / model_name(model) / CACHE_NAMES[cache]


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[str, float]:
    from ptdlib.stats.paired import is_binary, mcnemar_exact, sign_flip_test

    if np.array_equal(x, y):
        return "identical", 1.0
    if is_binary(x) and is_binary(y):
        return "mcnemar_exact", mcnemar_exact(x, y).p_value
    return "sign_flip", sign_flip_test(x, y).p_value


def summarise_arms(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per arm (``model/policy/cache``) from result rows carrying ``model`` and ``cache`` columns."""
    from ptdlib.stats.paired import adjust_pvalues
    from ptdlib.tasks import get_family

    rows = rows.assign(policy=[policy_name(s, json.loads(p)) for s, p in zip(rows["strategy"], rows["params"])])
    rows = rows.assign(
        arm=rows["model"] + "/" + rows["policy"] + "/" + rows["cache"],
        group=[get_family(f).group for f in rows["family"]],
    )
    lines = []
    for arm, g in rows.groupby("arm", sort=False):
        model = g["model"].iloc[0]
        ref = rows[(rows["model"] == model) & (rows["cache"] == CACHE_NAMES["none"])]
        oracle = ref[ref["policy"] == "oracle"]["flops_total"].mean()
        fixed = ref[ref["policy"] == "fixed-128"].set_index("qid")
        paired = fixed.loc[g["qid"]]
        is_reference = g["policy"].iloc[0] == "fixed-128" and g["cache"].iloc[0] == CACHE_NAMES["none"]
        test, p = (
            ("reference", np.nan)
            if is_reference
            else _paired(g["score"].to_numpy(float), paired["score"].to_numpy(float))
        )
        animals = g[g["family"] == RANDOM_FAMILY]["score"]
        follows = g[g["group"] == FOLLOWS_GROUP]["score"]
        lines.append(
            {
                "arm": arm,
                "n": len(g),
                "flops_vs_oracle": g["flops_total"].mean() / oracle,
                "flops_vs_fixed": g["flops_total"].mean() / fixed["flops_total"].mean(),
                "truncation": g["truncated"].mean(),
                "final_truncation": g["truncated_final"].mean(),
                "score": g["score"].mean(),
                "delta_vs_fixed": g["score"].mean() - paired["score"].mean(),
                "test": test,
                "p_value": p,
                "wall_s": g["wall_s"].mean(),
                "passes": g["forward_passes"].mean(),
                "animals_validity": animals.mean() if len(animals) else np.nan,
                "follows_exact_match": follows.mean() if len(follows) else np.nan,
            }
        )
    table = pd.DataFrame(lines).set_index("arm")
    table["p_holm"] = adjust_pvalues(table["p_value"].to_numpy(), "holm")
    return table


def run_arms(
    models: list[str],
    caches: list[str],
    out: str | Path,
    *,
    n_test: int,
    n_train: int,
    n_calib: int,
    grid: str = "full",
    batch_size: int | None = None,
) -> tuple[pd.DataFrame, float]:
    """Run grid ``grid`` of :data:`ARM_GRIDS` for every (model, cache mode).

    Each model's uncached run is always included (the reference of every ratio and test).

    Returns:
        All result rows, with ``model`` and ``cache`` columns, and the seconds spent.
    """
    from ptdlib.experiment.config import RunConfig
    from ptdlib.experiment.results import load_results
    from ptdlib.experiment.runner import run
    from ptdlib.sampling.kvcache import check_cache_mode

    for c in caches:
        check_cache_mode(c)
    if grid not in ARM_GRIDS:
        raise ValueError(f"unknown arm grid {grid!r}; choose from {', '.join(ARM_GRIDS)}")
    modes = ["none"] + [c for c in caches if c != "none"]
    frames, seconds = [], 0.0
    for model in models:
        for cache in modes:
            where = run_dir(out, model, cache)
            spec = {
                "model": {"path": model},
                "splits": {"test": n_test},
                "train": n_train,
                "calib": n_calib,
                "strategies": ARM_GRIDS[grid],
                "sampler": {"cache": cache},
                "output": str(where),
            }
            if batch_size:
                spec["batch_size"] = batch_size
            stats = run(RunConfig.from_dict(spec))
            seconds += stats.seconds
            frames.append(load_results(where).assign(model=model_name(model), cache=CACHE_NAMES[cache]))
    return pd.concat(frames, ignore_index=True), seconds
