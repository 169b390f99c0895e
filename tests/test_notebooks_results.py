"""Notebooks 04-06 run headless (papermill, smoke mode) on a small run the test makes, and reject bad parameters."""

from pathlib import Path

import pytest

from conftest import save_tiny_model
import torch

papermill = pytest.importorskip("papermill")


from ptdlib.models.embedded_lm import load_embedded  # noqa: E402
from ptdlib.runconfig import RunConfig  # noqa: E402
from ptdlib.runner import run  # noqa: E402
from ptdlib.report import declared_parameters  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: the figures each notebook must write (PNG and PDF)
FIGURES = {
    "04_margin_tradeoffs.ipynb": ["margin_tradeoff", "margin_pareto", "conformal_calibration"],
    "05_distribution_shift.ipynb": ["shift_calibration", "shift_running_miss", "shift_cost"],
    "06_quality_significance.ipynb": ["quality_forest", "quality_vs_flops", "quality_by_family"],
}
#: a parameter each notebook must refuse at its parameters check, and the message it must give
BAD = {
    "04_margin_tradeoffs.ipynb": ({"n_margins": 1}, "'n_margins' must be in [2, 10000], got 1"),
    "05_distribution_shift.ipynb": ({"stream_order": ["test", "shift_lenght"]}, "'stream_order' must be one of"),
    "06_quality_significance.ipynb": ({"correction": "bonferroni"}, "'correction' must be one of ['holm', 'fdr_bh']"),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tokenizer):
    """A tiny model saved to disk and a small finished run of it; labels cached in the test's folder."""
    root = tmp_path_factory.mktemp("nb")
    mp = pytest.MonkeyPatch()
    mp.setenv("PTD_CACHE_DIR", str(root / "cache"))  # the kernels inherit it
    model_dir = save_tiny_model(tokenizer, root / "tiny-model")
    cfg = RunConfig.from_dict({
        "model": {"path": str(model_dir)}, "splits": {"test": 8}, "train": 16, "calib": 12, "batch_size": 4,
        "limits": {"max_canvas": 64, "round_to": 32}, "sampler": {"block_length": 32},
        "strategies": [{"name": "fixed", "params": {"L": [64, 32]}}, {"name": "oracle"},
                       {"name": "predicted", "params": {"margin": "conformal", "alpha": [0.1, 0.3]}},
                       {"name": "smartcrop", "params": {"tau": 0.9}}, {"name": "growth", "params": {"block": 32}}],
        "output": str(root / "run"),
    })
    run(cfg, lm=load_embedded(model_dir), progress=False)
    yield {"root": root, "model": str(model_dir), "results": str(root / "run")}
    mp.undo()


def _execute(env, name, tmp_path, **params):
    figures = tmp_path / "figures"
    base = {"smoke": True, "model_path": env["model"], "results_dir": env["results"], "figures_dir": str(figures)}
    declared = declared_parameters(NOTEBOOKS / name)
    given = {k: v for k, v in {**base, **params}.items() if k in declared}
    papermill.execute_notebook(str(NOTEBOOKS / name), str(tmp_path / name), parameters=given, kernel_name="python3",
                               progress_bar=False, cwd=str(NOTEBOOKS))
    return figures


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_in_smoke_mode_and_writes_its_figures(env, name, tmp_path):
    figures = _execute(env, name, tmp_path)
    for stem in FIGURES[name]:
        for ext in ("png", "pdf"):
            path = figures / f"{stem}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, f"{name} did not write {path.name}"


@pytest.mark.parametrize("name", sorted(BAD))
def test_notebook_rejects_a_bad_parameter_at_its_parameters_check(env, name, tmp_path):
    params, message = BAD[name]
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _execute(env, name, tmp_path, **params)
    assert "ParameterError" in str(err.value) and message in str(err.value)
    assert not (tmp_path / "figures").exists()  # it stopped before computing anything


def test_notebooks_are_committed_without_outputs():
    import nbformat

    for name in FIGURES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        assert nb.metadata["kernelspec"]["name"] == "python3"
