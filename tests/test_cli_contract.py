"""One error contract for every ``ptd`` command (issue 14, class 4): bad input exits 2 with one line
``ptd <cmd>: error: ...`` naming the bad value, without a traceback; ``--debug`` shows the traceback."""

import subprocess
import sys

import pytest

from ptdlib.cli import main as ptd
from ptdlib.cli.contract import EXIT_BAD_INPUT, EXIT_FAILED, command, one_line, split_debug


def _one_line_error(capsys, prog: str, *named: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: "), err
    for text in named:
        assert text in err, (text, err)
    return err


@pytest.mark.parametrize(
    "argv, prog, named",
    [
        (["run", "no-such-config.yaml"], "ptd run", ["no-such-config.yaml"]),
        (["run", "x.yaml", "--threads", "many"], "ptd run", ["--threads", "many"]),
        (["run", "x.yaml", "--no-such-option"], "ptd run", ["--no-such-option"]),
        (["summarize"], "ptd summarize", ["dirs"]),
        (["summarize", "no-such-run-dir"], "ptd summarize", ["no-such-run-dir"]),
        (["cost", "--boot", "many"], "ptd cost", ["--boot", "many"]),
        (["cost", "--hardware", "gpu0"], "ptd cost", ["gpu0"]),
        (["cost", "--strategy", "smartcrp"], "ptd cost", ["smartcrp"]),
        (["report", "--workers", "0"], "ptd report", ["--workers", "0"]),
        (["train-model", "--steps", "0"], "ptd train-model", ["--steps", "0"]),
        (["train-predictor", "--regressor", "magic"], "ptd train-predictor", ["magic"]),
        (["make-data", "--n", "few"], "ptd make-data", ["--n", "few"]),
        (["bench", "model", "--n", "1"], "ptd bench model", ["--n", "1"]),
        (["bench", "nope"], "ptd bench", ["nope"]),
        (["no-such-command"], "ptd", ["no-such-command"]),
    ],
)
def test_bad_input_to_every_command_exits_2_with_one_line_naming_the_value(argv, prog, named, capsys):
    assert ptd(argv) == EXIT_BAD_INPUT
    _one_line_error(capsys, prog, *named)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_bench_help_lists_every_benchmark_and_exits_0(flag, capsys):
    from ptdlib.cli.bench import BENCHES

    assert ptd(["bench", flag]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BENCHES), out


def test_debug_flag_prints_the_traceback_and_keeps_the_exit_code(capsys):
    assert ptd(["--debug", "run", "no-such-config.yaml"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ptd run: error: ")
    assert ptd(["run", "no-such-config.yaml", "--debug"]) == EXIT_BAD_INPUT
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_is_one_line_naming_the_exception_type_with_exit_1(capsys):
    @command("ptd demo")
    def broken(argv):
        raise ZeroDivisionError("division by zero")

    assert broken([]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err == "ptd demo: failed: ZeroDivisionError: division by zero (run with --debug for the traceback)"


def test_messages_of_several_lines_are_joined_on_one():
    assert one_line("first\n\n  second  \nthird") == "first; second; third"


def test_debug_is_taken_from_anywhere_before_a_double_dash():
    assert split_debug(["run", "--debug", "c.yaml"])[0] == ["run", "c.yaml"]
    assert split_debug(["run", "--", "--debug"]) == (["run", "--", "--debug"], False)


def test_the_installed_entry_point_keeps_the_contract(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ptdlib.cli", "run", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        f"ptd run: error: config file {tmp_path / 'missing.yaml'} does not exist"
    ]


@pytest.mark.parametrize(
    "argv, named",
    [
        (["cost", "--boot", "0"], ["--boot", "'0'", "positive integer"]),
        (["cost", "--prompt-mean", "nan"], ["--prompt-mean", "'nan'", "finite"]),
        (["cost", "--queries", "-3"], ["--queries", "'-3'"]),
        (["train-model", "--threads", "-1"], ["--threads", "'-1'"]),
        (["train-model", "--model", "{n_layers: 6}"], ["--model", "not valid JSON"]),
        (["train-model", "--family-weights", "[1]"], ["--family-weights", "JSON object"]),
    ],
)
def test_numbers_and_json_options_are_checked_where_they_are_parsed(argv, named, capsys):
    assert ptd(argv) == EXIT_BAD_INPUT
    _one_line_error(capsys, f"ptd {argv[0]}", *named)


def test_library_guards_name_the_value_too():
    import numpy as np

    from ptdlib.cost.pricing import bootstrap_saving
    from ptdlib.cost.workload import synthetic_workload

    with pytest.raises(ValueError, match="n_boot .* got 0"):
        bootstrap_saving(np.ones(3), np.ones(3), n_boot=0)
    with pytest.raises(ValueError, match="prompt_mean must be >= 0 and finite, got nan"):
        synthetic_workload(float("nan"), 10.0)


def test_an_unknown_device_is_named(capsys, tmp_path):
    from ptdlib.models.spec import resolve_device

    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == "cpu"


def test_a_damaged_chunk_file_is_named_by_summarize(capsys, tmp_path):
    from ptdlib.experiment.config import RunConfig, plan_chunks
    from ptdlib.experiment.results import chunk_path, open_run

    cfg = RunConfig.from_dict({"splits": {"test": 4}, "strategies": [{"name": "fixed", "params": {"L": 128}}]})
    open_run(tmp_path, cfg, "model", "fingerprint")
    chunk = chunk_path(tmp_path, plan_chunks(cfg)[0].id)
    chunk.write_text('{"qid": "test-0-000000", "strat')  # cut in the middle of a row
    assert ptd(["summarize", str(tmp_path), "--allow-missing"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ptd summarize: error: chunk file ") and chunk.name in err and "damaged" in err
