"""Scorer truths on the real benchmark data, hand-written IFEval cases, and the code-execution opt-in."""

import random
import re
from decimal import Decimal

import pytest
from benchdata import bench_file

from ptdlib.tasks import score_responses
from ptdlib.tasks.benchmarks import CodeExecutionRefused, Record, get_benchmark
from ptdlib.tasks.benchmarks.gsm8k import extract_answer, reference_answer
from ptdlib.tasks.sources import SourceSpec, load_source, query_record


@pytest.fixture(scope="module")
def gsm8k_test():
    return load_source(SourceSpec("gsm8k", "gsm8k", path=str(bench_file("gsm8k_test.jsonl")), fractions={"test": 1}))[
        "test"
    ]


@pytest.fixture(scope="module")
def humaneval():
    return load_source(SourceSpec("humaneval", "humaneval", fractions={"test": 1}))["test"]


@pytest.fixture(scope="module")
def ifeval():
    return load_source(
        SourceSpec("ifeval", "ifeval", path=str(bench_file("ifeval_input_data.jsonl")), fractions={"test": 1})
    )["test"]


# ---------------------------------------------------------------- GSM8K
def test_every_gsm8k_reference_solution_scores_one(gsm8k_test):
    assert len(gsm8k_test) == 1319
    scores = score_responses(gsm8k_test, [q.answer for q in gsm8k_test])
    assert sum(s["score"] for s in scores) == 1319 and {s["metric"] for s in scores} == {"accuracy"}


def test_gsm8k_solution_with_its_final_number_changed_scores_zero(gsm8k_test):
    def bump(solution):
        head, number = solution.rsplit("####", 1)
        return f"{head}#### {reference_answer(solution) + 1}"

    scores = score_responses(gsm8k_test, [bump(q.answer) for q in gsm8k_test])
    assert sum(s["score"] for s in scores) == 0


@pytest.mark.parametrize(
    "text, value",
    [
        ("so she pays $1,000.00 in all.", "1000"),
        ("The answer is 18.", "18"),
        ("#### 18.0", "18"),
        ("first 3 then #### -4 and 7 later", "-4"),
        ("It costs $ 5", "5"),
        ("no number here", None),
    ],
)
def test_gsm8k_extraction_normalises_commas_currency_and_trailing_zeros(text, value):
    assert extract_answer(text) == (None if value is None else Decimal(value))


def test_gsm8k_unparsable_reference_names_where():
    with pytest.raises(ValueError, match=r"f\.jsonl:3: cannot parse a number from the reference 'about ten'"):
        reference_answer("about ten", "f.jsonl:3")


# ---------------------------------------------------------------- HumanEval
def test_every_humaneval_canonical_solution_passes(humaneval):
    assert len(humaneval) == 164
    scores = score_responses(humaneval, [query_record(q).reference for q in humaneval], allow_code_execution=True)
    failed = [q.qid for q, s in zip(humaneval, scores) if s["score"] != 1.0]
    assert not failed and {s["metric"] for s in scores} == {"pass@1"}


def test_humaneval_empty_body_and_endless_loop_fail_without_hanging(humaneval):
    bench = get_benchmark("humaneval", timeout=1.0)
    records = [query_record(q) for q in humaneval[:2]]
    scores = bench.score(records, ["    pass\n", "    while True:\n        pass\n"], allow_code_execution=True)
    assert [s["pass@1"] for s in scores] == [0.0, 0.0]


def test_humaneval_whole_function_in_a_fenced_block_passes(humaneval):
    rec = query_record(humaneval[0])
    body = rec.reference
    signature = re.search(rf"^def {rec.meta['entry_point']}\(.*$", rec.prompt, re.MULTILINE).group()
    reply = f"Here it is:\n```python\n{signature}\n{body}```\nDone."
    assert get_benchmark("humaneval").score([rec], [reply], allow_code_execution=True)[0]["pass@1"] == 1.0


def test_humaneval_refuses_to_run_code_without_the_opt_in(humaneval):
    with pytest.raises(CodeExecutionRefused, match="--allow-code-execution"):
        score_responses(humaneval[:1], ["    return True\n"])


