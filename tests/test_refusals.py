"""What a run refuses, and when (issue 14, classes 3, 5 and 7): every error that depends only on the
configuration (or on the configuration and the model's size) comes before anything is written, in one
line naming the value; a refused run leaves its output folder exactly as it found it."""

import json

import pytest
import torch
import yaml
from conftest import save_tiny_model

from ptdlib.cli import main as ptd
from ptdlib.experiment.config import RunConfig
from ptdlib.tasks.splits import Query

BASE = {
    "splits": {"test": 4},
    "train": 8,
    "calib": 8,
    "batch_size": 4,
    "limits": {"max_canvas": 64, "round_to": 32},
    "strategies": [{"name": "fixed", "params": {"L": 64}}, {"name": "smartcrop", "params": {"tau": 0.9}}],
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_model(tokenizer, tmp_path_factory.mktemp("model") / "tiny")


def snapshot(folder):
    """Every file under ``folder`` with its bytes (None if the folder does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} | {
        str(p.relative_to(folder)) + "/": b"" for p in folder.rglob("*") if p.is_dir()
    }


def refused(capsys, tmp_path, cfg: dict, *words, out=None) -> str:
    """Run ``ptd run`` on ``cfg``; assert exit 2, one line naming ``words``, and ``out`` unchanged."""
    out = out or tmp_path / "out"
    before = snapshot(out)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert ptd(["run", str(path), "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptd run: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert snapshot(out) == before
    return err[0]


# ---------------------------------------------------------------- class 3: config-only errors come first
@pytest.mark.parametrize(
    "change, words",
    [
        ({"strategies": [{"name": "fixed", "params": {"L": [128, 64]}}]}, ["fixed(L=128)", "limits.max_canvas 64"]),
        ({"sampler": {"steps": 33}}, ["steps 33", "blocks 2", "limits.max_canvas 64"]),
        ({"sampler": {"steps": 128}}, ["steps 128", "at most the canvas length 64"]),
        (
            {
                "sampler": {"steps": 64},
                "limits": {"max_canvas": 128, "round_to": 32},
                "strategies": [{"name": "fixed", "params": {"L": [128, 32]}}],
            },
            ["fixed(L=32)", "steps 64"],
        ),
    ],
)
def test_config_only_errors_stop_the_run_before_anything_is_written(capsys, tmp_path, change, words):
    refused(capsys, tmp_path, {**BASE, **change}, *words)
    with pytest.raises(ValueError):
        RunConfig.from_dict({**BASE, **change})


def test_a_refused_run_leaves_an_existing_folder_as_it_was(capsys, tmp_path):
    out = tmp_path / "existing"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("mine")
    refused(capsys, tmp_path, {**BASE, "sampler": {"steps": 33}}, "steps 33", out=out)


def test_a_maximum_canvas_beyond_the_models_positions_is_refused_before_writing(capsys, tmp_path, model_dir):
    positions = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    too_long = positions // 32 * 32 + 32
    cfg = {
        **BASE,
        "model": {"path": str(model_dir)},
        "limits": {"max_canvas": too_long, "round_to": 32},
        "strategies": [{"name": "fixed", "params": {"L": too_long}}],
    }
    refused(capsys, tmp_path, cfg, f"limits.max_canvas {too_long}", f"{positions} positions")


def test_a_prompt_too_long_for_the_maximum_canvas_is_named(tiny_lm):
    from ptdlib.tasks.sources import check_prompts

    long = Query("q-long", "test", "count", " ".join(["cat"] * (tiny_lm.max_positions - 40)), "")
    with pytest.raises(ValueError, match=r"query 'q-long': prompt of \d+ tokens .*limits.max_canvas can be at most"):
        check_prompts(tiny_lm, [long], 64)


# ---------------------------------------------------------------- class 5: nothing silently changed
@pytest.mark.parametrize("L, hint", [(50, "use 64 or 32"), (96, "use 128 or 96")])
def test_a_fixed_canvas_that_is_not_whole_blocks_is_refused(capsys, tmp_path, L, hint):
    cfg = {
        **BASE,
        "limits": {"max_canvas": 128, "round_to": 32},
        "strategies": [{"name": "fixed", "params": {"L": [128, L]}}],
    }
    if L % 32 == 0:  # a multiple of 32 is whole blocks: accepted
        assert RunConfig.from_dict(cfg).cells[1].params == json.dumps({"L": L})
        return
    refused(capsys, tmp_path, cfg, f"L={L}", "not a multiple of limits.round_to 32", hint)


@pytest.mark.parametrize(
    "layers_delta, words",
    [(1, ["missing from the weights", "blocks.2."]), (-1, ["in the weights but not in the config", "blocks.1."])],
)
def test_weights_that_do_not_match_the_config_are_refused(tmp_path, tokenizer, capsys, layers_delta, words):
    from ptdlib.models.embedded import load_pretrained

    directory = save_tiny_model(tokenizer, tmp_path / "m")
    cfg = json.loads((directory / "config.json").read_text())
    cfg["n_layers"] += layers_delta
    (directory / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its config.json") as err:
        load_pretrained(directory)
    for word in words:
        assert word in str(err.value)
    assert ptd(["bench", "model", "--model", str(directory), "--n", "2"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("ptd bench model: error: ") and "does not match its config.json" in line
    assert len(line.splitlines()) == 1


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_refused_naming_the_query(tiny_lm, prompt):
    from ptdlib.sampling.sampler import SamplerConfig, sample
    from ptdlib.tasks.sources import check_prompts

    with pytest.raises(ValueError, match="query 'q-empty': the prompt is empty"):
        sample(tiny_lm, ["count to 3", prompt], 32, SamplerConfig(), query_ids=["q-ok", "q-empty"])
    with pytest.raises(ValueError, match="query 'q-empty': the prompt is empty"):
        check_prompts(tiny_lm, [Query("q-empty", "test", "count", prompt, "")], 32)


def test_token_prompts_and_real_text_still_sample(tiny_lm):
    from ptdlib.sampling.sampler import SamplerConfig, sample

    torch.manual_seed(0)
    out = sample(tiny_lm, ["count to 3", tiny_lm.encode_prompt("sort 3 1 2")], 32, SamplerConfig())
    assert len(out) == 2


# ---------------------------------------------------------------- class 7: a refused change names what changed
def test_a_changed_config_is_refused_naming_only_the_parameter_that_differs(capsys, tmp_path, model_dir):
    from ptdlib.experiment.labels import model_fingerprint
    from ptdlib.experiment.results import open_run
    from ptdlib.models.embedded import load_embedded

    cfg = {**BASE, "model": {"path": str(model_dir)}}
    lm = load_embedded(model_dir)
    out = tmp_path / "run"
    open_run(out, RunConfig.from_dict(cfg), lm.model_id, model_fingerprint(lm))
    changed = {
        **cfg,
        "strategies": [{"name": "fixed", "params": {"L": 64}}, {"name": "smartcrop", "params": {"tau": 0.95}}],
    }
    line = refused(capsys, tmp_path, changed, "strategies[1].params.tau: stored 0.9, now 0.95", out=out)
    assert "fixed" not in line and "strategies: stored" not in line
    more = {**cfg, "strategies": cfg["strategies"] + [{"name": "oracle"}]}
    line = refused(capsys, tmp_path, more, "strategies: now also", "'oracle'", out=out)
    assert "smartcrop" not in line
