"""`ptd report --smoke` end to end into temporary folders: grid, tables, a notebook, the page and its numbers."""

import re

import pandas as pd
import pytest
import torch

pytest.importorskip("papermill")

from ptdlib import report  # noqa: E402
from ptdlib.analysis.overview import strategy_overview  # noqa: E402
from ptdlib.cli.report import main as report_main  # noqa: E402
from ptdlib.experiment.results import load_results  # noqa: E402
from ptdlib.models.embedded import build_model, save_model  # noqa: E402
from ptdlib.report.workers import label_jobs  # noqa: E402
from ptdlib.stats.summary import Baseline, summary_table, to_markdown  # noqa: E402

TINY = dict(d_model=32, n_layers=2, n_heads=2, mlp_hidden=64)
EOS_BOOST = 3.0  # scales the EOS row of the random head so that answers end at varied lengths


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, tokenizer):
    """One smoke report of a tiny model (grid + notebook 06), run once for the module."""
    root = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    mp.setenv("PTD_CACHE_DIR", str(root / "cache"))
    torch.manual_seed(0)
    model = build_model(tokenizer, **TINY).eval()
    model.lm_head.weight.data[tokenizer.eos_token_id] *= EOS_BOOST
    model_dir = save_model(model, tokenizer, root / "tiny-model")
    out = root / "out"
    code = report_main(["--smoke", "--model", str(model_dir), "--out", str(out), "--notebooks", "06", "--workers", "2"])
    yield {"code": code, "out": out, "model": model_dir, "root": root}
    mp.undo()


def test_smoke_report_writes_page_tables_figures_and_executed_notebook(smoke_report, capsys):
    out = smoke_report["out"]
    assert smoke_report["code"] == 0
    page = (out / "REPORT.md").read_text()
    assert (out / "notebooks" / "06_quality_significance.ipynb").exists()
    for stem in ("quality_forest", "quality_vs_flops", "quality_by_family"):
        assert (out / "figures" / f"{stem}.png").exists()
        assert f"![{stem}](figures/{stem}.png)" in page  # linked relative to the page
    for name in ("summary.csv", "overview.csv", "summary.md", "overview.md"):
        assert (out / "tables" / name).exists()
    assert "tiny-model" in page and "smoke run" in page


def test_numbers_on_the_page_are_those_of_the_result_rows(smoke_report):
    out = smoke_report["out"]
    page = (out / "REPORT.md").read_text()
    rows = load_results(out / "runs")
    assert len(rows) == 13 * report.SMOKE_QUERIES  # every cell of configs/report.yaml on the smoke test split
    ov = strategy_overview(rows, 128).set_index("arm")
    for arm, r in ov.iterrows():
        line = next(line for line in page.splitlines() if line.startswith("|") and f"| {arm} " in line)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[4] == f"{r['flops_vs_fixed']:.2f}" and cells[5] == f"{r['flops_vs_oracle']:.2f}"
        assert cells[6] == f"{100 * r['truncation']:.1f}" and cells[7] == f"{100 * r['rerun_rate']:.1f}"
        assert cells[9] == f"{100 * r['score']:.1f}"
    # the summary on the page is the one recomputed from the stored rows
    table = summary_table(rows, Baseline("fixed", {"L": 128}), correction="holm", n_resamples=report.SMOKE_RESAMPLES)
    assert to_markdown(table).strip() in page
    assert re.search(rf"results: `runs` \({len(rows)} rows\)", page)


def test_rerunning_the_report_reuses_the_finished_rows(smoke_report, capsys):
    out = smoke_report["out"]
    before = load_results(out / "runs")
    code = report_main(
        ["--smoke", "--model", str(smoke_report["model"]), "--out", str(out), "--notebooks", "none", "--workers", "1"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "0 rows written" in printed and f"{len(before)} rows skipped" in printed
    pd.testing.assert_frame_equal(load_results(out / "runs").drop(columns="wall_s"), before.drop(columns="wall_s"))


def test_bad_options_fail_with_a_clear_message(tmp_path, capsys):
    assert report_main(["--smoke", "--out", str(tmp_path), "--notebooks", "04,99"]) == 2
    assert "no notebook numbered 99" in capsys.readouterr().err
    assert report_main(["--smoke", "--out", str(tmp_path), "--skip-grid", "--notebooks", "none"]) == 2
    assert "is not a run directory: it has no run.json" in capsys.readouterr().err


def test_notebook_selection_by_number():
    names = [p.name[:2] for p in report.select_notebooks("4, 06")]
    assert names == ["04", "06"]
    assert report.select_notebooks("none") == []
    every = [p.name[:2] for p in report.select_notebooks(None)]
    assert every == sorted(every) and {"04", "05", "06"} <= set(every)


def test_key_numbers_quote_the_summary_table(smoke_report):
    out = smoke_report["out"]
    page = (out / "REPORT.md").read_text()
    summary = pd.read_csv(out / "tables" / "summary.csv")
    line = next(line for line in page.splitlines() if "largest saving" in line or "every deployable" in line)
    if "largest saving" in line:
        saved = float(re.search(r"\*\*: ([-\d.]+) % of the FLOPs saved", line).group(1))
        assert any(abs(saved - v) < 0.051 for v in summary["flops_saved_pct"].dropna())


def test_label_pieces_cover_every_query_the_grid_labels_once():
    cfg = report.report_config(report.DEFAULT_CONFIG, smoke=False, model=None, results=report.DEFAULT_RESULTS)
    jobs = label_jobs(cfg, workers=3)
    covered = {}
    for split, _n, start, stop in jobs:
        covered.setdefault(split, []).extend(range(start, stop))
    expected = {"train": cfg.train, "calib": cfg.calib, **cfg.splits}
    assert {s: sorted(v) for s, v in covered.items()} == {s: list(range(n)) for s, n in expected.items()}
