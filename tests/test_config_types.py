"""Types are checked once, at the boundary (issue 14, class 2): a value of the wrong type in a run config is
one line naming the key, the value and what is allowed, before anything runs or is written; quoted booleans
are refused, never taken as true; malformed YAML is one line with its position."""

from dataclasses import dataclass

import pytest
import yaml

from ptdlib.cli import main as ptd
from ptdlib.experiment.config import RunConfig, load_config
from ptdlib.validation import check_types, check_value

BASE = {
    "splits": {"test": 4},
    "strategies": [{"name": "fixed", "params": {"L": 64}}],
    "limits": {"max_canvas": 64, "round_to": 32},
}

#: (section, key, bad value, words the message must hold)
BAD_VALUES = [
    ("sampler", "temperature", "hot", ["sampler.temperature", "'hot'", "a number"]),
    ("sampler", "suppress_eos", "false", ["sampler.suppress_eos", "'false'", "true or false"]),
    ("sampler", "stop_after_eos_block", "no", ["sampler.stop_after_eos_block", "'no'", "true or false"]),
    ("sampler", "steps", 12.5, ["sampler.steps", "12.5", "an integer or null"]),
    ("sampler", "block_length", True, ["sampler.block_length", "True", "an integer"]),
    ("limits", "max_canvas", "abc", ["limits.max_canvas", "'abc'", "an integer"]),
    ("model", "trust_remote_code", "false", ["model.trust_remote_code", "'false'", "true or false"]),
    (None, "train", "600", ["train", "'600'", "an integer"]),
    (None, "output", 5, ["output", "5", "a string"]),
    (None, "splits", [4], ["splits", "[4]", "a mapping"]),
]


def _config(section, key, value) -> dict:
    cfg = {**BASE, **({section: {key: value}} if section else {key: value})}
    if section == "limits":
        cfg["limits"] = {**BASE["limits"], key: value}
    return cfg


@pytest.mark.parametrize("section, key, value, words", BAD_VALUES)
def test_a_value_of_the_wrong_type_is_refused_naming_key_value_and_type(section, key, value, words):
    with pytest.raises(ValueError) as err:
        RunConfig.from_dict(_config(section, key, value))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "params, words",
    [
        ({"tau": 0.9, "early_stop": "false"}, ["strategies[0]", "smartcrop.early_stop", "'false'", "true or false"]),
        ({"tau": "0.9"}, ["smartcrop.tau", "'0.9'", "a number"]),
        ({"tau": [0.9, "high"]}, ["smartcrop.tau", "'high'"]),
    ],
)
def test_a_policy_parameter_of_the_wrong_type_is_refused(params, words):
    cfg = {**BASE, "strategies": [{"name": "fixed", "params": {"L": 64}}, {"name": "smartcrop", "params": params}]}
    cfg["strategies"][0], cfg["strategies"][1] = cfg["strategies"][1], cfg["strategies"][0]
    with pytest.raises(ValueError) as err:
        RunConfig.from_dict(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_real_booleans_and_numbers_still_pass_and_keep_their_values():
    cfg = RunConfig.from_dict({**BASE, "sampler": {"suppress_eos": False, "temperature": 0, "steps": 64}})
    assert cfg.sampler.suppress_eos is False and cfg.sampler.temperature == 0 and cfg.sampler.steps == 64
    assert RunConfig.from_dict(cfg.identity() | {"output": cfg.output}) == cfg


def test_a_field_added_to_a_dataclass_is_checked_without_being_listed():
    @dataclass(frozen=True)
    class NewOptions:
        flag: bool = False
        count: int | None = None
        ratio: float = 0.5
        names: tuple[str, ...] = ()

    check_types(NewOptions, {"flag": True, "count": None, "ratio": 1, "names": ["a"]})
    for key, value in [("flag", "false"), ("count", 2.5), ("ratio", "0.5"), ("names", ["a", 3])]:
        with pytest.raises(ValueError, match=f"^new.{key} must be"):
            check_types(NewOptions, {key: value}, "new")


def test_a_quoted_boolean_is_named_as_such():
    with pytest.raises(ValueError, match=r"x must be true or false, got 'false' \(a quoted string\)"):
        check_value("x", "false", bool)


def _write(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


@pytest.mark.parametrize("section, key, value, words", BAD_VALUES[:6])
def test_ptd_run_refuses_a_bad_type_in_one_line_and_writes_nothing(tmp_path, capsys, section, key, value, words):
    out = tmp_path / "out"
    assert ptd(["run", _write(tmp_path, _config(section, key, value)), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptd run: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()


@pytest.mark.parametrize(
    "text, where",
    [
        ("splits: {test: 4\nstrategies: []\n", "line 2, column 11"),
        ("splits:\n  test: 4\n strategies: x\n", "line 3, column 2"),
        ("sampler: [unclosed\n", "line 2"),
    ],
)
def test_malformed_yaml_is_one_line_with_its_position(tmp_path, capsys, text, where):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=f"is not valid YAML at {where}"):
        load_config(path)
    assert ptd(["run", path, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid YAML" in err and not (tmp_path / "out").exists()


def test_malformed_toml_and_binary_files_are_one_line(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("splits = {test = 4\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(bad)
    binary = tmp_path / "run.yaml"
    binary.write_bytes(b"\xff\xfe\x00splits")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_config(binary)


def test_a_quoted_opt_in_to_code_execution_is_refused_not_taken_as_true():
    from ptdlib.tasks.sources import source_from_dict

    with pytest.raises(ValueError, match=r"sources\[0\].allow_code_execution must be true or false, got 'false'"):
        source_from_dict({"name": "h", "benchmark": "humaneval", "allow_code_execution": "false"}, "sources[0]")
