"""File sources: formats, field mapping, hash-partition splits, few-shot prompts and bad input."""

import json

import pandas as pd
import pytest
from benchdata import bench_file

from ptdlib.tasks.sources import SourceSpec, load_records, load_source, query_record, source_from_dict

ROWS = [
    {"qid": f"q{i}", "question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}. #### {2 * i}"} for i in range(40)
]
FIELDS = {"id": "qid"}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _spec(path, **kw):
    return SourceSpec("mine", "gsm8k", path=str(path), fields=FIELDS, **kw)


def test_jsonl_json_csv_and_parquet_give_the_same_queries(tmp_path):
    _jsonl(tmp_path / "q.jsonl", ROWS)
    (tmp_path / "q.json").write_text(json.dumps(ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path / "q.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "q.parquet")
    loaded = [load_source(_spec(tmp_path / f"q.{ext}")) for ext in ("jsonl", "json", "csv", "parquet")]
    strip = [{s: [(q.qid, q.prompt, q.answer) for q in qs] for s, qs in d.items()} for d in loaded]
    assert strip[0] == strip[1] == strip[2] == strip[3]
    assert sum(len(v) for v in loaded[0].values()) == 40


def test_hash_partition_is_disjoint_stable_under_reordering_and_follows_the_fractions(tmp_path):
    rows = [{"qid": f"q{i}", "question": "x?", "answer": "1"} for i in range(2000)]
    a = load_records(_spec(_jsonl(tmp_path / "a.jsonl", rows)))
    b = load_records(_spec(_jsonl(tmp_path / "b.jsonl", rows[::-1])))
    ids = {s: [r.id for r in recs] for s, recs in a.items()}
    assert ids == {s: [r.id for r in recs] for s, recs in b.items()}  # same parts, same order
    assert sum(map(len, ids.values())) == len(set().union(*map(set, ids.values()))) == 2000
    assert abs(len(ids["train"]) / 2000 - 0.6) < 0.04 and abs(len(ids["test"]) / 2000 - 0.2) < 0.03


def test_named_files_per_split_and_a_shared_file_cut_by_fractions():
    train, test = str(bench_file("gsm8k_train.jsonl")), str(bench_file("gsm8k_test.jsonl"))
    spec = SourceSpec(
        "gsm8k", "gsm8k", files={"train": train, "calib": train, "test": test}, fractions={"train": 0.9, "calib": 0.1}
    )
    parts = load_source(spec)
    assert len(parts["test"]) == 1319 and len(parts["train"]) + len(parts["calib"]) == 7473
    assert 0.08 < len(parts["calib"]) / 7473 < 0.12
    assert not {q.prompt for q in parts["train"]} & {q.prompt for q in parts["calib"]}
    assert parts["test"][0].source == "gsm8k" and parts["test"][0].family == "gsm8k"


def test_few_shot_puts_solved_train_examples_before_the_question(tmp_path):
    parts = load_source(_spec(_jsonl(tmp_path / "q.jsonl", ROWS), few_shot=2))
    q = parts["test"][0]
    shots = parts["train"][:2]
    assert q.prompt.count("Question:") == 3 and q.prompt.rstrip().endswith("Answer:")
    assert all(query_record(s).reference in q.prompt for s in shots)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="query file .*nope.jsonl does not exist"):
        load_source(_spec(tmp_path / "nope.jsonl"))


def test_missing_field_names_file_line_and_field(tmp_path):
    rows = [dict(r) for r in ROWS[:3]]
    del rows[1]["answer"]
    path = _jsonl(tmp_path / "q.jsonl", rows)
    with pytest.raises(ValueError, match=r"q\.jsonl:2: missing field 'answer' \(the reference of a gsm8k record\)"):
        load_source(_spec(path))


def test_empty_prompt_names_the_record(tmp_path):
    rows = [dict(r) for r in ROWS[:3]]
    rows[2]["question"] = "  "
    with pytest.raises(ValueError, match=r"q\.jsonl:3: record 'q2' has an empty prompt"):
        load_source(_spec(_jsonl(tmp_path / "q.jsonl", rows)))


def test_unparsable_reference_names_the_record(tmp_path):
    rows = [dict(r) for r in ROWS[:3]]
    rows[0]["answer"] = "#### many"
    with pytest.raises(ValueError, match=r"q\.jsonl:1: record 'q0': cannot parse a number"):
        load_source(_spec(_jsonl(tmp_path / "q.jsonl", rows)))


def test_repeated_ids_are_refused(tmp_path):
    rows = [ROWS[0], ROWS[0]]
    with pytest.raises(ValueError, match=r"q\.jsonl:2: record id 'q0' repeats .*q\.jsonl:1"):
        load_source(_spec(_jsonl(tmp_path / "q.jsonl", rows)))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "x", "benchmark": "mmlu", "path": "f.jsonl"}, "unknown benchmark 'mmlu'; choose from gsm8k"),
        ({"name": "x", "benchmark": "qa"}, "give path .* or files"),
        (
            {"name": "x", "benchmark": "qa", "path": "f.jsonl", "fractions": {"test": 0}},
            "fractions.test must be a positive",
        ),
        ({"name": "x", "benchmark": "qa", "path": "f.jsonl", "fractions": {"dev": 1}}, "unknown split 'dev'"),
        ({"name": "x", "benchmark": "qa", "path": "f.jsonl", "fields": {"answer": "a"}}, "unknown role 'answer'"),
        ({"name": "x", "benchmark": "qa", "path": "f.jsonl", "shots": 2}, r"unknown key\(s\) \['shots'\]"),
    ],
)
def test_bad_source_entries_name_the_value_and_the_choices(entry, message):
    with pytest.raises(ValueError, match=message):
        source_from_dict(entry)


def test_unknown_file_format_names_the_formats(tmp_path):
    (tmp_path / "q.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unknown format; use one of \.jsonl"):
        load_source(_spec(tmp_path / "q.txt"))


def test_a_learning_strategy_on_a_source_without_train_or_calib_is_refused_at_config_time(tmp_path):
    from ptdlib.experiment.config import RunConfig

    path = _jsonl(tmp_path / "qa.jsonl", [{"id": str(i), "question": f"q {i}", "answer": "a"} for i in range(4)])
    cfg = {
        "splits": {"test": 4},
        "strategies": [{"name": "fixed", "params": {"L": 128}}],
        "sources": [
            {
                "name": "qa",
                "benchmark": "qa",
                "path": str(path),
                "fractions": {"test": 1.0},
                "fields": {"prompt": "question", "reference": "answer"},
            }
        ],
    }
    RunConfig.from_dict(cfg)  # a fixed canvas learns nothing
    cfg["strategies"].append({"name": "predicted", "params": {"margin": "conformal", "alpha": 0.1}})
    with pytest.raises(ValueError, match="source 'qa' has no train or calib part, which the strategies predicted"):
        RunConfig.from_dict(cfg)
