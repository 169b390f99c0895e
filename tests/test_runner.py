"""The experiment runner: config parsing, grid expansion, resumable and shardable runs, merging, summarising."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pandas as pd
import pytest
import torch
import yaml

from ptdlib.cli import summarize
from ptdlib.experiment.config import RunConfig, load_config, parse_shard, plan_chunks, shard_of
from ptdlib.experiment.results import (
    ROW_KEY,
    atomic_write,
    chunk_path,
    finished_chunks,
    load_results,
    missing_chunks,
    read_run,
)
from ptdlib.experiment.runner import Workbench, describe, run
from ptdlib.models.embedded import save_model
from ptdlib.models.spec import load_lm

SPLIT_SIZE = 8  # test queries: two chunks of four


def config_dict(model_path, **overrides) -> dict:
    """A seconds-fast grid on a tiny model: canvas 64 in blocks of 32, 8 denoising steps, 12 chunks."""
    d = {
        "model": {"path": str(model_path)},
        "sampler": {"block_length": 32, "steps": 8},
        "limits": {"max_canvas": 64, "round_to": 32},
        "splits": {"test": SPLIT_SIZE},
        "train": 16,
        "calib": 8,
        "seeds": [0],
        "batch_size": 4,
        "strategies": [
            {"name": "fixed", "params": {"L": [64, 32]}},
            {"name": "oracle"},
            {"name": "heuristic", "params": {"margin": 4}},
            {"name": "predicted", "params": {"margin": "conformal", "alpha": 0.2, "features": "text"}},
            {"name": "smartcrop", "params": {"tau": 0.9}, "recovery": "double"},
        ],
        "output": "unused",
    }
    d.update(overrides)
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model, tokenizer):
    """A saved tiny model, a private label cache (PTD_CACHE_DIR) and one CPU thread (identical numerics in
    this process and in the subprocesses)."""
    root = tmp_path_factory.mktemp("runner")
    model_dir = save_model(tiny_model, tokenizer, root / "tiny-model")
    old_cache, old_threads = os.environ.get("PTD_CACHE_DIR"), torch.get_num_threads()
    os.environ["PTD_CACHE_DIR"] = str(root / "cache")
    torch.set_num_threads(1)
    cfg_file = root / "grid.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict(model_dir), sort_keys=False))
    yield {"root": root, "model": model_dir, "config": cfg_file}
    torch.set_num_threads(old_threads)
    if old_cache is None:
        os.environ.pop("PTD_CACHE_DIR")
    else:
        os.environ["PTD_CACHE_DIR"] = old_cache


@pytest.fixture(scope="module")
def reference(env):
    """An uninterrupted run of the grid: its directory and rows."""
    out = env["root"] / "reference"
    stats = run(load_config(env["config"]), output=out, progress=False)
    assert stats.rows_written == 6 * SPLIT_SIZE and stats.rows_skipped == 0
    return out, load_results(out)


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal tables up to row order and wall time (the only column that measures the machine)."""

    def norm(df):
        return df.drop(columns=["wall_s"]).sort_values(ROW_KEY).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(a), norm(b))


# ---------------------------------------------------------------- configuration
def test_config_round_trips_through_asdict_yaml_and_toml(tmp_path):
    cfg = RunConfig.from_dict(config_dict("m", seeds=[0, 3], baseline={"name": "fixed", "params": {"L": 64}}))
    assert RunConfig.from_dict(asdict(cfg)) == cfg
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(asdict(cfg)))
    assert load_config(tmp_path / "c.yaml") == cfg
    toml = """
splits = { test = 8 }
seeds = [0, 3]
limits = { max_canvas = 64, round_to = 32 }
strategies = [ { name = "fixed", params = { L = [64, 32] } }, { name = "oracle" } ]
"""
    (tmp_path / "c.toml").write_text(toml)
    from_toml = load_config(tmp_path / "c.toml")
    assert from_toml.seeds == (0, 3) and [c.label for c in from_toml.cells] == [
        "fixed(L=64)",
        "fixed(L=32)",
        "oracle()",
    ]


