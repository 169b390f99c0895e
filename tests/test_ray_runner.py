"""``ptd run --ray``: a grid's chunks on a local Ray instance (2 CPUs) give the serial run's rows, survive
workers that die, report chunks that keep failing, and resume with and from serial runs.

The tests that start Ray are marked ``ray`` (skip with ``-m "not ray"``): starting Ray and its worker processes
takes tens of seconds on a 2-core machine. One Ray instance serves the whole module.
"""

import json
import os

import pandas as pd
import pytest
import ray
import torch
import yaml
from conftest import save_tiny_model

from ptdlib.cli import run as run_cli
from ptdlib.experiment import ray_runner
from ptdlib.experiment.config import load_config, plan_chunks
from ptdlib.experiment.results import ROW_KEY, finished_chunks, load_results
from ptdlib.experiment.runner import run

SPLIT_SIZE = 8  # test queries: two chunks of four
CELLS = 5  # strategies below, expanded
CHUNKS = CELLS * 2


def config_dict(model_path) -> dict:
    """A seconds-fast grid with a fitted policy (shared with the workers) and the oracle (labels shared)."""
    return {
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
            {"name": "predicted", "params": {"margin": "conformal", "alpha": 0.2, "features": "text"}},
            {"name": "smartcrop", "params": {"tau": 0.9}, "recovery": "double"},
        ],
        "output": "unused",
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory, tokenizer):
    """A saved tiny model, a private label cache, one torch thread (the workers' count: identical numerics),
    a fault-injection file path, and a local Ray instance with 2 CPUs, shut down afterwards."""
    root = tmp_path_factory.mktemp("ray_runner")
    model_dir = save_tiny_model(tokenizer, root / "tiny-model")
    saved = {k: os.environ.get(k) for k in ("PTD_CACHE_DIR", ray_runner.FAULTS_ENV)}
    os.environ["PTD_CACHE_DIR"] = str(root / "cache")
    os.environ[ray_runner.FAULTS_ENV] = str(root / "faults.json")  # inherited by the workers; absent: no fault
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg_file = root / "grid.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict(model_dir), sort_keys=False))
    ray_runner.init_ray(ray_runner.LOCAL, num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield {"root": root, "config": cfg_file, "faults": root / "faults.json"}
    ray.shutdown()
    torch.set_num_threads(old_threads)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def reference(env):
    """The serial run's rows."""
    out = env["root"] / "serial"
    stats = run(load_config(env["config"]), output=out, progress=False)
    assert stats.chunks_written == CHUNKS
    return load_results(out)


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal tables up to row order and wall time; no row twice."""
    assert not a.duplicated(ROW_KEY).any() and not b.duplicated(ROW_KEY).any()

    def norm(df):
        return df.drop(columns=["wall_s"]).sort_values(ROW_KEY).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(a), norm(b))


@pytest.mark.ray
def test_a_ray_run_writes_the_serial_runs_rows_and_a_second_one_resumes_with_nothing_to_do(env, reference):
    out = env["root"] / "ray"
    stats = run(load_config(env["config"]), output=out, progress=False, ray=ray_runner.LOCAL)
    assert (stats.chunks_written, stats.rows_written, stats.failed) == (CHUNKS, CHUNKS * 4, ())
    same_rows(load_results(out), reference)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "chunks").iterdir()}
    again = run(load_config(env["config"]), output=out, progress=False, ray=ray_runner.LOCAL)
    assert (again.rows_written, again.rows_skipped) == (0, CHUNKS * 4)
    assert {p: p.stat().st_mtime_ns for p in (out / "chunks").iterdir()} == stamps


@pytest.mark.ray
def test_workers_killed_before_a_chunk_and_after_writing_one_still_give_every_row_once(env, reference):
    out = env["root"] / "killed"
    faults = [{"chunk": "*", "times": 1, "stage": "start"}, {"chunk": "*", "times": 1, "stage": "written"}]
    env["faults"].write_text(json.dumps(faults))
    try:
        stats = run(load_config(env["config"]), output=out, progress=False, ray=ray_runner.LOCAL)
        left = json.loads(env["faults"].read_text())
    finally:
        env["faults"].unlink()
    assert [f["times"] for f in left] == [0, 0], "both workers must have died"
    assert (stats.chunks_written, stats.rows_written, stats.failed) == (CHUNKS, CHUNKS * 4, ())
    assert not [p for p in (out / "chunks").iterdir() if p.name.startswith(".")], "no temporary file is left"
    same_rows(load_results(out), reference)


@pytest.mark.ray
def test_a_chunk_that_keeps_failing_is_reported_and_a_serial_run_completes_the_ray_run(
    env, reference, monkeypatch, capsys
):
    out = env["root"] / "failing"
    cfg = load_config(env["config"])
    victim = plan_chunks(cfg)[3].id
    env["faults"].write_text(json.dumps([{"chunk": victim, "times": 99, "stage": "start"}]))
    monkeypatch.setattr(ray_runner, "MAX_ATTEMPTS", 2)
    try:
        code = run_cli.main([str(env["config"]), "--output", str(out), "--no-progress", "--ray"])
        left = json.loads(env["faults"].read_text())
    finally:
        env["faults"].unlink()
    captured = capsys.readouterr()
    assert code == 1 and left[0]["times"] == 97, "the chunk gets exactly MAX_ATTEMPTS attempts"
    assert f"chunk {victim} failed 2 times" in captured.err and "1 chunks FAILED" in captured.out
    assert finished_chunks(out) == {c.id for c in plan_chunks(cfg)} - {victim}, "the rest of the run completes"
    stats = run(cfg, output=out, progress=False)
    assert (stats.chunks_written, stats.rows_skipped) == (1, (CHUNKS - 1) * 4)
    same_rows(load_results(out), reference)


@pytest.mark.ray
def test_a_serial_run_cut_short_is_completed_by_a_ray_run(env, reference):
    out = env["root"] / "half"
    cfg = load_config(env["config"])
    first = run(cfg, output=out, shard=(0, 2), progress=False)  # about half of the chunks, as a killed run leaves
    assert 0 < first.chunks_written < CHUNKS
    stats = run(cfg, output=out, progress=False, ray=ray_runner.LOCAL)
    assert stats.chunks_written == CHUNKS - first.chunks_written and stats.rows_skipped == first.rows_written
    same_rows(load_results(out), reference)


@pytest.mark.ray
def test_a_worker_whose_model_is_not_the_runs_refuses_and_the_chunk_is_reported(env, reference, tmp_path):
    from ptdlib.experiment.results import RUN_FILE
    from ptdlib.experiment.work import SharedWork

    out = tmp_path / "other-weights"
    (out / "chunks").mkdir(parents=True)
    record = json.loads((env["root"] / "serial" / RUN_FILE).read_text())
    record["model"]["fingerprint"] = "0" * 16  # the run was planned with other weights than the workers load
    (out / RUN_FILE).write_text(json.dumps(record))
    chunk = plan_chunks(load_config(env["config"]))[0]
    written, failed = ray_runner.run_on_ray(
        load_config(env["config"]), out, [chunk], SharedWork({}, {}, {}), workers=1, max_attempts=1, progress=False
    )
    assert written == 0 and [cid for cid, _ in failed] == [chunk.id]
    assert "is not the run's (fingerprint 0000000000000000)" in failed[0][1] and not finished_chunks(out)


class _Cluster:
    """A stand-in for the ``ray`` module's cluster_resources (no Ray started)."""

    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self):
        return dict(self.resources)


