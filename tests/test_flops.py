"""FLOP counting: hand-computed truths, three counters that agree, the per-shape cache, the ledger."""

import subprocess
import sys
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ptdlib.cost.flops import (
    AnalyticCounter,
    FlopCounter,
    FlopLedger,
    count_with_fvcore,
    count_with_torch,
    counter_for,
    cross_check,
)
from ptdlib.cost.shapes import (
    DREAM_7B,
    LLADA_8B,
    PRESETS,
    ModelShape,
    analytic_flops,
    preset,
    shape_from_config,
    uncounted_flops_estimate,
)
from ptdlib.models.embedded import build_model, embedded_lm
from ptdlib.models.modeling import PtdLladaConfig
from ptdlib.sampling.events import TraceRecorder, counted_logits


@pytest.fixture(scope="module")
def one_layer_lm(tokenizer):
    torch.manual_seed(0)
    model = build_model(tokenizer, d_model=16, n_layers=1, n_heads=2, mlp_hidden=32).eval()
    return embedded_lm(model, tokenizer, model_id="one-layer")


def test_one_layer_model_flops_match_hand_count(one_layer_lm, tokenizer):
    T, d, heads, hd, h, V = 10, 16, 2, 8, 32, len(tokenizer)
    assert V == 355  # the synthetic suite's vocabulary; the arithmetic below is written out with it
    macs = {
        "attn/qkv": 10 * 16 * 48,  # T x d x 3d = 7,680
        "attn/scores": 2 * (2 * 10 * 10 * 8),  # Q K^T and A V: heads x T x T x hd each = 3,200
        "attn/out": 10 * 16 * 16,  # T x d x d = 2,560
        "mlp": 10 * 16 * 64 + 10 * 32 * 16,  # gate+up T x d x 2h, down T x h x d = 15,360
        "lm_head": 10 * 16 * 355,  # T x d x V = 56,800
    }
    assert sum(macs.values()) == 85_600
    expected = 2 * 85_600  # 2 FLOPs per multiply-add = 171,200
    assert (T, d, heads, hd, h) == (10, 16, 2, 8, 32)
    shape = shape_from_config(one_layer_lm.network.config)
    items = analytic_flops(shape, T)
    assert {k: v for k, v in items.items() if k != "total"} == {k: 2 * v for k, v in macs.items()}
    assert items["total"] == expected
    assert FlopCounter(one_layer_lm).forward_flops(T) == expected
    assert sum(count_with_torch(one_layer_lm.network, T).values()) == expected


def test_fvcore_counts_attention_through_the_registered_handle(one_layer_lm):
    by_op = count_with_fvcore(one_layer_lm.network, 10)
    assert by_op["scaled_dot_product_attention"] == 2 * 3_200  # without the handle this would be missing
    assert by_op["linear"] == 2 * (7_680 + 2_560 + 15_360 + 56_800)


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_fvcore_torch_and_analytic_agree_on_embedded_architecture(size, tiny_lm, tokenizer):
    network = tiny_lm.network if size == "tiny" else build_model(tokenizer).eval()
    shape = shape_from_config(network.config)
    for row in cross_check(network, shape, [7, 48, network.config.max_position_embeddings]):
        assert row["max_rel_diff"] < 0.01, row
        assert row["fvcore"] > 0


def test_fvcore_torch_and_analytic_agree_on_tiny_llama_with_grouped_kv_heads():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    network = LlamaForCausalLM(config).eval()
    shape = shape_from_config(config)
    assert (shape.n_kv_heads, shape.mlp_hidden, shape.vocab_size) == (2, 80, 97)
    rows = cross_check(network, shape, [5, 64, 200])
    assert all(r["max_rel_diff"] < 0.01 for r in rows), rows
    assert rows[-1]["analytic"] > rows[0]["analytic"]


def test_counter_counts_each_length_once_and_scales_by_batch(tiny_lm, monkeypatch):
    import ptdlib.cost.flops as flops

    calls = []
    real = flops.count_with_fvcore
    monkeypatch.setattr(flops, "count_with_fvcore", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    counter = FlopCounter(tiny_lm)
    one = counter.forward_flops(24)
    assert counter.forward_flops(24, batch=5) == 5 * one
    assert counter.forward_flops(24, batch=3) == 3 * one
    counter.forward_flops(40)
    assert calls == [24, 40]
    assert counter.cached_lengths == (24, 40)


def test_large_config_is_counted_on_the_meta_device_and_matches_analytic():
    counter = FlopCounter.for_shape(LLADA_8B)
    assert next(counter.network.parameters()).is_meta  # no 16 GB of weights
    assert counter.forward_flops(64) == analytic_flops(LLADA_8B, 64)["total"]
    assert counter.method == "fvcore"


def test_untraceable_network_falls_back_to_analytic_with_a_warning():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2)

        def forward(self, input_ids):
            raise RuntimeError("cannot run here")

    shape = preset("llada-8b")
    counter = FlopCounter(Broken(), fallback=shape)
    with pytest.warns(UserWarning, match="analytic model"):
        flops = counter.forward_flops(128)
    assert flops == analytic_flops(shape, 128)["total"]
    assert counter.method == "analytic"
    with pytest.raises(RuntimeError, match="cannot run here"):
        FlopCounter(Broken()).forward_flops(8)


@pytest.mark.parametrize("seq_len, batch", [(0, 1), (-3, 1), (8, 0), (2.5, 1)])
def test_non_positive_lengths_and_batches_are_rejected(tiny_lm, seq_len, batch):
    with pytest.raises(ValueError, match="must be a positive integer"):
        FlopCounter(tiny_lm).forward_flops(seq_len, batch)
    with pytest.raises(ValueError, match="must be a positive integer"):
        analytic_flops(LLADA_8B, seq_len, batch)


