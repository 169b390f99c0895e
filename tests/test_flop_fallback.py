"""FLOP counting never stops a run: fvcore, then FlopCounterMode, then the analytic model of the config.

Also: each result row names the counter that priced it, result tables written before that column load as
fvcore-priced, and the published LLaDA-8B / Dream-7B configs are priced without weights in memory.
"""

import json
import warnings
from dataclasses import replace

import pytest
import torch
import yaml
from torch import nn
from transformers import LlamaConfig

from ptdlib.canvas import CanvasLimits, FixedCanvas, evaluate_strategy
from ptdlib.cost.flops import FlopCounter, FlopLedger, count_with_fvcore, count_with_torch, counter_for
from ptdlib.cost.shapes import DREAM_7B, LLADA_8B, analytic_flops, model_shape, shape_from_config
from ptdlib.tasks import make_split


@torch.compile(backend="eager")  # what fvcore's jit trace refuses; "eager" needs no compiler on the machine
def _compiled_mlp(h, w_in, w_out):
    return torch.relu(h @ w_in) @ w_out


@torch.compile(backend="eager")
def _compiled_copy(logits):
    return logits * 1.0


class CompiledMLP(nn.Module):
    """Embedding, one MLP applied by a ``torch.compile``d function, output head: d=8, hidden 16, vocabulary 20."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8)
        self.w_in, self.w_out = nn.Parameter(torch.randn(8, 16)), nn.Parameter(torch.randn(16, 8))
        self.head = nn.Linear(8, 20, bias=False)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        h = self.emb(input_ids)
        return self.head(h + _compiled_mlp(h, self.w_in, self.w_out))


class CompiledTail(nn.Module):
    """Wraps a network: its logits pass through a compiled function (as in Fast-dLLM's copy of LLaDA)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return _compiled_copy(self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits)


class Refuses(nn.Module):
    """A network no counter can run (its forward raises); with a LLaMA-style ``config`` when one is given."""

    def __init__(self, config=None):
        super().__init__()
        self.w = nn.Linear(2, 2)
        if config is not None:
            self.config = config

    def forward(self, input_ids, attention_mask=None):
        raise RuntimeError("cannot run here")


def mlp_flops(T):  # 2 per multiply-add: T x 8 x 16 in, T x 16 x 8 out, T x 8 x 20 head
    return 2 * (T * 8 * 16 + T * 16 * 8 + T * 8 * 20)


def test_a_model_calling_a_compiled_function_is_counted_by_flop_counter_mode_with_one_warning():
    net = CompiledMLP().eval()
    with pytest.raises(RuntimeError, match="dynamo-optimized"):
        count_with_fvcore(net, 5)  # the failure this fallback exists for
    counter = FlopCounter(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert counter.forward_flops(5) == mlp_flops(5) == 4_160
        assert counter.forward_flops(7, batch=3) == 3 * mlp_flops(7)
    assert [str(w.message) for w in caught] == [
        "FLOP counting of CompiledMLP: fvcore failed (RuntimeError: Detected that you are using FX to torch.jit.trace "
        "a dynamo-optimized function. This is not supported at the moment.); counting with flop_counter_mode instead"
    ]
    assert counter.method == "flop_counter_mode" and len(counter.fallback_reasons) == 1


def test_a_model_no_tracer_can_run_is_priced_from_its_config_naming_both_failures():
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    counter = FlopCounter(Refuses(config))
    with pytest.warns(UserWarning) as caught:
        flops = counter.forward_flops(64)
    assert flops == analytic_flops(shape_from_config(config), 64)["total"]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "fvcore failed (RuntimeError: cannot run here)" in message
    assert "flop_counter_mode failed (RuntimeError: cannot run here)" in message
    assert message.endswith("counting with the analytic model of Refuses instead")
    assert counter.method == "analytic"


def test_when_every_counter_fails_the_error_names_each_one():
    with pytest.raises(RuntimeError) as error:
        FlopCounter(Refuses()).forward_flops(8)
    text = str(error.value)
    assert text.startswith("no FLOP counter could price Refuses at 8 tokens")
    assert "fvcore failed" in text and "flop_counter_mode failed" in text
    assert "analytic failed (ValueError: the network has no config to read its shape from" in text


class TracesOnlyShort(nn.Module):
    """fvcore traces it up to 10 tokens only; its ``baddbmm`` is counted by FlopCounterMode, not by fvcore."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 4)
        self.w = nn.Parameter(torch.randn(1, 4, 4))
        self.head = nn.Linear(4, 20, bias=False)

    def forward(self, input_ids, attention_mask=None):
        if torch.jit.is_tracing() and input_ids.shape[1] > 10:
            raise RuntimeError("too long to trace")
        h = self.emb(input_ids)
        return self.head(torch.baddbmm(h, h, self.w.expand(h.shape[0], 4, 4)))


def test_a_fallback_mid_run_reprices_every_earlier_pass_with_the_new_counter():
    net = TracesOnlyShort().eval()
    counter = FlopCounter(net)
    ledger = FlopLedger(counter)
    fvcore_8 = counter.forward_flops(8)
    assert counter.method == "fvcore" and fvcore_8 == 2 * 8 * 4 * 20  # the head only: baddbmm is not seen
    ledger.on_forward(_event("denoise", ["a"], 8))
    with pytest.warns(UserWarning, match="fvcore failed .*too long to trace"):
        ledger.on_forward(_event("denoise", ["a"], 12))
    torch_8, torch_12 = (sum(count_with_torch(net, t).values()) for t in (8, 12))
    assert torch_8 == fvcore_8 + 2 * 8 * 4 * 4  # FlopCounterMode also counts the baddbmm
    assert ledger.per_query() == {"a": {"denoise": torch_8 + torch_12}}  # both passes priced by one counter
    assert ledger.method == "flop_counter_mode" and counter.cached_lengths == (8, 12)


def _event(kind, qids, seq_len):
    from ptdlib.sampling.events import ForwardEvent

    return ForwardEvent(kind, tuple(qids), seq_len)


def test_rows_record_the_counter_that_priced_them(tiny_lm):
    queries = make_split("test", 2, seed=0)
    policy = FixedCanvas(L=16)
    opts = dict(sampler=_sampler(), limits=CanvasLimits(max_canvas=16, round_to=16), batch_size=2)
    plain = evaluate_strategy(tiny_lm, queries, policy, FlopCounter(tiny_lm), **opts)
    assert {r["flop_counter"] for r in plain} == {"fvcore"}
    compiled = replace(tiny_lm, network=CompiledTail(tiny_lm.network))
    with pytest.warns(UserWarning, match="counting with flop_counter_mode instead"):
        rows = evaluate_strategy(compiled, queries, policy, FlopCounter(compiled), **opts)
    assert {r["flop_counter"] for r in rows} == {"flop_counter_mode"}
    assert [r["response"] for r in rows] == [r["response"] for r in plain]
    for r in rows:
        lens = json.loads(r["forward_lens"])
        assert r["flops_total"] == sum(sum(count_with_torch(tiny_lm.network, t).values()) for t in lens) > 0


def _sampler():
    from ptdlib.sampling.sampler import SamplerConfig

    return SamplerConfig(block_length=16, steps=4)


def test_a_run_fvcore_cannot_trace_finishes_and_older_tables_resume_as_fvcore_rows(
    tiny_model, tokenizer, tiny_lm, tmp_path, monkeypatch
):
    from ptdlib.experiment.config import load_config
    from ptdlib.experiment.results import LEGACY_FLOP_COUNTER, load_results
    from ptdlib.experiment.runner import run
    from ptdlib.models.embedded import save_model

    monkeypatch.setenv("PTD_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = save_model(tiny_model, tokenizer, tmp_path / "tiny-model")
    grid = {
        "model": {"path": str(model_dir)},
        "sampler": {"block_length": 16, "steps": 4},
        "limits": {"max_canvas": 16, "round_to": 16},
        "splits": {"test": 4},
        "train": 4,
        "calib": 4,
        "seeds": [0],
        "batch_size": 4,
        "strategies": [{"name": "fixed", "params": {"L": 16}}],
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    cfg = load_config(tmp_path / "grid.yaml")
    compiled = replace(tiny_lm, network=CompiledTail(tiny_model), model_id="tiny-model")
    with pytest.warns(UserWarning, match="counting with flop_counter_mode instead"):
        stats = run(cfg, lm=compiled, progress=False)
    assert stats.rows_written == 4
    rows = load_results(tmp_path / "run")
    assert set(rows["flop_counter"]) == {"flop_counter_mode"} and (rows["flops_total"] > 0).all()

    for path in (tmp_path / "run" / "chunks").glob("*.jsonl"):  # the table as ptdlib wrote it before the column
        old = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "flop_counter"}) + "\n" for r in old))
    legacy = load_results(tmp_path / "run")
    assert set(legacy["flop_counter"]) == {LEGACY_FLOP_COUNTER} == {"fvcore"}
    assert legacy.drop(columns="flop_counter").equals(rows.drop(columns="flop_counter"))
    again = run(cfg, lm=compiled, progress=False)
    assert (again.rows_written, again.rows_skipped) == (0, 4)  # resumed: nothing recomputed


#: The size fields of the published config.json files (GSAI-ML/LLaDA-8B-Instruct, Dream-org/Dream-v0-Instruct-7B).
LLADA_CONFIG = {
    "architectures": ["LLaDAModelLM"],
    "model_type": "llada",
    "d_model": 4096,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "vocab_size": 126464,
    "embedding_size": 126464,
    "max_sequence_length": 4096,
    "weight_tying": False,
    "activation_type": "silu",
    "rope_theta": 500000.0,
}
DREAM_CONFIG = {
    "architectures": ["DreamModel"],
    "model_type": "Dream",
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "num_hidden_layers": 28,
    "intermediate_size": 18944,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "rope_theta": 1000000.0,
}


@pytest.mark.parametrize("config, preset", [(LLADA_CONFIG, LLADA_8B), (DREAM_CONFIG, DREAM_7B)])
def test_published_8b_and_7b_configs_give_the_preset_shapes(tmp_path, config, preset):
    folder = tmp_path / preset.name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    assert model_shape(folder) == preset == model_shape(folder / "config.json")  # sizes from the file, name: folder


def test_the_published_dream_config_is_counted_on_the_meta_device_by_the_fallback_counter_too(tmp_path):
    # fvcore on the meta stand-in: tests/test_flops.py (LLaDA-8B). Here the fallback, with Dream's grouped heads.
    (tmp_path / "config.json").write_text(json.dumps(DREAM_CONFIG))
    counter = counter_for(tmp_path / "config.json")
    assert all(p.is_meta for p in counter.network.parameters())  # 15 GB of weights never allocated
    assert sum(count_with_torch(counter.network, 256).values()) == analytic_flops(DREAM_7B, 256)["total"]


def test_an_unknown_model_names_the_presets_and_what_else_is_accepted(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown model preset .* \\(choose from embedded, llada-8b, dream-7b\\), "
        "and not a config.json or a checkpoint directory",
    ):
        model_shape(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON config"):
        model_shape(tmp_path)


def test_ptd_cost_prices_a_checkpoint_directory_from_its_config_as_the_preset(tmp_path, capsys):
    from ptdlib.cli.cost import main

    (tmp_path / "config.json").write_text(json.dumps(DREAM_CONFIG))
    args = ["--hardware", "h100", "--strategy", "oracle", "--queries", "50", "--boot", "20", "--json"]
    assert main(["--model", "dream-7b", *args]) == 0
    preset = json.loads(capsys.readouterr().out)
    assert main(["--model", str(tmp_path), *args]) == 0
    folder = json.loads(capsys.readouterr().out)
    assert folder.pop("model") == tmp_path.name and preset.pop("model") == "dream-7b"
    assert folder == preset and folder["strategy"]["flops_per_query"] > 0