def test_workers_are_one_per_gpu_when_the_cluster_has_gpus_else_one_per_cpu():
    assert ray_runner.worker_slots(_Cluster(CPU=64.0, GPU=8.0)) == (8, {"num_gpus": 1, "num_cpus": 1})
    assert ray_runner.worker_slots(_Cluster(CPU=2.0)) == (2, {"num_cpus": 1})
    assert ray_runner.worker_slots(_Cluster(CPU=64.0, GPU=8.0), "cpu") == (64, {"num_cpus": 1})
    with pytest.raises(ValueError, match="--device cuda, but the Ray cluster has no GPU"):
        ray_runner.worker_slots(_Cluster(CPU=2.0), "cuda")
    with pytest.raises(ValueError, match="must be auto, cpu or cuda .* got 'cuda:1'"):
        ray_runner.worker_slots(_Cluster(CPU=2.0, GPU=1.0), "cuda:1")


@pytest.mark.ray
def test_a_model_that_does_not_load_on_a_worker_stops_the_run_with_the_loading_error(env, reference, tmp_path):
    from dataclasses import replace

    from ptdlib.experiment.results import RUN_FILE
    from ptdlib.experiment.work import SharedWork

    out = tmp_path / "no-model"
    (out / "chunks").mkdir(parents=True)
    (out / RUN_FILE).write_text((env["root"] / "serial" / RUN_FILE).read_text())
    cfg = load_config(env["config"])
    cfg = replace(cfg, model=replace(cfg.model, path=str(tmp_path / "missing-model")))  # absent on the "node"
    with pytest.raises(RuntimeError, match=r"(?s)could not load the model.*missing-model"):
        ray_runner.run_on_ray(cfg, out, plan_chunks(cfg)[:1], SharedWork({}, {}, {}), workers=1, progress=False)
    assert not finished_chunks(out)
