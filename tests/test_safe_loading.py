"""No user file can run code when ptdlib loads it (issue 14, class 1): tensors load with
``torch.load(weights_only=True)``, fitted predictors are skops + JSON, nothing is unpickled."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptdlib.cli import main as ptd
from ptdlib.predictor.regressors import MODEL_FILE, LengthPredictor, PredictorConfig

PTDLIB = Path(__file__).resolve().parents[1] / "ptdlib"

#: (module, function) pairs that unpickle their input
PICKLE_LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("joblib", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("torch", "load"),
}


def _calls(tree):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            yield node, (node.func.value.id, node.func.attr)


def _unsafe_loads(source: str) -> list[str]:
    found = []
    for node, name in _calls(ast.parse(source)):
        kw = {k.arg: k.value for k in node.keywords}
        if name == ("torch", "load"):
            safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        elif name in PICKLE_LOADERS:
            safe = False
        elif name[1] == "load" and name[0] in ("np", "numpy"):
            safe = not (isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True)
        else:
            continue
        if not safe:
            found.append(f"line {node.lineno}: {name[0]}.{name[1]}")
    return found


def test_the_source_scan_finds_each_kind_of_unsafe_load():
    code = (
        "torch.load(p)\ntorch.load(p, weights_only=False)\njoblib.load(p)\npickle.loads(b)\n"
        "np.load(p, allow_pickle=True)\npd.read_pickle(p)\ntorch.load(p, weights_only=True)\nnp.load(p)\n"
    )
    assert [f.split(": ")[1] for f in _unsafe_loads(code)] == [
        "torch.load",
        "torch.load",
        "joblib.load",
        "pickle.loads",
        "np.load",
        "pd.read_pickle",
    ]


def test_no_module_of_ptdlib_loads_with_pickle():
    unsafe = {
        str(p.relative_to(PTDLIB.parent)): found
        for p in sorted(PTDLIB.rglob("*.py"))
        if (found := _unsafe_loads(p.read_text()))
    }
    assert unsafe == {}
    pickling = {"pickle", "joblib", "dill", "cloudpickle"}
    imports = [
        str(p)
        for p in PTDLIB.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and ({a.name.split(".")[0] for a in node.names} | {(getattr(node, "module", None) or "").split(".")[0]})
        & pickling
    ]
    assert imports == []


class _Payload:
    """Unpickling this object creates ``marker``: the proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_crafted_training_checkpoint_is_refused_without_running_its_code(tmp_path, capsys):
    from ptdlib.models.training import load_checkpoint

    marker, evil = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "step": 1}, evil)
    with pytest.raises(ValueError, match="cannot read checkpoint .*evil.pt"):
        load_checkpoint(evil)
    assert ptd(["bench", "sampler", "--model", str(evil)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptd bench sampler: error: cannot ") and "checkpoint" in err and str(evil) in err
    assert len(err.splitlines()) == 1
    assert not marker.exists()


def test_a_crafted_resume_checkpoint_is_refused_without_running_its_code(tmp_path):
    from ptdlib.models.training import TrainConfig, train

    marker, work = tmp_path / "ran", tmp_path / "work"
    work.mkdir()
    torch.save({"model": _Payload(marker)}, work / "checkpoint.pt")
    cfg = TrainConfig(
        steps=1,
        batch_size=2,
        warmup=1,
        eval_every=0,
        threads=1,
        model=dict(d_model=16, n_layers=1, n_heads=2, mlp_hidden=32),
    )
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        train(cfg, tmp_path / "out", work_dir=work)
    assert not marker.exists() and not (tmp_path / "out").exists()


def _fitted(regressor: str) -> LengthPredictor:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 30, 40)
    return LengthPredictor(PredictorConfig(regressor=regressor, max_iter=5)).fit(x, y)


@pytest.mark.parametrize("regressor", ["ridge_log", "gbm_quantile", "gbm_log"])
def test_a_saved_predictor_is_skops_and_json_and_predicts_identically(tmp_path, regressor):
    p = _fitted(regressor)
    p.extractor.keywords = ["count", "sort"]
    p.save(tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["metrics.json", "predictor.json", "predictor.skops"]
    assert json.loads((tmp_path / "predictor.json").read_text())["extractor"]["keywords"] == ["count", "sort"]
    q = LengthPredictor.load(tmp_path)
    x = np.random.default_rng(1).normal(size=(7, 4))
    np.testing.assert_array_equal(q.predict(x), p.predict(x))
    assert q.extractor.keywords == ["count", "sort"] and q.config == p.config


def test_a_predictor_file_naming_a_foreign_type_is_refused(tmp_path):
    import skops.io

    _fitted("ridge_log").save(tmp_path)
    skops.io.dump({"model": _Payload(tmp_path / "ran")}, tmp_path / MODEL_FILE)
    with pytest.raises(ValueError, match="_Payload.*not loaded"):
        LengthPredictor.load(tmp_path)
    assert not (tmp_path / "ran").exists()


def test_an_old_pickled_predictor_is_not_read(tmp_path):
    import pickle

    (tmp_path / "predictor.joblib").write_bytes(pickle.dumps(_Payload(tmp_path / "ran")))
    with pytest.raises(FileNotFoundError, match="no longer read"):
        LengthPredictor.load(tmp_path)
    assert not (tmp_path / "ran").exists()


def test_a_cut_predictor_file_names_the_folder(tmp_path):
    _fitted("gbm_log").save(tmp_path)
    data = (tmp_path / MODEL_FILE).read_bytes()
    (tmp_path / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read predictor {tmp_path}"):
        LengthPredictor.load(tmp_path)
