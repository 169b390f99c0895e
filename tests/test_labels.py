"""The labelling run: own lengths at the maximum canvas, exact under early stopping, cached."""

import pytest

from ptdlib.experiment.labels import label_queries, own_lengths
from ptdlib.sampling.sampler import SamplerConfig, sample
from ptdlib.tasks import make_split

CFG = SamplerConfig(block_length=16)


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("PTD_CACHE_DIR", str(tmp_path))


def test_early_stopped_labels_equal_the_full_canvas_run(tiny_lm, monkeypatch):
    qs = make_split("test", 5, seed=2)
    # A tiny random model rarely writes EOS; make EOS likely enough that some answers end early.
    bias = tiny_lm.network.lm_head.weight.data[tiny_lm.eos_id].clone()
    tiny_lm.network.lm_head.weight.data[tiny_lm.eos_id] *= 40
    try:
        labels = label_queries(tiny_lm, qs, canvas=64, sampler=CFG)
        full = sample(tiny_lm, [q.prompt for q in qs], 64, CFG, query_ids=[q.qid for q in qs])
    finally:
        tiny_lm.network.lm_head.weight.data[tiny_lm.eos_id] = bias
    assert [labels[q.qid]["length"] for q in qs] == [o.length for o in full]
    assert [labels[q.qid]["text"] for q in qs] == [o.text for o in full]
    assert any(not o.truncated for o in full), "the test needs at least one answer that ends"


def test_labels_are_cached_and_reused(tiny_lm, monkeypatch):
    qs = make_split("calib", 3)
    first = own_lengths(tiny_lm, qs, canvas=32, sampler=CFG)
    import ptdlib.experiment.labels as labels_module

    monkeypatch.setattr(labels_module, "sample", lambda *a, **k: pytest.fail("cached labels were recomputed"))
    assert own_lengths(tiny_lm, qs, canvas=32, sampler=CFG).tolist() == first.tolist()


def test_fingerprint_tells_apart_dtype_weights_and_special_ids_and_handles_bfloat16(tiny_lm):
    import copy
    import dataclasses

    import torch

    from ptdlib.experiment.labels import model_fingerprint

    base = model_fingerprint(tiny_lm)
    assert model_fingerprint(tiny_lm) == base  # deterministic
    bf16 = dataclasses.replace(tiny_lm, network=copy.deepcopy(tiny_lm.network).to(torch.bfloat16))
    nudged_net = copy.deepcopy(tiny_lm.network)
    with torch.no_grad():
        next(nudged_net.parameters()).view(-1)[0] += 1e-3
    nudged = dataclasses.replace(tiny_lm, network=nudged_net)
    other_end = dataclasses.replace(tiny_lm, end_ids=tiny_lm.end_ids[:1])
    prints = {model_fingerprint(m) for m in (bf16, nudged, other_end)}
    assert len(prints) == 3 and base not in prints


def test_label_files_keep_their_names_unless_an_end_token_option_is_on(tiny_lm):
    import hashlib
    import json
    from dataclasses import asdict, replace

    from ptdlib.experiment.labels import _cache_path

    path = _cache_path(tiny_lm, 64, CFG, 0)
    # the key as it was before confidence_eos_eot_inf existed: existing label files stay valid
    before = {k: v for k, v in asdict(CFG).items() if k not in ("window", "cache", "confidence_eos_eot_inf")}
    key = json.dumps({"canvas": 64, "sampler": before, "seed": 0, "device": "cpu"}, sort_keys=True)
    assert path.name.endswith(f"-{hashlib.sha256(key.encode()).hexdigest()[:10]}.jsonl")
    on = {_cache_path(tiny_lm, 64, replace(CFG, **{o: True}), 0) for o in ("suppress_eos", "confidence_eos_eot_inf")}
    assert path not in on and len(on) == 2  # suppress_eos now forbids EOS only: its old labels are not reused
