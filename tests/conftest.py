"""Shared fixtures: tiny randomly initialised models the tests build themselves (no downloads)."""

import pytest
import torch

from ptdlib.cost.flops import FlopCounter
from ptdlib.models.embedded import build_model, embedded_lm
from ptdlib.models.tokenizer import build_tokenizer

# Tiny models gain nothing from several threads, and on a busy 2-core machine threads contend badly.
torch.set_num_threads(1)

TINY = dict(d_model=32, n_layers=2, n_heads=2, mlp_hidden=64)  # seconds-fast, same architecture

# The slow tests (5 s to minutes each in a full run on 2 cores): notebooks executed with papermill, the smoke
# report, whole grids run end to end (in-process or as a `ptd run` subprocess) and the Ray runs. `make test` runs
# everything; `pytest -m "not slow"` is the quick loop.
SLOW_TESTS = {
    "test_notebooks.py::test_notebook_runs_in_smoke_mode_and_writes_its_figures",
    "test_notebooks.py::test_notebook_rejects_a_bad_parameter_at_its_parameters_check",
    "test_hub_notebook.py::test_tour_notebook_runs_on_a_hub_layout_checkpoint",
    "test_hub_runs.py::test_grid_on_a_published_layout_runs_and_rows_do_not_depend_on_batch_size",
    "test_workloads_e2e.py::test_shrunk_benchmark_config_runs_end_to_end_on_a_subword_checkpoint",
    "test_runner.py::test_run_killed_with_sigkill_and_restarted_ends_with_the_rows_of_an_uninterrupted_run",
}
SLOW_FIXTURES = {"smoke_report"}  # builds the whole smoke report (`ptd report --smoke`) once per module


def pytest_collection_modifyitems(items):
    """Mark as ``slow`` the tests named in SLOW_TESTS, those using a SLOW_FIXTURES fixture and the Ray tests."""
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        uses_slow_fixture = bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
        if name in SLOW_TESTS or uses_slow_fixture or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    torch.manual_seed(0)
    return build_model(tokenizer, **TINY).eval()


@pytest.fixture(scope="session")
def tiny_lm(tiny_model, tokenizer):
    """The embedded architecture at a tiny size behind the DiffusionLM interface."""
    return embedded_lm(tiny_model, tokenizer, model_id="tiny-test")


@pytest.fixture(scope="module")
def counter(tiny_lm):
    """A FLOP counter (fvcore) on the tiny model, one per test module."""
    return FlopCounter(tiny_lm)


EOS_BOOST = 3.0  # scales the EOS row of the random head so that answers end at varied lengths


def save_tiny_model(tokenizer, directory):
    """Save a seeded tiny model whose answers end at varied lengths (for runs and notebooks on disk)."""
    from ptdlib.models.embedded import save_model

    torch.manual_seed(0)
    model = build_model(tokenizer, **TINY).eval()
    model.lm_head.weight.data[tokenizer.eos_token_id] *= EOS_BOOST
    return save_model(model, tokenizer, directory)
