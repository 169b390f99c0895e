"""End to end on real text: the gsm8k and ifeval configs, shrunk, on tiny random-weight checkpoints with a
real subword (byte-level BPE) tokenizer and a chat template, built here. Weights are random, so scores are
near 0; the point is that labels, fitting, probes, sampling, scoring, FLOPs and the summary all work on real
prompts, and that bad workloads stop before anything is sampled or written.

Two checkpoints: the published LLaDA layout (``tests/hub_layouts.py``, loaded natively from the run config's
``model.path``, as LLaDA-8B-Instruct would be) and the embedded architecture saved with a BPE tokenizer trained
on the benchmarks' own text (:func:`tiny_subword_lm`, handed to the runner in memory).
"""

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from benchdata import bench_file
from hub_layouts import write_llada

from ptdlib.experiment.config import RunConfig
from ptdlib.experiment.runner import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPECIAL = {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": "<|pad|>", "mask": "<|mdm_mask|>"}
ROLE_TOKENS = ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
#: a LLaMA-3-style one-turn chat template, as LLaDA-8B-Instruct's
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _train_tokenizer(texts, vocab_size=512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL.values(), *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        mask_token=SPECIAL["mask"],
        additional_special_tokens=ROLE_TOKENS,
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_subword_lm(directory: Path, max_positions: int = 1024):
    """A seeded random tiny checkpoint with a BPE tokenizer trained on real benchmark text, saved and loaded
    back through the Hugging Face adapter."""
    from ptdlib.models.embedded import build_model, save_model
    from ptdlib.models.hf import load_hf_dllm

    texts = [json.loads(line)["question"] for line in bench_file("gsm8k_train.jsonl").read_text().splitlines()[:400]]
    texts += [json.loads(line)["prompt"] for line in bench_file("ifeval_input_data.jsonl").read_text().splitlines()]
    tok = _train_tokenizer(texts)
    torch.manual_seed(0)
    model = build_model(
        tok,
        d_model=32,
        n_layers=2,
        n_heads=2,
        mlp_hidden=64,
        max_position_embeddings=max_positions,
        eot_token_id=tok.convert_tokens_to_ids("<|eot_id|>"),
    ).eval()
    model.lm_head.weight.data[tok.eos_token_id] *= 3.0  # random answers end at varied lengths
    save_model(model, tok, directory)
    return load_hf_dllm(directory)


def llada_checkpoint(directory: Path, max_positions: int = 2048) -> Path:
    """The LLaDA-layout tiny checkpoint with room for real prompts (its rotary positions have no learned table)."""
    path = write_llada(directory)
    config = json.loads((path / "config.json").read_text())
    config["max_sequence_length"] = max_positions
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    return llada_checkpoint(tmp_path_factory.mktemp("llada") / "tiny-llada")


@pytest.fixture(scope="module")
def subword_lm(tmp_path_factory):
    return tiny_subword_lm(tmp_path_factory.mktemp("tiny-bpe") / "tiny-bpe")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PTD_BENCHMARKS_DIR", str(bench_file("gsm8k_test.jsonl").parent))


def shrunk(config: str, **over) -> dict:
    """A shipped config, shrunk: a handful of queries, canvases of 32 and 64, one arm per strategy family."""
    d = yaml.safe_load((CONFIGS / config).read_text())
    d = copy.deepcopy(d)
    d.update(
        limits={"max_canvas": 64, "round_to": 32},
        splits={"test": 4},
        train=16,
        calib=12,
        batch_size=4,
        sampler={**d["sampler"], "steps": 8},  # 8 denoising steps whatever the canvas: seconds, not minutes
        baseline={"name": "fixed", "params": {"L": 64}},
        strategies=[
            {"name": "fixed", "params": {"L": [64, 32]}},
            {"name": "oracle"},
            {"name": "smartcrop", "params": {"tau": 0.9}},
            {"name": "predicted", "params": {"margin": "conformal", "alpha": 0.2, "features": "generic"}},
            {"name": "growth", "params": {"block": 32}},
        ],
    )
    d.update(over)
    return d


@pytest.mark.parametrize(
    "config, metric, checkpoint",
    [
        ("gsm8k.yaml", "accuracy", "llada"),
        ("ifeval.yaml", "prompt_level_strict_acc", "llada"),
        ("gsm8k.yaml", "accuracy", "embedded-bpe"),
    ],
)
def test_shrunk_benchmark_config_runs_end_to_end_on_a_subword_checkpoint(
    request, tmp_path, capsys, config, metric, checkpoint
):
    from ptdlib.cli.summarize import main as summarize
    from ptdlib.experiment.results import load_results

    out = tmp_path / "run"
    if checkpoint == "llada":  # loaded by the runner from the config, like a real checkpoint
        cfg = RunConfig.from_dict(shrunk(config, model={"path": str(request.getfixturevalue("llada_dir"))}))
        stats = run(cfg, output=out, device="cpu", progress=False)
    else:
        cfg = RunConfig.from_dict(shrunk(config))
        stats = run(cfg, output=out, lm=request.getfixturevalue("subword_lm"), progress=False)
    assert stats.rows_written == 4 * 6  # 4 test queries x 6 cells
    rows = load_results(out)
    source = cfg.sources[0].name
    assert set(rows["source"]) == {source} and set(rows["metric"]) == {metric}
    assert rows["score"].between(0, 1).all() and (rows["flops_total"] > 0).all()
    assert (rows[rows.strategy == "smartcrop"]["flops_probe"] > 0).all()
    assert (rows[rows.strategy == "predicted"]["chosen_canvas"] <= 64).all()
    assert rows["own_length"].notna().all()
    assert all(metric in json.loads(s) for s in rows["scores"])
    assert rows["qid"].str.startswith(f"{source}/").all()
    assert summarize([str(out)]) == 0
    table = capsys.readouterr().out
    assert "smartcrop" in table and "predicted" in table


def test_humaneval_run_refuses_without_both_opt_ins_before_writing(subword_lm, tmp_path):
    out = tmp_path / "run"
    base = shrunk("humaneval.yaml")
    with pytest.raises(ValueError, match="--allow-code-execution"):
        run(RunConfig.from_dict(base), output=out, lm=subword_lm, progress=False)
    no_flag = {**base, "sources": [{**base["sources"][0], "allow_code_execution": False}]}
    with pytest.raises(ValueError, match="allow_code_execution: true"):
        run(RunConfig.from_dict(no_flag), output=out, lm=subword_lm, progress=False, allow_code_execution=True)
    assert not out.exists()


def test_prompt_too_long_for_the_positions_is_named_before_anything_is_written(tmp_path):
    short = llada_checkpoint(tmp_path / "short", max_positions=96)
    out = tmp_path / "run"
    with pytest.raises(
        ValueError,
        match=r"query 'gsm8k/\d+': prompt of \d+ tokens \+ the maximum canvas of 64 "
        r"exceeds the model's 96 positions",
    ):
        run(
            RunConfig.from_dict(shrunk("gsm8k.yaml", model={"path": str(short)})),
            output=out,
            device="cpu",
            progress=False,
        )
    assert not out.exists()


def test_prompt_outside_the_embedded_vocabulary_is_named(tiny_lm, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"query 'ifeval/\d+': the model's tokenizer cannot encode the prompt"):
        run(RunConfig.from_dict(shrunk("ifeval.yaml")), output=out, lm=tiny_lm, progress=False)
    assert not out.exists()


def test_too_few_test_queries_in_a_source_is_refused(subword_lm, tmp_path):
    cfg = RunConfig.from_dict(shrunk("ifeval.yaml", splits={"test": 5000}))
    with pytest.raises(ValueError, match="source 'ifeval' has 213 test queries, fewer than the 5000"):
        run(cfg, output=tmp_path / "run", lm=subword_lm, progress=False)


def test_file_sources_evaluate_their_test_part_only():
    with pytest.raises(ValueError, match="split 'shift_length' cannot be evaluated on file sources; choose from test"):
        RunConfig.from_dict(shrunk("gsm8k.yaml", splits={"shift_length": 4}))


def test_two_sources_in_one_run_are_summarised_one_block_each(llada_dir, tmp_path, capsys):
    from ptdlib.cli.summarize import main as summarize
    from ptdlib.experiment.results import load_results

    gsm8k, ifeval = (yaml.safe_load((CONFIGS / c).read_text())["sources"][0] for c in ("gsm8k.yaml", "ifeval.yaml"))
    cfg = RunConfig.from_dict(
        shrunk(
            "gsm8k.yaml",
            model={"path": str(llada_dir)},
            sources=[gsm8k, ifeval],
            splits={"test": 2},
            strategies=[{"name": "fixed", "params": {"L": [64, 32]}}],
        )
    )
    out = tmp_path / "run"
    assert run(cfg, output=out, device="cpu", progress=False).rows_written == 2 * 2 * 2
    rows = load_results(out)
    assert rows.groupby("source")["metric"].unique().map(list).to_dict() == {
        "gsm8k": ["accuracy"],
        "ifeval": ["prompt_level_strict_acc"],
    }
    assert summarize([str(out)]) == 0
    table = capsys.readouterr().out
    assert "test/gsm8k" in table and "test/ifeval" in table


def _records(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GOOD = [{"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"} for i in range(30)]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing file", r"query file \S*nope\.jsonl does not exist"),
        ("missing field", r"q\.jsonl:3: missing field 'answer' \(the reference of a gsm8k record\)"),
        ("empty prompt", r"q\.jsonl:2: record '1' has an empty prompt"),
        ("unparsable reference", r"q\.jsonl:1: record '0': cannot parse a number from the reference 'lots'"),
        ("unknown benchmark", r"unknown benchmark 'gsm9k'; choose from gsm8k, humaneval, ifeval, qa"),
    ],
)
def test_bad_workload_is_one_line_exit_two_and_nothing_written(llada_dir, tmp_path, capsys, case, message):
    from ptdlib.cli.run import main

    rows = [dict(r) for r in GOOD]
    source = {"name": "mine", "benchmark": "gsm8k", "path": str(tmp_path / "q.jsonl")}
    if case == "missing file":
        source["path"] = str(tmp_path / "nope.jsonl")
    elif case == "missing field":
        del rows[2]["answer"]
    elif case == "empty prompt":
        rows[1]["question"] = ""
    elif case == "unparsable reference":
        rows[0]["answer"] = "lots"
    elif case == "unknown benchmark":
        source["benchmark"] = "gsm9k"
    _records(tmp_path / "q.jsonl", rows)
    out = tmp_path / "run"
    config = shrunk(
        "gsm8k.yaml",
        model={"path": str(llada_dir)},
        sources=[source],
        splits={"test": 2},
        train=4,
        calib=4,
        output=str(out),
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main([str(tmp_path / "c.yaml"), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptd run: error:")
    import re

    assert re.search(message, err[0]), err[0]
    assert not out.exists()
