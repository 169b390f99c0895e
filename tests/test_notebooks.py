"""The seven notebooks run headless (papermill, smoke mode) and reject bad parameters at their check.

They run on a tiny random model the test saves (not the shipped one, whose quality a test must not depend
on), with own-length labels cached in the test's folder, and read a small finished run the test makes.
"""

from pathlib import Path

import pytest
import torch
from conftest import save_tiny_model

papermill = pytest.importorskip("papermill")

from ptdlib.experiment.config import RunConfig  # noqa: E402
from ptdlib.experiment.runner import run  # noqa: E402
from ptdlib.models.embedded import load_embedded  # noqa: E402
from ptdlib.report.execute import declared_parameters  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: the figures each notebook must write (PNG and PDF)
FIGURES = {
    "01_tour.ipynb": ["tour_canvas_fill", "tour_fill_steps", "tour_flops"],
    "02_length_signal.ipynb": [
        "length_signal_heatmap",
        "length_signal_curves",
        "length_estimators",
        "length_estimators_groups",
        "length_estimate_scatter",
    ],
    "03_predictor.ipynb": ["predictor_estimates", "predictor_comparison", "predictor_ablation", "predictor_cost"],
    "04_margin_tradeoffs.ipynb": ["margin_tradeoff", "margin_pareto", "conformal_calibration"],
    "05_distribution_shift.ipynb": ["shift_calibration", "shift_running_miss", "shift_cost"],
    "06_quality_significance.ipynb": ["quality_forest", "quality_vs_flops", "quality_by_family"],
    "07_deployment_cost.ipynb": ["deployment_cost", "deployment_sensitivity"],
}
#: a parameter each notebook must refuse at its parameters check, and the message it must give
BAD = {
    "01_tour.ipynb": ({"rule": "sum"}, "'rule' must be one of ['running_max', 'product'], got 'sum'"),
    "02_length_signal.ipynb": ({"taus": [0.5, 1.5]}, "'taus[1]' must be in [1e-06, 1], got 1.5"),
    "03_predictor.ipynb": ({"n_test": "all"}, "'n_test' must be an integer, got 'all' (a string)"),
    "04_margin_tradeoffs.ipynb": ({"n_margins": 1}, "'n_margins' must be in [2, 10000], got 1"),
    "05_distribution_shift.ipynb": ({"stream_order": ["test", "shift_lenght"]}, "'stream_order' must be one of"),
    "06_quality_significance.ipynb": ({"correction": "bonferroni"}, "'correction' must be one of ['holm', 'fdr_bh']"),
    "07_deployment_cost.ipynb": ({"mfu": 1.5}, "'mfu' must be in [0.001, 1], got 1.5"),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tokenizer):
    """A tiny model saved to disk, a small finished run of it, and a label cache in the test's folder."""
    root = tmp_path_factory.mktemp("nb")
    mp = pytest.MonkeyPatch()
    mp.setenv("PTD_CACHE_DIR", str(root / "cache"))  # the kernels inherit it
    model_dir = save_tiny_model(tokenizer, root / "tiny-model")
    cfg = RunConfig.from_dict(
        {
            "model": {"path": str(model_dir)},
            "splits": {"test": 8},
            "train": 16,
            "calib": 12,
            "batch_size": 4,
            "limits": {"max_canvas": 64, "round_to": 32},
            "sampler": {"block_length": 32},
            "strategies": [
                {"name": "fixed", "params": {"L": [64, 32]}},
                {"name": "oracle"},
                {"name": "predicted", "params": {"margin": "conformal", "alpha": [0.1, 0.3]}},
                {"name": "smartcrop", "params": {"tau": 0.9}},
                {"name": "growth", "params": {"block": 32}},
            ],
            "output": str(root / "run"),
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, lm=load_embedded(model_dir), progress=False)
    finally:
        torch.set_num_threads(threads)
    yield {"model": str(model_dir), "results": str(root / "run")}
    mp.undo()


def _execute(env, name, tmp_path, **params):
    figures = tmp_path / "figures"
    base = {"smoke": True, "model": {"path": env["model"]}, "results_dir": env["results"], "figures_dir": str(figures)}
    declared = declared_parameters(NOTEBOOKS / name)
    given = {k: v for k, v in {**base, **params}.items() if k in declared}
    nb = papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(tmp_path / name),
        parameters=given,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOKS),
    )
    return figures, nb


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_in_smoke_mode_and_writes_its_figures(env, name, tmp_path):
    figures, nb = _execute(env, name, tmp_path)
    for stem in FIGURES[name]:
        for ext in ("png", "pdf"):
            path = figures / f"{stem}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, f"{name} did not write {path.name}"
    if name.startswith("07"):  # the run exists, so the predicted and smartcrop canvases are carried over
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert "behaviour MEASURED on the embedded model" in text


@pytest.mark.parametrize("name", sorted(BAD))
def test_notebook_rejects_a_bad_parameter_at_its_parameters_check(env, name, tmp_path):
    params, message = BAD[name]
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _execute(env, name, tmp_path, **params)
    assert "ParameterError" in str(err.value) and message in str(err.value)
    assert not (tmp_path / "figures").exists()  # it stopped before computing anything


def test_notebooks_are_committed_without_outputs_and_with_one_parameters_cell():
    import nbformat

    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FIGURES)
    for name in FIGURES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
        assert "smoke = False" in tagged[0].source and "figures_dir = None" in tagged[0].source
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        assert nb.metadata["kernelspec"]["name"] == "python3"