# ---------------------------------------------------------------- IFEval
def test_ifeval_strict_never_exceeds_loose(ifeval):
    rng = random.Random(0)
    responses = []
    for q in ifeval:
        words = q.prompt.split()
        rng.shuffle(words)
        responses.append(
            rng.choice(
                [
                    q.prompt,
                    "",
                    "Sure!\n" + " ".join(words[:40]) + "\n**Thanks**",
                    f"**{q.prompt.upper()}**",
                    '{"answer": "' + " ".join(words[:5]).replace('"', "") + '"}',
                    " ".join(words).replace(",", ""),
                ]
            )
        )
    scores = score_responses(ifeval, responses)
    for s in (x["scores"] for x in scores):
        assert s["prompt_level_strict_acc"] <= s["prompt_level_loose_acc"]
        assert s["inst_level_strict_acc"] <= s["inst_level_loose_acc"]
    assert 0 < sum(x["score"] for x in scores) < len(ifeval)  # the responses neither all pass nor all fail


def _ifeval(instruction, kwargs, response):
    rec = Record("k", "a prompt", None, {"instruction_id_list": [instruction], "kwargs": [kwargs]}, "test")
    s = get_benchmark("ifeval").score([rec], [response])[0]
    return s["prompt_level_strict_acc"], s["prompt_level_loose_acc"]


@pytest.mark.parametrize(
    "instruction, kwargs, response, expected",
    [
        ("length_constraints:number_words", {"relation": "less than", "num_words": 10}, "one two three", (1, 1)),
        ("length_constraints:number_words", {"relation": "less than", "num_words": 10}, "w " * 20, (0, 0)),
        ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "a b c d e f", (1, 1)),
        ("punctuation:no_comma", {}, "no commas at all here", (1, 1)),
        ("punctuation:no_comma", {}, "one, two", (0, 0)),
        ("detectable_format:json_format", {}, '{"name": "x", "n": 2}', (1, 1)),
        ("detectable_format:json_format", {}, "name: x", (0, 0)),
        ("detectable_format:json_format", {}, 'Here is the JSON:\n{"name": "x"}', (0, 1)),  # loose drops line 1
        ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see [address].", (1, 1)),
        ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name].", (0, 0)),
        (
            "length_constraints:number_sentences",
            {"relation": "less than", "num_sentences": 3},
            "Dr. Who came. He left.",
            (1, 1),
        ),  # NLTK punkt (offline): "Dr." does not end a sentence
        (
            "length_constraints:number_sentences",
            {"relation": "less than", "num_sentences": 3},
            "It rained. We ran home. They hid. I slept.",
            (0, 0),
        ),
    ],
)
def test_ifeval_hand_written_responses_score_as_expected(instruction, kwargs, response, expected):
    assert _ifeval(instruction, kwargs, response) == expected


def test_ifeval_instruction_level_pools_over_instructions():
    bench = get_benchmark("ifeval")
    scores = [
        {
            "prompt_level_strict_acc": 0.0,
            "prompt_level_loose_acc": 0.0,
            "inst_level_strict_acc": 0.5,
            "inst_level_loose_acc": 0.5,
            "n_instructions": 4,
        },
        {
            "prompt_level_strict_acc": 1.0,
            "prompt_level_loose_acc": 1.0,
            "inst_level_strict_acc": 1.0,
            "inst_level_loose_acc": 1.0,
            "n_instructions": 1,
        },
    ]
    agg = bench.aggregate(scores)
    assert agg["prompt_level_strict_acc"] == 0.5 and agg["inst_level_strict_acc"] == pytest.approx(3 / 5)


def test_ifeval_unknown_instruction_is_refused_naming_it():
    rec = Record("7", "p", None, {"instruction_id_list": ["punctuation:no_semicolon"], "kwargs": [{}]}, "f.jsonl:2")
    with pytest.raises(
        ValueError, match=r"f\.jsonl:2: record '7': unknown IFEval instruction\(s\) \['punctuation:no_semicolon'\]"
    ):
        get_benchmark("ifeval").check_record(rec)


# ---------------------------------------------------------------- long-form QA
def test_rouge_is_one_on_the_reference_zero_on_disjoint_text_and_takes_the_best_reference():
    bench = get_benchmark("qa")
    rec = Record("1", "q", "The cat sat on the mat.", {}, "t")
    multi = Record("2", "q", '["dogs bark loudly", "the cat sat on the mat"]', {}, "t")
    same, other, best = bench.score([rec, rec, multi], ["the cat sat on the mat", "zebra quantum", "the cat sat"])
    assert same == {"rouge1_f": 1.0, "rougeL_f": 1.0} and other == {"rouge1_f": 0.0, "rougeL_f": 0.0}
    assert best["rouge1_f"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'; choose from gsm8k, humaneval, ifeval, qa"):
        get_benchmark("gsm9k")