def test_lengths_beyond_the_model_positions_are_rejected(tiny_lm):
    with pytest.raises(ValueError, match="exceeds the model's 192 positions"):
        FlopCounter(tiny_lm).forward_flops(193)
    with pytest.raises(ValueError, match="4096 positions"):
        AnalyticCounter(LLADA_8B).forward_flops(4097)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="unknown model preset 'llada8b'; choose from embedded, llada-8b, dream-7b"):
        preset("llada8b")
    with pytest.raises(ValueError, match="choose from"):
        counter_for("gpt-5")
    assert set(PRESETS) == {"embedded", "llada-8b", "dream-7b"}


def test_llada_style_and_qwen_style_configs_give_the_preset_shapes():
    llada = {
        "d_model": 4096,
        "n_layers": 32,
        "n_heads": 32,
        "n_kv_heads": 32,
        "mlp_hidden_size": 12288,
        "vocab_size": 126464,
        "embedding_size": 126464,
        "max_sequence_length": 4096,
        "weight_tying": False,
        "activation_type": "silu",
    }
    qwen = {
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    }
    assert shape_from_config(llada, name="llada-8b") == LLADA_8B
    assert shape_from_config(qwen, name="dream-7b") == DREAM_7B
    with pytest.raises(ValueError, match="lacks the sizes"):
        shape_from_config({"hidden_size": 8})


def test_embedded_preset_is_the_embedded_model_config():
    shape, cfg = preset("embedded"), PtdLladaConfig()
    assert (shape.d_model, shape.n_layers, shape.n_heads, shape.mlp_hidden) == (
        cfg.d_model,
        cfg.n_layers,
        cfg.n_heads,
        cfg.mlp_hidden,
    )
    assert shape.max_positions == cfg.max_position_embeddings and not shape.tied_head


def test_preset_parameter_counts_match_the_published_sizes():
    assert abs(LLADA_8B.n_params / 8.02e9 - 1) < 0.01  # LLaDA-8B: ~8.0B
    assert abs(DREAM_7B.n_params / 7.62e9 - 1) < 0.01  # Qwen2.5-7B: 7.61B


def test_shape_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="n_layers must be a positive integer, got 0"):
        ModelShape("x", 0, 8, 2, 2, 16, 10, 32)
    with pytest.raises(ValueError, match="unknown mlp kind 'relu'"):
        ModelShape("x", 1, 8, 2, 2, 16, 10, 32, mlp="relu")
    assert ModelShape.from_dict(LLADA_8B.to_dict()) == LLADA_8B


def test_uncounted_elementwise_work_is_small_at_project_shapes():
    for shape, lengths, bound in ((preset("embedded"), (16, 192), 0.02), (LLADA_8B, (256, 2048), 0.002)):
        for t in lengths:
            assert uncounted_flops_estimate(shape, t) / analytic_flops(shape, t)["total"] < bound


def test_importing_fvcore_through_ptdlib_raises_no_deprecation_warning():
    code = "import ptdlib.cost.flops as f; f._fvcore_nn()"
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ledger_sums_forward_passes_per_query_and_kind(tiny_lm):
    counter = FlopCounter(tiny_lm)
    ledger = FlopLedger(counter)
    mask = tiny_lm.mask_id

    def forward(kind, qids, seq_len):
        ids = torch.full((len(qids), seq_len), mask)
        counted_logits(tiny_lm, ids, torch.ones_like(ids), kind, qids, [ledger])

    forward("probe", ["a"], 20)
    for _ in range(3):
        forward("denoise", ["a", "b"], 12)
    forward("rerun", ["b"], 16)
    f = counter.forward_flops
    assert ledger.per_query() == {
        "a": {"probe": f(20), "denoise": 3 * f(12)},
        "b": {"denoise": 3 * f(12), "rerun": f(16)},
    }
    assert ledger.total("denoise") == 6 * f(12)
    assert ledger.total() == f(20) + 6 * f(12) + f(16)
    assert ledger.forward_lengths("b") == [12, 12, 12, 16]
    frame = ledger.to_frame()
    assert list(frame.columns) == ["query_id", "kind", "flops", "forward_passes"]
    assert frame["flops"].sum() == ledger.total()
    assert frame.set_index(["query_id", "kind"]).loc[("a", "denoise"), "forward_passes"] == 3


def test_ledger_of_a_sampled_batch_equals_the_sum_of_its_forward_passes(tiny_lm):
    sampler = pytest.importorskip("ptdlib.sampling.sampler")
    from ptdlib.tasks import make_split

    queries = make_split("test", 3, seed=0)
    counter = FlopCounter(tiny_lm)
    ledger, recorder = FlopLedger(counter), TraceRecorder()
    outs = sampler.sample(
        tiny_lm,
        [q.prompt for q in queries],
        [8, 16, 16],
        sampler.SamplerConfig(block_length=8),
        query_ids=[q.qid for q in queries],
        callbacks=[ledger, recorder],
    )
    expected = {q.qid: 0 for q in queries}
    for event in recorder.forwards:
        for qid in event.query_ids:
            expected[qid] += counter.forward_flops(event.seq_len)
    assert {q: sum(k.values()) for q, k in ledger.per_query().items()} == expected
    assert ledger.total() == sum(counter.forward_flops(e.seq_len, e.batch_size) for e in recorder.forwards)
    frame = ledger.to_frame().set_index("query_id")
    for out in outs:  # S = L: one forward pass per canvas token
        assert frame.loc[out.query_id, "forward_passes"] == out.forward_passes == out.canvas_length


def test_analytic_counter_never_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AnalyticCounter(DREAM_7B).forward_flops(100, 2) == 2 * analytic_flops(DREAM_7B, 100)["total"]
