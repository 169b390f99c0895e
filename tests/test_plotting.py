"""The one save function: both formats, the right folder, and only bare figure names."""

import matplotlib.pyplot as plt
import pytest

from ptdlib.analysis import plotting


@pytest.fixture
def fig():
    plotting.use_style()
    figure, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], [1, 0, 2])
    yield figure
    plt.close(figure)


def test_save_writes_png_and_pdf_and_returns_their_paths(fig, tmp_path):
    paths = plotting.save(fig, "margin_tradeoff", figures_dir=tmp_path)
    assert paths == [tmp_path / "margin_tradeoff.png", tmp_path / "margin_tradeoff.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")


def test_save_goes_to_the_environment_folder_unless_told_otherwise(fig, tmp_path, monkeypatch):
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path / "smoke"))
    assert plotting.save(fig, "a")[0].parent == tmp_path / "smoke"
    assert plotting.save(fig, "b", figures_dir=tmp_path)[0].parent == tmp_path


def test_default_folder_is_the_repository_figures(monkeypatch):
    monkeypatch.delenv(plotting.FIGURES_ENV, raising=False)
    assert plotting.resolve_figures_dir() == plotting.REPO_FIGURES
    assert (plotting.REPO_FIGURES.parent / "pyproject.toml").exists()


def test_saving_an_unchanged_figure_twice_gives_identical_pdfs(fig, tmp_path):
    first = plotting.save(fig, "same", figures_dir=tmp_path / "1")[1].read_bytes()
    assert plotting.save(fig, "same", figures_dir=tmp_path / "2")[1].read_bytes() == first


@pytest.mark.parametrize("name", ["sub/fig", "..\\fig", "../fig", "", "fig.png", "fig.pdf", ".hidden", "a b"])
def test_save_rejects_names_that_are_not_bare_stems(fig, tmp_path, name):
    with pytest.raises(ValueError, match="figure name must be a bare stem"):
        plotting.save(fig, name, figures_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_use_style_sets_the_project_theme():
    plotting.use_style()
    assert plt.rcParams["axes.grid"] and plt.rcParams["savefig.bbox"] == "tight"