def test_list_valued_params_expand_to_their_cartesian_product_in_key_order():
    cfg = RunConfig.from_dict(
        config_dict(
            "m",
            strategies=[
                {"name": "fixed", "params": {"L": 64}},
                {"name": "smartcrop", "params": {"tau": [0.5, 0.9, 0.99], "rule": ["product", "running_max"]}},
            ],
        )
    )
    crops = [json.loads(c.params) for c in cfg.cells if c.name == "smartcrop"]
    assert [(p["tau"], p["rule"]) for p in crops] == [
        (t, r) for t in (0.5, 0.9, 0.99) for r in ("product", "running_max")
    ]
    chunks = plan_chunks(cfg)
    assert len(chunks) == 7 * 2 and len({c.id for c in chunks}) == len(chunks)  # 7 cells x 2 query chunks


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sampler": {"stepz": 8}}, r"unknown key 'stepz' in sampler; allowed keys: steps, block_length"),
        ({"colour": "red"}, r"unknown key 'colour' in config; allowed keys: splits, strategies"),
        ({"strategies": [{"name": "fixed", "parms": {}}]}, r"unknown key 'parms' in strategies\[0\]"),
        ({"strategies": [{"name": "smartcrp"}]}, r"unknown canvas policy 'smartcrp'; choose from fixed, oracle"),
        ({"strategies": [{"name": "fixed", "params": {"l": 64}}]}, r"has no parameter\(s\) \['l'\]; allowed: \['L'\]"),
        ({"splits": {"tset": 8}}, r"unknown split 'tset'; choose from test, shift_length"),
        ({"splits": {"calib": 8}}, r"split 'calib' is used to fit and calibrate"),
        ({"strategies": [{"name": "oracle"}]}, r"baseline fixed\(L=64\) is not one of the strategies"),
        ({"strategies": [{"name": "fixed", "params": {"L": [64, 64]}}]}, r"repeats the cell fixed\(L=64\)"),
        ({"recovery": "retry"}, r"unknown recovery 'retry'; choose from max, double, extend, none"),
        ({"sampler": {"block_length": 24}}, r"block_length 24 must divide limits.round_to 32"),
        (
            {
                "strategies": [
                    {"name": "fixed", "params": {"L": 64}},
                    {"name": "predicted", "params": {"margin": "cost_optimal"}, "recovery": "none"},
                ]
            },
            r"strategies\[1\]: the cost-optimal margin cannot price recovery 'none'",
        ),
    ],
)
def test_bad_configs_fail_with_one_error_naming_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(config_dict("m", **change))


def test_shard_assignment_is_a_stable_partition():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1-3", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    assert shard_of("test.fixed.abc.s0.q000000-000004", 7) == 1  # a hash, not Python's salted hash()
    ids = [c.id for c in plan_chunks(RunConfig.from_dict(config_dict("m")))]
    assert sorted(i for n in range(3) for i in ids if shard_of(i, 3) == n) == sorted(ids)


# ---------------------------------------------------------------- running, resuming, merging
def test_run_writes_provenance_and_one_row_per_query_strategy_params_seed(reference):
    out, rows = reference
    info = read_run(out)
    assert set(info["packages"]) >= {"torch", "transformers", "fvcore", "numpy", "ptdlib"}
    assert info["model"]["id"] == "tiny-model" and len(info["model"]["fingerprint"]) == 16
    assert info["git"]["revision"] and info["chunks"] == 12
    assert not rows.duplicated(ROW_KEY).any() and len(rows) == 6 * SPLIT_SIZE
    assert (rows["own_length"] >= 0).all() and set(rows["recovery"]) == {"max", "double"}
    oracle = rows[rows["strategy"] == "oracle"]
    assert (oracle["chosen_canvas"] >= oracle["own_length"].clip(upper=63) + 1).all()


def test_rerun_skips_finished_chunks_and_redoes_only_missing_ones(env, reference, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "chunks").iterdir()}
    stats = run(load_config(env["config"]), output=out, progress=False)
    assert (stats.rows_written, stats.rows_skipped) == (0, 6 * SPLIT_SIZE)
    assert {p: p.stat().st_mtime_ns for p in (out / "chunks").iterdir()} == stamps
    victim = sorted(finished_chunks(out))[3]
    chunk_path(out, victim).unlink()
    stats = run(load_config(env["config"]), output=out, progress=False)
    assert (stats.rows_written, stats.chunks_written) == (4, 1)
    same_rows(load_results(out), reference[1])


