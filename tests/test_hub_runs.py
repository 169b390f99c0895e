"""`ptd run` on checkpoint directories in the published LLaDA and Dream layouts (no .py files): the grid runs end
to end, and its rows do not depend on the batch size."""

import os

import pandas as pd
import pytest
import torch
from hub_layouts import write_dream, write_llada

from ptdlib.experiment.config import RunConfig
from ptdlib.experiment.results import ROW_KEY, load_results
from ptdlib.experiment.runner import run

SPLIT_SIZE = 6


def grid(model_dir, batch_size: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"path": str(model_dir)},
            "sampler": {"block_length": 8},  # S = L
            "limits": {"max_canvas": 32, "round_to": 8},
            "splits": {"test": SPLIT_SIZE},
            "train": 12,
            "calib": 6,
            "seeds": [0],
            "batch_size": batch_size,
            "strategies": [
                {"name": "fixed", "params": {"L": [32, 16]}},
                {"name": "oracle"},
                {"name": "smartcrop", "params": {"tau": 0.9}},
                {"name": "predicted", "params": {"margin": "conformal", "alpha": 0.2, "features": "text"}},
                {"name": "growth", "params": {"block": 8}},
            ],
            "output": "unused",
        }
    )


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubruns")
    old_cache, old_threads = os.environ.get("PTD_CACHE_DIR"), torch.get_num_threads()
    os.environ["PTD_CACHE_DIR"] = str(root / "cache")
    torch.set_num_threads(1)
    yield root
    torch.set_num_threads(old_threads)
    if old_cache is None:
        os.environ.pop("PTD_CACHE_DIR")
    else:
        os.environ["PTD_CACHE_DIR"] = old_cache


def _rows(root, model_dir, batch_size):
    out = root / f"{model_dir.name}-b{batch_size}"
    stats = run(grid(model_dir, batch_size), output=out, progress=False)
    assert stats.rows_written == 6 * SPLIT_SIZE
    return load_results(out).sort_values(ROW_KEY).reset_index(drop=True)


@pytest.mark.parametrize("write", [write_llada, write_dream], ids=["llada", "dream"])
def test_grid_on_a_published_layout_runs_and_rows_do_not_depend_on_batch_size(hub_env, write):
    model_dir = write(hub_env / write.__name__.removeprefix("write_"))
    one, eight = _rows(hub_env, model_dir, 1), _rows(hub_env, model_dir, 8)
    assert set(one["strategy"]) == {"fixed", "oracle", "smartcrop", "predicted", "growth"}
    assert one["flops_total"].gt(0).all()
    # what the model produced; FLOPs are priced on the padded batch, so they may differ with the batch size
    same = [
        "response",
        "length",
        "truncated",
        "truncated_final",
        "score",
        "own_length",
        "chosen_canvas",
        "final_canvas",
    ]
    pd.testing.assert_frame_equal(one[ROW_KEY + same], eight[ROW_KEY + same])
