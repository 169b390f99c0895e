"""What the result notebooks read of a finished run, and notebook 7's choice between measured and synthetic
behaviour, on a small run of the tiny model made here."""

import pytest
import torch

from ptdlib.analysis.deployment import Behaviour, choose_behaviour, measured_arms
from ptdlib.analysis.finished_run import find_run, load_finished_run
from ptdlib.cost.workload import StrategyParams
from ptdlib.experiment.config import RunConfig
from ptdlib.experiment.runner import run


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_lm):
    """A run of the tiny model: fixed, oracle and smartcrop on 4 test queries at canvases of up to 32."""
    root = tmp_path_factory.mktemp("finished")
    mp = pytest.MonkeyPatch()
    mp.setenv("PTD_CACHE_DIR", str(root / "cache"))
    cfg = RunConfig.from_dict(
        {
            "splits": {"test": 4},
            "train": 2,
            "calib": 2,
            "batch_size": 4,
            "sampler": {"block_length": 8},
            "limits": {"max_canvas": 32, "round_to": 8},
            "output": str(root / "run"),
            "strategies": [
                {"name": "fixed", "params": {"L": 32}},
                {"name": "oracle"},
                {"name": "smartcrop", "params": {"tau": 0.9}},
            ],
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, lm=tiny_lm, progress=False)
    finally:
        torch.set_num_threads(threads)
    yield root / "run", cfg
    mp.undo()


def test_find_run_takes_an_absolute_or_working_directory_folder_and_none_without_a_run(finished, tmp_path, monkeypatch):
    folder, _ = finished
    assert find_run(folder) == folder and find_run(str(folder)) == folder
    monkeypatch.chdir(folder.parent)
    assert find_run(folder.name) == folder.relative_to(folder.parent)
    assert find_run(tmp_path) is None and find_run("no/such/run/here") is None


def test_load_finished_run_reads_rows_config_and_batching_without_a_model(finished):
    folder, cfg = finished
    loaded = load_finished_run(folder, split="test")
    assert loaded.config == RunConfig.from_dict(loaded.record["config"])
    assert loaded.config.strategies == cfg.strategies and loaded.lm is None and loaded.counter is None
    assert len(loaded.rows) == 3 * 4 and set(loaded.rows["strategy"]) == {"fixed", "oracle", "smartcrop"}
    assert loaded.batching == {"limits": cfg.limits, "sampler": cfg.sampler, "batch_size": 4, "chunk_size": 4}


def test_load_finished_run_names_a_missing_run_and_a_split_the_run_did_not_evaluate(finished, tmp_path):
    folder, _ = finished
    with pytest.raises(FileNotFoundError, match="no run in .*run `ptd report`"):
        load_finished_run(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"split 'shift_length' was not evaluated by the run; it has \['test'\]"):
        load_finished_run(folder, split="shift_length")


def test_behaviour_is_measured_from_the_run_when_asked_and_synthetic_otherwise_with_the_reason(finished, tmp_path):
    folder, _ = finished
    measured = choose_behaviour(str(folder))
    assert list(measured.measured) == ["smartcrop"]  # the run has no predicted rows
    assert measured.note.startswith(f"result table {folder} (12 rows of model ")
    text = measured.describe(StrategyParams())
    assert text.startswith("predicted/smartcrop behaviour MEASURED on the embedded model: result table")
    assert "\n  smartcrop " in text and "4 queries" in text
    reasons = {None: "results_dir is None", str(tmp_path): f"no result table at {tmp_path}"}
    for results_dir, reason in reasons.items():
        synthetic = choose_behaviour(results_dir)
        assert synthetic.measured == {} and reason in synthetic.note
    off = choose_behaviour(str(folder), carry_over=False)
    assert off == Behaviour({}, "carry_over is False")
    assert off.describe(StrategyParams(margin=0.2, length_error=0.15)) == (
        "predicted/smartcrop behaviour SYNTHETIC (carry_over is False): estimate error sigma 0.15, margin 20%"
    )


def test_behaviour_carries_the_arms_measured_arms_keeps(finished):
    folder, cfg = finished
    loaded = load_finished_run(folder)
    want = measured_arms(loaded.rows, round_to=cfg.limits.round_to)["smartcrop"]
    got = choose_behaviour(str(folder)).measured["smartcrop"]
    assert got.params == want.params and (got.canvas_ratio == want.canvas_ratio).all()
