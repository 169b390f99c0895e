"""Analyses of result tables: the analytic margin sweep, distribution shift and the strategy overview."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from torch import nn

from ptdlib.analysis import margins, overview, shift
from ptdlib.canvas import CanvasLimits, CanvasPolicy, evaluate_strategy, make_policy
from ptdlib.sampling.sampler import SamplerConfig, sample
from ptdlib.tasks import make_split

LIMITS = CanvasLimits(max_canvas=48, round_to=16)
SAMPLER = SamplerConfig(block_length=16)


class EndAt(nn.Module):
    """Wraps a network: a large EOS logit at every real position >= ``after`` (prompt tokens included).

    A query with a prompt of P tokens then answers with ``after - P`` tokens on any canvas long enough, so the
    label model of :mod:`ptdlib.analysis.margins` (truncated iff own length >= canvas) holds exactly.
    """

    def __init__(self, inner, eos_id, after):
        super().__init__()
        self.inner, self.eos_id, self.after = inner, eos_id, after

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
        pos = attention_mask.long().cumsum(-1) - 1
        logits[..., self.eos_id] += 30.0 * (pos >= self.after)
        return logits


class GivenCanvas(CanvasPolicy):
    """Test policy: a canvas per query id, as given."""

    name = "given"

    def __init__(self, canvases: dict):
        self.canvases = canvases

    def choose(self, lm, queries, limits, callbacks=()):
        return np.array([self.canvases[q.qid] for q in queries])


@pytest.fixture(scope="module")
def end_lm(tiny_lm):
    return replace(tiny_lm, network=EndAt(tiny_lm.network, tiny_lm.eos_id, after=44))


@pytest.fixture(scope="module")
def queries():
    return make_split("test", 10, seed=3)


def test_analytic_sweep_reproduces_evaluate_strategy_flops_and_truncation(end_lm, counter, queries):
    own = [
        o.length
        for o in sample(
            end_lm, [q.prompt for q in queries], LIMITS.max_canvas, SAMPLER, query_ids=[q.qid for q in queries]
        )
    ]
    assert 0 < min(own) and max(own) < LIMITS.max_canvas  # every answer fits the maximum canvas
    canvases = {q.qid: [16, 32, 48][i % 3] for i, q in enumerate(queries)}
    rows = []
    for start in (0, 6):  # two runner chunks of 6 and 4 queries, batches of 3
        chunk = queries[start : start + 6]
        rows += evaluate_strategy(
            end_lm, chunk, GivenCanvas(canvases), counter, sampler=SAMPLER, limits=LIMITS, batch_size=3
        )
    rows = pd.DataFrame(rows)
    out = margins.policy_outcome(
        rows["chosen_canvas"],
        own,
        rows["prompt_len"],
        counter,
        limits=LIMITS,
        sampler=SAMPLER,
        batch_size=3,
        chunk_size=6,
    )
    assert rows["truncated"].any() and not rows["truncated"].all()
    assert out["truncated"].tolist() == rows["truncated"].tolist()  # the label model holds for this model
    assert out["reruns"].tolist() == rows["reruns"].tolist()
    assert out["final_canvas"].tolist() == rows["final_canvas"].tolist()
    assert out["flops_denoise"].tolist() == rows["flops_denoise"].tolist()
    assert out["flops_rerun"].tolist() == rows["flops_rerun"].tolist()
    assert out["flops_total"].tolist() == rows["flops_total"].tolist()


def test_prompt_pass_flops_match_the_predicted_policys_counted_pass(tiny_lm, counter):
    train, calib, test = make_split("train", 24), make_split("calib", 12), make_split("test", 7, seed=4)
    lengths = lambda qs: np.array([q.answer_length for q in qs])  # noqa: E731  (synthetic labels)
    policy = make_policy("predicted", margin="conformal", alpha=0.2, features="text+hidden").fit(
        tiny_lm, train, lengths(train), calib, lengths(calib), LIMITS
    )
    # batches of 3 prompts, so that padding to the longest prompt of each batch matters
    policy.predictor.extractor.feature_set = replace(policy.predictor.extractor.feature_set, batch_size=3)
    rows = pd.DataFrame(
        evaluate_strategy(tiny_lm, test, policy, counter, sampler=SAMPLER, limits=LIMITS, recovery="none")
    )
    expected = margins.prompt_pass_flops(rows["prompt_len"], counter, batch_size=3)
    assert rows["flops_predictor"].tolist() == expected.tolist()
    assert len(set(expected.tolist())) > 1


class LinearCounter:
    """A FLOP source that costs ``seq_len`` per row: easy to compute by hand."""

    def forward_flops(self, seq_len, batch=1):
        return batch * seq_len


def test_rerun_at_the_maximum_is_charged_to_truncated_queries_only():
    limits = CanvasLimits(max_canvas=64, round_to=32)
    out = margins.policy_outcome(
        [32, 32, 64],
        [40, 10, 70],
        [5, 3, 4],
        LinearCounter(),
        limits=limits,
        sampler=SamplerConfig(block_length=32),
        batch_size=1,
    )
    # query 0: 32 passes over 5 + 32, truncated (40 >= 32), re-run: 64 passes over 5 + 64
    assert out["flops_total"].tolist() == [32 * 37 + 64 * 69, 32 * 35, 64 * 68]
    assert out["truncated"].tolist() == [True, False, True]
    assert out["reruns"].tolist() == [1, 0, 0]  # query 2 is truncated at the maximum: nothing to re-run
    assert out["truncated_final"].tolist() == [False, False, True]


def test_batched_queries_pay_for_the_longest_prompt_in_their_batch():
    flops = margins.sampling_flops(
        [32, 32, 32], [5, 9, 2], LinearCounter(), sampler=SamplerConfig(block_length=32), batch_size=2
    )
    # longest prompt first: {9, 5} share a batch padded to 9, {2} is alone
    assert flops.tolist() == [32 * 41, 32 * 41, 32 * 34]


def test_doubling_recovery_climbs_block_by_block_until_the_label_fits():
    limits = CanvasLimits(max_canvas=128, round_to=32)
    out = margins.policy_outcome(
        [32],
        [70],
        [0],
        LinearCounter(),
        limits=limits,
        sampler=SamplerConfig(block_length=32),
        batch_size=1,
        recovery="double",
    )
    assert out["reruns"].item() == 2 and out["final_canvas"].item() == 128
    assert out["flops_rerun"].item() == 64 * 64 + 128 * 128


def test_sweep_trades_truncation_for_flops_monotonically():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 100, 200)
    pred = np.clip(y + rng.normal(0, 10, 200), 0, None)
    P = rng.integers(3, 20, 200)
    sweep = margins.sweep_margins(
        pred, y, P, [-20, -5, 0, 5, 10, 20, 40, 200], LinearCounter(), sampler=SamplerConfig(block_length=32)
    )
    assert np.all(np.diff(sweep["truncation"]) <= 0) and np.all(np.diff(sweep["mean_canvas"]) >= 0)
    assert sweep["rerun_rate"].tolist() == sweep["truncation"].tolist()  # no label reaches the maximum
    assert sweep["flops_vs_fixed"].iloc[-1] == pytest.approx(1.0)  # a huge margin is the fixed maximum canvas
    assert sweep["flops_vs_oracle"].min() >= 1.0  # nothing beats the oracle


def test_conformal_sweep_realises_about_its_nominal_level_on_exchangeable_data():
    rng = np.random.default_rng(1)
    alpha, n = 0.2, 99
    misses = []
    for _ in range(200):
        pred = rng.uniform(0, 60, n + 400)
        y = np.floor(pred + rng.exponential(8, n + 400))
        s = margins.conformal_sweep(
            pred[:n], y[:n], pred[n:], y[n:], [alpha], limits=CanvasLimits(max_canvas=1024, round_to=1)
        )
        misses.append(s["miss_rate"].item())
    assert s["lower_bound"].item() == pytest.approx(alpha - 1 / (n + 1))
    assert np.mean(misses) <= alpha + 0.01 and np.mean(misses) >= alpha - 1 / (n + 1) - 0.02


def test_pareto_front_keeps_only_undominated_points():
    cost = [1, 2, 3, 2, 4]
    loss = [5, 3, 1, 4, 1]
    assert margins.pareto_front(cost, loss).tolist() == [True, True, True, False, False]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="recovery 'extend' is not analytic"):
        margins.policy_outcome([32], [3], [2], LinearCounter(), recovery="extend")
    with pytest.raises(ValueError, match="equally long"):
        margins.sampling_flops([32, 32], [2], LinearCounter())
    with pytest.raises(ValueError, match="scale must be one of additive, log"):
        margins.margin_canvases([3.0], 1.0, scale="logs")
    with pytest.raises(ValueError, match="threshold"):
        margins.passes_per_canvas(32, SamplerConfig(threshold=0.9))


# ---------------------------------------------------------------- distribution shift
def _queries(split, n, rng, scale=1.0, bias=0.0):
    pred = rng.uniform(2, 40, n)
    y = np.floor(scale * pred + bias + rng.exponential(4, n)).astype(int)
    return pd.DataFrame(
        {"split": split, "prediction": pred, "own_length": np.minimum(y, 127), "prompt_len": rng.integers(3, 20, n)}
    )


def test_static_conformal_margin_holds_in_distribution_and_breaks_under_length_shift():
    rng = np.random.default_rng(2)
    calib, test, longer = _queries("calib", 300, rng), _queries("test", 400, rng), _queries("long", 400, rng, 2.0)
    rules = shift.static_rules(calib, alpha=0.1)
    limits = CanvasLimits(max_canvas=128, round_to=1)
    table = shift.evaluate_rules(
        rules, pd.concat([test, longer]), LinearCounter(), limits=limits, sampler=SamplerConfig(block_length=1)
    )
    conf = table.set_index(["split", "method"])["truncation"]
    assert conf["test", "conformal"] <= 0.1 + 0.05
    assert conf["long", "conformal"] > 0.3  # twice as long as calibrated for: the guarantee is gone
    assert set(table["method"]) == {"percentile", "conformal", "conformal_log"}


def test_adaptive_conformal_steers_the_stream_miss_rate_back_towards_alpha():
    rng = np.random.default_rng(3)
    calib = _queries("calib", 200, rng)
    queries = pd.concat([_queries("test", 300, rng), _queries("long", 900, rng, 1.0, 15.0)])
    stream = shift.drift_stream(queries, ["test", "long"])
    limits = CanvasLimits(max_canvas=256, round_to=1)
    static = shift.serve_stream(stream, shift.static_rules(calib, alpha=0.1)["conformal"], limits=limits)
    online = shift.serve_stream(stream, shift.aci_rule(calib, alpha=0.1, gamma=0.05), limits=limits)
    late = stream["t"] >= 600  # after ACI has had time to adapt to the longer answers
    assert static["miss"][late].mean() > 0.4
    assert abs(online["miss"][late].mean() - 0.1) < 0.05
    assert online["level"].iloc[-1] < 0.1  # it lowered its working level to widen the margin
    table = shift.stream_table(
        {"static": static, "aci": online}, stream, LinearCounter(), limits=limits, sampler=SamplerConfig(block_length=1)
    )
    cost = table.set_index(["method", "split"])["flops_vs_fixed"]
    # half the static rule's long answers are re-run at the maximum: ACI's wider canvases cost less than that
    assert cost["aci", "long"] < cost["static", "long"]
    assert set(table["split"]) == {"all", "test", "long"}


def test_running_rate_is_a_trailing_window_mean():
    assert shift.running_rate([1, 0, 1, 1], 2).tolist() == [1.0, 0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        shift.running_rate([1], 0)


def test_drift_stream_rejects_unknown_splits():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="stream order must name splits present"):
        shift.drift_stream(_queries("test", 5, rng), ["test", "shift_lenght"])


# ---------------------------------------------------------------- strategy overview
def _rows():
    base = dict(split="test", seed=0, recovery="max", truncated_final=False)
    rows = []
    for i in range(4):
        rows.append(
            {
                **base,
                "qid": f"q{i}",
                "strategy": "fixed",
                "params": '{"L": 64}',
                "chosen_canvas": 64,
                "final_canvas": 64,
                "truncated": False,
                "reruns": 0,
                "flops_total": 100,
                "score": 1.0,
            }
        )
        rows.append(
            {
                **base,
                "qid": f"q{i}",
                "strategy": "oracle",
                "params": "{}",
                "chosen_canvas": 32,
                "final_canvas": 32,
                "truncated": False,
                "reruns": 0,
                "flops_total": 20,
                "score": 1.0,
            }
        )
        rows.append(
            {
                **base,
                "qid": f"q{i}",
                "strategy": "predicted",
                "params": '{"alpha": 0.1}',
                "chosen_canvas": 32,
                "final_canvas": 64 if i == 0 else 32,
                "truncated": i == 0,
                "reruns": int(i == 0),
                "flops_total": 130 if i == 0 else 20,
                "score": float(i > 1),
            }
        )
    return pd.DataFrame(rows)


def test_overview_divides_total_flops_by_the_references_on_the_same_queries():
    ov = overview.strategy_overview(_rows(), max_canvas=64).set_index("strategy")
    assert ov.loc["predicted", "flops_vs_fixed"] == pytest.approx(190 / 400)
    assert ov.loc["predicted", "flops_vs_oracle"] == pytest.approx(190 / 80)
    assert ov.loc["predicted", "truncation"] == 0.25 and ov.loc["predicted", "rerun_rate"] == 0.25
    assert ov.loc["predicted", "score"] == 0.5 and ov.loc["fixed", "flops_vs_fixed"] == 1.0
    assert "predicted(alpha=0.1)" in overview.overview_markdown(ov.reset_index())


def test_overview_without_a_fixed_maximum_canvas_leaves_the_ratio_empty():
    ov = overview.strategy_overview(_rows(), max_canvas=128)
    assert ov["flops_vs_fixed"].isna().all() and ov["flops_vs_oracle"].notna().all()


def test_noninferiority_reading_needs_a_margin_and_names_verdicts():
    from ptdlib.stats.summary import Baseline, summary_table

    rows = _rows().assign(metric="exact_match", prompt_len=5)
    table = summary_table(rows, Baseline("fixed", {"L": 64}), correction="holm", n_resamples=199)
    with pytest.raises(ValueError, match="built with margin"):
        overview.noninferiority_reading(table)
    with_margin = summary_table(rows, Baseline("fixed", {"L": 64}), correction="holm", n_resamples=199, margin=0.1)
    reading = overview.noninferiority_reading(with_margin)
    assert set(reading["verdict"]) <= {"better", "non-inferior", "worse", "inconclusive"}
    assert reading.set_index("strategy").loc["oracle()", "quality_delta"] == 0


def test_label_model_check_replays_each_arm_with_the_sampler_it_ran_with(end_lm, counter, queries):
    from ptdlib.experiment.config import RunConfig

    cfg = RunConfig.from_dict(
        {
            "splits": {"test": len(queries)},
            "sampler": {"block_length": 16},
            "batch_size": 3,
            "chunk_size": 6,
            "limits": {"max_canvas": LIMITS.max_canvas, "round_to": LIMITS.round_to},
            "strategies": [
                {"name": "fixed", "params": {"L": LIMITS.max_canvas}},
                {"name": "smartcrop", "params": {"tau": 0.5, "pad": 16, "early_stop": [False, True]}},
            ],
        }
    )
    own = {
        q.qid: o.length
        for q, o in zip(
            queries,
            sample(
                end_lm, [q.prompt for q in queries], LIMITS.max_canvas, cfg.sampler, query_ids=[q.qid for q in queries]
            ),
        )
    }
    rows = []
    for cell in cfg.cells:  # as the runner evaluates a cell: its policy, the run's base sampler, chunk by chunk
        for start in range(0, len(queries), cfg.chunk):
            rows += evaluate_strategy(
                end_lm,
                queries[start : start + cfg.chunk],
                make_policy(cell.name, **cell.kwargs),
                counter,
                recovery=cell.recovery,
                sampler=cfg.sampler,
                limits=cfg.limits,
                batch_size=cfg.batch_size,
                own_lengths=own,
            )
    rows = pd.DataFrame(rows)
    crop = rows[rows["strategy"] == "smartcrop"]
    stopped, plain = crop[crop["params"].str.contains("early_stop")], crop[~crop["params"].str.contains("early_stop")]
    assert stopped["flops_total"].sum() < plain["flops_total"].sum()  # the early stop did save passes
    table = margins.label_model_check(rows, counter, cfg)
    assert table["flops_exact"].tolist() == [1.0, 1.0]  # fixed and the plain smartcrop, replayed exactly
    assert not table["params"].str.contains("early_stop").any()  # its passes are not analytic: left out