def test_run_killed_with_sigkill_and_restarted_ends_with_the_rows_of_an_uninterrupted_run(env, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "ptdlib.cli",
        "run",
        str(env["config"]),
        "--output",
        str(out),
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while not finished_chunks(out):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no chunk file appeared"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = finished_chunks(out)
    assert 1 <= len(done) < 12, "the kill must land mid-way"
    stats = run(load_config(env["config"]), output=out, progress=False)
    assert stats.rows_skipped == 4 * len(done) and stats.rows_written == 4 * (12 - len(done))
    same_rows(load_results(out), reference[1])


def test_a_writer_killed_mid_write_leaves_only_an_ignored_temporary_file(reference, tmp_path, monkeypatch):
    out = tmp_path / "partial"
    (out / "chunks").mkdir(parents=True)
    (out / "run.json").write_text((reference[0] / "run.json").read_text())
    first = sorted(finished_chunks(reference[0]))[0]
    half = chunk_path(reference[0], first).read_text()[:200]
    (out / "chunks" / f".{first}.jsonl.999.deadbeef.tmp").write_text(half)  # what kill -9 mid-write leaves
    assert finished_chunks(out) == set() and load_results(out).empty
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write(out / "chunks" / "x.jsonl", half)
    assert not (out / "chunks" / "x.jsonl").exists() and len(list((out / "chunks").iterdir())) == 1


def test_shards_together_equal_the_unsharded_run_and_summarize_reports_missing_chunks(env, reference, tmp_path, capsys):
    cfg = load_config(env["config"])
    dirs = [tmp_path / "shard0", tmp_path / "shard1"]
    for i, d in enumerate(dirs):
        run(cfg, output=d, shard=(i, 2), progress=False)
    parts = [finished_chunks(d) for d in dirs]
    assert parts[0] and parts[1] and not parts[0] & parts[1] and parts[0] | parts[1] == finished_chunks(reference[0])
    assert {c.id for c in missing_chunks(dirs[0])} == parts[1]
    assert describe(cfg, dirs[0], (0, 2)).endswith(f"{len(parts[0])} already in {dirs[0]}, 0 to run (0 rows)")
    same_rows(load_results(*dirs), reference[1])

    capsys.readouterr()
    assert summarize.main([str(dirs[0])]) == 1
    err = capsys.readouterr().err
    assert f"{len(parts[1])} of 12 chunks missing" in err and sorted(parts[1])[0] in err
    assert summarize.main([str(d) for d in dirs] + ["--correction", "fdr_bh", "--latex", str(tmp_path / "t.tex")]) == 0
    shown = capsys.readouterr().out
    assert "| fixed" in shown and "Benjamini" in shown and "\\begin{tabular}" in (tmp_path / "t.tex").read_text()
    assert len(pd.read_csv(dirs[0] / "results.csv")) == 6 * SPLIT_SIZE


def test_merging_copies_that_disagree_is_an_error_and_a_different_config_is_refused(env, reference, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference[0], copy)
    one = chunk_path(copy, sorted(finished_chunks(copy))[0])
    rows = [json.loads(line) for line in one.read_text().splitlines()]
    rows[0]["wall_s"] += 1.0  # timing differs between two executions: not a disagreement
    one.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_results(reference[0], copy)) == 6 * SPLIT_SIZE
    rows[0]["score"] = 1.0 - rows[0]["score"]
    one.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="two copies of a chunk disagree"):
        load_results(reference[0], copy)

    other = RunConfig.from_dict(config_dict(env["model"], batch_size=2))
    with pytest.raises(ValueError, match=r"(?s)holds a different run.*batch_size: stored 4, now 2"):
        run(other, output=copy, progress=False)


def test_an_online_cell_is_one_chunk_per_split_so_its_stream_is_never_cut():
    cfg = RunConfig.from_dict(
        config_dict(
            "m", strategies=[{"name": "fixed", "params": {"L": 64}}, {"name": "predicted", "params": {"margin": "aci"}}]
        )
    )
    chunks = plan_chunks(cfg)
    online = [c for c in chunks if c.cell.online]
    n = sum(cfg.splits.values())
    assert [c.cell.name for c in online] == ["predicted"] * len(cfg.splits)
    assert sum(c.size for c in online) == n and all(c.start == 0 for c in online)
    assert sum(c.size for c in chunks if not c.cell.online) == n and len(chunks) > len(online) + len(cfg.splits)


def test_a_cost_optimal_margin_is_fitted_for_its_own_cells_recovery(env):
    cfg = RunConfig.from_dict(
        config_dict(
            env["model"],
            strategies=[
                {"name": "fixed", "params": {"L": 64}},
                {"name": "predicted", "params": {"margin": "cost_optimal"}},
                {"name": "predicted", "params": {"margin": "cost_optimal"}, "recovery": "extend"},
            ],
        )
    )
    bench = Workbench(load_lm(cfg.model, device="cpu"), cfg)
    rules = [bench.policy(cell).rule for cell in cfg.cells if cell.name == "predicted"]
    assert [r.recovery for r in rules] == ["max", "extend"]
