"""A notebook opens a checkpoint in the published LLaDA layout through the same model spec as `ptd run`."""

from pathlib import Path

import pytest
from hub_layouts import write_llada

papermill = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_tour_notebook_runs_on_a_hub_layout_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("PTD_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = write_llada(tmp_path / "LLaDA-tiny")
    figures = tmp_path / "figures"
    params = {
        "smoke": True,
        "model": {"path": str(model_dir), "dtype": "float32"},
        "device": "cpu",
        "figures_dir": str(figures),
    }
    nb = papermill.execute_notebook(
        str(NOTEBOOKS / "01_tour.ipynb"),
        str(tmp_path / "tour.ipynb"),
        parameters=params,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOKS),
    )
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "model LLaDA-tiny;" in printed
    assert (figures / "tour_flops.png").exists()
